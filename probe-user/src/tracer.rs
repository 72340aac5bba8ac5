//! An attached [`Tracer`]: reading its events, counts, statistics and what was lost.

use std::{
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use aya_log::EbpfLogger;
use probe_common::{
    CountBy, Family,
    names::map,
    state::{Connecting, CountKey, PendingConnect, counter},
};

use crate::{Backend, ConnectEvent, Error, TracerBuilder, clock, error::BackendError, event};

/// A connect call still waiting for its return probe after this long never gets it: its thread
/// exited after the kernel missed the return (a connect call takes microseconds).
const STALE_AFTER: Duration = Duration::from_secs(5);

/// How often [`Tracer::drain`] looks for stale calls.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// Connects to one destination (or port), counted in the kernel (see
/// [`TracerBuilder::count_by`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectCount {
    /// The address family (and so the connect function).
    pub family: Family,
    /// The destination address; `None` when counting by port only.
    pub daddr: Option<std::net::IpAddr>,
    /// The destination port.
    pub dport: u16,
    /// Connects since tracing started.
    pub connects: u64,
}

/// Counts of what a [`Tracer`] saw and lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events received from the kernel.
    pub events: u64,
    /// Events the kernel could not deliver: the ring buffer or the map of connects in flight
    /// was full.
    pub dropped: u64,
    /// Connects whose return probe never ran, so they could not be reported: the kernel's
    /// kretprobe had no free instance (its `maxactive`, as low as the number of CPUs on some
    /// kernels), or tracing ended while the call was in flight.
    pub missed: u64,
    /// Records that could not be decoded.
    pub malformed: u64,
}

impl Counters {
    /// Every event lost anywhere.
    pub fn lost(&self) -> u64 {
        self.dropped + self.missed + self.malformed
    }
}

/// Attached probes and their event stream. Dropping it detaches everything.
pub struct Tracer {
    backend: Backend,
    fallbacks: Vec<BackendError>,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    pending: HashMap<MapData, u64, PendingConnect>,
    connecting: HashMap<MapData, u64, Connecting>,
    counts: PerCpuHashMap<MapData, CountKey, u64>,
    count_by: Option<CountBy>,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    received: u64,
    malformed: u64,
    reaped: u64,
    last_reap: Instant,
    // Keeps kernel run-time accounting on while held (see TracerBuilder::program_stats).
    _stats: Option<std::os::fd::OwnedFd>,
    // Owns the programs and links; declared last so it is dropped after the maps above.
    ebpf: Ebpf,
}

/// Kernel accounting of one eBPF program (see [`TracerBuilder::program_stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// The program's name (its hook).
    pub name: String,
    /// Times it ran.
    pub runs: u64,
    /// Total time spent in it, in nanoseconds.
    pub run_time_ns: u64,
}

impl Tracer {
    /// A builder with no filters, tracing both families.
    pub fn builder() -> TracerBuilder {
        TracerBuilder::default()
    }

    /// Takes the maps userspace reads out of the attached object.
    pub(crate) fn new(
        mut ebpf: Ebpf,
        backend: Backend,
        fallbacks: Vec<BackendError>,
        count_by: Option<CountBy>,
        logger: Option<EbpfLogger<&'static dyn log::Log>>,
        stats: Option<std::os::fd::OwnedFd>,
    ) -> Result<Self, Error> {
        Ok(Tracer {
            backend,
            fallbacks,
            events: take_map(&mut ebpf, map::EVENTS)?,
            counters: take_map(&mut ebpf, map::COUNTERS)?,
            pending: take_map(&mut ebpf, map::PENDING)?,
            connecting: take_map(&mut ebpf, map::CONNECTING)?,
            counts: take_map(&mut ebpf, map::CONNECT_COUNTS)?,
            count_by,
            logger,
            received: 0,
            malformed: 0,
            reaped: 0,
            last_reap: Instant::now(),
            _stats: stats,
            ebpf,
        })
    }

    /// How the programs are attached.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The backends tried before [`Tracer::backend`] and why each could not be used (empty
    /// unless the backend was chosen automatically and the first choice failed).
    pub fn fallbacks(&self) -> &[BackendError] {
        &self.fallbacks
    }

    /// Hands every event waiting in the ring buffer to `on_event`; returns how many there were.
    pub fn drain(&mut self, mut on_event: impl FnMut(&ConnectEvent)) -> usize {
        let mut n = 0;
        while let Some(record) = self.events.next() {
            match ConnectEvent::decode(&record) {
                Ok(event) => {
                    on_event(&event);
                    n += 1;
                }
                Err(_) => self.malformed += 1,
            }
        }
        self.received += n as u64;
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
        if self.last_reap.elapsed() >= REAP_EVERY {
            self.reap_pending(STALE_AFTER);
        }
        n
    }

    /// The kernel's connect counts (with [`TracerBuilder::count_by`]; empty otherwise), most
    /// connects first.
    pub fn connect_counts(&self) -> Vec<ConnectCount> {
        let by_port = self.count_by == Some(CountBy::Port);
        let mut counts: Vec<ConnectCount> = self
            .counts
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(key, per_cpu)| {
                let family = event::family(key.family).ok()?;
                Some(ConnectCount {
                    family,
                    daddr: (!by_port).then(|| family.ip(&key.daddr)),
                    dport: key.dport,
                    connects: per_cpu.iter().sum(),
                })
            })
            .collect();
        counts.sort_by(|a, b| {
            b.connects
                .cmp(&a.connects)
                .then_with(|| (a.dport, a.daddr).cmp(&(b.dport, b.daddr)))
        });
        counts
    }

    /// How many connects the kernel holds between their first and last hook: calls between
    /// their entry and return probes (kprobe backend), plus sockets between SYN_SENT and their
    /// next state (tracepoint backend). The maps are bounded by `probe_common::limit`'s
    /// `MAX_PENDING` and `MAX_CONNECTING`; normally this is about the number of threads inside a
    /// connect.
    pub fn pending_calls(&self) -> usize {
        self.pending.keys().filter(Result::is_ok).count()
            + self.connecting.keys().filter(Result::is_ok).count()
    }

    /// Forgets connect calls entered more than `max_age` ago whose return probe never ran, and
    /// counts them as missed; returns how many. [`Tracer::drain`] does this for calls older than
    /// a few seconds; with `Duration::ZERO`, at the end of tracing, it accounts for every call
    /// that will not be reported.
    pub fn reap_pending(&mut self, max_age: Duration) -> usize {
        self.last_reap = Instant::now();
        let cutoff = clock::boot_now_ns().saturating_sub(max_age.as_nanos() as u64);
        let stale: Vec<u64> = self
            .pending
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, call)| call.boot_ns <= cutoff)
            .map(|(key, _)| key)
            .collect();
        // A thread may have replaced its stale entry with a new call since: deleting by key could
        // then lose that call, so an entry is deleted only if it is still the stale one.
        let mut reaped = 0;
        for key in stale {
            let still_stale =
                matches!(self.pending.get(&key, 0), Ok(call) if call.boot_ns <= cutoff);
            if still_stale && self.pending.remove(&key).is_ok() {
                reaped += 1;
            }
        }
        self.reaped += reaped as u64;
        reaped
    }

    /// Run counts and times of the loaded programs; zero unless built with
    /// [`TracerBuilder::program_stats`].
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramStats {
                    name: name.to_string(),
                    runs: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                })
            })
            .collect()
    }

    /// What was received and what was lost so far.
    pub fn counters(&self) -> Counters {
        let total = |index| -> u64 {
            self.counters
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        Counters {
            events: self.received,
            dropped: total(counter::RING_FULL)
                + total(counter::PENDING_FULL)
                + total(counter::COUNTS_FULL),
            missed: total(counter::MISSED_RETURN) + self.reaped,
            malformed: self.malformed,
        }
    }
}

/// The ring buffer's descriptor: readable when the kernel signals waiting events.
impl AsRawFd for Tracer {
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}

/// Takes map `name` out of the object, as the type userspace reads it with.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let missing = || Error::Object(format!("map {name}"));
    let map = ebpf.take_map(name).ok_or_else(missing)?;
    T::try_from(map).map_err(|source| Error::Map {
        map: name,
        source: Box::new(source),
    })
}
