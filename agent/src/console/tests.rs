use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::*;

/// Everything the console sends until it closes (bounded by a timeout).
async fn read_to_close(stream: &mut UnixStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the console did not close within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn console(shell: &str) -> Arc<DebugConsole> {
    DebugConsole::with_shell(false, PathBuf::from(shell))
}

#[tokio::test(flavor = "current_thread")]
async fn a_console_runs_the_shell_on_a_terminal_and_closes_when_it_exits() {
    let (mut host, agent) = UnixStream::pair().unwrap();
    console("/bin/sh").spawn(Box::pin(agent));
    // `tty` proves a terminal; the arithmetic proves the shell ran it (the pty echoes the
    // input line itself, which has no "42").
    host.write_all(b"test -t 0 && echo on-a-tty; echo hello-$((40+2)); exit\n")
        .await
        .unwrap();
    let out = read_to_close(&mut host).await;
    assert!(out.contains("hello-42"), "{out:?}");
    assert!(out.contains("on-a-tty\r\n"), "{out:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_host_closing_its_side_ends_the_shell_with_end_of_file() {
    let (mut host, agent) = UnixStream::pair().unwrap();
    console("/bin/sh").spawn(Box::pin(agent));
    host.write_all(b"echo piped-$((1+1))\n").await.unwrap();
    host.shutdown().await.unwrap();
    let out = read_to_close(&mut host).await;
    assert!(out.contains("piped-2"), "{out:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_image_without_the_shell_gets_one_clear_line() {
    let (mut host, agent) = UnixStream::pair().unwrap();
    console("/nonexistent/sh").spawn(Box::pin(agent));
    let out = read_to_close(&mut host).await;
    assert_eq!(
        out,
        "hull-agent: no /nonexistent/sh in this guest image; the debug console needs a debug \
         image (make guest DEBUG_IMAGE=1)\r\n"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn sessions_beyond_the_limit_are_refused_in_words() {
    let console = console("/bin/sh");
    let mut open = Vec::new();
    for _ in 0..hull_proto::MAX_DEBUG_CONSOLES {
        let (mut host, agent) = UnixStream::pair().unwrap();
        console.spawn(Box::pin(agent));
        // Wait for each shell's prompt-side output so its slot is surely taken.
        host.write_all(b"echo up-$((2+3))\n").await.unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        while !seen.contains("up-5") {
            let n = tokio::time::timeout(Duration::from_secs(10), host.read(&mut buf))
                .await
                .expect("no output from a console")
                .unwrap();
            assert!(n > 0, "console closed early: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        open.push(host);
    }
    let (mut extra, agent) = UnixStream::pair().unwrap();
    console.spawn(Box::pin(agent));
    let out = read_to_close(&mut extra).await;
    assert!(out.contains("debug consoles are open already"), "{out:?}");
    for mut host in open {
        host.write_all(b"exit\n").await.unwrap();
        read_to_close(&mut host).await;
    }
}

#[test]
fn the_console_is_off_until_enabled() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let console = DebugConsole::new(false);
        assert!(!console.is_enabled());
        console.enable();
        console.enable();
        assert!(console.is_enabled());
    });
}
