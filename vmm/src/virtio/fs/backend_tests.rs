//! Tests of the vhost-user front-end against a real virtiofsd.
//!
//! Each test starts its own virtiofsd on a temporary socket and shared directory, builds split
//! virtqueues by hand in real guest RAM (a memfd, as the VMM uses), activates the device and
//! exchanges FUSE messages with virtiofsd: that exercises the memory table, the vring addresses,
//! the kick eventfds and the call eventfds (forwarded as interrupts by the event loop) end to end.
//!
//! Without a virtiofsd binary (`cargo install virtiofsd --locked`) these tests print SKIPPED on
//! stderr and return; with `HULL_REQUIRE_VIRTIOFSD=1` they fail instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::memory::{create_guest_ram, GuestRam};
use hull_runtime::sandbox::virtiofsd::{find_virtiofsd, virtiofsd_command};

pub(crate) const FUSE_LOOKUP: u32 = 1;
const FUSE_INIT: u32 = 26;
pub(crate) const FUSE_ROOT_ID: u64 = 1;
const FUSE_IN_HEADER_LEN: usize = 40;
const FUSE_OUT_HEADER_LEN: usize = 16;

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

const QUEUE_SIZE: u16 = 256;
const HIPRIO_QUEUE: usize = 0;
const REQUEST_QUEUE: usize = 1;
/// Guest addresses of the test's buffers (rings are placed at 1 MiB + 64 KiB per queue).
const RINGS_BASE: u64 = 0x10_0000;
const REQUEST_ADDR: u64 = 0x20_0000;
const REPLY_ADDR: u64 = 0x21_0000;
const REPLY_LEN: u32 = 0x2000;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("hull-fs-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("shared")).expect("create temp dir");
        Self(path)
    }

    fn shared(&self) -> PathBuf {
        self.0.join("shared")
    }

    fn socket(&self) -> PathBuf {
        self.0.join("virtiofsd.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A virtiofsd process owned by a test (killed on drop), with its log in the temp dir.
pub(crate) struct Virtiofsd {
    child: Child,
    dir: TempDir,
}

/// How the test starts virtiofsd.
pub(crate) enum Sandbox {
    /// `--sandbox none --cache never`: the plain daemon.
    None,
    /// [`virtiofsd_command`]: the production flags, namespace sandbox included.
    Production,
}

impl Virtiofsd {
    /// Starts virtiofsd, or returns `None` after printing why the test is skipped.
    pub(crate) fn start(name: &str, sandbox: Sandbox) -> Option<Self> {
        let Some(binary) = find_virtiofsd() else {
            if std::env::var_os("HULL_REQUIRE_VIRTIOFSD").is_some_and(|v| v == "1") {
                panic!("virtiofsd is not installed and HULL_REQUIRE_VIRTIOFSD=1");
            }
            // Written to the real stderr (not the captured test output) so the skip is visible.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED virtio::fs::{name}: virtiofsd not found (cargo install virtiofsd --locked, \
                 or set HULL_VIRTIOFSD)"
            );
            return None;
        };
        let dir = TempDir::new(name);
        std::fs::write(dir.shared().join("hello.txt"), b"hello from the host\n").unwrap();
        let mut command = match sandbox {
            Sandbox::None => {
                let mut c = Command::new(&binary);
                c.arg("--socket-path")
                    .arg(dir.socket())
                    .arg("--shared-dir")
                    .arg(dir.shared())
                    .args(["--sandbox", "none", "--cache", "never"]);
                c
            }
            Sandbox::Production => virtiofsd_command(&dir.shared(), &dir.socket()),
        };
        let log = std::fs::File::create(dir.0.join("virtiofsd.log")).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Some(Self { child, dir })
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.socket()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("virtiofsd.log")).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One split virtqueue built by hand in guest memory, driven the way a guest driver would.
struct TestRing {
    index: usize,
    base: u64,
    next_avail: u16,
}

impl TestRing {
    fn new(index: usize) -> Self {
        Self {
            index,
            base: RINGS_BASE + index as u64 * 0x1_0000,
            next_avail: 0,
        }
    }

    fn desc_table(&self) -> u64 {
        self.base
    }

    fn avail_ring(&self) -> u64 {
        self.base + 16 * u64::from(QUEUE_SIZE)
    }

    fn used_ring(&self) -> u64 {
        (self.avail_ring() + 6 + 2 * u64::from(QUEUE_SIZE) + 3) & !3
    }

    /// The queue as the transport hands it to the device.
    fn queue(&self) -> Queue {
        let mut q = Queue::new(QUEUE_SIZE).unwrap();
        q.try_set_size(QUEUE_SIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(self.desc_table()))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail_ring()))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used_ring()))
            .unwrap();
        q.set_ready(true);
        q
    }

    fn write_desc(&self, mem: &GuestMemory, slot: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc_table() + 16 * u64::from(slot);
        mem.write_obj(addr, GuestAddress(at)).unwrap();
        mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Makes a two-descriptor chain (device-readable request, device-writable reply) available.
    /// Returns the chain's head index.
    fn push(&mut self, mem: &GuestMemory, request: (u64, u32), reply: (u64, u32)) -> u16 {
        let head = (self.next_avail * 2) % QUEUE_SIZE;
        self.write_desc(mem, head, request.0, request.1, VRING_DESC_F_NEXT, head + 1);
        self.write_desc(mem, head + 1, reply.0, reply.1, VRING_DESC_F_WRITE, 0);
        let slot = self.avail_ring() + 4 + 2 * u64::from(self.next_avail % QUEUE_SIZE);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        std::sync::atomic::fence(Ordering::SeqCst);
        self.next_avail = self.next_avail.wrapping_add(1);
        mem.write_obj(self.next_avail, GuestAddress(self.avail_ring() + 2))
            .unwrap();
        head
    }

    fn used_idx(&self, mem: &GuestMemory) -> u16 {
        mem.read_obj(GuestAddress(self.used_ring() + 2)).unwrap()
    }

    /// (id, len) of used element `n`.
    fn used_elem(&self, mem: &GuestMemory, n: u16) -> (u32, u32) {
        let at = self.used_ring() + 4 + 8 * u64::from(n % QUEUE_SIZE);
        (
            mem.read_obj(GuestAddress(at)).unwrap(),
            mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }
}

/// A FUSE request: fuse_in_header (len, opcode, unique, nodeid, uid, gid, pid, extlen, pad) + body.
pub(crate) fn fuse_request(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(FUSE_IN_HEADER_LEN + body.len());
    msg.extend_from_slice(&((FUSE_IN_HEADER_LEN + body.len()) as u32).to_le_bytes());
    msg.extend_from_slice(&opcode.to_le_bytes());
    msg.extend_from_slice(&unique.to_le_bytes());
    msg.extend_from_slice(&nodeid.to_le_bytes());
    msg.extend_from_slice(&[0u8; 16]); // uid, gid, pid, total_extlen, padding
    msg.extend_from_slice(body);
    msg
}

/// fuse_init_in for protocol 7.31 with no flags.
fn fuse_init_body() -> Vec<u8> {
    let mut body = Vec::new();
    for v in [7u32, 31, 0x2_0000, 0] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
}

pub(crate) fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().unwrap())
}

type FsSubscriber = Arc<Mutex<VhostUserFs>>;

/// A connected, not yet activated device.
pub(crate) struct PreparedFs {
    device: FsSubscriber,
    events: EventManager<FsSubscriber>,
    ram: GuestRam,
    irq: IrqTrigger,
}

/// An activated device, its event loop and the guest side of its queues.
pub(crate) struct ActiveFs {
    ram: GuestRam,
    pub(crate) device: FsSubscriber,
    events: EventManager<FsSubscriber>,
    irq: IrqTrigger,
    rings: Vec<TestRing>,
}

impl ActiveFs {
    /// Connects to `socket`, puts the device in an event loop and activates it with both queues.
    fn start(socket: &Path) -> Self {
        Self::activate(Self::prepare(socket))
    }

    /// The VMM's set-up half: connect, event loop, guest RAM (the seccomp tests filter only the rest).
    pub(crate) fn prepare(socket: &Path) -> PreparedFs {
        let cfg = FsConfig {
            tag: "hullfs".into(),
            socket: socket.to_path_buf(),
            num_request_queues: 1,
            queue_size: QUEUE_SIZE,
        };
        let device = Arc::new(Mutex::new(
            VhostUserFs::new(cfg).expect("connect to virtiofsd"),
        ));
        let mut events = EventManager::<FsSubscriber>::new().unwrap();
        events.add_subscriber(device.clone());
        let ram = create_guest_ram(64).unwrap();
        let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        PreparedFs {
            device,
            events,
            ram,
            irq,
        }
    }

    /// The driver's DRIVER_OK (a vCPU thread in hull-vmm): features and activation.
    pub(crate) fn activate(prepared: PreparedFs) -> Self {
        let PreparedFs {
            device,
            events,
            ram,
            irq,
        } = prepared;
        let rings = vec![TestRing::new(HIPRIO_QUEUE), TestRing::new(REQUEST_QUEUE)];
        {
            let mut dev = device.lock().unwrap();
            let features = dev.avail_features();
            dev.set_acked_features(
                features & (VIRTIO_F_VERSION_1 | (1 << VIRTIO_RING_F_INDIRECT_DESC)),
            );
            dev.activate(
                ram.memory.clone(),
                irq.clone(),
                rings.iter().map(TestRing::queue).collect(),
            )
            .expect("activate against virtiofsd");
        }
        Self {
            ram,
            device,
            events,
            irq,
            rings,
        }
    }

    /// Activates the device again (after a reset) on zeroed rings.
    pub(crate) fn reactivate(&mut self) {
        let ring_bytes = vec![0u8; 0x1_0000 * self.rings.len()];
        self.ram
            .memory
            .write_slice(&ring_bytes, GuestAddress(RINGS_BASE))
            .unwrap();
        for ring in &mut self.rings {
            ring.next_avail = 0;
        }
        let mut dev = self.device.lock().unwrap();
        dev.set_acked_features(VIRTIO_F_VERSION_1);
        let queues = self.rings.iter().map(TestRing::queue).collect();
        dev.activate(self.ram.memory.clone(), self.irq.clone(), queues)
            .expect("re-activate against virtiofsd");
    }

    /// Sends one FUSE request on the request queue, kicks, waits for the interrupt the device
    /// forwards from the call eventfd, and returns the reply from the used ring.
    pub(crate) fn exchange(&mut self, request: &[u8]) -> Vec<u8> {
        let mem = &self.ram.memory;
        mem.write_slice(request, GuestAddress(REQUEST_ADDR))
            .unwrap();
        mem.write_slice(&vec![0u8; REPLY_LEN as usize], GuestAddress(REPLY_ADDR))
            .unwrap();
        let ring = &mut self.rings[REQUEST_QUEUE];
        let used_before = ring.used_idx(mem);
        let head = ring.push(
            mem,
            (REQUEST_ADDR, request.len() as u32),
            (REPLY_ADDR, REPLY_LEN),
        );
        let kick = ring.index;
        self.irq.ack(INT_VRING);
        self.device.lock().unwrap().queue_events()[kick]
            .write(1)
            .unwrap();

        let deadline = Instant::now() + Duration::from_secs(10);
        while self.irq.status() & INT_VRING == 0 {
            assert!(
                Instant::now() < deadline,
                "no interrupt from virtiofsd within 10 s"
            );
            self.events.run_with_timeout(50).unwrap();
        }
        assert!(
            self.irq.irqfd().read().unwrap() >= 1,
            "the irqfd was signalled"
        );
        let ring = &self.rings[REQUEST_QUEUE];
        assert_eq!(
            ring.used_idx(mem),
            used_before.wrapping_add(1),
            "one request completed"
        );
        let (id, len) = ring.used_elem(mem, used_before);
        assert_eq!(id, u32::from(head), "the used element is our chain");
        assert!(
            len as usize >= FUSE_OUT_HEADER_LEN && len <= REPLY_LEN,
            "reply length {len}"
        );
        let mut reply = vec![0u8; len as usize];
        mem.read_slice(&mut reply, GuestAddress(REPLY_ADDR))
            .unwrap();
        reply
    }

    pub(crate) fn fuse_init(&mut self) {
        let reply = self.exchange(&fuse_request(FUSE_INIT, 1, 0, &fuse_init_body()));
        assert_eq!(
            u32_at(&reply, 0) as usize,
            reply.len(),
            "fuse_out_header.len = used length"
        );
        assert_eq!(u32_at(&reply, 4), 0, "FUSE_INIT error");
        assert_eq!(u64_at(&reply, 8), 1, "FUSE_INIT unique");
        assert_eq!(u32_at(&reply, 16), 7, "FUSE major version");
        assert!(u32_at(&reply, 20) >= 31, "FUSE minor version");
    }
}

#[test]
fn fuse_init_round_trip_through_virtiofsd() {
    let Some(mut virtiofsd) = Virtiofsd::start("fuse_init", Sandbox::None) else {
        return;
    };
    let mut fs = ActiveFs::start(&virtiofsd.socket());
    {
        let dev = fs.device.lock().unwrap();
        assert_eq!(dev.device_type(), 26);
        assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
        assert_ne!(dev.avail_features() & VIRTIO_F_VERSION_1, 0);
        assert_eq!(dev.avail_features() & !SUPPORTED_FEATURES, 0);
        let mut tag = [0u8; 8];
        dev.read_config(0, &mut tag);
        assert_eq!(&tag, b"hullfs\0\0");
        let mut queues = [0u8; 4];
        dev.read_config(36, &mut queues);
        assert_eq!(u32::from_le_bytes(queues), 1);
        let mut past_end = [0xffu8; 4];
        dev.read_config(u64::MAX, &mut past_end);
        assert_eq!(past_end, [0; 4]);
    }
    fs.fuse_init();
    // A second request on the same ring: the back-end keeps following our avail index.
    let reply = fs.exchange(&fuse_request(FUSE_LOOKUP, 2, FUSE_ROOT_ID, b"hello.txt\0"));
    assert_eq!(u32_at(&reply, 4), 0, "LOOKUP error");
    assert_eq!(u64_at(&reply, 8), 2, "LOOKUP unique");
    // fuse_entry_out: nodeid, generation, entry_valid, attr_valid, 2 x nsec, then fuse_attr
    // (ino, size, ...): the size is the host file's.
    assert_ne!(u64_at(&reply, 16), 0, "nodeid");
    assert_eq!(u64_at(&reply, 16 + 40 + 8), 20, "size of hello.txt");
    assert!(
        virtiofsd.is_running(),
        "virtiofsd died: {}",
        virtiofsd.log()
    );

    // Device reset stops the rings; virtiofsd stays up and the device can start again on fresh
    // rings (a driver reset and re-probe), where requests flow again.
    assert!(fs.device.lock().unwrap().reset());
    assert!(
        virtiofsd.is_running(),
        "virtiofsd died at reset: {}",
        virtiofsd.log()
    );
    fs.reactivate();
    let reply = fs.exchange(&fuse_request(FUSE_LOOKUP, 3, FUSE_ROOT_ID, b"hello.txt\0"));
    assert_eq!(u32_at(&reply, 4), 0, "LOOKUP error after re-activation");
    assert_eq!(u64_at(&reply, 16 + 40 + 8), 20, "size of hello.txt");
    assert!(
        virtiofsd.is_running(),
        "virtiofsd died: {}",
        virtiofsd.log()
    );
}

#[test]
fn production_command_serves_the_shared_dir() {
    let Some(mut virtiofsd) = Virtiofsd::start("production", Sandbox::Production) else {
        return;
    };
    let mut fs = ActiveFs::start(&virtiofsd.socket());
    fs.fuse_init();
    let reply = fs.exchange(&fuse_request(FUSE_LOOKUP, 2, FUSE_ROOT_ID, b"hello.txt\0"));
    assert_eq!(u32_at(&reply, 4), 0, "LOOKUP error");
    assert_eq!(u64_at(&reply, 16 + 40 + 8), 20, "size of hello.txt");
    let reply = fs.exchange(&fuse_request(FUSE_LOOKUP, 3, FUSE_ROOT_ID, b"missing\0"));
    assert_eq!(
        u32_at(&reply, 4) as i32,
        -libc::ENOENT,
        "LOOKUP of a missing file"
    );
    assert!(
        virtiofsd.is_running(),
        "virtiofsd died: {}",
        virtiofsd.log()
    );
}

#[test]
fn too_many_request_queues_are_refused_by_name() {
    let Some(virtiofsd) = Virtiofsd::start("queues", Sandbox::None) else {
        return;
    };
    let cfg: FsConfig = format!("tag=t,socket={},queues=2", virtiofsd.socket().display())
        .parse()
        .unwrap();
    match VhostUserFs::new(cfg) {
        Err(FsError::TooFewQueues {
            wanted: 3, offered, ..
        }) => assert!(offered < 3),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("virtiofsd serves one request queue; 2 must be refused"),
    }
}

/// A log sink for one test thread.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn backend_death_is_logged_and_the_device_survives() {
    let Some(mut virtiofsd) = Virtiofsd::start("death", Sandbox::None) else {
        return;
    };
    let logs = LogBuffer::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let socket = virtiofsd.socket();
    tracing::subscriber::with_default(subscriber, || {
        let mut fs = ActiveFs::start(&socket);
        fs.fuse_init();

        virtiofsd.child.kill().unwrap();
        virtiofsd.child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fs.device.lock().unwrap().backend_gone() {
            assert!(Instant::now() < deadline, "hang-up not noticed within 5 s");
            fs.events.run_with_timeout(50).unwrap();
        }
        // The socket is no longer watched: the loop goes quiet instead of spinning on EPOLLHUP.
        assert_eq!(fs.events.run_with_timeout(100).unwrap(), 0);

        // A guest kick after the death neither panics nor raises an interrupt.
        fs.irq.ack(INT_VRING);
        fs.device.lock().unwrap().queue_events()[REQUEST_QUEUE]
            .write(1)
            .unwrap();
        fs.events.run_with_timeout(100).unwrap();
        assert_eq!(fs.irq.status() & INT_VRING, 0);

        // Reset and re-activation fail cleanly (the transport then sets DEVICE_NEEDS_RESET).
        let mut dev = fs.device.lock().unwrap();
        assert!(!dev.reset());
        let irq = IrqTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let queues = fs.rings.iter().map(TestRing::queue).collect();
        match dev.activate(fs.ram.memory.clone(), irq, queues) {
            Err(ActivateError::Backend(msg)) => assert!(msg.contains("hung up"), "{msg}"),
            other => panic!("activation after the death: {other:?}"),
        }
    });
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let hang_up = logs
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("hung up"))
        .unwrap_or_else(|| panic!("no ERROR line about the hang-up in:\n{logs}"));
    assert!(
        hang_up.contains(&socket.display().to_string()),
        "the line names the socket: {hang_up}"
    );
}

#[test]
fn missing_backend_fails_after_the_retry_window() {
    let dir = TempDir::new("missing");
    let cfg = FsConfig::new("hullfs", dir.socket()).unwrap();
    let start = Instant::now();
    let err = match VhostUserFs::with_connect_timeout(cfg, Duration::from_millis(300)) {
        Err(e) => e,
        Ok(_) => panic!("connected to a socket that does not exist"),
    };
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "it retried for the whole window"
    );
    assert!(matches!(err, FsError::Connect { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&dir.socket().display().to_string()),
        "{err}"
    );
}

#[test]
fn connect_waits_for_a_slow_backend() {
    let dir = TempDir::new("slow");
    let socket = dir.socket();
    let listener_path = socket.clone();
    // A back-end that binds its socket only after 300 ms, then answers GET_FEATURES etc. badly
    // (it closes): connect must have waited for it and then report the protocol failure.
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let listener = std::os::unix::net::UnixListener::bind(&listener_path).unwrap();
        let (stream, _) = listener.accept().unwrap();
        drop(stream);
    });
    let cfg = FsConfig::new("hullfs", &socket).unwrap();
    let err = match VhostUserFs::with_connect_timeout(cfg, Duration::from_secs(5)) {
        Err(e) => e,
        Ok(_) => panic!("a back-end that hangs up cannot be negotiated with"),
    };
    server.join().unwrap();
    assert!(
        matches!(err, FsError::Request { .. }),
        "connected, then the first request failed: {err}"
    );
}

/// Runs `f` on a thread of its own whose file-system uid and gid are 65534 (nobody): setfsuid
/// to a non-zero uid also drops that thread's CAP_DAC_OVERRIDE, so it meets permission checks a
/// root test process would skip, as the jailed VMM does. Raw system calls: glibc's wrappers
/// would change every thread.
fn as_nobody<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        // SAFETY: setfsgid/setfsuid only change this thread's credentials.
        unsafe {
            libc::syscall(libc::SYS_setfsgid, 65534);
            libc::syscall(libc::SYS_setfsuid, 65534);
        }
        f()
    })
}

#[test]
fn connect_waits_until_the_socket_is_handed_over() {
    // The shim starts virtiofsd and the jailed VMM together and chowns virtiofsd's socket to the
    // jail user once it is there: until then the VMM's connect is refused (EACCES).
    let dir = TempDir::new("handover");
    let socket = dir.socket();
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let path = socket.clone();
    let start = Instant::now();
    let client = as_nobody(move || vhost_user::connect_with_retry(&path, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(300));
    std::os::unix::fs::chown(&socket, Some(65534), Some(65534)).unwrap();
    // The connection completes in the listen backlog; accept only once it did.
    let connected = client.join().unwrap();
    assert!(connected.is_ok(), "{:?}", connected.err());
    assert!(start.elapsed() >= Duration::from_millis(300));
    listener.set_nonblocking(true).unwrap();
    listener.accept().expect("the connection is queued");

    // Never handed over: the error after the window says so and names the socket.
    let other = dir.0.join("never.sock");
    let _never = std::os::unix::net::UnixListener::bind(&other).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let path = other.clone();
    let err = as_nobody(move || vhost_user::connect_with_retry(&path, Duration::from_millis(200)))
        .join()
        .unwrap()
        .expect_err("a socket we may not use");
    let text = err.to_string();
    assert!(text.contains(&other.display().to_string()), "{text}");
    assert!(
        matches!(&err, FsError::Connect { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
        "{text}"
    );
}
