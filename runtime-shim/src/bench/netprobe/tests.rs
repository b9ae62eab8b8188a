use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};

use super::*;

/// A sink on an ephemeral local port for one upload: reads to the end, then answers with
/// `answer(bytes read)`.
fn one_shot_sink(answer: fn(usize) -> String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => got += n,
            }
        }
        s.write_all(answer(got).as_bytes()).unwrap();
    });
    addr
}

#[test]
fn an_upload_counts_once_the_sink_says_it_received_every_byte() {
    let addr = one_shot_sink(|got| format!("{got}\n"));
    let mbit = upload_to(&addr, 1 << 20).unwrap();
    assert!(mbit > 0.0);
}

#[test]
fn a_sink_that_received_less_is_an_error_naming_both_counts() {
    let addr = one_shot_sink(|got| format!("{}\n", got - 1));
    let err = upload_to(&addr, 1 << 20).unwrap_err().to_string();
    assert!(err.contains("received 1048575 of 1048576 bytes"), "{err}");
}

#[test]
fn a_sink_answer_that_is_no_count_is_an_error_quoting_it() {
    let addr = one_shot_sink(|_| "nc: bad\n".into());
    let err = upload_to(&addr, 1 << 20).unwrap_err().to_string();
    assert!(err.contains("\"nc: bad\\n\""), "{err}");
}
