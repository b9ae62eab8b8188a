//! Network figures L1 <-> pod (issue 13), hull vs runc in the same run. One pod per runtime,
//! both up at once, serving from the pod's /dev/shm (memory in both runtimes, so the figures
//! are the network path's and not the rootfs's): busybox `httpd` for downloads and small
//! requests, busybox `nc` as a sink for uploads. From L1, `rounds` rounds, the runtimes
//! interleaved within each: one download and one upload of [`BULK_MIB`], and [`REQUESTS`] small
//! GETs, each on a new TCP connection. Figures only, never judged:
//!
//! ```text
//! LAB-NET-BENCH name=.. runtime=hull|runc down_mbit="..." up_mbit="..." req_ms="..."
//! ```
//!
//! A pod that does not start or a transfer that fails is a failed check (`net-bench`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::l1::wait_clean;
use crate::{cri, Run, PORT};

/// Size of each download and upload.
const BULK_MIB: usize = 16;
/// Small requests per round and runtime.
const REQUESTS: usize = 20;
/// The upload sink's port in the pods.
const SINK_PORT: u16 = 5001;
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// httpd serving `big` (BULK_MIB of zeros) and `index.html` from the pod's /dev/shm.
fn server_command() -> Vec<String> {
    let script = format!(
        "mkdir -p /dev/shm/www && dd if=/dev/zero of=/dev/shm/www/big bs=1048576 count={BULK_MIB} 2>/dev/null \
         && echo ok > /dev/shm/www/index.html && exec httpd -f -p {PORT} -h /dev/shm/www"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// One `nc -l` after the other: each takes one upload, discards it and exits at its end.
fn sink_command() -> Vec<String> {
    let script = format!("while :; do nc -l -p {SINK_PORT} > /dev/null < /dev/null; done");
    vec!["sh".into(), "-c".into(), script]
}

#[derive(Default)]
struct Figures {
    down_mbit: Vec<f64>,
    up_mbit: Vec<f64>,
    req_ms: Vec<f64>,
}

struct Target {
    handler: &'static str,
    pod: String,
    ip: String,
    figures: Figures,
}

fn connect(ip: &str, port: u16) -> Result<TcpStream, String> {
    let addr: SocketAddr = format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("address {ip}:{port}: {e}"))?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).ok();
    s.set_write_timeout(Some(IO_TIMEOUT)).ok();
    Ok(s)
}

/// An HTTP/1.0 GET of `path`; the whole response's size (headers included).
fn http_get(ip: &str, path: &str) -> Result<usize, String> {
    let mut s = connect(ip, PORT)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET {path} from {ip}: {e}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    let mut head = Vec::new();
    loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("GET {path} from {ip} after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16)]);
        }
        total += n;
    }
    if !head.starts_with(b"HTTP/1.") || !String::from_utf8_lossy(&head).contains(" 200") {
        return Err(format!(
            "GET {path} from {ip}: answer starts '{}'",
            String::from_utf8_lossy(&head)
        ));
    }
    Ok(total)
}

fn mbit(bytes: usize, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e6
}

fn download(ip: &str) -> Result<f64, String> {
    let t = Instant::now();
    let got = http_get(ip, "/big")?;
    if got < BULK_MIB << 20 {
        return Err(format!(
            "GET /big from {ip}: {got} bytes, expected {BULK_MIB} MiB"
        ));
    }
    Ok(mbit(got, t.elapsed()))
}

/// BULK_MIB to the sink, then waits for the sink to close: the bytes reached the pod.
fn upload(ip: &str) -> Result<f64, String> {
    let chunk = vec![0x5au8; 256 * 1024];
    let t = Instant::now();
    let mut s = connect(ip, SINK_PORT)?;
    for _ in 0..(BULK_MIB << 20) / chunk.len() {
        s.write_all(&chunk)
            .map_err(|e| format!("upload to {ip}:{SINK_PORT}: {e}"))?;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("upload to {ip}:{SINK_PORT}: shutdown: {e}"))?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .map_err(|e| format!("upload to {ip}:{SINK_PORT}: waiting for the sink's close: {e}"))?;
    Ok(mbit(BULK_MIB << 20, t.elapsed()))
}

/// A small GET on a new connection, in ms.
fn request(ip: &str) -> Result<f64, String> {
    let t = Instant::now();
    http_get(ip, "/index.html")?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Waits until the pod serves both ports (httpd writes its file first; nc loops).
fn wait_ready(ip: &str) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let served = http_get(ip, "/index.html").and_then(|_| connect(ip, SINK_PORT).map(drop));
        match served {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                return Err(format!("pod at {ip} not serving after 30 s: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

fn start(run: &mut Run, handler: &'static str) -> Result<Target, String> {
    let cfg = run.pod_config(&format!("net-{handler}"));
    let (pod, _, _) = run.start_pod(
        &cfg,
        handler,
        &[("srv", server_command()), ("sink", sink_command())],
    )?;
    let target = run.pod_ip(&pod).and_then(|ip| wait_ready(&ip).map(|()| ip));
    match target {
        Ok(ip) => Ok(Target {
            handler,
            pod,
            ip,
            figures: Figures::default(),
        }),
        Err(e) => {
            let _ = run.stop_remove(&pod);
            Err(format!("{handler} pod {}: {e}", cri::short(&pod)))
        }
    }
}

fn round(t: &mut Target) -> Result<(), String> {
    let f = &mut t.figures;
    f.down_mbit.push(download(&t.ip)?);
    f.up_mbit.push(upload(&t.ip)?);
    for _ in 0..REQUESTS {
        f.req_ms.push(request(&t.ip)?);
    }
    Ok(())
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn net_bench(run: &mut Run, rounds: usize) {
    let mut errors = Vec::new();
    let mut targets = Vec::new();
    for handler in ["hull", "runc"] {
        match start(run, handler) {
            Ok(t) => targets.push(t),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        'rounds: for _ in 0..rounds {
            for t in targets.iter_mut() {
                if let Err(e) = round(t) {
                    errors.push(format!("{}: {e}", t.handler));
                    break 'rounds;
                }
            }
        }
    }
    for t in &targets {
        let f = &t.figures;
        run.line(
            "LAB-NET-BENCH",
            &format!(
                "runtime={} bulk_mib={BULK_MIB} down_mbit=\"{}\" up_mbit=\"{}\" req_ms=\"{}\"",
                t.handler,
                list(&f.down_mbit),
                list(&f.up_mbit),
                list(&f.req_ms)
            ),
        );
    }
    for t in &targets {
        if let Err(e) = run.stop_remove(&t.pod) {
            errors.push(e);
        }
    }
    run.check(
        "net-bench",
        if errors.is_empty() {
            Ok(format!(
                "{rounds} rounds: {BULK_MIB} MiB down + up, {REQUESTS} requests, hull and runc"
            ))
        } else {
            Err(errors.join("; "))
        },
    );
    let left = wait_clean(&run.args);
    run.check(
        "nothing-left-after-net-bench",
        if left.is_empty() {
            Ok("no hull-vmm, virtiofsd, shim, sandbox dir, tap, netns or CNI lease left".into())
        } else {
            Err(left.join(", "))
        },
    );
}
