//! i8042 controller: only the CPU reset line.
//!
//! The device covers ports 0x60..=0x64 (`I8042_DATA_PORT` is offset 0, `I8042_COMMAND_PORT` is
//! offset 4). There is no keyboard: every read returns 0 (status "nothing pending", data 0). Writing
//! `I8042_RESET_COMMAND` to the command port (what Linux's `reboot=k` does) writes the reset eventfd,
//! on which the VMM stops the guest and exits with code 0.

use tracing::{debug, info, warn};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;
use crate::layout::{I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_RESET_COMMAND};

/// Length of the port range the device occupies, from `I8042_DATA_PORT`.
pub const I8042_PORT_RANGE_LEN: u64 = (I8042_COMMAND_PORT - I8042_DATA_PORT) as u64 + 1;

/// Offset of the command port inside the device's range.
const COMMAND_OFFSET: u64 = (I8042_COMMAND_PORT - I8042_DATA_PORT) as u64;

/// The i8042 reset line.
pub struct I8042Device {
    reset_evt: EventFd,
}

impl I8042Device {
    /// Creates the device; `reset_evt` is written when the guest asks for a CPU reset.
    pub fn new(reset_evt: EventFd) -> Self {
        Self { reset_evt }
    }

    /// The eventfd written on a reset request.
    pub fn reset_evt(&self) -> &EventFd {
        &self.reset_evt
    }
}

impl BusDevice for I8042Device {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (COMMAND_OFFSET, [I8042_RESET_COMMAND]) => {
                info!("guest requested a CPU reset through the i8042");
                if let Err(e) = self.reset_evt.write(1) {
                    warn!("i8042: cannot signal the reset event: {e}");
                }
            }
            _ => debug!(offset, ?data, "i8042: ignoring write"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn new_device() -> (I8042Device, EventFd) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (I8042Device::new(evt.try_clone().unwrap()), evt)
    }

    fn assert_no_reset(evt: &EventFd) {
        assert_eq!(evt.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn range_covers_data_and_command_ports() {
        assert_eq!(I8042_PORT_RANGE_LEN, 5);
        assert_eq!(
            I8042_DATA_PORT as u64 + COMMAND_OFFSET,
            I8042_COMMAND_PORT as u64
        );
    }

    #[test]
    fn status_and_data_read_zero() {
        let (mut dev, _evt) = new_device();
        let mut b = [0xffu8];
        dev.read(COMMAND_OFFSET, &mut b);
        assert_eq!(b, [0]);
        b = [0xff];
        dev.read(0, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn reset_command_signals_reset_event() {
        let (mut dev, evt) = new_device();
        dev.write(COMMAND_OFFSET, &[I8042_RESET_COMMAND]);
        assert_eq!(evt.read().unwrap(), 1);
    }

    #[test]
    fn other_writes_do_not_reset() {
        let (mut dev, evt) = new_device();
        // Another command on the command port.
        dev.write(COMMAND_OFFSET, &[0xad]);
        // The reset byte on the data port.
        dev.write(0, &[I8042_RESET_COMMAND]);
        // The reset byte as part of a wider access.
        dev.write(COMMAND_OFFSET, &[I8042_RESET_COMMAND, 0]);
        assert_no_reset(&evt);
    }
}
