//! i8042 controller: only the CPU reset line.
