//! The guest kernel command line: the user's arguments plus one `virtio_mmio.device=` per device.

use linux_loader::cmdline::Cmdline;
use vm_memory::GuestAddress;

use crate::layout::CMDLINE_MAX_SIZE;

/// Default command line: serial console, reboot through the i8042 reset line (which ends the VMM with
/// status 0), reboot immediately on panic.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    #[error("kernel command line is invalid: {reason} (in {cmdline:?})")]
    Invalid { cmdline: String, reason: String },
    #[error("kernel command line is too long (with the virtio devices added; max {max} bytes)")]
    TooLong { max: usize },
}

/// A virtio-mmio window announced on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceSlot {
    pub base: u64,
    pub size: u64,
    pub irq: u32,
}

/// Builds the final command line from `user` and the device slots.
pub fn build_cmdline(user: &str, devices: &[MmioDeviceSlot]) -> Result<Cmdline, CmdlineError> {
    let invalid = |e: linux_loader::cmdline::Error| {
        if matches!(e, linux_loader::cmdline::Error::TooLarge) {
            CmdlineError::TooLong {
                max: CMDLINE_MAX_SIZE - 1,
            }
        } else {
            CmdlineError::Invalid {
                cmdline: user.to_string(),
                reason: e.to_string(),
            }
        }
    };
    if user.trim().is_empty() {
        return Err(CmdlineError::Invalid {
            cmdline: user.to_string(),
            reason: "it is empty (use at least \"console=ttyS0\")".into(),
        });
    }
    if user.len() >= CMDLINE_MAX_SIZE {
        return Err(CmdlineError::TooLong {
            max: CMDLINE_MAX_SIZE - 1,
        });
    }
    if let Some((pos, c)) = user.char_indices().find(|(_, c)| !(' '..='~').contains(c)) {
        return Err(CmdlineError::Invalid {
            cmdline: user.to_string(),
            reason: format!("character {c:?} at byte {pos} is not printable ASCII"),
        });
    }
    let mut cmdline = Cmdline::try_from(user, CMDLINE_MAX_SIZE).map_err(invalid)?;
    for dev in devices {
        cmdline
            .add_virtio_mmio_device(dev.size, GuestAddress(dev.base), dev.irq, None)
            .map_err(invalid)?;
    }
    Ok(cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Cmdline) -> String {
        c.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn appends_virtio_devices() {
        let slots = [
            MmioDeviceSlot {
                base: 0xd000_1000,
                size: 0x1000,
                irq: 5,
            },
            MmioDeviceSlot {
                base: 0xd000_2000,
                size: 0x1000,
                irq: 6,
            },
        ];
        let c = build_cmdline(DEFAULT_CMDLINE, &slots).unwrap();
        assert_eq!(
            text(&c),
            "console=ttyS0 reboot=k panic=-1 virtio_mmio.device=4K@0xd0001000:5 \
             virtio_mmio.device=4K@0xd0002000:6"
        );
    }

    #[test]
    fn devices_go_before_init_arguments() {
        let slots = [MmioDeviceSlot {
            base: 0xd000_1000,
            size: 0x1000,
            irq: 5,
        }];
        let c = build_cmdline("console=ttyS0 -- --init-flag", &slots).unwrap();
        assert_eq!(
            text(&c),
            "console=ttyS0 virtio_mmio.device=4K@0xd0001000:5 -- --init-flag"
        );
    }

    #[test]
    fn rejects_empty_non_ascii_and_too_long() {
        assert!(matches!(
            build_cmdline("  ", &[]),
            Err(CmdlineError::Invalid { .. })
        ));
        assert!(matches!(
            build_cmdline("console=ttyS0 é", &[]),
            Err(CmdlineError::Invalid { .. })
        ));
        let long = "a".repeat(CMDLINE_MAX_SIZE);
        let err = build_cmdline(&long, &[]).unwrap_err();
        assert!(matches!(err, CmdlineError::TooLong { .. }), "{err}");
    }
}
