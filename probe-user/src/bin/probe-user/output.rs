//! Batched writes to stdout (one `write` per drain of the ring buffer, not one per line), and
//! the loop that fills and writes them until a signal ends the run.

use std::{fs::File, io::Write as _, mem::ManuallyDrop, os::fd::FromRawFd as _};

use anyhow::{Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};

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

/// SIGINT, SIGTERM and SIGHUP, each of which ends tracing cleanly.
pub struct Signals([tokio::signal::unix::Signal; 3]);

impl Signals {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self([
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ]))
    }

    /// Waits for any of them.
    async fn recv(&mut self) {
        let [int, term, hup] = &mut self.0;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
}

/// Repeats `step` on `state` until a signal arrives, then runs `last` to collect what is left;
/// writes what each printed into `out`'s buffer right after it. Returns `Ok(false)` (at once)
/// if stdout's reader went away (`| head -1`): nobody is listening, so the caller ends quietly;
/// any other write error (a full disk, EIO) is an error.
pub async fn until_signal<S>(
    state: &mut S,
    signals: &mut Signals,
    out: &mut BatchedStdout,
    mut step: impl AsyncFnMut(&mut S, &mut Vec<u8>),
    last: impl FnOnce(&mut S, &mut Vec<u8>),
) -> Result<bool> {
    let written = |out: &mut BatchedStdout| match out.flush() {
        Ok(()) => Ok(true),
        Err(WriteError::Closed) => Ok(false),
        Err(WriteError::Failed(e)) => Err(anyhow!("cannot write to stdout: {e}")),
    };
    loop {
        tokio::select! {
            _ = step(state, out.buf()) => {}
            _ = signals.recv() => break,
        }
        if !written(out)? {
            return Ok(false);
        }
    }
    last(state, out.buf());
    written(out)
}
