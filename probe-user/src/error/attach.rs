//! Why a backend could not be attached: each backend's error with its cause (a verifier
//! rejection and its log, permission, a function missing from BTF, no BPF trampolines), and
//! all of them when none could.

use std::{fmt, io};

use probe_common::Backend;

use super::{Cause, Missing, hint_prefix};

/// Why one backend could not be attached.
#[derive(Debug)]
pub struct BackendError {
    /// The backend.
    pub backend: Backend,
    /// Why.
    pub error: AttachError,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl BackendError {
    /// Why, with every cause: the error and its sources joined by `: ` (as a command prints a
    /// backend it skipped).
    pub fn reason(&self) -> String {
        chain(self)
    }
}

/// Why each backend of [`Backend::AUTO_ORDER`] could not be attached ([`super::Error::NoBackend`]), in
/// the order tried. Its message lists each with its causes; its source is the first.
#[derive(Debug)]
pub struct BackendErrors(pub(crate) Vec<BackendError>);

impl BackendErrors {
    /// The errors, in the order the backends were tried.
    pub fn into_vec(self) -> Vec<BackendError> {
        self.0
    }
}

impl std::ops::Deref for BackendErrors {
    type Target = [BackendError];

    fn deref(&self) -> &[BackendError] {
        &self.0
    }
}

impl fmt::Display for BackendErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reasons: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{}: {}", e.backend, e.reason()))
            .collect();
        write!(
            f,
            "no way to attach works on this kernel ({})",
            reasons.join("; ")
        )
    }
}

impl std::error::Error for BackendErrors {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.first().map(|e| e as _)
    }
}

/// Why a backend's programs could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// The kernel lacks what the backend needs.
    #[error(transparent)]
    Missing(#[from] Missing),
    /// The verifier rejected a program; its log says why.
    #[error("the verifier rejected {program} ({error})")]
    Verifier {
        /// The program (`probe_common::names::program`).
        program: &'static str,
        /// What the load returned (`EINVAL`, `EACCES`, `E2BIG`, ...).
        error: io::Error,
        /// The verifier's log.
        #[source]
        log: VerifierLog,
    },
    /// The kernel refused a program with `EPERM` before verifying it (or refused to attach
    /// it): missing capabilities, or a security policy.
    #[error("{}", permission_message(.program, *.capable))]
    Permission {
        /// The program (`probe_common::names::program`).
        program: &'static str,
        /// Whether this process has the capabilities loading needs (root, or `CAP_BPF` and
        /// `CAP_PERFMON`), so that a security policy refused it.
        capable: bool,
        /// What the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The kernel refused to load a program for another reason than its verifier or
    /// permissions (e.g. its JIT compiler cannot compile it).
    #[error("the kernel refused to load {program}")]
    Load {
        /// The program (`probe_common::names::program`).
        program: &'static str,
        /// What the kernel (or the loader) reported.
        #[source]
        source: Cause,
    },
    /// A kprobe or kretprobe could not be attached.
    #[error("{}cannot attach {kind} to {function}", hint_prefix(.hint))]
    Probe {
        /// `kprobe` or `kretprobe`.
        kind: &'static str,
        /// The kernel function.
        function: &'static str,
        /// What to change to make it work, when known (e.g. `kernel.perf_event_paranoid`).
        hint: Option<String>,
        /// What the kernel (or the loader) reported.
        #[source]
        source: Cause,
    },
    /// The kernel's BTF, which fentry/fexit programs are loaded against, could not be read.
    #[error("cannot read the kernel's BTF")]
    KernelBtf(#[source] Cause),
    /// A function fentry/fexit attaches to is not among the kernel's own (`vmlinux`) BTF
    /// functions.
    #[error(
        "{function} is not in the kernel's BTF (/sys/kernel/btf/vmlinux), so fentry/fexit cannot attach to it{}",
        hint.as_ref().map(|h| format!(": {h}")).unwrap_or_default()
    )]
    NotInBtf {
        /// The kernel function.
        function: &'static str,
        /// Why it may be missing, when known (e.g. IPv6 built as a module).
        hint: Option<String>,
    },
    /// The kernel has no BPF trampolines to attach fentry/fexit programs with.
    #[error(
        "this kernel cannot attach fentry/fexit programs (they need BTF and BPF trampolines, \
         Linux 5.5+ on x86_64 or 6.4+ on arm64, with CONFIG_FUNCTION_TRACER): cannot attach \
         {program} to {function}"
    )]
    Trampoline {
        /// The program (`probe_common::names::program`).
        program: &'static str,
        /// The kernel function.
        function: &'static str,
        /// What the kernel returned (`ENOTSUPP`, `EOPNOTSUPP`).
        #[source]
        source: io::Error,
    },
    /// An fentry or fexit program, loaded, could not be attached for another reason.
    #[error("cannot attach {program} to {function}")]
    Attach {
        /// The program (`probe_common::names::program`).
        program: &'static str,
        /// The kernel function.
        function: &'static str,
        /// What the kernel (or the loader) reported.
        #[source]
        source: Cause,
    },
    /// The tracepoint could not be attached.
    #[error(
        "cannot attach to the sock:{tracepoint} tracepoint (it needs Linux 4.16+ with CONFIG_BPF_EVENTS)"
    )]
    Tracepoint {
        /// The tracepoint's name.
        tracepoint: &'static str,
        /// What the kernel (or the loader) reported.
        #[source]
        source: Cause,
    },
    /// A program is missing from the object, or of another type (a build mismatch).
    #[error("program {0} missing from the eBPF object or not of the expected type")]
    Object(&'static str),
}

impl AttachError {
    /// Whether the kernel refused a program of the object as such (its verifier, or its JIT
    /// compiler), rather than the way it is attached or this process's permissions: what
    /// another build of the object may get past.
    pub fn is_rejection(&self) -> bool {
        match self {
            AttachError::Verifier { .. } => true,
            // The kernel's own answer to the load (its JIT compiler's, after the verifier
            // passed), not an error of the loader's (BTF, relocations) before the program
            // reached the kernel, which another build would not get past either.
            AttachError::Load { source, .. } => source.is::<io::Error>(),
            _ => false,
        }
    }
}

/// The log of a program the verifier rejected. Shown are its last [`VerifierLog::TAIL`] lines
/// (where the verifier says why), or with debug logging on (`RUST_LOG=debug`) all of it.
#[derive(Debug)]
pub struct VerifierLog {
    pub(super) text: String,
    /// Whether the message shows every line: debug logging was on when the load failed.
    pub(super) whole: bool,
}

impl VerifierLog {
    /// How many of the log's last lines the message shows without debug logging.
    pub const TAIL: usize = 20;

    pub(crate) fn new(text: String) -> Self {
        let whole = log::max_level() >= log::LevelFilter::Debug;
        VerifierLog { text, whole }
    }

    /// The whole log, as the kernel wrote it.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for VerifierLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<&str> = self.text.trim_end().lines().collect();
        let shown = if self.whole {
            write!(f, "its log ({} lines):", lines.len())?;
            &lines[..]
        } else if lines.len() > Self::TAIL {
            write!(
                f,
                "the last {} of its {} log lines (all with debug logging, e.g. RUST_LOG=debug):",
                Self::TAIL,
                lines.len()
            )?;
            &lines[lines.len() - Self::TAIL..]
        } else {
            write!(f, "its log:")?;
            &lines[..]
        };
        shown.iter().try_for_each(|line| write!(f, "\n  {line}"))
    }
}

// The errno is in the message of the error that holds the log, before it, so that the log
// ends the chain.
impl std::error::Error for VerifierLog {}

pub(super) fn permission_message(program: &str, capable: bool) -> String {
    if capable {
        format!(
            "the kernel refused {program} although this process may load eBPF programs \
             (root, or CAP_BPF and CAP_PERFMON): a security policy forbids it (a Linux security \
             module, such as SELinux, AppArmor or a BPF LSM program)"
        )
    } else {
        format!("permission denied: loading {program} needs root, or CAP_BPF and CAP_PERFMON")
    }
}

/// `error` and its sources, joined by `: `.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let causes: Vec<String> = std::iter::successors(Some(error), |e| e.source())
        .map(ToString::to_string)
        .collect();
    causes.join(": ")
}
