//! The three ways of hooking the connect path (`--attach`), and which programs each attaches.

use std::{fmt, str::FromStr};

use anyhow::{Context as _, Result};
use aya::{
    Btf, Ebpf,
    programs::{KProbe, Program, RawTracePoint},
};

use crate::{Family, kernel};

/// How the kernel side is attached. Every backend reports the same connects with the same
/// fields, except where noted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A kprobe and a kretprobe on `tcp_v4_connect` / `tcp_v6_connect`, as SystemTap does.
    /// Needs `CONFIG_KPROBES`.
    Kprobe,
    /// An fexit program on each connect function (arguments and return value at once; time
    /// taken at the return). Needs BPF trampolines (x86_64 and arm64 since Linux 5.5, with
    /// `CONFIG_FUNCTION_TRACER`); cheaper than a kprobe and never misses a return.
    Fentry,
    /// The `sock:inet_sock_set_state` tracepoint, attached raw. Works without kprobes or
    /// trampolines, but reports only calls that get as far as sending a SYN (`ret` is 0), each
    /// once the socket leaves SYN_SENT (established, refused or given up).
    Tracepoint,
}

impl Backend {
    /// The order `auto` tries them in: kprobe first, as SystemTap and its examples do.
    pub const AUTO_ORDER: [Backend; 3] = [Backend::Kprobe, Backend::Fentry, Backend::Tracepoint];

    /// The names `--attach` accepts (besides `auto`).
    pub const NAMES: [&'static str; 3] = ["kprobe", "fentry", "tracepoint"];

    /// The `--attach` name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kprobe => "kprobe",
            Backend::Fentry => "fentry",
            Backend::Tracepoint => "tracepoint",
        }
    }

    /// Whether connect calls that fail inside the kernel are reported (with their error).
    pub fn reports_failed_calls(self) -> bool {
        self != Backend::Tracepoint
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::AUTO_ORDER
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown backend '{s}' (expected one of: auto, {})",
                    Self::NAMES.join(", ")
                )
            })
    }
}

/// What the tracer reports, which decides the programs a backend attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every call with its source, destination and return value.
    Full,
    /// Only the time and function of each call (`--format minimal`).
    TimestampsOnly,
    /// Only calls that send a SYN, from one hook on `tcp_connect`.
    SuccessesOnly,
}

/// Loads and attaches `backend`'s programs for `mode` on the `families`' connect functions.
/// On failure whatever it attached is detached again, so another backend can be tried.
pub(crate) fn attach(
    ebpf: &mut Ebpf,
    backend: Backend,
    mode: Mode,
    families: &[Family],
) -> Result<()> {
    let mut attached = Vec::new();
    let result = attach_programs(ebpf, backend, mode, families, &mut attached);
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
    attached: &mut Vec<&'static str>,
) -> Result<()> {
    let functions: Vec<&'static str> = families.iter().map(|f| f.function()).collect();
    match backend {
        Backend::Kprobe => {
            kernel::check_kprobes()?;
            match mode {
                Mode::SuccessesOnly => kprobe(ebpf, "tcp_connect", &["tcp_connect"], attached)?,
                Mode::Full | Mode::TimestampsOnly => {
                    // The return probe goes first, so that no connect is entered without its
                    // return traced.
                    if mode == Mode::Full {
                        kprobe(ebpf, "tcp_connect_return", &functions, attached)?;
                    }
                    for function in functions {
                        kprobe(ebpf, function, &[function], attached)?;
                    }
                }
            }
        }
        Backend::Fentry => {
            let btf = Btf::from_sys_fs().context("cannot read the kernel's BTF")?;
            let programs: Vec<(&'static str, &'static str)> = match mode {
                Mode::SuccessesOnly => vec![("fentry_tcp_connect", "tcp_connect")],
                Mode::TimestampsOnly | Mode::Full => families
                    .iter()
                    .map(|&f| (trampoline_program(mode, f), f.function()))
                    .collect(),
            };
            for (name, function) in programs {
                trampoline(ebpf, name, function, &btf, attached)
                    .with_context(|| format!("cannot attach {name} to {function}"))
                    .context(
                        "this kernel cannot attach fentry/fexit programs (they need BTF and BPF \
                         trampolines, Linux 5.5+ with CONFIG_FUNCTION_TRACER)",
                    )?;
            }
        }
        Backend::Tracepoint => {
            let name = "inet_sock_set_state";
            let program: &mut RawTracePoint = program(ebpf, name)?;
            program
                .load()
                .with_context(|| format!("cannot load {name}"))?;
            attached.push(name);
            program.attach(name).with_context(|| {
                format!("cannot attach to the sock:{name} tracepoint (it needs Linux 4.16+ with CONFIG_BPF_EVENTS)")
            })?;
        }
    }
    Ok(())
}

/// The fentry (entry only) or fexit (everything) program for `family`'s connect function.
fn trampoline_program(mode: Mode, family: Family) -> &'static str {
    match (mode, family) {
        (Mode::TimestampsOnly, Family::V4) => "fentry_tcp_v4_connect",
        (Mode::TimestampsOnly, Family::V6) => "fentry_tcp_v6_connect",
        (_, Family::V4) => "fexit_tcp_v4_connect",
        (_, Family::V6) => "fexit_tcp_v6_connect",
    }
}

/// Loads the (k)probe program `name` and attaches it to each of `functions`.
fn kprobe(
    ebpf: &mut Ebpf,
    name: &'static str,
    functions: &[&str],
    attached: &mut Vec<&'static str>,
) -> Result<()> {
    let program: &mut KProbe = program(ebpf, name)?;
    program
        .load()
        .with_context(|| format!("cannot load {name}"))?;
    attached.push(name);
    let kind = match program.kind() {
        aya::programs::ProbeKind::Entry => "kprobe",
        aya::programs::ProbeKind::Return => "kretprobe",
    };
    for function in functions {
        if let Err(e) = program.attach(function, 0) {
            let e = anyhow::Error::new(e).context(format!("cannot attach {kind} to {function}"));
            return Err(with_hint(e, kernel::perf_paranoid_hint()));
        }
    }
    Ok(())
}

/// Loads the fentry or fexit program `name` for `function` and attaches it.
fn trampoline(
    ebpf: &mut Ebpf,
    name: &'static str,
    function: &str,
    btf: &Btf,
    attached: &mut Vec<&'static str>,
) -> Result<()> {
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?;
    match program {
        Program::FEntry(p) => {
            p.load(function, btf)?;
            attached.push(name);
            p.attach()?;
        }
        Program::FExit(p) => {
            p.load(function, btf)?;
            attached.push(name);
            p.attach()?;
        }
        _ => anyhow::bail!("program {name} is neither fentry nor fexit"),
    }
    Ok(())
}

/// Detaches and unloads program `name` (after a failed attach).
fn unload(ebpf: &mut Ebpf, name: &str) {
    let _ = match ebpf.program_mut(name) {
        Some(Program::KProbe(p)) => p.unload(),
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::RawTracePoint(p)) => p.unload(),
        _ => Ok(()),
    };
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?;
    Ok(program.try_into()?)
}

/// Puts `hint` (what to change to make it work) in front of `error`.
pub(crate) fn with_hint(error: anyhow::Error, hint: Option<String>) -> anyhow::Error {
    match hint {
        Some(hint) => error.context(hint),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for backend in Backend::AUTO_ORDER {
            assert_eq!(backend.name().parse::<Backend>(), Ok(backend));
        }
        assert_eq!(
            "uprobe".parse::<Backend>(),
            Err(
                "unknown backend 'uprobe' (expected one of: auto, kprobe, fentry, tracepoint)"
                    .into()
            )
        );
    }
}
