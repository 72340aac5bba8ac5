//! The library's errors: what went wrong setting up a [`crate::Tracer`], as variants an agent
//! can match (a missing capability, a kernel feature, BTF, loading, attaching a backend, a bad
//! filter) and messages a person can act on.

use std::{fmt, io, path::PathBuf};

use probe_common::{Backend, COMM_LEN};

use crate::escape::Escaped;

/// An underlying error whose type is not part of this crate's API (aya's, which may change with
/// any of its versions), kept as the source so that the whole chain still prints.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a [`crate::Tracer`] could not be set up. Nothing stays attached after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filter value the kernel side cannot take; found before anything is loaded.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// Options that do not go together.
    #[error("{0}")]
    Options(&'static str),
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
        "a task name (--comm) is 1 to {max} bytes, as the kernel truncates them: {:?}",
        .0,
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
    #[error("{0}")]
    Container(String),
    /// A destination that is neither an address nor a network.
    #[error("not an address or network in CIDR notation: {0:?}")]
    Network(String),
}

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

/// Why each backend of [`Backend::AUTO_ORDER`] could not be attached ([`Error::NoBackend`]), in
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
        matches!(
            self,
            AttachError::Verifier { .. } | AttachError::Load { .. }
        )
    }
}

/// The log of a program the verifier rejected. Shown are its last [`VerifierLog::TAIL`] lines
/// (where the verifier says why), or with debug logging on (`RUST_LOG=debug`) all of it.
#[derive(Debug)]
pub struct VerifierLog {
    text: String,
    /// Whether the message shows every line: debug logging was on when the load failed.
    whole: bool,
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

/// Whether a failed load's verifier log says why the verifier rejected the program: a line
/// besides the statistics it writes for every program (a program it passed, whose load failed
/// later, e.g. in the JIT compiler, logs only those).
fn verifier_rejected(log: &str) -> bool {
    const STATISTICS: [&str; 3] = ["processed ", "verification time", "stack depth"];
    log.lines()
        .map(str::trim)
        .any(|line| !line.is_empty() && !STATISTICS.iter().any(|stat| line.starts_with(stat)))
}

/// Why the kernel refused to load `program` (for kernel function `function`, for fentry and
/// fexit), from what aya reported: the verifier (with its log), permission, a function missing
/// from BTF, or anything else.
pub(crate) fn load_refused(
    program: &'static str,
    function: Option<&'static str>,
    error: aya::programs::ProgramError,
) -> AttachError {
    use aya::programs::ProgramError;
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if verifier_rejected(&log) {
                AttachError::Verifier {
                    program,
                    error: io_error,
                    log: VerifierLog::new(log),
                }
            } else if io_error.raw_os_error() == Some(libc::EPERM) {
                permission(program, io_error)
            } else {
                AttachError::Load {
                    program,
                    source: Box::new(io_error),
                }
            }
        }
        ProgramError::Btf(aya::BtfError::UnknownBtfTypeName { .. }) if function.is_some() => {
            let function = function.unwrap_or_default();
            AttachError::NotInBtf {
                function,
                hint: crate::kernel::missing_function_hint(function),
            }
        }
        other => AttachError::Load {
            program,
            source: Box::new(other),
        },
    }
}

/// Why the kernel refused to attach the fentry or fexit `program` to `function`: no BPF
/// trampolines (`ENOTSUPP`, `EOPNOTSUPP`), permission, or anything else.
pub(crate) fn trampoline_refused(
    program: &'static str,
    function: &'static str,
    error: aya::programs::ProgramError,
) -> AttachError {
    /// The kernel's internal `ENOTSUPP`, which BPF syscalls return to userspace.
    const ENOTSUPP: i32 = 524;
    let io_error = match error {
        aya::programs::ProgramError::SyscallError(aya::sys::SyscallError { io_error, .. }) => {
            io_error
        }
        other => {
            return AttachError::Attach {
                program,
                function,
                source: Box::new(other),
            };
        }
    };
    match io_error.raw_os_error() {
        Some(ENOTSUPP | libc::EOPNOTSUPP) => AttachError::Trampoline {
            program,
            function,
            source: io_error,
        },
        Some(libc::EPERM) => permission(program, io_error),
        _ => AttachError::Attach {
            program,
            function,
            source: Box::new(io_error),
        },
    }
}

fn permission(program: &'static str, source: io::Error) -> AttachError {
    AttachError::Permission {
        program,
        capable: crate::kernel::check_privileges().is_ok(),
        source,
    }
}

fn permission_message(program: &str, capable: bool) -> String {
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
fn chain(error: &dyn std::error::Error) -> String {
    let causes: Vec<String> = std::iter::successors(Some(error), |e| e.source())
        .map(ToString::to_string)
        .collect();
    causes.join(": ")
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
mod tests {
    use std::error::Error as _;

    use aya::programs::ProgramError;

    use super::*;

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    fn load_error(errno: i32, log: &str) -> ProgramError {
        ProgramError::LoadError {
            io_error: os(errno),
            verifier_log: aya_obj::VerifierLog::new(log.to_string()),
        }
    }

    fn numbered(n: usize) -> String {
        (1..=n).map(|i| format!("{i}: insn\n")).collect()
    }

    #[test]
    fn a_verifier_rejection_shows_the_last_lines_of_its_log() {
        let log = format!(
            "{}BPF_STX uses reserved fields\nprocessed 24 insns\n",
            numbered(23)
        );
        let error = load_refused("connect_outcome", None, load_error(libc::EINVAL, &log));
        let AttachError::Verifier { .. } = error else {
            panic!("{error:?}")
        };
        let reason = BackendError {
            backend: Backend::Fentry,
            error,
        }
        .reason();
        let mut expected = String::from(
            "the verifier rejected connect_outcome (Invalid argument (os error 22)): the last 20 \
             of its 25 log lines (all with debug logging, e.g. RUST_LOG=debug):",
        );
        for i in 6..=23 {
            expected.push_str(&format!("\n  {i}: insn"));
        }
        expected.push_str("\n  BPF_STX uses reserved fields\n  processed 24 insns");
        assert_eq!(reason, expected);
    }

    #[test]
    fn a_short_or_whole_verifier_log_is_shown_entirely() {
        let short = VerifierLog {
            text: "R1 invalid mem access\nprocessed 3 insns\n".into(),
            whole: false,
        };
        assert_eq!(
            short.to_string(),
            "its log:\n  R1 invalid mem access\n  processed 3 insns"
        );
        let whole = VerifierLog {
            text: numbered(30),
            whole: true,
        };
        let shown = whole.to_string();
        assert!(
            shown.starts_with("its log (30 lines):\n  1: insn\n"),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 31);
    }

    #[test]
    fn only_statistics_in_the_log_is_no_verifier_rejection() {
        let log = "processed 1200 insns (limit 1000000) max_states_per_insn 4\nstack depth 64\n";
        assert!(!verifier_rejected(log));
        assert!(!verifier_rejected(""));
        assert!(verifier_rejected("0: (b7) r0 = 0\nprocessed 1 insns\n"));
        // A program the verifier passed whose JIT compilation failed.
        let error = load_refused("p", None, load_error(524, log));
        assert!(matches!(error, AttachError::Load { .. }), "{error:?}");
        assert!(error.is_rejection());
        assert_eq!(
            chain(&error),
            "the kernel refused to load p: Unknown error 524 (os error 524)"
        );
    }

    #[test]
    fn eperm_without_a_log_is_permission_not_missing_trampolines() {
        let error = load_refused(
            "fexit_tcp_v4_connect",
            Some("tcp_v4_connect"),
            load_error(libc::EPERM, ""),
        );
        let AttachError::Permission { source, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(source.raw_os_error(), Some(libc::EPERM));
        assert!(!error.is_rejection());
        assert_eq!(
            permission_message("fexit_tcp_v4_connect", true),
            "the kernel refused fexit_tcp_v4_connect although this process may load eBPF \
             programs (root, or CAP_BPF and CAP_PERFMON): a security policy forbids it (a Linux \
             security module, such as SELinux, AppArmor or a BPF LSM program)"
        );
        assert_eq!(
            permission_message("fexit_tcp_v4_connect", false),
            "permission denied: loading fexit_tcp_v4_connect needs root, or CAP_BPF and CAP_PERFMON"
        );
    }

    #[test]
    fn a_function_missing_from_btf_is_named() {
        let missing = ProgramError::Btf(aya::BtfError::UnknownBtfTypeName {
            type_name: "tcp_v6_connect".into(),
        });
        let error = load_refused("fexit_tcp_v6_connect", Some("tcp_v6_connect"), missing);
        let shown = error.to_string();
        assert!(
            shown.starts_with(
                "tcp_v6_connect is not in the kernel's BTF (/sys/kernel/btf/vmlinux), so \
                 fentry/fexit cannot attach to it"
            ),
            "{shown}"
        );
    }

    #[test]
    fn only_enotsupp_at_attach_means_no_trampolines() {
        let syscall = |errno| {
            ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_raw_tracepoint_open",
                io_error: os(errno),
            })
        };
        for errno in [524, libc::EOPNOTSUPP] {
            let error = trampoline_refused("fentry_p", "f", syscall(errno));
            assert!(matches!(error, AttachError::Trampoline { .. }), "{error:?}");
            assert!(
                error
                    .to_string()
                    .contains("Linux 5.5+ on x86_64 or 6.4+ on arm64")
            );
        }
        let error = trampoline_refused("fentry_p", "f", syscall(libc::EBUSY));
        assert_eq!(
            chain(&error),
            "cannot attach fentry_p to f: Device or resource busy (os error 16)"
        );
        let error = trampoline_refused("fentry_p", "f", syscall(libc::EPERM));
        assert!(matches!(error, AttachError::Permission { .. }), "{error:?}");
    }

    #[test]
    fn no_backend_lists_each_reason_with_its_causes_and_its_source_is_the_first() {
        let errors = BackendErrors(vec![
            BackendError {
                backend: Backend::Fentry,
                error: AttachError::Attach {
                    program: "fexit_tcp_v4_connect",
                    function: "tcp_v4_connect",
                    source: Box::new(os(libc::EBUSY)),
                },
            },
            BackendError {
                backend: Backend::Kprobe,
                error: Missing::Kprobes.into(),
            },
        ]);
        let error = Error::NoBackend(errors);
        assert_eq!(
            error.to_string(),
            "no way to attach works on this kernel (fentry: cannot attach fexit_tcp_v4_connect \
             to tcp_v4_connect: Device or resource busy (os error 16); kprobe: this kernel has \
             no kprobes (CONFIG_KPROBES is off), so probe-user cannot trace it)"
        );
        assert_eq!(error.backend_errors().len(), 2);
        let first = error.source().expect("the first backend's error");
        assert_eq!(
            first.to_string(),
            "cannot attach fexit_tcp_v4_connect to tcp_v4_connect"
        );
        let errno = first.source().and_then(|e| e.downcast_ref::<io::Error>());
        assert_eq!(errno.and_then(io::Error::raw_os_error), Some(libc::EBUSY));
    }

    /// A cgroup path given on the command line is shown escaped: the error is one line, with no
    /// control character of the path in it.
    #[test]
    fn cgroup_paths_are_escaped_in_errors() {
        let path = PathBuf::from("/sys/fs/cgroup/evil\u{1b}[2J\r\nforged\tx");
        let line = FilterError::NotCgroup2(path.clone()).to_string();
        assert!(
            line.starts_with(r"/sys/fs/cgroup/evil\u{1b}[2J\r\nforged\tx is not a cgroup v2"),
            "{line:?}"
        );
        let source = std::io::Error::from(std::io::ErrorKind::NotFound);
        let line = FilterError::Cgroup { path, source }.to_string();
        assert_eq!(
            line,
            r"cannot use cgroup /sys/fs/cgroup/evil\u{1b}[2J\r\nforged\tx"
        );
    }
}
