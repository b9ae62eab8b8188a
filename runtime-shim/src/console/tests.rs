use std::io::Read as _;
use std::os::unix::net::UnixStream;

use super::splice::{copy_input, copy_output, escape_position, ESCAPE};
use super::*;

fn sandbox_dir(run_dir: &Path, id: &str) -> PathBuf {
    let paths = SandboxPaths::new(run_dir, id);
    std::fs::create_dir_all(&paths.dir).unwrap();
    std::fs::write(&paths.pids_file, "").unwrap();
    paths.dir
}

#[test]
fn a_sandbox_without_the_marker_is_refused_with_the_setting_named() {
    let run_dir = tempfile::tempdir().unwrap();
    sandbox_dir(run_dir.path(), "sb1");
    let err = console_socket(run_dir.path(), "sb1").unwrap_err();
    assert!(matches!(err, ConsoleError::NotEnabled(ref id) if id == "sb1"));
    let text = err.to_string();
    assert!(text.contains("debug_console = true"), "{text}");
    assert!(text.contains("DEBUG_IMAGE=1"), "{text}");
}

#[test]
fn a_marked_sandbox_gives_its_vsock_socket() {
    let run_dir = tempfile::tempdir().unwrap();
    let dir = sandbox_dir(run_dir.path(), "sb1");
    mark_enabled(&dir).unwrap();
    assert_eq!(
        console_socket(run_dir.path(), "sb1").unwrap(),
        dir.join("vsock.sock")
    );
}

#[test]
fn unknown_and_bad_ids_are_named() {
    let run_dir = tempfile::tempdir().unwrap();
    let err = console_socket(run_dir.path(), "nope").unwrap_err();
    assert!(err.to_string().contains("no sandbox nope"), "{err}");
    assert!(err.to_string().contains("hull ps"), "{err}");
    let err = console_socket(run_dir.path(), "../etc").unwrap_err();
    assert!(matches!(err, ConsoleError::BadId(_)), "{err}");
}

#[test]
fn input_is_sent_and_its_end_shuts_the_write_side() {
    let (ours, mut guest) = UnixStream::pair().unwrap();
    copy_input(&b"echo hi\n"[..], ours, true);
    let mut got = Vec::new();
    guest.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"echo hi\n");
}

#[test]
fn the_escape_key_on_a_terminal_sends_what_came_before_and_closes() {
    let (ours, mut guest) = UnixStream::pair().unwrap();
    let input = [b"ls".as_slice(), &[ESCAPE], b"never sent"].concat();
    copy_input(&input[..], ours, true);
    let mut got = Vec::new();
    guest.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ls");
    // Piped input is passed on whole: the byte is data there.
    let (ours, mut guest) = UnixStream::pair().unwrap();
    copy_input(&input[..], ours, false);
    let mut got = Vec::new();
    guest.read_to_end(&mut got).unwrap();
    assert_eq!(got, input);
    assert_eq!(escape_position(b"abc"), None);
}

#[test]
fn output_is_copied_until_the_guest_closes() {
    let (mut guest, ours) = UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut guest, b"hello\r\n").unwrap();
    drop(guest);
    let mut out = Vec::new();
    copy_output(ours, &mut out).unwrap();
    assert_eq!(out, b"hello\r\n");
}
