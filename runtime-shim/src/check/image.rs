//! The guest image as `hull check` reads it: the agent binary (`/init`) inside the newc cpio
//! initramfs, and the agent API version it carries.

/// Why an initramfs could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpioError {
    /// Not a newc (`070701`) or newc-crc (`070702`) archive, or cut short.
    #[error("not a newc cpio archive (or truncated) at byte {0}")]
    Malformed(usize),
}

fn hex_field(archive: &[u8], at: usize) -> Result<usize, CpioError> {
    let field = archive.get(at..at + 8).ok_or(CpioError::Malformed(at))?;
    let text = std::str::from_utf8(field).map_err(|_| CpioError::Malformed(at))?;
    usize::from_str_radix(text, 16).map_err(|_| CpioError::Malformed(at))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The content of the regular file `name` (`init`, `sbin/x`; a leading `/` or `./` is ignored)
/// in an uncompressed newc cpio archive; `Ok(None)` if the archive has no such entry.
pub fn cpio_file<'a>(archive: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, CpioError> {
    let want = name.trim_start_matches("./").trim_start_matches('/');
    let mut at = 0;
    loop {
        let magic = archive.get(at..at + 6).ok_or(CpioError::Malformed(at))?;
        if magic != b"070701" && magic != b"070702" {
            return Err(CpioError::Malformed(at));
        }
        let mode = hex_field(archive, at + 14)?;
        let file_size = hex_field(archive, at + 54)?;
        let name_size = hex_field(archive, at + 94)?;
        let name_start = at + 110;
        let entry_name = archive
            .get(name_start..name_start + name_size.saturating_sub(1))
            .ok_or(CpioError::Malformed(name_start))?;
        let data_start = align4(name_start + name_size);
        let data = archive
            .get(data_start..data_start + file_size)
            .ok_or(CpioError::Malformed(data_start))?;
        if entry_name == b"TRAILER!!!" {
            return Ok(None);
        }
        let entry_name = String::from_utf8_lossy(entry_name);
        let entry_name = entry_name.trim_start_matches("./").trim_start_matches('/');
        if entry_name == want && mode & 0o170000 == 0o100000 {
            return Ok(Some(data));
        }
        at = align4(data_start + file_size);
    }
}

/// The agent API versions named by `(agent API <n>)` markers in a binary
/// ([`hull_proto::AGENT_API_MARKER`]), sorted, without duplicates.
pub fn agent_api_versions(binary: &[u8]) -> Vec<u32> {
    const PREFIX: &[u8] = b"(agent API ";
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(pos) = binary[i..].windows(PREFIX.len()).position(|w| w == PREFIX) {
        let start = i + pos + PREFIX.len();
        let digits = binary[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 && binary.get(start + digits) == Some(&b')') {
            if let Ok(n) = std::str::from_utf8(&binary[start..start + digits])
                .unwrap_or("")
                .parse()
            {
                found.push(n);
            }
        }
        i = start;
    }
    found.sort_unstable();
    found.dedup();
    found
}
