//! Linux capability names (as in OCI specs, `CAP_CHOWN`) to numbers, and OCI capability sets
//! to bit masks.

use oci_spec::runtime::{Capabilities, Capability};

/// Every capability the kernel headers of Linux 6.x know, by number.
const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The highest capability number this table knows.
pub const LAST_CAP: u32 = CAPABILITY_NAMES.len() as u32 - 1;

/// The number of a capability named like `CAP_CHOWN`.
pub fn number_of(name: &str) -> Option<u32> {
    CAPABILITY_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
}

/// The number of an OCI capability.
pub fn capability_number(cap: &Capability) -> Option<u32> {
    // oci-spec serializes a Capability as its "CAP_..." name.
    let name = serde_json::to_value(cap).ok()?;
    number_of(name.as_str()?)
}

/// A bit mask of `caps` (unknown ones are ignored).
pub fn mask_of(caps: Option<&Capabilities>) -> u64 {
    caps.into_iter()
        .flatten()
        .filter_map(capability_number)
        .fold(0u64, |mask, n| mask | (1u64 << n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_kernel_numbers() {
        assert_eq!(number_of("CAP_CHOWN"), Some(0));
        assert_eq!(number_of("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number_of("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number_of("CAP_NOPE"), None);
        assert_eq!(capability_number(&Capability::NetBindService), Some(10));
        let set: Capabilities = [Capability::Chown, Capability::Kill].into_iter().collect();
        assert_eq!(mask_of(Some(&set)), (1 << 0) | (1 << 5));
        assert_eq!(mask_of(None), 0);
    }
}
