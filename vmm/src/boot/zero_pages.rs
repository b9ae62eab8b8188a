//! Copying a boot image into fresh guest memory without writing the pages that stay zero.
//!
//! Guest RAM starts as zero pages the host has not allocated yet. A kernel image holds whole
//! pages of zeros (the 2 MiB alignment between its text and read-only data, zero-initialised
//! tables): copying them makes the host allocate a page per 4 KiB for nothing, for every VM
//! (our guest kernel: 3 MiB of its 14.7 MiB of loaded bytes). [`SkipZeroPages`] wraps an image's
//! reader for `read_exact_volatile_from`: it reads through a buffer of its own and writes to
//! guest memory only the part of each destination page that holds a non-zero byte.
//!
//! Only correct where the destination is still zero: guest memory nothing has written yet. The
//! boot loaders run on the VM's freshly created RAM, before anything else touches it.

use std::io::{ErrorKind, Read, Seek, SeekFrom};

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{Bytes, ReadVolatile, VolatileMemoryError, VolatileSlice};

/// The host page size the skipped pieces are aligned to (x86_64 base pages).
const PAGE_SIZE: usize = 4096;
/// How much is read from the image per call.
const BUFFER_LEN: usize = 256 * 1024;

/// A reader that copies into zero-filled guest memory, leaving all-zero pages unwritten.
pub struct SkipZeroPages<R> {
    inner: R,
    buffer: Vec<u8>,
    written: u64,
    skipped: u64,
}

impl<R> SkipZeroPages<R> {
    pub fn new(inner: R) -> Self {
        SkipZeroPages {
            inner,
            buffer: vec![0; BUFFER_LEN],
            written: 0,
            skipped: 0,
        }
    }

    /// Bytes written to guest memory so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes left unwritten so far because their page piece was all zero.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Splits `len` bytes destined for host address `host_start` at host page boundaries:
/// `(offset, end)` pairs covering `0..len` in order.
fn page_pieces(host_start: usize, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset >= len {
            return None;
        }
        let to_boundary = PAGE_SIZE - (host_start.wrapping_add(offset) % PAGE_SIZE);
        let end = (offset + to_boundary).min(len);
        let piece = (offset, end);
        offset = end;
        Some(piece)
    })
}

/// Whether every byte is zero. Folds fixed 64-byte blocks so the compiler can use vector
/// instructions (a byte loop with an early exit would cost a branch per byte: slow under the
/// lab's emulated L1).
fn is_all_zero(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    let blocks_zero = blocks.by_ref().all(|block| {
        let block: &[u8; 64] = block.try_into().expect("chunks_exact yields 64 bytes");
        block.iter().fold(0u8, |acc, &byte| acc | byte) == 0
    });
    blocks_zero && blocks.remainder().iter().all(|&byte| byte == 0)
}

impl<R: Read> SkipZeroPages<R> {
    /// One read from the image into the buffer (at most `max` bytes); 0 at the end of the image.
    fn read_chunk(&mut self, max: usize) -> Result<usize, VolatileMemoryError> {
        let want = max.min(self.buffer.len());
        loop {
            match self.inner.read(&mut self.buffer[..want]) {
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(VolatileMemoryError::IOError(err)),
            }
        }
    }
}

/// Fills `dst` as far as the image goes (vm-memory's `read_exact_volatile_from` takes a short
/// count as the end of the image, like a regular file's), in buffer-sized chunks.
impl<R: Read> ReadVolatile for SkipZeroPages<R> {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        dst: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let host_start = dst.ptr_guard().as_ptr() as usize;
        let mut filled = 0;
        while filled < dst.len() {
            let read = self.read_chunk(dst.len() - filled)?;
            if read == 0 {
                break;
            }
            for (offset, end) in page_pieces(host_start + filled, read) {
                let piece = &self.buffer[offset..end];
                if is_all_zero(piece) {
                    self.skipped += piece.len() as u64;
                } else {
                    dst.write_slice(piece, filled + offset)?;
                    self.written += piece.len() as u64;
                }
            }
            filled += read;
        }
        Ok(filled)
    }
}

impl<R: Read> Read for SkipZeroPages<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for SkipZeroPages<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests;
