//! Batched writes to stdout: one `write` per drain of the ring buffer, not one per line.

use std::{fs::File, io::Write as _, mem::ManuallyDrop, os::fd::FromRawFd as _};

/// Initial buffer size: a drain of a busy ring fits without regrowing.
const INITIAL_CAPACITY: usize = 128 * 1024;

/// Lines waiting to be written to stdout.
pub struct BatchedStdout {
    buf: Vec<u8>,
    // Rust's `Stdout` is line-buffered (one syscall per line); fd 1 as a plain file is not.
    stdout: ManuallyDrop<File>,
}

/// stdout was closed by its reader (`probe-user | head -1`).
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

impl Default for BatchedStdout {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(INITIAL_CAPACITY),
            // SAFETY: fd 1 is open for the life of the process; ManuallyDrop never closes it.
            stdout: ManuallyDrop::new(unsafe { File::from_raw_fd(1) }),
        }
    }
}

impl BatchedStdout {
    /// The buffer to append lines to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes all pending output.
    pub fn flush(&mut self) -> Result<(), Closed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.stdout.write_all(&self.buf);
        self.buf.clear();
        // EPIPE (the reader left), and any other write error (disk full, EIO) alike, mean
        // nobody gets the output.
        result.map_err(|_| Closed)
    }
}
