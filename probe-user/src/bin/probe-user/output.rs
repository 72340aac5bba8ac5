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

/// Why output could not be written.
#[derive(Debug)]
pub enum WriteError {
    /// stdout's reader went away (`probe-user | head -1`, EPIPE): nobody is listening, so the
    /// command ends quietly.
    Closed,
    /// Any other error (a full disk, EIO): output is being lost, which is an error.
    Failed(std::io::Error),
}

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
    pub fn flush(&mut self) -> Result<(), WriteError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.stdout.write_all(&self.buf);
        self.buf.clear();
        result.map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => WriteError::Closed,
            _ => WriteError::Failed(e),
        })
    }
}
