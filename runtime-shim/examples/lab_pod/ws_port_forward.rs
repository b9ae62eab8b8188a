//! The CRI PortForward stream as kubelet's clients use it, for one port: a WebSocket
//! (RFC 6455) to the URL that containerd's PortForward answered, speaking Kubernetes' channel
//! protocol (`v4.channel.k8s.io`): every binary message starts with a channel byte, channel 0
//! carries the port's data both ways and channel 1 its errors; the server first sends each
//! channel the port number (u16, little endian). containerd then dials `localhost:<port>` in
//! the pod's netns, which for a pod in a microVM is the shim's mirror of the guest listener.
//!
//! Just enough WebSocket for that: client frames masked, no fragmentation sent, control
//! frames (close, ping) understood.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const DATA: u8 = 0;
const ERROR: u8 = 1;
/// Any 16 bytes, base64; the server only echoes a hash of it.
const KEY: &str = "aHVsbC1sYWItcG9ydGZ3ZA==";

/// `http://host:port/path` into ("host:port", "/path").
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("PortForward URL '{url}' is not http://"))?;
    let slash = rest.find('/').unwrap_or(rest.len());
    let path = if slash == rest.len() {
        "/"
    } else {
        &rest[slash..]
    };
    Ok((&rest[..slash], path))
}

fn write_frame(s: &mut TcpStream, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
    let mask = [0x6b, 0x75, 0x62, 0x65];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame)
}

/// One frame: (opcode, payload). Server frames are not masked; a masked one is read anyway.
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    let opcode = head[0] & 0x0f;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u16::from_be_bytes(b) as u64
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => n as u64,
    };
    if len > 16 << 20 {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        s.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    if head[1] & 0x80 != 0 {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((opcode, payload))
}

/// Opens the stream at `url`, sends `request` on the data channel and returns what came back
/// on it once `done` says the answer is complete (or the server closed). Errors name the step.
pub fn exchange(
    url: &str,
    request: &[u8],
    done: impl Fn(&[u8]) -> bool,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let (host, path) = split_url(url)?;
    let mut s = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    let upgrade = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Origin: http://localhost\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
    );
    s.write_all(upgrade.as_bytes())
        .map_err(|e| format!("upgrade request: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte)
            .map_err(|e| format!("upgrade answer after {} bytes: {e}", head.len()))?;
        head.push(byte[0]);
        if head.len() > 8192 {
            return Err("upgrade answer has no end of headers".into());
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    let started = Instant::now();
    let (mut data, mut errors) = (Vec::new(), Vec::new());
    let mut port_seen = [false; 2];
    let mut sent = false;
    loop {
        if started.elapsed() > timeout {
            return Err(format!(
                "no complete answer in {timeout:?}: {} bytes of data so far",
                data.len()
            ));
        }
        let (opcode, payload) = match read_frame(&mut s) {
            Ok(f) => f,
            Err(e) if data.is_empty() => return Err(format!("reading the stream: {e}")),
            Err(_) => break,
        };
        match opcode {
            0x8 => break,
            0x9 => {
                let _ = write_frame(&mut s, 0xa, &payload);
                continue;
            }
            0x1 | 0x2 => {}
            _ => continue,
        }
        let Some((&channel, body)) = payload.split_first() else {
            continue;
        };
        let channel_seen = port_seen.get_mut(channel as usize);
        let body = match channel_seen {
            // The first message of each channel is its port number.
            Some(seen) if !*seen => {
                *seen = true;
                &body[body.len().min(2)..]
            }
            _ => body,
        };
        match channel {
            DATA => data.extend_from_slice(body),
            ERROR => errors.extend_from_slice(body),
            _ => {}
        }
        if !errors.is_empty() {
            return Err(format!(
                "error channel: {}",
                String::from_utf8_lossy(&errors).trim()
            ));
        }
        if port_seen[0] && !sent {
            let mut msg = vec![DATA];
            msg.extend_from_slice(request);
            write_frame(&mut s, 0x2, &msg).map_err(|e| format!("sending the request: {e}"))?;
            sent = true;
        }
        if done(&data) {
            break;
        }
    }
    let _ = write_frame(&mut s, 0x8, &[]);
    if !sent {
        return Err("the stream closed before it named its port".into());
    }
    Ok(data)
}
