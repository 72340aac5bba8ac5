//! Batched writes to stdout: one `write` per drain of the ring buffer, not one per line.

use std::{
    fs::File,
    io::{self, Write as _},
    mem::ManuallyDrop,
    os::fd::FromRawFd as _,
};

/// Flush once the pending output grows past this, even in the middle of a drain.
const FLUSH_BYTES: usize = 64 * 1024;

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
            buf: Vec::with_capacity(FLUSH_BYTES * 2),
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

    /// Writes pending output if there is a lot of it.
    pub fn flush_if_full(&mut self) -> Result<(), Closed> {
        if self.buf.len() >= FLUSH_BYTES {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Writes all pending output.
    pub fn flush(&mut self) -> Result<(), Closed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.stdout.write_all(&self.buf);
        self.buf.clear();
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(Closed),
            // Any other write error (disk full, EIO) also means nobody gets the output.
            Err(_) => Err(Closed),
            Ok(()) => Ok(()),
        }
    }
}
