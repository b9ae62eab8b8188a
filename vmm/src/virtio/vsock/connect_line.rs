//! The hybrid-vsock handshake line a host client sends first: `CONNECT <port>\n`.
//!
//! [`LineBuffer`] collects the line byte by byte (so nothing after the newline is consumed: bytes
//! the client sends after it belong to the stream), bounded by [`MAX_LINE_LEN`]. The grammar is
//! hull-proto's, the one rule the agent's host-mode listener uses too
//! ([`hull_proto::handshake::parse_connect_line`], re-exported here).

pub use hull_proto::handshake::{parse_connect_line, ConnectLineError};

/// Longest accepted line, newline included: hull-proto's [`MAX_CONNECT_LINE`].
///
/// [`MAX_CONNECT_LINE`]: hull_proto::handshake::MAX_CONNECT_LINE
pub const MAX_LINE_LEN: usize = hull_proto::handshake::MAX_CONNECT_LINE;

/// Accumulates the handshake line.
#[derive(Debug, Default)]
pub struct LineBuffer {
    bytes: [u8; MAX_LINE_LEN],
    len: usize,
}

/// Result of feeding one byte to a [`LineBuffer`].
#[derive(Debug, PartialEq, Eq)]
pub enum LineProgress {
    /// More bytes are needed.
    Incomplete,
    /// The newline arrived; the line is complete.
    Complete,
}

impl LineBuffer {
    /// Appends one byte. Errors once the line would exceed [`MAX_LINE_LEN`].
    pub fn push(&mut self, byte: u8) -> Result<LineProgress, ConnectLineError> {
        if self.len == MAX_LINE_LEN {
            return Err(ConnectLineError::TooLong);
        }
        self.bytes[self.len] = byte;
        self.len += 1;
        if byte == b'\n' {
            Ok(LineProgress::Complete)
        } else if self.len == MAX_LINE_LEN {
            Err(ConnectLineError::TooLong)
        } else {
            Ok(LineProgress::Incomplete)
        }
    }

    /// The bytes collected so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(input: &[u8]) -> Result<Option<Vec<u8>>, ConnectLineError> {
        let mut lb = LineBuffer::default();
        for &b in input {
            if lb.push(b)? == LineProgress::Complete {
                return Ok(Some(lb.as_bytes().to_vec()));
            }
        }
        Ok(None)
    }

    #[test]
    fn vmm_and_proto_accept_the_same_connect_lines() {
        // Before the two shared one parser, proto took ports of any number of digits and the VMM
        // only 10: a client line the agent accepted was refused by hull-vmm.
        for line in [
            &b"CONNECT 1024\n"[..],
            b"CONNECT 0000000052\n",
            b"CONNECT 00000000001024\n",
            b"CONNECT 4294967295\n",
            b"CONNECT 4294967296\n",
            b"CONNECT 12a\n",
            b"CONNECT 1024\r\n",
        ] {
            assert_eq!(
                parse_connect_line(line).ok(),
                hull_proto::handshake::parse_connect(line),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            parse_connect_line(b"CONNECT 00000000001024\n"),
            Err(ConnectLineError::BadPort)
        );
    }

    #[test]
    fn line_buffer_stops_at_newline_and_bounds_length() {
        assert_eq!(
            feed(b"CONNECT 5\nextra").unwrap(),
            Some(b"CONNECT 5\n".to_vec())
        );
        assert_eq!(feed(b"CONNECT 5").unwrap(), None);
        assert_eq!(feed(&[b'A'; 31]).unwrap(), None);
        assert_eq!(feed(&[b'A'; 32]), Err(ConnectLineError::TooLong));
        // A newline as the 32nd byte still fits.
        let mut exact = vec![b'A'; 31];
        exact.push(b'\n');
        assert_eq!(feed(&exact).unwrap().map(|l| l.len()), Some(32));
    }
}
