//! OCI `linux.seccomp` to BPF programs, compiled with `seccompiler` (pure Rust).
//!
//! An OCI profile has one default action and per-syscall actions; a seccompiler filter has one
//! match and one mismatch action. The profile becomes several filters, which the kernel runs
//! all, keeping the most restrictive answer:
//! - for each action A other than ALLOW: "A if the syscall matches one of A's rules, else ALLOW";
//! - unless the default is ALLOW: "ALLOW if the syscall matches any rule, else the default".
//!
//! A listed syscall thus gets its own action, an unlisted one (or one whose argument
//! conditions do not hold) the default. Syscall names this architecture does not know are
//! skipped, as libseccomp does.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{json, Value};

/// A profile that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// An action seccompiler cannot express.
    #[error("seccomp action {0:?} is not supported")]
    UnsupportedAction(LinuxSeccompAction),
    /// The machine's architecture is not supported by seccompiler.
    #[error("seccomp is not supported on {0}")]
    UnsupportedArch(&'static str),
    /// seccompiler refused the generated filter.
    #[error("compiling the seccomp profile: {0}")]
    Compile(String),
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::UnsupportedArch(std::env::consts::ARCH))
}

/// The seccompiler JSON form of an OCI action (`errno_ret` defaults to EPERM).
fn action_json(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<Value, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => json!("allow"),
        LinuxSeccompAction::ScmpActErrno => json!({ "errno": errno_ret.unwrap_or(1) }),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            json!("kill_thread")
        }
        LinuxSeccompAction::ScmpActKillProcess => json!("kill_process"),
        LinuxSeccompAction::ScmpActTrap => json!("trap"),
        LinuxSeccompAction::ScmpActLog => json!("log"),
        LinuxSeccompAction::ScmpActTrace => json!({ "trace": errno_ret.unwrap_or(0) }),
        other => return Err(SeccompError::UnsupportedAction(other)),
    })
}

fn op_json(op: LinuxSeccompOperator, value_two: Option<u64>) -> Value {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => json!("ne"),
        LinuxSeccompOperator::ScmpCmpLt => json!("lt"),
        LinuxSeccompOperator::ScmpCmpLe => json!("le"),
        LinuxSeccompOperator::ScmpCmpEq => json!("eq"),
        LinuxSeccompOperator::ScmpCmpGe => json!("ge"),
        LinuxSeccompOperator::ScmpCmpGt => json!("gt"),
        LinuxSeccompOperator::ScmpCmpMaskedEq => json!({ "masked_eq": value_two.unwrap_or(0) }),
    }
}

/// Whether seccompiler knows `name` on this architecture.
fn syscall_known(name: &str, arch: TargetArch) -> bool {
    let probe = json!({ "p": {
        "mismatch_action": "allow",
        "match_action": "trap",
        "filter": [{ "syscall": name }],
    }});
    seccompiler::compile_from_json(probe.to_string().as_bytes(), arch).is_ok()
}

/// Compiles `profile` into the BPF programs to install, in order. Returns the programs and
/// the syscall names skipped because this architecture does not know them.
pub fn compile(profile: &LinuxSeccomp) -> Result<(Vec<BpfProgram>, Vec<String>), SeccompError> {
    let arch = target_arch()?;
    let default = action_json(profile.default_action(), profile.default_errno_ret())?;
    let mut skipped = Vec::new();
    // action (as JSON text) -> rules; BTreeMap for a stable filter order.
    let mut by_action: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut all_rules = Vec::new();
    for syscall in profile.syscalls().iter().flatten() {
        let action = action_json(syscall.action(), syscall.errno_ret())?;
        let (value_for, mask_for) = (
            |arg: &oci_spec::runtime::LinuxSeccompArg| match arg.op() {
                // masked_eq: OCI's value is the mask, value_two the expected bits.
                LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
                _ => arg.value(),
            },
            |arg: &oci_spec::runtime::LinuxSeccompArg| match arg.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => Some(arg.value()),
                _ => None,
            },
        );
        let args: Vec<Value> = syscall
            .args()
            .iter()
            .flatten()
            .map(|arg| {
                json!({
                    "index": arg.index(),
                    "type": "qword",
                    "op": op_json(arg.op(), mask_for(arg)),
                    "val": value_for(arg),
                })
            })
            .collect();
        for name in syscall.names() {
            if !syscall_known(name, arch) {
                skipped.push(name.clone());
                continue;
            }
            let rule = if args.is_empty() {
                json!({ "syscall": name })
            } else {
                json!({ "syscall": name, "args": args })
            };
            all_rules.push(rule.clone());
            if action != json!("allow") {
                by_action.entry(action.to_string()).or_default().push(rule);
            }
        }
    }

    let mut filters = serde_json::Map::new();
    let mut order = Vec::new();
    for (i, (action, rules)) in by_action.into_iter().enumerate() {
        let action: Value =
            serde_json::from_str(&action).map_err(|e| SeccompError::Compile(e.to_string()))?;
        let name = format!("a{i:03}");
        filters.insert(
            name.clone(),
            json!({ "mismatch_action": "allow", "match_action": action, "filter": rules }),
        );
        order.push(name);
    }
    if default != json!("allow") {
        filters.insert(
            "z_default".to_string(),
            json!({ "mismatch_action": default, "match_action": "allow", "filter": all_rules }),
        );
        order.push("z_default".to_string());
    }
    let json = Value::Object(filters).to_string();
    let mut compiled = seccompiler::compile_from_json(json.as_bytes(), arch)
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    let programs = order
        .iter()
        .filter_map(|name| compiled.remove(name))
        .collect();
    Ok((programs, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn deny_list_and_allow_list_profiles_compile() {
        let deny = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir","mkdirat","no_such_call"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        );
        let (programs, skipped) = compile(&deny).unwrap();
        assert_eq!(programs.len(), 1);
        assert!(!programs[0].is_empty());
        assert_eq!(skipped, vec!["no_such_call".to_string()]);

        let allow = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW",
                 "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},
                {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        );
        let (programs, skipped) = compile(&allow).unwrap();
        assert_eq!(
            programs.len(),
            2,
            "one KILL_PROCESS group + the default filter"
        );
        assert!(skipped.is_empty());
    }

    #[test]
    fn notify_is_refused() {
        let notify = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(matches!(
            compile(&notify),
            Err(SeccompError::UnsupportedAction(_))
        ));
    }
}
