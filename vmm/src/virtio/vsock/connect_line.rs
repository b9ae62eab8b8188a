//! The hybrid-vsock handshake line a host client sends first: `CONNECT <port>\n`.
//!
//! [`LineBuffer`] collects the line byte by byte (so nothing after the newline is consumed: bytes
//! the client sends after it belong to the stream), bounded by [`MAX_LINE_LEN`].
//! [`parse_connect_line`] checks the grammar: the word `CONNECT`, one space, 1 to 10 decimal digits
//! forming a u32, and a newline.

/// Longest accepted line, newline included (`CONNECT 4294967295\n` is 19 bytes).
pub const MAX_LINE_LEN: usize = 32;

/// Why a client's first line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectLineError {
    /// More than [`MAX_LINE_LEN`] bytes without a newline.
    #[error("no newline within the first {MAX_LINE_LEN} bytes")]
    TooLong,
    /// The line does not start with `CONNECT `.
    #[error("line does not start with \"CONNECT \"")]
    NotConnect,
    /// The port is missing, not decimal, or larger than u32.
    #[error("port is not a decimal number between 0 and 4294967295")]
    BadPort,
}

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

/// Parses a complete line (including its trailing newline) into the requested guest port.
pub fn parse_connect_line(line: &[u8]) -> Result<u32, ConnectLineError> {
    if line.len() > MAX_LINE_LEN {
        return Err(ConnectLineError::TooLong);
    }
    let rest = line
        .strip_prefix(b"CONNECT ")
        .ok_or(ConnectLineError::NotConnect)?;
    let digits = rest.strip_suffix(b"\n").ok_or(ConnectLineError::BadPort)?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ConnectLineError::BadPort);
    }
    digits
        .iter()
        .try_fold(0u32, |acc, d| {
            acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        })
        .ok_or(ConnectLineError::BadPort)
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
    fn parses_valid_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 1024\n"), Ok(1024));
        assert_eq!(parse_connect_line(b"CONNECT 0\n"), Ok(0));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295\n"), Ok(u32::MAX));
        assert_eq!(parse_connect_line(b"CONNECT 0000000052\n"), Ok(52));
    }

    #[test]
    fn rejects_malformed_lines() {
        use ConnectLineError::*;
        assert_eq!(parse_connect_line(b"connect 1024\n"), Err(NotConnect));
        assert_eq!(parse_connect_line(b"CONNECT1024\n"), Err(NotConnect));
        assert_eq!(parse_connect_line(b"HELLO\n"), Err(NotConnect));
        assert_eq!(parse_connect_line(b"CONNECT \n"), Err(BadPort));
        assert_eq!(parse_connect_line(b"CONNECT 12a\n"), Err(BadPort));
        assert_eq!(parse_connect_line(b"CONNECT -1\n"), Err(BadPort));
        assert_eq!(parse_connect_line(b"CONNECT 4294967296\n"), Err(BadPort));
        assert_eq!(parse_connect_line(b"CONNECT 1024 \n"), Err(BadPort));
        assert_eq!(parse_connect_line(b"CONNECT 1024\r\n"), Err(BadPort));
        assert_eq!(parse_connect_line(b"CONNECT 12345678901\n"), Err(BadPort));
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
