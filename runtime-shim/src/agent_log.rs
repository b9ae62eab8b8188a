//! The guest agent's own log, read from its log port ([`hull_proto::AGENT_LOG_PORT`]): every line
//! goes to `agent.log` in the sandbox directory (up to [`MAX_AGENT_LOG_BYTES`]), and its warnings
//! and errors also to the shim's log, so they reach containerd's log with the sandbox id.

use std::path::Path;

use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};

/// Most bytes written to `agent.log`; later lines only reach the shim's log (warnings, errors).
pub const MAX_AGENT_LOG_BYTES: u64 = 16 * 1024 * 1024;
/// Longest line taken as one; a longer one is cut into pieces of this size.
const MAX_LINE: u64 = 16 * 1024;

/// Copies `log` (the agent's log stream) until it ends.
pub async fn follow_agent_log(log: impl AsyncRead + Unpin, file: &Path, sandbox_id: &str) {
    let mut out = match tokio::fs::File::create(file).await {
        Ok(out) => Some(out),
        Err(err) => {
            tracing::warn!(sandbox = sandbox_id, %err, file = %file.display(), "creating the agent log file");
            None
        }
    };
    let mut written = 0u64;
    let mut reader = BufReader::new(log);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(sandbox = sandbox_id, %err, "reading the agent log");
                break;
            }
        }
        if let Some(file) = out.as_mut() {
            if written + line.len() as u64 <= MAX_AGENT_LOG_BYTES {
                written += line.len() as u64;
                if file.write_all(&line).await.is_err() {
                    out = None;
                }
            }
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        match level_of(text) {
            Some("ERROR") => tracing::error!(sandbox = sandbox_id, agent = text),
            Some("WARN") => tracing::warn!(sandbox = sandbox_id, agent = text),
            _ => tracing::debug!(sandbox = sandbox_id, agent = text),
        }
    }
    if let Some(mut file) = out {
        let _ = file.flush().await;
    }
}

/// The level word of an agent log line (`<timestamp>  LEVEL message`).
fn level_of(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn lines_go_to_the_file_until_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.log");
        let text = "2026-01-01T00:00:00Z  INFO serving\n2026-01-01T00:00:01Z  WARN RPC failed\n";
        follow_agent_log(text.as_bytes(), &file, "sb").await;
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        assert_eq!(
            level_of("2026-01-01T00:00:01Z  WARN RPC failed"),
            Some("WARN")
        );

        // A stream larger than the limit: the file stops at whole lines below it.
        let line = format!("{}\n", "x".repeat(1023));
        let big = line.repeat((MAX_AGENT_LOG_BYTES / 1024) as usize + 10);
        follow_agent_log(big.as_bytes(), &file, "sb").await;
        let len = std::fs::metadata(&file).unwrap().len();
        assert_eq!(len, MAX_AGENT_LOG_BYTES);
    }
}
