//! The network probe of a pod: what runs in it (busybox `httpd` serving from the pod's
//! /dev/shm, so the figures are the network path's and not the rootfs's; busybox `nc` as an
//! upload sink) and the client that measures it from outside: bulk download and upload, and
//! small requests each on a new TCP connection. `hull bench`'s network group and the lab's pod
//! scenario both measure through it.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The HTTP server's port in the pod.
pub const HTTP_PORT: u16 = 8080;
/// The upload sink's port in the pod.
pub const SINK_PORT: u16 = 5001;
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A probe call that failed: what it was and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct ProbeError {
    /// The call (`GET /big from 10.88.0.5`, ...).
    pub what: String,
    /// What went wrong.
    pub detail: String,
}

fn fail(what: impl Into<String>, detail: impl std::fmt::Display) -> ProbeError {
    ProbeError {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// The server container's command: `big` (`bulk_mib` MiB of zeros) and `index.html` in the
/// pod's /dev/shm, served by busybox httpd on [`HTTP_PORT`].
pub fn server_command(bulk_mib: usize) -> Vec<String> {
    let script = format!(
        "mkdir -p /dev/shm/www && dd if=/dev/zero of=/dev/shm/www/big bs=1048576 count={bulk_mib} 2>/dev/null \
         && echo ok > /dev/shm/www/index.html && exec httpd -f -p {HTTP_PORT} -h /dev/shm/www"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// The sink container's command: one `nc -l` on [`SINK_PORT`] after the other; each takes one
/// upload and answers, once the upload ended, with the number of bytes that reached the pod
/// (`wc -c`), then exits.
pub fn sink_command() -> Vec<String> {
    let script = format!("while :; do nc -l -p {SINK_PORT} -e wc -c; done");
    vec!["sh".into(), "-c".into(), script]
}

fn socket_addr(ip: &str, port: u16) -> Result<SocketAddr, ProbeError> {
    let addr: IpAddr = ip
        .parse()
        .map_err(|e| fail(format!("pod address {ip:?}"), e))?;
    Ok(SocketAddr::new(addr, port))
}

fn dial(addr: &SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn connect(ip: &str, port: u16) -> Result<TcpStream, ProbeError> {
    let addr = socket_addr(ip, port)?;
    dial(&addr).map_err(|e| fail(format!("connect {addr}"), e))
}

/// An HTTP/1.0 GET of `path` from the pod's server; the whole answer's size (headers
/// included). An answer that is not `200` is an error.
pub fn http_get(ip: &str, path: &str) -> Result<usize, ProbeError> {
    let what = || format!("GET {path} from {ip}");
    let mut s = connect(ip, HTTP_PORT)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .map_err(|e| fail(what(), e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    let mut head = Vec::new();
    loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| fail(what(), format!("after {total} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16)]);
        }
        total += n;
    }
    if !head.starts_with(b"HTTP/1.") || !String::from_utf8_lossy(&head).contains(" 200") {
        return Err(fail(
            what(),
            format!("answer starts {:?}", String::from_utf8_lossy(&head)),
        ));
    }
    Ok(total)
}

/// Mbit/s of `bytes` in `took`.
pub fn mbit(bytes: usize, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e6
}

/// Downloads `big` (`bulk_mib` MiB) from the pod; Mbit/s.
pub fn download(ip: &str, bulk_mib: usize) -> Result<f64, ProbeError> {
    let t = Instant::now();
    let got = http_get(ip, "/big")?;
    if got < bulk_mib << 20 {
        return Err(fail(
            format!("GET /big from {ip}"),
            format!("{got} bytes, expected {bulk_mib} MiB"),
        ));
    }
    Ok(mbit(got, t.elapsed()))
}

/// Sends `bulk_mib` MiB to the pod's sink and waits for its answer (the bytes it received,
/// so all of them reached the pod); Mbit/s, timed from the established connection.
pub fn upload(ip: &str, bulk_mib: usize) -> Result<f64, ProbeError> {
    let addr = socket_addr(ip, SINK_PORT)?;
    upload_to(&addr, bulk_mib << 20)
}

/// Sends `bytes` (a multiple of 256 KiB) to the sink at `addr`; see [`upload`].
fn upload_to(addr: &SocketAddr, bytes: usize) -> Result<f64, ProbeError> {
    let what = || format!("upload to {addr}");
    let chunk = vec![0x5au8; 256 * 1024];
    let mut s = connect_sink(addr)?;
    let t = Instant::now();
    for _ in 0..bytes / chunk.len() {
        s.write_all(&chunk).map_err(|e| fail(what(), e))?;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| fail(what(), format!("shutdown: {e}")))?;
    let mut answer = Vec::new();
    s.take(64)
        .read_to_end(&mut answer)
        .map_err(|e| fail(what(), format!("waiting for the sink's answer: {e}")))?;
    let took = t.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    match answer.trim().parse::<usize>() {
        Ok(got) if got == bytes => Ok(mbit(bytes, took)),
        Ok(got) => Err(fail(
            what(),
            format!("the sink received {got} of {bytes} bytes"),
        )),
        Err(_) => Err(fail(
            what(),
            format!("the sink answered {answer:?}, not a byte count"),
        )),
    }
}

/// Connects to the sink at `addr`. Between two uploads the sink's loop starts a new `nc`: a
/// refused connection is tried again for up to 5 s.
fn connect_sink(addr: &SocketAddr) -> Result<TcpStream, ProbeError> {
    let started = Instant::now();
    loop {
        match dial(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && started.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other.map_err(|e| fail(format!("connect {addr}"), e)),
        }
    }
}

/// A small GET on a new connection; milliseconds.
pub fn request(ip: &str) -> Result<f64, ProbeError> {
    let t = Instant::now();
    http_get(ip, "/index.html")?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Waits until the pod serves both ports (httpd writes its files first; the sink loops).
pub fn wait_serving(ip: &str, timeout: Duration) -> Result<(), ProbeError> {
    let started = Instant::now();
    loop {
        let served = http_get(ip, "/index.html").and_then(|_| connect(ip, SINK_PORT).map(drop));
        match served {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() > timeout => {
                return Err(fail(
                    format!("pod at {ip}"),
                    format!("not serving after {timeout:?}: {e}"),
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[cfg(test)]
mod tests;
