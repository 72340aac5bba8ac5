//! The three ways of hooking the connect path (`--attach`), and which programs each attaches
//! for each [`Mode`].

use std::path::Path;

use aya::{
    Btf, Ebpf,
    programs::{KProbe, Program, ProgramError, RawTracePoint},
};
use probe_common::{Backend, Family, Function, names::program};

use crate::{TracerBuilder, btf::FunctionIds, diagnose, error::AttachError, kernel};

/// Which of the cause hooks (`--outcome`) the tracer attached: they add the details of why a
/// connect failed, where the kernel allows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureHooks {
    /// The ICMP errors' type, code and sender (a kprobe on `ip_icmp_error` and
    /// `ipv6_icmp_error`: needs kprobes). Without, an ICMP error is still told from a reset
    /// or a timeout, without its details.
    pub icmp: bool,
    /// The reason of a SYN dropped in this host (the `skb:kfree_skb` tracepoint, with drop
    /// reasons from Linux 5.17). Without, such a connect is a `timeout`.
    pub drop_reasons: bool,
}

/// Attaches the cause hooks the kernel allows (`drop_reasons`: whether its BTF has them), after
/// the backend's programs; one that cannot be attached is left out, with a warning.
pub(crate) fn attach_failure_hooks(ebpf: &mut Ebpf, drop_reasons: bool) -> FailureHooks {
    let mut attached = Vec::new();
    let icmp = kernel::check_kprobes().is_ok()
        && kprobe(
            ebpf,
            program::icmp_error,
            &["ip_icmp_error", "ipv6_icmp_error"],
            &mut attached,
        )
        .and_then(|()| {
            // Tells the completion path that an error without an ICMP error noted is this
            // host's own.
            let map = ebpf
                .map_mut(probe_common::names::map::CAUSE_HOOKS)
                .ok_or(AttachError::Object(probe_common::names::map::CAUSE_HOOKS))?;
            let mut hooks: aya::maps::Array<_, u32> = aya::maps::Array::try_from(map)
                .map_err(|_| AttachError::Object(probe_common::names::map::CAUSE_HOOKS))?;
            hooks
                .set(0, &1, 0)
                .map_err(|_| AttachError::Object(probe_common::names::map::CAUSE_HOOKS))
        })
        .inspect_err(|e| {
            log::warn!("no ICMP types for failed connects: {e}");
            // Half attached (one function of two), it would give some connects details and
            // say it gives none.
            unload(ebpf, program::icmp_error);
        })
        .is_ok();
    let drop_reasons = drop_reasons
        && raw_tracepoint(ebpf, program::skb_dropped, "kfree_skb", &mut attached)
            .inspect_err(|e| log::warn!("no drop reasons for failed connects: {e}"))
            .is_ok();
    FailureHooks { icmp, drop_reasons }
}

/// What the tracer reports, which decides the programs a backend attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every call with its source, destination and return value.
    #[default]
    Full,
    /// Only the time and function of each call (`--format minimal`): no return probe is
    /// attached, so this costs about half as much. Events carry only `boot_ns` and `family`.
    TimestampsOnly,
    /// Only calls that get as far as sending a SYN, from a single hook on `tcp_connect` (which
    /// sees the whole 4-tuple) instead of an entry and a return probe: cheaper, but calls that
    /// fail are not reported and `ret` is always 0. The time is taken inside the call rather
    /// than at its entry.
    SuccessesOnly,
}

/// Loads and attaches `backend`'s programs for `options`' mode on its families' connect
/// functions (and, with outcomes, the completion program the kprobe and fentry backends need).
/// On failure whatever it attached is detached again, so another backend can be tried.
/// `functions` are the kernel's type ids of the connect functions if already read (fentry
/// reads them otherwise).
pub(crate) fn attach(
    ebpf: &mut Ebpf,
    backend: Backend,
    options: &TracerBuilder,
    functions: Option<&FunctionIds>,
) -> Result<(), AttachError> {
    let mut attached = Vec::new();
    // The tracepoint backend's own program completes its connects; the others need one more
    // on the same tracepoint, attached before them so that no connect they track finishes
    // unseen (it does nothing while they track none).
    let mut result = Ok(());
    if options.report.outcome_filter().is_some() && backend != Backend::Tracepoint {
        result = raw_tracepoint(
            ebpf,
            program::connect_outcome,
            program::inet_sock_set_state,
            &mut attached,
        );
    }
    if result.is_ok() {
        result = attach_programs(
            ebpf,
            backend,
            options.report.mode(),
            &options.families,
            functions,
            &mut attached,
        );
    }
    if result.is_err() {
        for name in attached {
            unload(ebpf, name);
        }
    }
    result
}

fn attach_programs(
    ebpf: &mut Ebpf,
    backend: Backend,
    mode: Mode,
    families: &[Family],
    ids: Option<&FunctionIds>,
    attached: &mut Vec<&'static str>,
) -> Result<(), AttachError> {
    let functions: Vec<Function> = families.iter().map(|f| f.connect_function()).collect();
    match backend {
        Backend::Kprobe => {
            kernel::check_kprobes()?;
            match mode {
                Mode::SuccessesOnly => kprobe(
                    ebpf,
                    program::tcp_connect,
                    &[Function::TcpConnect.name()],
                    attached,
                )?,
                Mode::Full | Mode::TimestampsOnly => {
                    // The return probe goes first, so that no connect is entered without its
                    // return traced.
                    if mode == Mode::Full {
                        let names: Vec<&'static str> = functions.iter().map(|f| f.name()).collect();
                        kprobe(ebpf, program::tcp_connect_return, &names, attached)?;
                    }
                    for &family in families {
                        let function = family.connect_function().name();
                        kprobe(ebpf, kprobe_program(family), &[function], attached)?;
                    }
                }
            }
        }
        Backend::Fentry => {
            let programs: Vec<(&'static str, Function)> = match mode {
                Mode::SuccessesOnly => vec![(program::fentry_tcp_connect, Function::TcpConnect)],
                Mode::TimestampsOnly | Mode::Full => families
                    .iter()
                    .map(|&f| (trampoline_program(mode, f), f.connect_function()))
                    .collect(),
            };
            // Only the kernel's type ids of these functions, not its whole BTF (which aya's
            // `Btf::from_sys_fs` would parse into ~17 MB): see `btf::function_btf`. Freed once
            // the programs are attached.
            let functions: Vec<&'static str> = programs.iter().map(|(_, f)| f.name()).collect();
            let btf = match ids {
                Some(ids) => ids.btf(&functions),
                None => crate::btf::function_btf(Path::new(crate::btf::VMLINUX_BTF), &functions)
                    .map_err(|e| AttachError::KernelBtf(Box::new(e)))?,
            };
            // Every program loaded (verified) first, then all attached at once: each attach
            // waits for the kernel to patch the function's trampoline, and those waits overlap
            // in parallel threads.
            for &(name, function) in &programs {
                load_trampoline(ebpf, name, function, &btf, attached)?;
            }
            attach_trampolines(ebpf, &programs)?;
        }
        Backend::Tracepoint => raw_tracepoint(
            ebpf,
            program::inet_sock_set_state,
            program::inet_sock_set_state,
            attached,
        )?,
    }
    Ok(())
}

/// Attaches the DNS answer hook (`--names`): a kprobe where the kernel queues a datagram to a
/// UDP socket, IPv4 and IPv6 alike.
pub(crate) fn attach_names(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    kernel::check_kprobes()?;
    kprobe(
        ebpf,
        program::udp_delivered,
        &["__udp_enqueue_schedule_skb"],
        &mut Vec::new(),
    )
}

/// Attaches the accept hook (`--accept`), whatever the backend: an fexit program on
/// `inet_csk_accept` where the kernel can attach one (no limit on the calls in progress), else
/// a kretprobe (which the kernel gives a few instances, each held while an `accept()` blocks).
/// Returns whether it is the fexit program; the kretprobe's error if neither attaches.
pub(crate) fn attach_accepts(
    ebpf: &mut Ebpf,
    ids: Option<&FunctionIds>,
) -> Result<bool, AttachError> {
    let function = Function::InetCskAccept;
    let fexit = (|| {
        let btf = match ids {
            Some(ids) => ids.btf(&[function.name()]),
            None => {
                crate::btf::function_btf(Path::new(crate::btf::VMLINUX_BTF), &[function.name()])
                    .map_err(|e| AttachError::KernelBtf(Box::new(e)))?
            }
        };
        let name = fexit_accept_program();
        load_trampoline(ebpf, name, function, &btf, &mut Vec::new())?;
        attach_trampolines(ebpf, &[(name, function)])
    })();
    match fexit {
        Ok(()) => Ok(true),
        Err(error) => {
            log::debug!(
                "--accept: no fexit program on inet_csk_accept, a kretprobe instead: {}",
                crate::error::chain(&error)
            );
            unload(ebpf, fexit_accept_program());
            kernel::check_kprobes()?;
            kprobe(
                ebpf,
                program::inet_csk_accept,
                &[function.name()],
                &mut Vec::new(),
            )?;
            Ok(false)
        }
    }
}

/// The fexit program for the running kernel's `inet_csk_accept`.
fn fexit_accept_program() -> &'static str {
    if kernel::accept_takes_two_args() {
        program::fexit_inet_csk_accept2
    } else {
        program::fexit_inet_csk_accept
    }
}

/// Attaches the NAT hook (`--nat`): the `net:net_dev_queue` tracepoint.
pub(crate) fn attach_nat(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    raw_tracepoint(
        ebpf,
        program::packet_queued,
        "net_dev_queue",
        &mut Vec::new(),
    )
}

/// Loads the raw tracepoint program `name` and attaches it to `tracepoint`.
fn raw_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    tracepoint: &'static str,
    attached: &mut Vec<&'static str>,
) -> Result<(), AttachError> {
    let program: &mut RawTracePoint = program(ebpf, name)?;
    program
        .load()
        .map_err(|e| diagnose::load_refused(name, None, e))?;
    attached.push(name);
    program
        .attach(tracepoint)
        .map_err(|source| AttachError::Tracepoint {
            tracepoint,
            source: Box::new(source),
        })?;
    Ok(())
}

/// The entry kprobe of `family`'s connect function.
fn kprobe_program(family: Family) -> &'static str {
    match family {
        Family::V4 => program::tcp_v4_connect,
        Family::V6 => program::tcp_v6_connect,
    }
}

/// The fentry (entry only) or fexit (everything) program for `family`'s connect function.
fn trampoline_program(mode: Mode, family: Family) -> &'static str {
    match (mode, family) {
        (Mode::TimestampsOnly, Family::V4) => program::fentry_tcp_v4_connect,
        (Mode::TimestampsOnly, Family::V6) => program::fentry_tcp_v6_connect,
        (_, Family::V4) => program::fexit_tcp_v4_connect,
        (_, Family::V6) => program::fexit_tcp_v6_connect,
    }
}

/// Loads the (k)probe program `name` and attaches it to each of the kernel functions
/// `functions`.
fn kprobe(
    ebpf: &mut Ebpf,
    name: &'static str,
    functions: &[&'static str],
    attached: &mut Vec<&'static str>,
) -> Result<(), AttachError> {
    let program: &mut KProbe = program(ebpf, name)?;
    program
        .load()
        .map_err(|e| diagnose::load_refused(name, None, e))?;
    attached.push(name);
    let kind = match program.kind() {
        aya::programs::ProbeKind::Entry => "kprobe",
        aya::programs::ProbeKind::Return => "kretprobe",
    };
    for &function in functions {
        program
            .attach(function, 0)
            .map_err(|source| AttachError::Probe {
                kind,
                function,
                hint: kernel::perf_paranoid_hint(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// Loads the fentry or fexit program `name` for `function`.
fn load_trampoline(
    ebpf: &mut Ebpf,
    name: &'static str,
    function: Function,
    btf: &Btf,
    attached: &mut Vec<&'static str>,
) -> Result<(), AttachError> {
    let function = function.name();
    let loaded = |result| diagnose::load_refused(name, Some(function), result);
    match ebpf.program_mut(name) {
        Some(Program::FEntry(p)) => p.load(function, btf).map_err(loaded)?,
        Some(Program::FExit(p)) => p.load(function, btf).map_err(loaded)?,
        _ => return Err(AttachError::Object(name)),
    }
    attached.push(name);
    Ok(())
}

/// Attaches the loaded fentry and fexit `programs`, each from a thread of its own: attaching
/// one waits for the kernel to patch its function's trampoline (a sleep in the kernel more than
/// work), so the waits of all of them overlap. The first error is returned (what attached
/// stays attached, for the caller to unload).
fn attach_trampolines(
    ebpf: &mut Ebpf,
    programs: &[(&'static str, Function)],
) -> Result<(), AttachError> {
    let mut targets: Vec<(&'static str, &'static str, &mut Program)> = ebpf
        .programs_mut()
        .filter_map(|(name, program)| {
            let &(name, function) = programs.iter().find(|(n, _)| *n == name)?;
            Some((name, function.name(), program))
        })
        .collect();
    if targets.len() != programs.len() {
        let missing = programs
            .iter()
            .find(|(n, _)| !targets.iter().any(|(t, _, _)| t == n))
            .map_or("", |(n, _)| *n);
        return Err(AttachError::Object(missing));
    }
    std::thread::scope(|scope| {
        let attaching: Vec<_> = targets
            .iter_mut()
            .map(|(name, function, program)| {
                let (name, function) = (*name, *function);
                scope.spawn(move || {
                    let attached = match program {
                        Program::FEntry(p) => p.attach().map(drop),
                        Program::FExit(p) => p.attach().map(drop),
                        _ => return Err(AttachError::Object(name)),
                    };
                    attached.map_err(|e| diagnose::trampoline_refused(name, function, e))
                })
            })
            .collect();
        attaching
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect::<Result<Vec<()>, AttachError>>()
    })?;
    Ok(())
}

/// Detaches and unloads program `name` (after a failed attach).
fn unload(ebpf: &mut Ebpf, name: &str) {
    if let Some(program) = ebpf.program_mut(name) {
        unload_program(program);
    }
}

/// Detaches every program attached (each of probe's hook types), leaving `live_figures`, never
/// attached, loaded to be run (the others stay loaded too while the tracer holds their
/// descriptors, for their statistics).
pub(crate) fn detach_all(ebpf: &mut Ebpf) {
    for (name, program) in ebpf.programs_mut() {
        if name != program::live_figures {
            unload_program(program);
        }
    }
}

fn unload_program(program: &mut Program) {
    let _ = match program {
        Program::KProbe(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        _ => Ok(()),
    };
}

/// Loads `live_figures`, which reads the connections still open at the end (`--lifetime`),
/// run by userspace, never attached.
pub(crate) fn load_live_figures(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    let name = program::live_figures;
    let program: &mut RawTracePoint = program(ebpf, name)?;
    program
        .load()
        .map_err(|e| diagnose::load_refused(name, None, e))
}

/// Program `name` of the object, as the type its hook needs.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, AttachError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(AttachError::Object(name))
}
