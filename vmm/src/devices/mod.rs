//! Legacy and platform devices: the I/O and MMIO buses, the 8250 serial port, the i8042 reset line
//! and the boot-time marker.

pub mod boot_marker;
pub mod bus;
pub mod i8042;
pub mod serial;
