//! 8250 UART on COM1.
//!
//! The register model is `vm_superio::Serial` (a 16550A with a 64-byte receive FIFO). This module
//! connects it to Hull: the interrupt line is an `EventFd` (registered by the VMM as an irqfd for
//! GSI 4), guest output goes to any writer (stdout or a log file, flushed after every byte), and host
//! input is held in a bounded buffer that refills the receive FIFO whenever the guest drains it.

use std::collections::VecDeque;
use std::io::Write;

use tracing::{debug, warn};
use vm_superio::serial::{Error as SerialError, NoEvents};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// Most host input bytes held at once (receive FIFO plus the overflow buffer). Input beyond this
/// is dropped with a warning instead of growing memory.
pub const MAX_BUFFERED_INPUT: usize = 4096;

/// Receiver buffer / transmitter holding register offset.
const DATA_OFFSET: u8 = 0;

/// Raises the serial interrupt by writing the irqfd.
struct EventFdTrigger(EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// The COM1 serial port (8 ports from `SERIAL_COM1_PORT`).
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
    /// Host input that did not fit in the receive FIFO yet.
    pending_input: VecDeque<u8>,
    /// Size of the receive FIFO (its free space when empty).
    fifo_size: usize,
    /// Set once an output write failed, so a broken sink is reported once, not per byte.
    output_failed: bool,
}

impl SerialDevice {
    /// Creates the port writing guest output to `out` (stdout, a log file...). `interrupt` is written whenever the UART raises its interrupt; the VMM
    /// registers it with KVM as the irqfd of `SERIAL_COM1_IRQ`.
    pub fn new(interrupt: EventFd, out: Box<dyn Write + Send>) -> Self {
        let serial = Serial::new(EventFdTrigger(interrupt), out);
        let fifo_size = serial.fifo_capacity();
        Self {
            serial,
            pending_input: VecDeque::new(),
            fifo_size,
            output_failed: false,
        }
    }

    /// The interrupt eventfd (to register as an irqfd).
    pub fn interrupt_evt(&self) -> &EventFd {
        &self.serial.interrupt_evt().0
    }

    /// Queues host input (stdin) for the guest. At most [`MAX_BUFFERED_INPUT`] bytes are held;
    /// the rest is dropped with a warning.
    pub fn enqueue_input(&mut self, bytes: &[u8]) {
        let in_fifo = self.fifo_size - self.serial.fifo_capacity();
        let room = MAX_BUFFERED_INPUT.saturating_sub(in_fifo + self.pending_input.len());
        let accepted = bytes.len().min(room);
        if accepted < bytes.len() {
            warn!(
                dropped = bytes.len() - accepted,
                limit = MAX_BUFFERED_INPUT,
                "serial input buffer full: dropping input"
            );
        }
        self.pending_input.extend(&bytes[..accepted]);
        self.move_pending_to_fifo();
    }

    /// Moves as much pending input as fits into the receive FIFO (raising the receive interrupt
    /// if the guest enabled it).
    fn move_pending_to_fifo(&mut self) {
        let count = self.serial.fifo_capacity().min(self.pending_input.len());
        if count == 0 {
            return;
        }
        let chunk = &self.pending_input.make_contiguous()[..count];
        match self.serial.enqueue_raw_bytes(chunk) {
            Ok(written) => {
                self.pending_input.drain(..written);
            }
            Err(SerialError::Trigger(e)) => {
                // The bytes are in the FIFO; only the interrupt was lost.
                warn!("serial: cannot raise the receive interrupt: {e}");
                self.pending_input.drain(..count);
            }
            Err(e) => warn!("serial: cannot queue input: {e}"),
        }
    }

    fn report_write_error(&mut self, error: SerialError<std::io::Error>) {
        match error {
            SerialError::IOError(e) if !self.output_failed => {
                self.output_failed = true;
                warn!("serial: guest output lost, the output sink failed: {e}");
            }
            SerialError::IOError(e) => debug!("serial: guest output lost: {e}"),
            other => warn!("serial: {other}"),
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (Ok(offset), [byte]) = (u8::try_from(offset), &mut *data) else {
            debug!(
                offset,
                len = data.len(),
                "serial: ignoring read that is not one byte"
            );
            data.fill(0);
            return;
        };
        *byte = self.serial.read(offset);
        if offset == DATA_OFFSET && self.serial.fifo_capacity() == self.fifo_size {
            self.move_pending_to_fifo();
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Ok(offset), [value]) = (u8::try_from(offset), data) else {
            debug!(
                offset,
                len = data.len(),
                "serial: ignoring write that is not one byte"
            );
            return;
        };
        if let Err(e) = self.serial.write(offset, *value) {
            self.report_write_error(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    const IER: u64 = 1;
    const LSR: u64 = 5;
    const IER_RECEIVED_DATA: u8 = 0x01;
    const LSR_DATA_READY: u8 = 0x01;
    const LSR_THR_EMPTY: u8 = 0x20;

    /// A writer whose bytes the test can inspect.
    #[derive(Clone, Default)]
    struct SharedOutput(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedOutput {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer that always fails, like a closed pipe.
    struct BrokenOutput;

    impl Write for BrokenOutput {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    fn new_serial() -> (SerialDevice, SharedOutput, EventFd) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = SharedOutput::default();
        let dev = SerialDevice::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        (dev, out, irq)
    }

    fn read_byte(dev: &mut SerialDevice, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    /// Reads the receive buffer until LSR says no data is ready.
    fn drain_input(dev: &mut SerialDevice) -> Vec<u8> {
        let mut got = Vec::new();
        while read_byte(dev, LSR) & LSR_DATA_READY != 0 {
            got.push(read_byte(dev, 0));
        }
        got
    }

    #[test]
    fn output_written_byte_by_byte_reaches_the_writer() {
        let (mut dev, out, _irq) = new_serial();
        for b in b"hello hull\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello hull\n");
    }

    #[test]
    fn line_status_reports_transmitter_empty() {
        let (mut dev, _out, _irq) = new_serial();
        let lsr = read_byte(&mut dev, LSR);
        assert_ne!(lsr & LSR_THR_EMPTY, 0);
        assert_eq!(lsr & LSR_DATA_READY, 0);
    }

    #[test]
    fn input_is_readable_and_raises_irq_when_enabled() {
        let (mut dev, _out, irq) = new_serial();
        // Interrupts disabled: input is buffered but no interrupt.
        dev.enqueue_input(b"a");
        assert_eq!(irq.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(drain_input(&mut dev), b"a");

        dev.write(IER, &[IER_RECEIVED_DATA]);
        dev.enqueue_input(b"ls\n");
        assert_eq!(irq.read().unwrap(), 1);
        assert_ne!(read_byte(&mut dev, LSR) & LSR_DATA_READY, 0);
        assert_eq!(drain_input(&mut dev), b"ls\n");
        assert_eq!(read_byte(&mut dev, LSR) & LSR_DATA_READY, 0);
    }

    #[test]
    fn input_larger_than_fifo_is_delivered_in_order() {
        let (mut dev, _out, irq) = new_serial();
        dev.write(IER, &[IER_RECEIVED_DATA]);
        let input: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        dev.enqueue_input(&input);
        assert_eq!(drain_input(&mut dev), input);
        // The FIFO was refilled several times, each refill raising the interrupt again.
        assert!(irq.read().unwrap() > 1);
    }

    #[test]
    fn input_beyond_the_limit_is_dropped() {
        let (mut dev, _out, _irq) = new_serial();
        let input = vec![b'x'; MAX_BUFFERED_INPUT + 500];
        dev.enqueue_input(&input);
        dev.enqueue_input(b"more");
        assert_eq!(drain_input(&mut dev).len(), MAX_BUFFERED_INPUT);
        // Once drained there is room again.
        dev.enqueue_input(b"ok");
        assert_eq!(drain_input(&mut dev), b"ok");
    }

    #[test]
    fn wrong_sized_accesses_are_ignored() {
        let (mut dev, out, _irq) = new_serial();
        dev.write(0, b"ab");
        assert!(out.0.lock().unwrap().is_empty());
        let mut two = [0xffu8; 2];
        dev.read(LSR, &mut two);
        assert_eq!(two, [0, 0]);
    }

    #[test]
    fn broken_output_does_not_stop_the_device() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq, Box::new(BrokenOutput));
        dev.write(0, b"a");
        dev.write(0, b"b");
        assert!(dev.output_failed);
        assert_ne!(read_byte(&mut dev, LSR) & LSR_THR_EMPTY, 0);
    }
}
