//! The kernel command line at `CMDLINE_ADDR`.

use linux_loader::cmdline::Cmdline;
use vm_memory::GuestAddress;

use super::BootError;
use crate::layout::{CMDLINE_ADDR, CMDLINE_MAX_SIZE};
use crate::memory::GuestMemory;

/// Writes the NUL-terminated command line at `CMDLINE_ADDR` and returns its length without the
/// NUL. Fails if it does not fit in `CMDLINE_MAX_SIZE` bytes including the NUL.
pub(super) fn write_cmdline(mem: &GuestMemory, cmdline: &Cmdline) -> Result<usize, BootError> {
    let text = cmdline.as_cstring().map_err(BootError::CmdlineInvalid)?;
    let len = text.as_bytes().len();
    if len >= CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong { len });
    }
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), cmdline)
        .map_err(BootError::CmdlineWrite)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_util::guest_memory;
    use vm_memory::Bytes;

    #[test]
    fn writes_nul_terminated_text() {
        let mem = guest_memory(16 << 20);
        let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).unwrap();
        cmdline.insert_str("console=ttyS0 reboot=k").unwrap();
        let len = write_cmdline(&mem, &cmdline).unwrap();
        assert_eq!(len, 22);
        let mut buf = [0xffu8; 23];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0 reboot=k\0");
    }

    #[test]
    fn too_long_is_refused_with_its_length() {
        let mem = guest_memory(16 << 20);
        let mut cmdline = Cmdline::new(4096).unwrap();
        cmdline.insert_str("x".repeat(CMDLINE_MAX_SIZE)).unwrap();
        let err = write_cmdline(&mem, &cmdline).unwrap_err();
        assert!(matches!(err, BootError::CmdlineTooLong { len: 2048 }));
        assert_eq!(err.to_string(), "command line too long (2048 > 2047 bytes)");

        // The longest accepted one is 2047 bytes.
        let mut cmdline = Cmdline::new(4096).unwrap();
        cmdline
            .insert_str("y".repeat(CMDLINE_MAX_SIZE - 1))
            .unwrap();
        assert_eq!(write_cmdline(&mem, &cmdline).unwrap(), CMDLINE_MAX_SIZE - 1);
    }
}
