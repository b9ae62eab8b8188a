use super::*;

/// Runs `code` (the subset of eBPF [`program`] emits) on one request; returns r0.
fn run(code: &[u64], kind: u32, major: u32, minor: u32, access: u32) -> u64 {
    let ctx = [(access << 16) | kind, major, minor];
    let mut regs = [0u64; 11];
    let mut pc = 0usize;
    for _ in 0..10_000 {
        let insn = code[pc];
        let op = insn as u8;
        let dst = ((insn >> 8) & 0xf) as usize;
        let src = ((insn >> 12) & 0xf) as usize;
        let off = (insn >> 16) as u16 as i16;
        let imm = (insn >> 32) as u32;
        pc += 1;
        match op {
            LDX_MEM_W => {
                assert_eq!(src, 1, "loads only from the context");
                regs[dst] = u64::from(ctx[off as usize / 4]);
            }
            ALU32_AND_K => regs[dst] = u64::from(regs[dst] as u32 & imm),
            ALU32_RSH_K => regs[dst] = u64::from((regs[dst] as u32) >> imm),
            ALU32_MOV_X => regs[dst] = u64::from(regs[src] as u32),
            ALU64_MOV_K => regs[dst] = imm as i32 as i64 as u64,
            JMP32_JNE_K => {
                if regs[dst] as u32 != imm {
                    pc = (pc as i64 + off as i64) as usize;
                }
            }
            JEQ32_K => {
                if regs[dst] as u32 == imm {
                    pc = (pc as i64 + off as i64) as usize;
                }
            }
            EXIT => return regs[0],
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
    panic!("the program does not end");
}

fn spec_rules(json: &str) -> Vec<LinuxDeviceCgroup> {
    serde_json::from_str(json).unwrap()
}

/// Every instruction can be reached (the kernel's verifier refuses the program otherwise) and
/// the last one is an exit.
fn assert_all_reachable(code: &[u64]) {
    let mut reachable = vec![false; code.len()];
    reachable[0] = true;
    for (pc, insn) in code.iter().enumerate() {
        if !reachable[pc] {
            panic!("instruction {pc} cannot be reached");
        }
        let op = *insn as u8;
        let off = (*insn >> 16) as u16 as i16;
        if op == JMP32_JNE_K || op == JEQ32_K {
            reachable[(pc as i64 + 1 + off as i64) as usize] = true;
        }
        if op != EXIT && pc + 1 < code.len() {
            reachable[pc + 1] = true;
        }
    }
    assert_eq!(*code.last().unwrap() as u8, EXIT);
}

/// Every combination of kind, a few majors/minors and access bits: program == reference.
fn assert_program_agrees(rules: &[DeviceRule]) {
    let code = program(rules);
    assert_all_reachable(&code);
    for kind in [KIND_BLOCK, KIND_CHAR] {
        for major in [0, 1, 5, 8, 10, 136, 254, 4095] {
            for minor in [0, 1, 2, 3, 5, 9, 42, 1 << 19] {
                for access in 1..=7 {
                    let expected = decide(rules, kind, major, minor, access);
                    assert_eq!(
                        run(&code, kind, major, minor, access) == 1,
                        expected,
                        "kind {kind} {major}:{minor} access {access:03b} under {rules:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn containerd_deny_all_then_the_defaults() {
    // What containerd sends: deny everything. The defaults come after it.
    let rules = rules_for(&spec_rules(r#"[{"allow": false, "access": "rwm"}]"#)).unwrap();
    assert!(
        decide(&rules, KIND_CHAR, 1, 3, ACCESS_READ | ACCESS_WRITE),
        "/dev/null"
    );
    assert!(!decide(&rules, KIND_CHAR, 1, 1, ACCESS_READ), "/dev/mem");
    assert_program_agrees(&rules);
}

#[test]
fn defaults_allow_null_and_ptys_and_mknod_but_not_memory_or_disks() {
    let rules = rules_for(&[]).unwrap();
    let rw = ACCESS_READ | ACCESS_WRITE;
    assert!(decide(&rules, KIND_CHAR, 1, 3, rw), "/dev/null");
    assert!(decide(&rules, KIND_CHAR, 136, 42, rw), "a pty");
    assert!(
        decide(&rules, KIND_CHAR, 1, 1, ACCESS_MKNOD),
        "mknod of /dev/mem"
    );
    assert!(
        !decide(&rules, KIND_CHAR, 1, 1, ACCESS_READ),
        "reading /dev/mem"
    );
    assert!(!decide(&rules, KIND_BLOCK, 254, 0, rw), "a virtio disk");
    assert!(
        !decide(&rules, KIND_CHAR, 5, 1, ACCESS_WRITE),
        "/dev/console"
    );
    assert_program_agrees(&rules);
}

#[test]
fn spec_rules_are_applied_in_order_and_partial_access_works() {
    let rules = rules_for(&spec_rules(
        r#"[{"allow": true, "type": "b", "major": 254, "minor": 0, "access": "r"},
            {"allow": false, "type": "c", "major": 1, "minor": 5, "access": "w"},
            {"allow": true, "type": "c", "major": 10, "access": "rw"},
            {"allow": false, "type": "c", "major": 10, "minor": 1, "access": "r"}]"#,
    ))
    .unwrap();
    assert!(decide(&rules, KIND_BLOCK, 254, 0, ACCESS_READ));
    assert!(!decide(
        &rules,
        KIND_BLOCK,
        254,
        0,
        ACCESS_READ | ACCESS_WRITE
    ));
    // The defaults come last: the spec cannot take /dev/zero away.
    assert!(decide(&rules, KIND_CHAR, 1, 5, ACCESS_WRITE), "/dev/zero");
    assert!(!decide(&rules, KIND_CHAR, 1, 1, ACCESS_READ), "/dev/mem");
    // A later deny punches a hole in an earlier allow, for the access it names.
    assert!(decide(&rules, KIND_CHAR, 10, 2, ACCESS_READ));
    assert!(!decide(&rules, KIND_CHAR, 10, 1, ACCESS_READ));
    assert!(decide(&rules, KIND_CHAR, 10, 1, ACCESS_WRITE));
    assert_program_agrees(&rules);
}

#[test]
fn bad_rules_name_the_problem() {
    let err = rules_for(&spec_rules(r#"[{"allow": true, "access": "rwx"}]"#)).unwrap_err();
    assert!(err.contains("devices[0]") && err.contains("'x'"), "{err}");
    let err = rules_for(&spec_rules(r#"[{"allow": true, "major": 99999999999}]"#)).unwrap_err();
    assert!(err.contains("major"), "{err}");
}
