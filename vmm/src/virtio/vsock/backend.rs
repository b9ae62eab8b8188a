//! The hybrid back-end: maps guest vsock connections to host Unix streams.
//!
//! - Host-initiated: clients connect to the listener at `uds_path` and send `CONNECT <port>\n`;
//!   the guest gets a REQUEST from a freshly allocated host port, and its RESPONSE makes the
//!   back-end answer the client `OK <host port>\n`.
//! - Guest-initiated: a REQUEST to the host on port P connects to `<uds_path>_P`.
//!
//! The back-end never touches the event loop directly: file descriptors to watch, re-watch or
//! close are queued in `fd_changes` and applied by the device with the event loop's `EventOps`
//! ([`Backend::apply_fd_changes`]). A stream is closed only after it left the epoll set.
//! Connection streams are watched edge-triggered; the readiness flags live in
//! [`Connection`], so a stream the guest cannot take data from (no credit, no rx buffer) is simply
//! not read, without waking the loop again.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events};
use tracing::{debug, error, info, warn};
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{ConnKey, Connection, Finish, GuestAction, State};
use super::host_socket::{connect_nonblocking, port_path, PendingClient};
use super::log_limit::GuestLogLimit;
use super::packet::{op, op_name, Header, HEADER_SIZE, HOST_CID, MAX_PACKET_DATA, TYPE_STREAM};

/// Most connections (including clients still sending their CONNECT line) at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// When this many packets not tied to a live connection (RSTs) wait for the guest, the device
/// stops taking guest tx packets until the guest has received some.
pub const MAX_CONTROL_BACKLOG: usize = 256;

/// First host port handed out to host-initiated connections.
pub const FIRST_HOST_PORT: u32 = 1 << 30;

/// Most clients accepted per listener wake-up (the listener is level-triggered).
const ACCEPTS_PER_WAKEUP: usize = 64;

/// Event-loop token of host streams (pending clients and connections).
pub const TOKEN_STREAM: u32 = 100;

/// Events watched on a connection's stream (edge-triggered).
fn connection_events() -> EventSet {
    EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED
}

/// A change to the event loop's watch list, applied by [`Backend::apply_fd_changes`].
#[derive(Debug)]
enum FdChange {
    Add { fd: RawFd, events: EventSet },
    Modify { fd: RawFd, events: EventSet },
    Remove(UnixStream),
}

/// Who owns a watched stream.
#[derive(Clone, Copy, Debug)]
enum FdOwner {
    Pending,
    Conn(ConnKey),
}

#[derive(Debug)]
struct ConnEntry {
    conn: Connection,
    stream: UnixStream,
    queued: bool,
}

/// Host side of the vsock device.
#[derive(Debug)]
pub struct Backend {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    handshake_timeout: Duration,
    timer: TimerFd,
    timer_armed: bool,

    conns: HashMap<ConnKey, ConnEntry>,
    pending: HashMap<RawFd, PendingClient>,
    fd_owner: HashMap<RawFd, FdOwner>,
    next_host_port: u32,

    rx_ready: VecDeque<ConnKey>,
    control_backlog: VecDeque<Header>,
    fd_changes: Vec<FdChange>,
    scratch: Vec<u8>,
    guest_log: GuestLogLimit,
}

impl Backend {
    /// A back-end serving `listener` (already bound at `uds_path`, set non-blocking here).
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        listener: UnixListener,
        handshake_timeout: Duration,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let timer = TimerFd::new().map_err(io::Error::from)?;
        set_nonblocking(timer.as_raw_fd())?;
        Ok(Backend {
            guest_cid,
            uds_path,
            listener,
            handshake_timeout,
            timer,
            timer_armed: false,
            conns: HashMap::new(),
            pending: HashMap::new(),
            fd_owner: HashMap::new(),
            next_host_port: FIRST_HOST_PORT,
            rx_ready: VecDeque::new(),
            control_backlog: VecDeque::new(),
            fd_changes: Vec::new(),
            scratch: vec![0u8; MAX_PACKET_DATA as usize],
            guest_log: GuestLogLimit::default(),
        })
    }

    /// The Unix listener (to register with the event loop).
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// The handshake timer (to register with the event loop).
    pub fn timer(&self) -> &TimerFd {
        &self.timer
    }

    /// The socket path clients connect to.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Changes how long a client may take to send its CONNECT line, and the guest to answer.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// Number of live connections (not counting clients still sending their CONNECT line).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Bytes of guest data buffered for the host streams, over all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.conns.values().map(|e| e.conn.pending_len()).sum()
    }

    /// Records a guest mistake; true if it should be logged (see [`GuestLogLimit`]).
    pub fn note_guest_error(&mut self) -> bool {
        self.guest_log.allow()
    }

    /// Whether guest tx processing should pause until the guest received queued RSTs.
    pub fn backlog_full(&self) -> bool {
        self.control_backlog.len() >= MAX_CONTROL_BACKLOG
    }

    /// Whether a packet for the guest may be ready.
    pub fn has_rx_work(&self) -> bool {
        !self.control_backlog.is_empty() || !self.rx_ready.is_empty()
    }

    // ----- host side events -----

    /// The listener is readable: accept clients.
    pub fn accept_clients(&mut self) {
        for _ in 0..ACCEPTS_PER_WAKEUP {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("vsock: accept on {} failed: {e}", self.uds_path.display());
                    return;
                }
            };
            if self.conns.len() + self.pending.len() >= MAX_CONNECTIONS {
                warn!("vsock: refusing host client: already {MAX_CONNECTIONS} connections");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn!("vsock: cannot make host client non-blocking: {e}");
                continue;
            }
            let fd = stream.as_raw_fd();
            let deadline = Instant::now() + self.handshake_timeout;
            self.pending
                .insert(fd, PendingClient::new(stream, deadline));
            self.fd_owner.insert(fd, FdOwner::Pending);
            self.fd_changes.push(FdChange::Add {
                fd,
                events: EventSet::IN,
            });
            self.arm_timer();
        }
    }

    /// A watched host stream reported `events`.
    pub fn handle_stream_event(&mut self, fd: RawFd, events: EventSet) {
        match self.fd_owner.get(&fd).copied() {
            Some(FdOwner::Pending) => self.read_connect_line(fd),
            Some(FdOwner::Conn(key)) => {
                if let Some(entry) = self.conns.get_mut(&key) {
                    let hangup = EventSet::HANG_UP | EventSet::ERROR | EventSet::READ_HANG_UP;
                    if events.intersects(EventSet::IN | hangup) {
                        entry.conn.set_host_readable();
                    }
                    if events.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
                        entry.conn.set_host_writable();
                    }
                }
                self.sync(key);
            }
            // An event for a stream closed earlier in the same wake-up.
            None => debug!("vsock: event for unknown fd {fd}"),
        }
    }

    fn read_connect_line(&mut self, fd: RawFd) {
        let Some(client) = self.pending.get_mut(&fd) else {
            return;
        };
        match client.read_line() {
            Ok(None) => {}
            Ok(Some(port)) => {
                if let Some(client) = self.pending.remove(&fd) {
                    self.start_host_connection(client.stream, port);
                }
            }
            Err(e) => {
                info!(
                    "vsock: closing host client on {}: {e}",
                    self.uds_path.display()
                );
                self.drop_pending(fd);
            }
        }
    }

    fn drop_pending(&mut self, fd: RawFd) {
        self.fd_owner.remove(&fd);
        if let Some(client) = self.pending.remove(&fd) {
            self.fd_changes.push(FdChange::Remove(client.stream));
        }
    }

    fn start_host_connection(&mut self, stream: UnixStream, guest_port: u32) {
        let fd = stream.as_raw_fd();
        let Some(local_port) = self.allocate_host_port(guest_port) else {
            warn!("vsock: no free host port for a connection to guest port {guest_port}");
            self.fd_owner.remove(&fd);
            self.fd_changes.push(FdChange::Remove(stream));
            return;
        };
        let conn =
            Connection::host_initiated(self.guest_cid, local_port, guest_port, Instant::now());
        let key = conn.key();
        debug!("vsock: host connection {local_port} -> guest port {guest_port}");
        self.conns.insert(
            key,
            ConnEntry {
                conn,
                stream,
                queued: false,
            },
        );
        self.fd_owner.insert(fd, FdOwner::Conn(key));
        self.fd_changes.push(FdChange::Modify {
            fd,
            events: connection_events(),
        });
        self.arm_timer();
        self.sync(key);
    }

    fn allocate_host_port(&mut self, guest_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_host_port;
            self.next_host_port = port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            if !self.conns.contains_key(&(port, guest_port)) {
                return Some(port);
            }
        }
        None
    }

    /// The handshake timer fired: drop clients that did not send their line in time, and reset
    /// host-initiated connections the guest did not answer.
    pub fn handle_timer(&mut self) {
        if let Err(e) = self.timer.wait() {
            debug!("vsock: reading the handshake timer: {e}");
        }
        let now = Instant::now();
        let late_clients: Vec<RawFd> = self
            .pending
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(&fd, _)| fd)
            .collect();
        for fd in late_clients {
            info!(
                "vsock: closing host client on {}: no CONNECT line within {:?}",
                self.uds_path.display(),
                self.handshake_timeout
            );
            self.drop_pending(fd);
        }
        let timeout = self.handshake_timeout;
        let overdue: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, e)| e.conn.response_overdue(now, timeout))
            .map(|(&k, _)| k)
            .collect();
        for key in overdue {
            info!(
                "vsock: guest did not answer the connection to its port {} in time",
                key.1
            );
            if let Some(entry) = self.conns.get_mut(&key) {
                entry.conn.mark_broken();
            }
            self.sync(key);
        }
        let waiting = !self.pending.is_empty()
            || self
                .conns
                .values()
                .any(|e| e.conn.state() == State::AwaitingResponse);
        if !waiting {
            if let Err(e) = self.timer.clear() {
                warn!("vsock: cannot disarm the handshake timer: {e}");
            }
            self.timer_armed = false;
        }
    }

    fn arm_timer(&mut self) {
        if self.timer_armed {
            return;
        }
        let tick =
            (self.handshake_timeout / 5).clamp(Duration::from_millis(10), Duration::from_secs(1));
        match self.timer.reset(tick, Some(tick)) {
            Ok(()) => self.timer_armed = true,
            Err(e) => error!("vsock: cannot arm the handshake timer: {e}"),
        }
    }

    // ----- guest side -----

    /// Handles one packet the guest put on the tx queue. `data` is its payload (`hdr.len` bytes).
    pub fn handle_guest_packet(&mut self, hdr: &Header, data: Option<&VolatileSlice<'_, ()>>) {
        if hdr.src_cid != self.guest_cid {
            if self.guest_log.allow() {
                warn!(
                    "vsock: dropping guest {} packet with source CID {} (guest CID is {})",
                    op_name(hdr.op),
                    hdr.src_cid,
                    self.guest_cid
                );
            }
            return;
        }
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            if self.guest_log.allow() {
                warn!(
                    "vsock: refusing guest {} packet to CID {} with socket type {}",
                    op_name(hdr.op),
                    hdr.dst_cid,
                    hdr.type_
                );
            }
            self.reply_rst(hdr);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        let Some(entry) = self.conns.get_mut(&key) else {
            match hdr.op {
                op::REQUEST => self.guest_connect(hdr),
                op::RST => {}
                _ => {
                    debug!(
                        "vsock: guest {} for unknown connection {}:{}",
                        op_name(hdr.op),
                        key.0,
                        key.1
                    );
                    self.reply_rst(hdr);
                }
            }
            return;
        };
        match entry.conn.on_guest_packet(hdr) {
            Ok(GuestAction::Nothing) => {}
            Ok(GuestAction::Established) => {
                let line = format!("OK {}\n", key.0);
                // The client's socket is fresh and has sent nothing back yet: its send buffer
                // takes these few bytes whole, or the client is broken.
                match (&entry.stream).write(line.as_bytes()) {
                    Ok(n) if n == line.len() => {}
                    Ok(_) | Err(_) => {
                        info!("vsock: host client of port {} went away before OK", key.0);
                        entry.conn.mark_broken();
                    }
                }
            }
            Ok(GuestAction::Data) => {
                let len = data.map_or(0, |d| d.copy_to(&mut self.scratch[..]));
                if len != hdr.len as usize {
                    if self.guest_log.allow() {
                        warn!(
                            "vsock: guest RW payload of {len} bytes, header says {}",
                            hdr.len
                        );
                    }
                    entry.conn.mark_broken();
                } else if let Err(e) = entry
                    .conn
                    .forward_guest_data(&mut &entry.stream, &self.scratch[..len])
                {
                    debug!(
                        "vsock: writing to host stream of {}:{} failed: {e}",
                        key.0, key.1
                    );
                    entry.conn.mark_broken();
                }
            }
            Ok(GuestAction::ShutdownHostRead) => {
                let _ = entry.stream.shutdown(Shutdown::Read);
            }
            Err(e) => {
                if self.guest_log.allow() {
                    warn!("vsock: resetting connection {}:{}: {e}", key.0, key.1);
                }
                entry.conn.mark_broken();
            }
        }
        self.sync(key);
    }

    fn guest_connect(&mut self, hdr: &Header) {
        if self.conns.len() + self.pending.len() >= MAX_CONNECTIONS {
            if self.guest_log.allow() {
                warn!("vsock: refusing guest connection: already {MAX_CONNECTIONS} connections");
            }
            self.reply_rst(hdr);
            return;
        }
        let path = port_path(&self.uds_path, hdr.dst_port);
        let stream = match connect_nonblocking(&path) {
            Ok(stream) => stream,
            Err(e) => {
                debug!("vsock: guest connection to {} refused: {e}", path.display());
                self.reply_rst(hdr);
                return;
            }
        };
        let conn = Connection::guest_initiated(self.guest_cid, hdr, Instant::now());
        let key = conn.key();
        let fd = stream.as_raw_fd();
        debug!(
            "vsock: guest port {} connected to {}",
            hdr.src_port,
            path.display()
        );
        self.conns.insert(
            key,
            ConnEntry {
                conn,
                stream,
                queued: false,
            },
        );
        self.fd_owner.insert(fd, FdOwner::Conn(key));
        self.fd_changes.push(FdChange::Add {
            fd,
            events: connection_events(),
        });
        self.sync(key);
    }

    fn reply_rst(&mut self, hdr: &Header) {
        if hdr.op != op::RST {
            let mut rst = hdr.rst_reply();
            rst.src_cid = HOST_CID;
            rst.dst_cid = self.guest_cid;
            self.push_control(rst);
        }
    }

    /// Queues a packet not tied to a live connection. Guest tx pauses at
    /// [`MAX_CONTROL_BACKLOG`]; connection closes can add more, up to a hard bound (a guest that
    /// never takes rx buffers must not make this queue grow forever).
    fn push_control(&mut self, h: Header) {
        if self.control_backlog.len() >= MAX_CONTROL_BACKLOG + MAX_CONNECTIONS {
            if self.guest_log.allow() {
                warn!(
                    "vsock: guest is not receiving; dropping {} for port {}",
                    op_name(h.op),
                    h.dst_port
                );
            }
            return;
        }
        self.control_backlog.push_back(h);
    }

    /// Fills one rx buffer with the next packet for the guest. Returns the bytes written (header
    /// plus payload), or `None` when there is nothing to send (the buffer stays unused).
    pub fn fill_rx_packet(
        &mut self,
        header: &VolatileSlice<'_, ()>,
        data: Option<&VolatileSlice<'_, ()>>,
    ) -> Option<u32> {
        if let Some(h) = self.control_backlog.pop_front() {
            write_header(header, &h);
            return Some(HEADER_SIZE as u32);
        }
        let data_room = data.map_or(0, |d| d.len());
        let mut skipped = Vec::new();
        let mut result = None;
        while let Some(key) = self.rx_ready.pop_front() {
            let Some(entry) = self.conns.get_mut(&key) else {
                continue;
            };
            entry.queued = false;
            if let Some(h) = entry.conn.next_control_packet() {
                write_header(header, &h);
                result = Some(HEADER_SIZE as u32);
            } else if data_room == 0 && entry.conn.data_budget(usize::MAX) > 0 {
                // Only data is owed and this buffer has no room for any: try other connections.
                entry.queued = true;
                skipped.push(key);
                continue;
            } else if let (budget @ 1.., Some(d)) = (entry.conn.data_budget(data_room), data) {
                match read_host_stream(&entry.stream, d, budget) {
                    Ok(0) => entry.conn.on_host_eof(),
                    Ok(n) => {
                        write_header(header, &entry.conn.data_packet(n as u32));
                        result = Some((HEADER_SIZE + n) as u32);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        entry.conn.on_host_would_block()
                    }
                    Err(e) => {
                        debug!(
                            "vsock: reading host stream of {}:{} failed: {e}",
                            key.0, key.1
                        );
                        entry.conn.mark_broken();
                    }
                }
            }
            self.sync(key);
            if result.is_some() {
                break;
            }
        }
        self.rx_ready.extend(skipped);
        if result.is_none() {
            // Closing a connection above may have queued its RST.
            if let Some(h) = self.control_backlog.pop_front() {
                write_header(header, &h);
                result = Some(HEADER_SIZE as u32);
            }
        }
        result
    }

    /// Re-evaluates a connection after anything happened to it: flushes buffered guest data,
    /// propagates half-closes, closes it when finished, and queues it for rx when it has work.
    fn sync(&mut self, key: ConnKey) {
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        if entry.conn.pending_len() > 0 && entry.conn.host_writable() {
            if let Err(e) = entry.conn.flush_pending(&mut &entry.stream) {
                debug!(
                    "vsock: writing to host stream of {}:{} failed: {e}",
                    key.0, key.1
                );
                entry.conn.mark_broken();
            }
        }
        if entry.conn.host_write_shutdown_due() {
            let _ = entry.stream.shutdown(Shutdown::Write);
            entry.conn.mark_host_write_shut();
        }
        if let Some(finish) = entry.conn.finish() {
            self.close_connection(key, finish);
            return;
        }
        if entry.conn.has_rx_work() && !entry.queued {
            entry.queued = true;
            self.rx_ready.push_back(key);
        }
    }

    fn close_connection(&mut self, key: ConnKey, finish: Finish) {
        let Some(mut entry) = self.conns.remove(&key) else {
            return;
        };
        debug!("vsock: closing connection {}:{} ({finish:?})", key.0, key.1);
        if entry.queued {
            self.rx_ready.retain(|k| *k != key);
        }
        // A connection whose REQUEST never reached the guest needs no RST.
        if finish == Finish::SendRst && entry.conn.known_to_guest() {
            self.push_control(entry.conn.rst_packet());
        }
        self.fd_owner.remove(&entry.stream.as_raw_fd());
        self.fd_changes.push(FdChange::Remove(entry.stream));
    }

    /// Drops every connection the guest knows of (device reset or transport reset). Host clients
    /// whose REQUEST has not reached the guest yet are kept, as are clients still sending their
    /// CONNECT line: a host client may connect before the guest driver is up, and the driver
    /// resets the device while it initialises it.
    pub fn reset_connections(&mut self) {
        let known: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, e)| e.conn.known_to_guest())
            .map(|(&k, _)| k)
            .collect();
        for key in known {
            if let Some(entry) = self.conns.remove(&key) {
                self.fd_owner.remove(&entry.stream.as_raw_fd());
                self.fd_changes.push(FdChange::Remove(entry.stream));
            }
        }
        self.rx_ready.clear();
        self.control_backlog.clear();
        for (key, entry) in self.conns.iter_mut() {
            entry.queued = true;
            self.rx_ready.push_back(*key);
        }
    }

    /// Drops every connection and client (the device is going away).
    pub fn close_all(&mut self) {
        self.conns.clear();
        self.pending.clear();
        self.rx_ready.clear();
        self.control_backlog.clear();
        self.fd_owner.clear();
        self.fd_changes.clear();
    }

    /// Applies queued watch-list changes with the event loop's `ops`, closing removed streams.
    pub fn apply_fd_changes(&mut self, ops: &mut EventOps) {
        // A stream that cannot be watched is closed; closing queues one more round of changes.
        for _ in 0..2 {
            let mut unwatchable = Vec::new();
            for change in std::mem::take(&mut self.fd_changes) {
                match change {
                    FdChange::Add { fd, events } => {
                        if let Err(e) = ops.add(Events::with_data_raw(fd, TOKEN_STREAM, events)) {
                            error!("vsock: cannot watch host stream fd {fd}: {e}");
                            unwatchable.push(fd);
                        }
                    }
                    FdChange::Modify { fd, events } => {
                        if let Err(e) = ops.modify(Events::with_data_raw(fd, TOKEN_STREAM, events))
                        {
                            error!("vsock: cannot re-watch host stream fd {fd}: {e}");
                            unwatchable.push(fd);
                        }
                    }
                    FdChange::Remove(stream) => {
                        // Fails harmlessly for a stream whose Add failed.
                        let _ = ops.remove(Events::empty(&stream));
                        drop(stream);
                    }
                }
            }
            if unwatchable.is_empty() {
                return;
            }
            for fd in unwatchable {
                match self.fd_owner.get(&fd).copied() {
                    Some(FdOwner::Pending) => self.drop_pending(fd),
                    Some(FdOwner::Conn(key)) => self.close_connection(key, Finish::SendRst),
                    None => {}
                }
            }
        }
    }
}

/// Writes a packet header into the guest's rx header buffer (always [`HEADER_SIZE`] bytes long).
fn write_header(dst: &VolatileSlice<'_, ()>, h: &Header) {
    dst.copy_from(&h.to_bytes());
}

/// Sets O_NONBLOCK on `fd` (a spurious wake-up must never block the event loop).
fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads at most `len` bytes from a host stream straight into a guest buffer.
fn read_host_stream(
    mut stream: &UnixStream,
    dst: &VolatileSlice<'_, ()>,
    len: usize,
) -> io::Result<usize> {
    let mut dst = dst.subslice(0, len).map_err(io::Error::other)?;
    loop {
        match stream.read_volatile(&mut dst) {
            Ok(n) => return Ok(n),
            Err(VolatileMemoryError::IOError(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(VolatileMemoryError::IOError(e)) => return Err(e),
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}
