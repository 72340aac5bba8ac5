//! The library's errors: what went wrong setting up a [`crate::Tracer`], as variants an agent
//! can match (a missing capability, a kernel feature, BTF, loading, attaching a backend, a bad
//! filter) and messages a person can act on.

use std::{io, path::PathBuf};

#[cfg(doc)]
use probe_common::Backend;
use probe_common::COMM_LEN;

use crate::escape::Escaped;

mod attach;

pub(crate) use attach::chain;
pub use attach::{AttachError, BackendError, BackendErrors, VerifierLog};

/// An underlying error whose type is not part of this crate's API (aya's, which may change with
/// any of its versions), kept as the source so that the whole chain still prints.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a [`crate::Tracer`] could not be set up. Nothing stays attached after any of these.
///
/// ```no_run
/// use probe_user::{Error, Tracer};
///
/// match Tracer::builder().attach() {
///     Ok(tracer) => println!("tracing with {}", tracer.backend()),
///     // What the operator can fix, told apart from what the kernel lacks.
///     Err(Error::Permission { missing }) => eprintln!("grant {}", missing.join(" and ")),
///     Err(Error::NoBackend(errors)) => {
///         for skipped in errors.iter() {
///             eprintln!("{}: {}", skipped.backend, skipped.reason());
///         }
///     }
///     // Every error prints its causes through `source()`.
///     Err(other) => {
///         let mut cause: Option<&dyn std::error::Error> = Some(&other);
///         while let Some(error) = cause {
///             eprintln!("{error}");
///             cause = error.source();
///         }
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filter value the kernel side cannot take; found before anything is loaded.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// Options that cannot go together; found before anything is loaded.
    #[error(transparent)]
    Conflict(#[from] crate::Conflict),
    /// The process may not load eBPF programs: it needs root, or `CAP_BPF` and `CAP_PERFMON`.
    #[error(
        "permission denied: run as root or with CAP_BPF and CAP_PERFMON (missing: {})",
        .missing.join(", ")
    )]
    Permission {
        /// The capabilities missing from the effective set.
        missing: Vec<&'static str>,
    },
    /// The running kernel lacks something every backend needs.
    #[error(transparent)]
    Kernel(#[from] Missing),
    /// The kernel's BTF could not be read, or lacks a field the kernel side reads.
    #[error("{0}")]
    Btf(String),
    /// The kernel refused the eBPF object (the verifier, or a resource limit: see `hint`).
    #[error("{}cannot load the eBPF programs", hint_prefix(.hint))]
    Load {
        /// What to change to make it work, when known (e.g. `RLIMIT_MEMLOCK` on old kernels).
        hint: Option<String>,
        /// What the loader reported.
        #[source]
        source: Cause,
    },
    /// A map of the object could not be used or filled.
    #[error("cannot use map {map}")]
    Map {
        /// The map's name (`probe_common::names::map`).
        map: &'static str,
        /// What the map's loader reported.
        #[source]
        source: Cause,
    },
    /// A map or program is missing from the eBPF object (a build mismatch).
    #[error("{0} missing from the eBPF object")]
    Object(String),
    /// The backend asked for could not be attached.
    #[error(transparent)]
    Attach(BackendError),
    /// No backend of [`Backend::AUTO_ORDER`] could be attached; why, for each (its source is
    /// the first backend's error).
    #[error(transparent)]
    NoBackend(BackendErrors),
    /// Kernel run-time statistics were asked for without `CAP_SYS_ADMIN`, which turning them on
    /// needs; found before anything is loaded.
    #[error(
        "permission denied: program statistics (--stats) need CAP_SYS_ADMIN (root); run without them or as root"
    )]
    StatsPermission,
    /// `--names` needs a kprobe where the kernel queues datagrams to UDP sockets
    /// (`__udp_enqueue_schedule_skb`), which could not be attached.
    #[error("--names: cannot watch DNS answers (a kprobe on __udp_enqueue_schedule_skb)")]
    Names(#[source] AttachError),
    /// `--accept` needs an fexit program or a kretprobe on `inet_csk_accept`, neither of which
    /// could be attached (the kretprobe's error).
    #[error(
        "--accept: cannot watch accepted connections (an fexit program or a kretprobe on inet_csk_accept)"
    )]
    Accepts(#[source] AttachError),
    /// `--nat` needs the `net:net_dev_queue` tracepoint, which could not be attached.
    #[error("--nat: cannot watch SYNs leaving (the net:net_dev_queue tracepoint)")]
    Nat(#[source] AttachError),
    /// Kernel run-time statistics could not be enabled (they need `CAP_SYS_ADMIN`).
    #[error("cannot enable BPF program statistics")]
    Stats(#[source] io::Error),
    /// The logger relaying the eBPF programs' messages could not be started.
    #[error("cannot start eBPF logging")]
    Log(#[source] Cause),
}

impl Error {
    /// Why each backend tried could not be attached: the one asked for ([`Error::Attach`]), or
    /// every one of [`Backend::AUTO_ORDER`] ([`Error::NoBackend`]); none for other errors.
    /// (`source()` of a [`Error::NoBackend`] leads to the first backend's error only: a chain
    /// has one source at each step; this gives every one.)
    pub fn backend_errors(&self) -> &[BackendError] {
        match self {
            Error::Attach(error) => std::slice::from_ref(error),
            Error::NoBackend(errors) => errors,
            _ => &[],
        }
    }
}

/// A kernel feature that is missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Missing {
    /// `CONFIG_KPROBES` is off (only the kprobe backend needs it).
    #[error("this kernel has no kprobes (CONFIG_KPROBES is off), so probe-user cannot trace it")]
    Kprobes,
    /// The BPF ring buffer (Linux 5.8+).
    #[error("this kernel has no BPF ring buffer (it needs Linux 5.8 or later)")]
    RingBuffer,
    /// Whether the ring buffer exists could not be found out.
    #[error("cannot probe for BPF ring buffer support: {0}")]
    RingBufferProbe(String),
    /// The kernel's own BTF (`CONFIG_DEBUG_INFO_BTF`).
    #[error(
        "this kernel has no BTF ({} is missing; it needs CONFIG_DEBUG_INFO_BTF=y, or a BTF file for exactly this kernel, e.g. from btfhub, given with --btf FILE)",
        .0.display()
    )]
    Btf(PathBuf),
    /// The BTF file given instead of the kernel's own (`--btf`, `TracerBuilder::btf_path`).
    #[error("no BTF file at {}", .0.display())]
    BtfFile(PathBuf),
}

/// A filter value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// `--filter-port 0`.
    #[error("port 0 cannot be a destination port")]
    PortZero,
    /// More values than the kernel side's filter map holds.
    #[error("at most {max} {what} can be filtered")]
    TooMany {
        /// What was filtered (`"pids"`, `"uids"`, ...).
        what: &'static str,
        /// The size of that filter map (`probe_common::limit`).
        max: u32,
    },
    /// A task name that no task can have.
    #[error(
        "a task name (--comm) is 1 to {max} bytes, as the kernel truncates them: \"{}\"",
        Escaped(.0),
        max = COMM_LEN - 1
    )]
    Comm(String),
    /// A cgroup path that cannot be looked at (escaped when shown, as a cgroup's name can hold
    /// control characters).
    #[error("cannot use cgroup {}", Escaped(&.path.to_string_lossy()))]
    Cgroup {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// A path that is not a directory of the cgroup v2 hierarchy.
    #[error(
        "{} is not a cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/nginx.service)",
        Escaped(&.0.to_string_lossy())
    )]
    NotCgroup2(PathBuf),
    /// A container id (`--container`) that is not 12 to 64 hex digits.
    #[error("{}", Escaped(.0))]
    Container(String),
    /// A series budget ([`crate::TracerBuilder::max_series`]) out of its range.
    #[error("the series budget is 1 to {max} label sets, not {given}")]
    MaxSeries {
        /// The budget asked for.
        given: u32,
        /// `probe_common::limit::MAX_COUNT_KEYS_LIMIT`.
        max: u32,
    },
}

/// The source to keep of a load error: aya's map and program errors, rather than the
/// `EbpfError` around them, whose message repeats theirs (`map error: {0}`, `BTF error: {0}`), so that a printed
/// chain says each thing once.
pub(crate) fn load_source(error: aya::EbpfError) -> Cause {
    match error {
        aya::EbpfError::MapError(e) => Box::new(e),
        aya::EbpfError::ProgramError(e) => Box::new(e),
        aya::EbpfError::BtfError(e) => Box::new(e),
        aya::EbpfError::ParseError(e) => Box::new(e),
        other => Box::new(other),
    }
}

/// `hint: ` in front of a message, or nothing.
fn hint_prefix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!("{h}: ")).unwrap_or_default()
}

#[cfg(test)]
mod tests;
