//! Exit statuses and timestamps as containerd expects them (what runc reports).

use protobuf::well_known_types::timestamp::Timestamp;

/// Exit status reported when the sandbox (VM, virtiofsd or host agent) died under a process,
/// or the agent could not be asked: the status kata and runc shims use for "unknown".
pub const SANDBOX_LOST_EXIT_STATUS: u32 = 255;

/// Exit status of a process whose Start failed (it never ran), as the agent reports it too.
pub const NOT_STARTED_EXIT_STATUS: u32 = 255;

/// Status reported by `delete` for a task whose shim is gone: killed (128 + SIGKILL), as runc.
pub const KILLED_EXIT_STATUS: u32 = 128 + 9;

/// How a process ended, as reported to containerd.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitRecord {
    /// Exit code, or 128 + signal.
    pub status: u32,
    /// When it ended.
    pub exited_at: Timestamp,
}

/// Maps the agent's `WaitProcessResponse.exit_status` (untrusted) to containerd's u32:
/// 0..=255 as is, and 128+n for n a signal up to 64 (so at most 192); anything else is not a
/// status a process can have and becomes [`SANDBOX_LOST_EXIT_STATUS`].
pub fn exit_status_from_agent(status: i32) -> Result<u32, i32> {
    match u32::try_from(status) {
        Ok(s) if s <= 255 => Ok(s),
        _ => Err(status),
    }
}

/// Validates the agent's exit timestamp (untrusted): seconds >= 0, nanos in 0..1e9. A missing or
/// bad one is replaced by the host's current time.
pub fn exit_time_from_agent(ts: Option<&Timestamp>) -> Timestamp {
    match ts {
        Some(t) if t.seconds > 0 && (0..1_000_000_000).contains(&t.nanos) => t.clone(),
        _ => now(),
    }
}

/// The current wall-clock time.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// Builds the exit record from an agent WaitProcessResponse's fields.
pub fn exit_record_from_agent(status: i32, exited_at: Option<&Timestamp>) -> ExitRecord {
    let status = exit_status_from_agent(status).unwrap_or_else(|bad| {
        tracing::warn!(bad, "agent reported an impossible exit status; using 255");
        SANDBOX_LOST_EXIT_STATUS
    });
    ExitRecord {
        status,
        exited_at: exit_time_from_agent(exited_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_in_range_pass_through() {
        assert_eq!(exit_status_from_agent(0), Ok(0));
        assert_eq!(exit_status_from_agent(3), Ok(3));
        assert_eq!(exit_status_from_agent(137), Ok(137));
        assert_eq!(exit_status_from_agent(255), Ok(255));
    }

    #[test]
    fn impossible_statuses_are_rejected() {
        assert_eq!(exit_status_from_agent(-1), Err(-1));
        assert_eq!(exit_status_from_agent(256), Err(256));
        assert_eq!(exit_status_from_agent(i32::MIN), Err(i32::MIN));
        assert_eq!(exit_record_from_agent(1000, None).status, 255);
    }

    #[test]
    fn timestamps_are_validated() {
        let good = Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
            ..Default::default()
        };
        assert_eq!(exit_time_from_agent(Some(&good)), good);
        let before = Timestamp::now().seconds;
        for bad in [
            Timestamp {
                seconds: -5,
                ..Default::default()
            },
            Timestamp {
                seconds: 10,
                nanos: 1_000_000_000,
                ..Default::default()
            },
        ] {
            assert!(exit_time_from_agent(Some(&bad)).seconds >= before);
        }
        assert!(exit_time_from_agent(None).seconds >= before);
        let rec = exit_record_from_agent(137, Some(&good));
        assert_eq!(rec.status, 137);
        assert_eq!(rec.exited_at, good);
    }
}
