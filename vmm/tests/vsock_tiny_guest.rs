//! The virtio-vsock device inside a real hull-vmm, driven by the tiny guest's polling driver: guest-
//! initiated and host-initiated (hybrid `CONNECT <port>`) connections with data both ways.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{run_vmm, tiny_guest, Entry};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Boots the tiny PVH guest with a vsock device (guest CID `cid`, hybrid socket `uds`).
fn boot_with_vsock(cid: u32, uds: &Path, cmdline: &str) -> common::Run {
    let kernel = tiny_guest(Entry::Pvh);
    let cid = cid.to_string();
    run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--vsock-cid",
            &cid,
            "--vsock-uds",
            uds.to_str().unwrap(),
            "--cmdline",
            cmdline,
        ],
        TIMEOUT,
    )
}

fn tempdir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vsock-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn guest_connects_to_a_host_listener() {
    let dir = tempdir("g2h");
    let uds = dir.join("vm.sock");
    let listener = UnixListener::bind(format!("{}_5555", uds.display())).unwrap();
    let host = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        (&stream).write_all(b"hello from the host\n").unwrap();
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest); // until the guest shuts the connection down
        line
    });
    let run = boot_with_vsock(3, &uds, "console=ttyS0 vsock-connect=5555");
    run.assert_exit(0);
    assert!(
        run.stdout.contains("tiny-guest: vsock guest_cid=3"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("tiny-guest: vsock connected"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("tiny-guest: vsock received: hello from the host|"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("tiny-guest: vsock closed"),
        "{}",
        run.stdout
    );
    assert_eq!(host.join().unwrap(), "hello from the guest\n");
}

#[test]
fn guest_connect_to_missing_host_port_is_refused() {
    let dir = tempdir("refused");
    let uds = dir.join("vm.sock");
    let run = boot_with_vsock(3, &uds, "console=ttyS0 vsock-connect=7777");
    run.assert_exit(0);
    assert!(
        run.stdout
            .contains("tiny-guest: vsock connect refused op=3"),
        "{}",
        run.stdout
    );
}

#[test]
fn host_connects_to_a_guest_listener_through_the_hybrid_socket() {
    let dir = tempdir("h2g");
    let uds = dir.join("vm.sock");
    let uds_for_client = uds.clone();
    let client = std::thread::spawn(move || {
        let deadline = Instant::now() + TIMEOUT;
        let stream = loop {
            match UnixStream::connect(&uds_for_client) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("cannot connect to {}: {e}", uds_for_client.display()),
            }
        };
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        (&stream).write_all(b"CONNECT 6000\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut ok = String::new();
        reader.read_line(&mut ok).unwrap();
        (&stream).write_all(b"ping over vsock\n").unwrap();
        let mut echo = String::new();
        reader.read_line(&mut echo).unwrap();
        stream.shutdown(std::net::Shutdown::Both).unwrap();
        (ok, echo)
    });
    let run = boot_with_vsock(42, &uds, "console=ttyS0 vsock-listen=6000");
    let (ok, echo) = client.join().unwrap();
    run.assert_exit(0);
    assert!(
        ok.starts_with("OK ") && ok.ends_with('\n'),
        "handshake reply {ok:?}"
    );
    assert_eq!(echo, "PING OVER VSOCK\n");
    assert!(
        run.stdout.contains("tiny-guest: vsock guest_cid=42"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("tiny-guest: vsock accepted"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("tiny-guest: vsock received: ping over vsock|"),
        "{}",
        run.stdout
    );
}
