//! What a [`crate::Tracer`] accounts besides connects: where attaching spent its time
//! ([`Startup`]), what was received and lost ([`Counters`]), and each program's kernel
//! statistics ([`ProgramStats`]).

/// Where [`crate::TracerBuilder::attach`] spent its time: reading struct offsets from the
/// kernel's BTF, loading (the verifier included) and filling the maps, attaching (with `auto`,
/// every backend tried).
///
/// ```no_run
/// let tracer = probe_user::Tracer::builder().attach()?;
/// let startup = tracer.startup();
/// println!("attached in {:?} (BTF {:?})", startup.total(), startup.btf);
/// # Ok::<(), probe_user::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Startup {
    /// Reading the kernel's BTF for struct offsets.
    pub btf: std::time::Duration,
    /// Loading and verifying the programs, and filling the filter maps (the BTF read aside).
    pub load: std::time::Duration,
    /// Attaching the programs.
    pub attach: std::time::Duration,
}

impl Startup {
    /// The whole of it.
    pub fn total(&self) -> std::time::Duration {
        self.btf + self.load + self.attach
    }
}

/// Counts of what a [`crate::Tracer`] saw and lost.
///
/// ```
/// let mut counters = probe_user::Counters::default();
/// counters.dropped = 2;
/// counters.missed = 1;
/// assert_eq!(counters.lost(), 3);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Events received from the kernel.
    pub events: u64,
    /// Events the kernel could not deliver: the ring buffer or the map of connects in flight
    /// was full (a full map of sockets in SYN_SENT, tracepoint backend, evicts its oldest
    /// entry, counted here).
    pub dropped: u64,
    /// Connects whose completion was never seen, so they could not be reported: the kernel's
    /// kretprobe had no free instance (its `maxactive`, as low as the number of CPUs on some
    /// kernels), the kernel skipped a program run because it was already running on that CPU
    /// (its recursion misses), or tracing ended while the call was in flight (between entry
    /// and return, or a socket still in SYN_SENT).
    pub missed: u64,
    /// Records that could not be decoded.
    pub malformed: u64,
    /// Connects counted under an overflow row ([`crate::ConnectCount::overflow`]) because the
    /// kernel's counts held their budget of label sets. Not a loss: they are counted.
    pub overflow: u64,
}

impl Counters {
    /// Every event lost anywhere.
    pub fn lost(&self) -> u64 {
        self.dropped + self.missed + self.malformed
    }
}

/// Kernel accounting of one eBPF program (see [`crate::TracerBuilder::program_stats`]).
///
/// ```no_run
/// let tracer = probe_user::Tracer::builder().program_stats(true).attach()?;
/// for program in tracer.program_stats() {
///     let per_run = program.run_time_ns.checked_div(program.runs).unwrap_or(0);
///     println!("{}: {} runs, {per_run} ns each", program.name, program.runs);
/// }
/// # Ok::<(), probe_user::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgramStats {
    /// The program's name (its hook).
    pub name: String,
    /// Times it ran.
    pub runs: u64,
    /// Total time spent in it, in nanoseconds.
    pub run_time_ns: u64,
    /// Runs the kernel skipped because the program was already running on that CPU (counted
    /// as missed in [`Counters`]).
    pub recursion_misses: u64,
}
