//! A blocking NETLINK_ROUTE socket. It works in the network namespace of the thread that
//! opened it, wherever it is used afterwards.

use std::io;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::NetworkError;

/// Length of a netlink message header, whose first field is the message length.
const HEADER_LEN: usize = 16;

pub(super) struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    pub(super) fn open() -> Result<Self, NetworkError> {
        let err = |source| NetworkError::Netlink {
            action: "open a NETLINK_ROUTE socket".into(),
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(err)?;
        socket.bind_auto().map_err(err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends a request with `NLM_F_ACK` and waits for the kernel's answer. `action` names the
    /// request in the error.
    pub(super) fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        action: impl FnOnce() -> String,
    ) -> Result<(), NetworkError> {
        self.exchange(message, NLM_F_REQUEST | NLM_F_ACK | flags, |_| {})
            .map_err(|source| NetworkError::Netlink {
                action: action(),
                source,
            })
    }

    /// Like [`Netlink::request`], but an error whose errno is one of `ok` counts as success
    /// (e.g. ENOENT when deleting what is already gone). Returns whether it failed that way.
    pub(super) fn request_tolerating(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        ok: &[i32],
        action: impl FnOnce() -> String,
    ) -> Result<bool, NetworkError> {
        match self.exchange(message, NLM_F_REQUEST | NLM_F_ACK | flags, |_| {}) {
            Ok(()) => Ok(false),
            Err(e) if e.raw_os_error().is_some_and(|code| ok.contains(&code)) => Ok(true),
            Err(source) => Err(NetworkError::Netlink {
                action: action(),
                source,
            }),
        }
    }

    /// Sends a dump request and collects the answers.
    pub(super) fn dump(
        &mut self,
        message: RouteNetlinkMessage,
        action: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetworkError> {
        let mut all = Vec::new();
        self.exchange(message, NLM_F_REQUEST | NLM_F_DUMP, |m| all.push(m))
            .map_err(|source| NetworkError::Netlink {
                action: action(),
                source,
            })?;
        Ok(all)
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut request = NetlinkMessage::from(message);
        request.header.flags = flags;
        request.header.sequence_number = seq;
        request.finalize();
        let mut buf = vec![0; request.buffer_len()];
        request.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut rest = &datagram[..];
            while rest.len() >= HEADER_LEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < HEADER_LEN || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed netlink message",
                    ));
                }
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]);
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
                let message = match parsed {
                    Ok(m) => m,
                    Err(e) => {
                        // An attribute this crate cannot parse: skip the message, not the dump.
                        tracing::warn!(error = %e, "skipping a netlink message we cannot parse");
                        continue;
                    }
                };
                if message.header.sequence_number != seq {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        }
                    }
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
            }
        }
    }
}
