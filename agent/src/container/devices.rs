//! Device access control of a container: the spec's `linux.resources.devices` rules, after
//! runc's default set, compiled into a cgroup v2 device program (eBPF, attached to the
//! container's cgroup). Without it a container holding CAP_MKNOD could create and open any
//! device node of the guest: its memory, its console, its disks.
//!
//! Semantics (as cgroup v1 and runc): access is denied unless a rule allows it; the rules are
//! read in order and the last one that matches a request decides. An allow rule matches when
//! it covers every requested access bit, a deny rule when it covers any of them.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// mknod(2) of the device.
pub const ACCESS_MKNOD: u32 = 1;
/// Opening the device for reading.
pub const ACCESS_READ: u32 = 2;
/// Opening the device for writing.
pub const ACCESS_WRITE: u32 = 4;
const ACCESS_ALL: u32 = ACCESS_MKNOD | ACCESS_READ | ACCESS_WRITE;

/// Block devices (the kernel's BPF_DEVCG_DEV_BLOCK).
pub const KIND_BLOCK: u32 = 1;
/// Character devices (BPF_DEVCG_DEV_CHAR).
pub const KIND_CHAR: u32 = 2;

/// One device rule; `None` fields match everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow or deny.
    pub allow: bool,
    /// [`KIND_BLOCK`] or [`KIND_CHAR`]; None: both.
    pub kind: Option<u32>,
    /// Major number.
    pub major: Option<u32>,
    /// Minor number.
    pub minor: Option<u32>,
    /// Access bits ([`ACCESS_MKNOD`] | [`ACCESS_READ`] | [`ACCESS_WRITE`]).
    pub access: u32,
}

const fn allow_char(major: u32, minor: Option<u32>) -> DeviceRule {
    DeviceRule {
        allow: true,
        kind: Some(KIND_CHAR),
        major: Some(major),
        minor,
        access: ACCESS_ALL,
    }
}

/// What every container may use whatever its spec says (runc's defaults): creating device
/// nodes (not opening them), and null, zero, full, random, urandom, tty, ptmx, the ptys and
/// /dev/net/tun.
pub const DEFAULT_RULES: [DeviceRule; 11] = [
    DeviceRule {
        allow: true,
        kind: Some(KIND_CHAR),
        major: None,
        minor: None,
        access: ACCESS_MKNOD,
    },
    DeviceRule {
        allow: true,
        kind: Some(KIND_BLOCK),
        major: None,
        minor: None,
        access: ACCESS_MKNOD,
    },
    allow_char(1, Some(3)),    // null
    allow_char(1, Some(5)),    // zero
    allow_char(1, Some(7)),    // full
    allow_char(1, Some(8)),    // random
    allow_char(1, Some(9)),    // urandom
    allow_char(5, Some(0)),    // tty
    allow_char(5, Some(2)),    // ptmx
    allow_char(136, None),     // the ptys
    allow_char(10, Some(200)), // /dev/net/tun
];

/// The rules for a container: the spec's, then [`DEFAULT_RULES`] (runc appends its defaults
/// after the spec's rules, so containerd's leading deny-all does not take /dev/null away).
pub fn rules_for(spec_rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>, String> {
    let mut rules = Vec::with_capacity(spec_rules.len() + DEFAULT_RULES.len());
    for (i, rule) in spec_rules.iter().enumerate() {
        rules.push(convert(rule).map_err(|e| format!("linux.resources.devices[{i}]: {e}"))?);
    }
    rules.extend(DEFAULT_RULES);
    Ok(rules)
}

fn convert(rule: &LinuxDeviceCgroup) -> Result<DeviceRule, String> {
    let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => None,
        LinuxDeviceType::B => Some(KIND_BLOCK),
        LinuxDeviceType::C | LinuxDeviceType::U => Some(KIND_CHAR),
        LinuxDeviceType::P => return Err("type \"p\" (FIFO) is not a device type".into()),
    };
    let number = |value: Option<i64>, what: &str| match value {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| format!("{what} {n} is not a device number")),
    };
    let mut access = 0;
    for c in rule.access().as_deref().unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACCESS_READ,
            'w' => ACCESS_WRITE,
            'm' => ACCESS_MKNOD,
            other => return Err(format!("access {other:?} is not one of r, w, m")),
        };
    }
    Ok(DeviceRule {
        allow: rule.allow(),
        kind,
        major: number(rule.major(), "major")?,
        minor: number(rule.minor(), "minor")?,
        access,
    })
}

/// Whether `rule` decides a request.
fn matches(rule: &DeviceRule, kind: u32, major: u32, minor: u32, access: u32) -> bool {
    let covers = if rule.allow {
        access & !rule.access == 0
    } else {
        access & rule.access != 0
    };
    covers
        && rule.kind.is_none_or(|k| k == kind)
        && rule.major.is_none_or(|m| m == major)
        && rule.minor.is_none_or(|m| m == minor)
}

/// The decision `rules` make for a request (the reference the program must agree with).
pub fn decide(rules: &[DeviceRule], kind: u32, major: u32, minor: u32, access: u32) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| matches(r, kind, major, minor, access))
        .is_some_and(|r| r.allow)
}

/// One eBPF instruction, encoded as the kernel reads it.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

// The opcodes used.
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54; // dst &= imm
const ALU32_RSH_K: u8 = 0x74; // dst >>= imm
const ALU32_MOV_X: u8 = 0xbc; // dst = src
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const JMP32_JNE_K: u8 = 0x56; // if dst != imm: pc += off
const EXIT: u8 = 0x95;

/// The device program for `rules`. It reads the request from `struct bpf_cgroup_dev_ctx`
/// (access_type = access << 16 | type, major, minor) and returns 1 to allow, 0 to deny: it
/// tries the rules from the last to the first, and the first that matches decides.
pub fn program(rules: &[DeviceRule]) -> Vec<u64> {
    // r2 = type, r3 = access, r4 = major, r5 = minor; r1 (the context) is scratch afterwards.
    let mut code = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        // Each test jumps past the rest of this rule's block when the rule does not match.
        let mut block: Vec<(u8, u8, u8, i32, bool)> = Vec::new(); // (code, dst, src, imm, is_skip)
        if let Some(kind) = rule.kind {
            block.push((JMP32_JNE_K, 2, 0, kind as i32, true));
        }
        if rule.allow {
            // Every requested bit must be covered: (access & !rule) == 0.
            if rule.access != ACCESS_ALL {
                block.push((ALU32_MOV_X, 1, 3, 0, false));
                block.push((ALU32_AND_K, 1, 0, (!rule.access & ACCESS_ALL) as i32, false));
                block.push((JMP32_JNE_K, 1, 0, 0, true));
            }
        } else if rule.access != ACCESS_ALL {
            // Some requested bit must be covered: (access & rule) != 0.
            block.push((ALU32_MOV_X, 1, 3, 0, false));
            block.push((ALU32_AND_K, 1, 0, rule.access as i32, false));
            block.push((JEQ32_K, 1, 0, 0, true));
        }
        if let Some(major) = rule.major {
            block.push((JMP32_JNE_K, 4, 0, major as i32, true));
        }
        if let Some(minor) = rule.minor {
            block.push((JMP32_JNE_K, 5, 0, minor as i32, true));
        }
        let decides_everything = block.is_empty();
        block.push((ALU64_MOV_K, 0, 0, i32::from(rule.allow), false));
        block.push((EXIT, 0, 0, 0, false));
        let len = block.len();
        for (i, (op, dst, src, imm, is_skip)) in block.into_iter().enumerate() {
            let off = if is_skip { (len - i - 1) as i16 } else { 0 };
            code.push(insn(op, dst, src, off, imm));
        }
        if decides_everything {
            // Earlier rules could never be reached (the verifier refuses unreachable code).
            return code;
        }
    }
    code.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    code.push(insn(EXIT, 0, 0, 0, 0));
    code
}

const JEQ32_K: u8 = 0x16; // if dst == imm: pc += off

// The bpf(2) interface used (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    // The rest of `union bpf_attr`, zero.
    rest: [u64; 12],
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    rest: [u32; 27],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a repr(C) prefix of `union bpf_attr`, zero beyond the fields set, and
    // lives across the call; the size passed is its own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// Loads the program for `rules` and attaches it to the cgroup directory `cgroup`.
pub fn attach(cgroup: &Path, rules: &[DeviceRule]) -> Result<(), String> {
    let code = program(rules);
    let license = c"GPL";
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let prog = match bpf(BPF_PROG_LOAD, &mut load) {
        Ok(prog) => prog,
        Err(err) => {
            // Once more with the verifier's log, for the message.
            let mut log = vec![0u8; 64 * 1024];
            load.log_level = 1;
            load.log_size = log.len() as u32;
            load.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut load);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            return Err(format!(
                "loading the device program: {err} (verifier: {})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
    };
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let dir = std::fs::File::open(cgroup)
        .map_err(|e| format!("opening the cgroup {}: {e}", cgroup.display()))?;
    let mut attach = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attach)
        .map(drop)
        .map_err(|e| format!("attaching the device program to {}: {e}", cgroup.display()))
}

#[cfg(test)]
mod tests;
