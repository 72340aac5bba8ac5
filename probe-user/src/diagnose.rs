//! What the kernel's refusal of a program means: aya's load and attach errors read as a
//! verifier rejection (with its log), permission (missing capabilities, or a security policy),
//! a function missing from BTF, no BPF trampolines, or anything else.

use std::io;

use crate::{
    error::{AttachError, VerifierLog},
    kernel,
};

/// Whether a failed load's verifier log says why the verifier rejected the program: a line
/// besides the statistics it writes for every program (a program it passed, whose load failed
/// later, e.g. in the JIT compiler, logs only those).
pub(crate) fn verifier_rejected(log: &str) -> bool {
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
                hint: kernel::missing_function_hint(function),
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
        capable: kernel::check_privileges().is_ok(),
        source,
    }
}
