//! hull-vmm's virtio-mmio transport (vmm/src/virtio/mmio.rs): register reads and writes of any
//! offset, width and value, in any order, against the real virtio-net device (over an in-memory
//! tap) or a small device whose queue count, queue sizes (including invalid ones) and features
//! come from the input. Queue addresses written by the driver point anywhere; DRIVER_OK then
//! validates them against guest memory before activating the device.
//!
//! Properties: no panic; the status only holds states of the init sequence (plus FAILED /
//! DEVICE_NEEDS_RESET); the device is active only with DRIVER_OK set (or after a reset it
//! refused); the acked features are a
//! subset of the offered ones; identity registers never change.
#![no_main]

#[path = "../common/guest.rs"]
mod guest;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use guest::Input;
use hull_vmm::devices::bus::BusDevice;
use hull_vmm::virtio::mmio::{MmioTransport, MMIO_MAGIC_VALUE};
use hull_vmm::virtio::net::{MacAddr, Net, NetConfig, TapIo, TapSource};
use hull_vmm::virtio::status::{
    ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK,
};
use hull_vmm::virtio::{ActivateError, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

/// A tap with nothing to read that swallows every frame.
struct NullTap;

impl AsRawFd for NullTap {
    fn as_raw_fd(&self) -> RawFd {
        -1
    }
}

impl TapIo for NullTap {
    fn read_frame(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        Ok(frame.len())
    }
    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

/// A device shaped by the input.
struct FuzzDevice {
    sizes: Vec<u16>,
    features: u64,
    acked: u64,
    config: [u8; 16],
    events: Vec<EventFd>,
    active: bool,
    reset_ok: bool,
    activate_ok: bool,
}

impl VirtioDevice for FuzzDevice {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn avail_features(&self) -> u64 {
        self.features
    }
    fn set_acked_features(&mut self, features: u64) {
        assert_eq!(
            features & !self.features,
            0,
            "transport acked a feature not offered"
        );
        self.acked = features;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|at| self.config.get(usize::try_from(at).ok()?))
                .copied()
                .unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            if let Some(slot) = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| self.config.get_mut(at))
            {
                *slot = b;
            }
        }
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.events
    }
    fn activate(
        &mut self,
        mem: hull_vmm::memory::GuestMemory,
        _irq: IrqTrigger,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        assert!(!self.active, "activated twice without a reset");
        assert_eq!(queues.len(), self.sizes.len());
        for q in &queues {
            if q.ready() {
                assert!(
                    q.is_valid(&mem),
                    "transport activated with a queue outside memory"
                );
            }
        }
        if !self.activate_ok {
            return Err(ActivateError::Backend("refused by the fuzz device".into()));
        }
        self.active = true;
        Ok(())
    }
    fn reset(&mut self) -> bool {
        if self.reset_ok {
            self.active = false;
            self.acked = 0;
        }
        self.reset_ok
    }
}

fn queue_size(input: &mut Input) -> u16 {
    match input.u8() % 8 {
        0 => 0,
        1 => input.u16(),
        2 => 3,
        3 => 32768,
        _ => 1 << (input.u8() % 9),
    }
}

/// A register offset: mostly the aligned registers and the start of config space.
fn offset(input: &mut Input) -> u64 {
    match input.u8() % 8 {
        0 => input.u64(),
        1 => u64::from(input.u16()),
        2 => 0x100 + u64::from(input.u8() % 32),
        _ => u64::from(input.u8() % 0x40) * 4,
    }
}

fn is_init_state(status: u32) -> bool {
    let s = status & !(FAILED | DEVICE_NEEDS_RESET);
    [
        0,
        ACKNOWLEDGE,
        ACKNOWLEDGE | DRIVER,
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    ]
    .contains(&s)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = guest::new_mem();
    let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let fuzz_device;
    let device: Arc<Mutex<dyn VirtioDevice>> = if input.bool() {
        let config = NetConfig {
            tap: TapSource::Fd(-1),
            mac: input.bool().then(|| MacAddr([2, 0, 0, 0, 0, input.u8()])),
            mtu: input.bool().then(|| input.u16()),
        };
        fuzz_device = None;
        Arc::new(Mutex::new(
            Net::with_tap(&config, Box::new(NullTap)).unwrap(),
        ))
    } else {
        let count = usize::from(input.u8() % 4);
        let sizes: Vec<u16> = (0..count).map(|_| queue_size(&mut input)).collect();
        let events = (0..count)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        let features = match input.u8() % 4 {
            0 => input.u64(),
            _ => VIRTIO_F_VERSION_1 | u64::from(input.u32()),
        };
        let d = Arc::new(Mutex::new(FuzzDevice {
            sizes,
            features,
            acked: 0,
            config: [0; 16],
            events,
            active: false,
            reset_ok: input.u8() != 0,
            activate_ok: input.u8() != 0,
        }));
        fuzz_device = Some(d.clone());
        d
    };
    let offered = device.lock().unwrap().avail_features();
    let mut t = MmioTransport::new(mem, device, irq);

    for _ in 0..256 {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let off = offset(&mut input);
        let width = [4usize, 4, 4, 1, 2, 8, 0, 3][usize::from(op >> 5)];
        if op & 1 == 0 {
            let mut buf = vec![0u8; width];
            t.read(off, &mut buf);
        } else {
            let value = match op & 6 {
                0 => input.u64(),
                2 => u64::from(input.u8()),
                _ => u64::from(1u32 << (input.u8() % 32)) | u64::from(t.status()),
            };
            t.write(off, &value.to_le_bytes()[..width]);
        }

        let status = t.status();
        assert!(is_init_state(status), "status {status:#x}");
        if t.is_activated() {
            // Active: DRIVER_OK, or a reset the device refused (DEVICE_NEEDS_RESET).
            assert!(
                status & (DRIVER_OK | DEVICE_NEEDS_RESET) != 0,
                "status {status:#x}"
            );
        }
        let mut magic = [0u8; 4];
        t.read(0, &mut magic);
        assert_eq!(u32::from_le_bytes(magic), MMIO_MAGIC_VALUE);
        if let Some(d) = &fuzz_device {
            let d = d.lock().unwrap();
            assert_eq!(d.acked & !offered, 0);
            if d.active {
                assert!(t.is_activated());
            }
        }
    }
});
