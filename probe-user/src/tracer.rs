//! Loading the eBPF object, configuring it, attaching its probes, and reading its events.

use std::{
    collections::BTreeSet,
    os::fd::{AsRawFd, RawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key},
};
use aya_log::EbpfLogger;
use ipnet::IpNet;
use probe_common::{
    COMM_LEN, Connecting, CountKey, DstKey, FAMILY_V4, FAMILY_V6, FilterFlags, MAX_PIDS,
    PORT_WORDS, PendingConnect, RING_BYTES, count_by, counter,
};

use crate::{
    Backend, ConnectEvent, Family,
    backend::{self, Mode, with_hint},
    btf, clock, filter, kernel,
};

/// The compiled kernel side, built by build.rs.
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

/// The kernel wakes the reader only once this much is waiting; below it, the reader's periodic
/// drain picks events up. A wake-up per event would cost more than the event itself.
const DEFAULT_WAKEUP_BYTES: u64 = RING_BYTES as u64 / 4;

/// A connect call still waiting for its return probe after this long never gets it: its thread
/// exited after the kernel missed the return (a connect call takes microseconds).
const STALE_AFTER: Duration = Duration::from_secs(5);

/// How often [`Tracer::drain`] looks for stale calls.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// Options of a [`Tracer`]: filters (applied in the kernel) and families to trace.
#[derive(Clone, Debug)]
pub struct TracerBuilder {
    ports: BTreeSet<u16>,
    pids: BTreeSet<u32>,
    uids: BTreeSet<u32>,
    cgroups: Vec<PathBuf>,
    comms: BTreeSet<String>,
    destinations: Vec<IpNet>,
    families: Vec<Family>,
    timestamps_only: bool,
    successes_only: bool,
    program_stats: bool,
    btf_path: PathBuf,
    backend: Option<Backend>,
    count_by: Option<CountBy>,
}

/// What [`TracerBuilder::count_by`] aggregates connects by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountBy {
    /// Destination address and port.
    Destination,
    /// Destination port only.
    Port,
}

/// Connects to one destination (or port), counted in the kernel (see
/// [`TracerBuilder::count_by`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectCount {
    /// Which connect function.
    pub family: Family,
    /// The destination address; `None` when counting by port only.
    pub daddr: Option<std::net::IpAddr>,
    /// The destination port.
    pub dport: u16,
    /// Connects since tracing started.
    pub connects: u64,
}

impl Default for TracerBuilder {
    fn default() -> Self {
        Self {
            ports: BTreeSet::new(),
            pids: BTreeSet::new(),
            uids: BTreeSet::new(),
            cgroups: Vec::new(),
            comms: BTreeSet::new(),
            destinations: Vec::new(),
            families: vec![Family::V4, Family::V6],
            timestamps_only: false,
            successes_only: false,
            program_stats: false,
            btf_path: PathBuf::from(btf::VMLINUX_BTF),
            backend: None,
            count_by: None,
        }
    }
}

impl TracerBuilder {
    /// Traces only connects to these destination ports (in addition to any given before).
    pub fn filter_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.ports.extend(ports);
        self
    }

    /// Traces only connects made by these processes (in addition to any given before).
    pub fn filter_pids(mut self, pids: impl IntoIterator<Item = u32>) -> Self {
        self.pids.extend(pids);
        self
    }

    /// Traces only connects made by tasks of these (real) user ids (in addition to any given
    /// before).
    pub fn filter_uids(mut self, uids: impl IntoIterator<Item = u32>) -> Self {
        self.uids.extend(uids);
        self
    }

    /// Traces only connects made by tasks in these cgroup v2 directories (e.g.
    /// `/sys/fs/cgroup/system.slice/nginx.service`; the directory itself, not its children).
    pub fn filter_cgroups(mut self, paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.cgroups.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Traces only connects made by tasks with these names (`comm`, at most 15 bytes; a thread
    /// name if the thread set one).
    pub fn filter_comms(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.comms.extend(names.into_iter().map(Into::into));
        self
    }

    /// Traces only connects to destinations inside these networks (IPv4 or IPv6; an
    /// IPv4-mapped destination counts as IPv4).
    pub fn filter_destinations(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.destinations.extend(networks);
        self
    }

    /// Traces only this family's connect function (default: both).
    pub fn family(mut self, family: Family) -> Self {
        self.families = vec![family];
        self
    }

    /// Reports only when each connect was entered and which function it was (what `--format
    /// minimal` prints): no return probe is attached, so this costs about half as much.
    pub fn timestamps_only(mut self) -> Self {
        self.timestamps_only = true;
        self
    }

    /// Reports only calls that get as far as sending a SYN, from a single kprobe on
    /// `tcp_connect` (which sees the whole 4-tuple) instead of an entry and a return probe:
    /// cheaper, but calls that fail are not reported and `ret` is always 0. The time is taken
    /// inside the call rather than at its entry.
    pub fn successes_only(mut self) -> Self {
        self.successes_only = true;
        self
    }

    /// Has the kernel account each program's run count and run time while the tracer lives (as
    /// `kernel.bpf_stats_enabled` does), for [`Tracer::program_stats`]. This costs a clock read
    /// per program run.
    pub fn program_stats(mut self) -> Self {
        self.program_stats = true;
        self
    }

    /// Attaches with this backend only, instead of the first of [`Backend::AUTO_ORDER`] that
    /// works here.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Counts connects in the kernel, per destination or per port, instead of sending an event
    /// for each: nothing crosses to userspace per connect; read the counts with
    /// [`Tracer::connect_counts`]. Cannot be combined with [`TracerBuilder::timestamps_only`].
    pub fn count_by(mut self, by: CountBy) -> Self {
        self.count_by = Some(by);
        self
    }

    /// Reads struct offsets from this BTF file instead of the running kernel's.
    pub fn btf_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.btf_path = path.into();
        self
    }

    /// Checks privileges and kernel features, loads the programs and attaches them with the
    /// chosen backend, or else the first of [`Backend::AUTO_ORDER`] that works (see
    /// [`Tracer::fallbacks`]). Tracing has started when this returns.
    pub fn attach(self) -> Result<Tracer> {
        if self.timestamps_only && self.successes_only {
            bail!("timestamps-only and successes-only tracing cannot be combined");
        }
        if self.timestamps_only && self.count_by.is_some() {
            bail!(
                "counting needs each connect's destination, which timestamps-only tracing does not read"
            );
        }
        if self.ports.contains(&0) {
            bail!("port 0 cannot be a destination port");
        }
        for (what, n) in [
            ("pids", self.pids.len()),
            ("uids", self.uids.len()),
            ("cgroups", self.cgroups.len()),
            ("task names", self.comms.len()),
            ("destination networks", self.destinations.len()),
        ] {
            if n > MAX_PIDS as usize {
                bail!("at most {MAX_PIDS} {what} can be filtered");
            }
        }
        let comms = self
            .comms
            .iter()
            .map(|c| filter::comm_key(c))
            .collect::<Result<BTreeSet<_>>>()?;
        let cgroups = self
            .cgroups
            .iter()
            .map(|p| filter::cgroup_id(p))
            .collect::<Result<BTreeSet<_>>>()?;
        kernel::check_privileges()?;
        let offsets = btf::sock_offsets(&self.btf_path)?;
        kernel::raise_memlock_limit();
        kernel::check_ring_buffer()?;

        let families = self.families.iter().map(|f| match f {
            Family::V4 => FAMILY_V4,
            Family::V6 => FAMILY_V6,
        });
        let filters = FilterFlags {
            ports: u8::from(!self.ports.is_empty()),
            pids: u8::from(!self.pids.is_empty()),
            families: families.fold(0, |bits, bit| bits | bit),
            uids: u8::from(!self.uids.is_empty()),
            cgroups: u8::from(!cgroups.is_empty()),
            comms: u8::from(!comms.is_empty()),
            destinations: u8::from(!self.destinations.is_empty()),
        };
        // aya-log's level is a load-time constant: with logging off the verifier removes the
        // logging code from the hot path entirely.
        let log_level = log::max_level() as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global("SOCK_OFFSETS", &offsets, true)
            .override_global("FILTERS", &filters, true)
            .override_global("PORT_SET", &port_set(&self.ports), true)
            .override_global("WAKEUP_BYTES", &DEFAULT_WAKEUP_BYTES, true)
            .override_global("ENTRY_ONLY", &u8::from(self.timestamps_only), true)
            .override_global(
                "COUNT_BY",
                &match self.count_by {
                    None => count_by::NONE,
                    Some(CountBy::Destination) => count_by::DESTINATION,
                    Some(CountBy::Port) => count_by::PORT,
                },
                true,
            )
            .override_global(aya_log::LEVEL, &log_level, false)
            .load(PROBE_OBJECT)
            .context("cannot load the eBPF programs")
            .map_err(|e| with_hint(e, kernel::memlock_hint()))?;

        let logger = if log_level > 0 {
            Some(EbpfLogger::init(&mut ebpf).context("cannot start eBPF logging")?)
        } else {
            None
        };
        fill_filter::<u32>(&mut ebpf, "PID_FILTER", &self.pids)?;
        fill_filter::<u32>(&mut ebpf, "UID_FILTER", &self.uids)?;
        fill_filter::<u64>(&mut ebpf, "CGROUP_FILTER", &cgroups)?;
        fill_filter::<[u8; COMM_LEN]>(&mut ebpf, "COMM_FILTER", &comms)?;
        fill_destinations(&mut ebpf, &self.destinations)?;

        let mode = if self.successes_only {
            Mode::SuccessesOnly
        } else if self.timestamps_only {
            Mode::TimestampsOnly
        } else {
            Mode::Full
        };
        let candidates = match self.backend {
            Some(backend) => vec![backend],
            None => Backend::AUTO_ORDER.to_vec(),
        };
        let mut fallbacks = Vec::new();
        let mut chosen = None;
        for backend in candidates {
            match backend::attach(&mut ebpf, backend, mode, &self.families) {
                Ok(()) => {
                    chosen = Some(backend);
                    break;
                }
                Err(e) if self.backend.is_some() => return Err(e),
                Err(e) => fallbacks.push((backend, e.to_string())),
            }
        }
        let Some(backend) = chosen else {
            let reasons: Vec<String> = fallbacks
                .iter()
                .map(|(backend, why)| format!("{backend}: {why}"))
                .collect();
            bail!(
                "no way to attach works on this kernel ({})",
                reasons.join("; ")
            );
        };
        let stats = if self.program_stats {
            Some(
                aya::sys::enable_stats(aya::sys::Stats::RunTime)
                    .context("cannot enable BPF program statistics")?,
            )
        } else {
            None
        };
        let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)?;
        let pending = HashMap::try_from(take_map(&mut ebpf, "PENDING")?)?;
        let connecting = HashMap::try_from(take_map(&mut ebpf, "CONNECTING")?)?;
        let counts = PerCpuHashMap::try_from(take_map(&mut ebpf, "CONNECT_COUNTS")?)?;
        Ok(Tracer {
            backend,
            fallbacks,
            events,
            counters,
            pending,
            connecting,
            counts,
            count_by: self.count_by,
            logger,
            received: 0,
            malformed: 0,
            reaped: 0,
            last_reap: Instant::now(),
            _stats: stats,
            ebpf,
        })
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

fn fill_destinations(ebpf: &mut Ebpf, networks: &[IpNet]) -> Result<()> {
    let map = ebpf
        .map_mut("DST_FILTER")
        .context("map DST_FILTER missing from the eBPF object")?;
    let mut trie: LpmTrie<_, DstKey, u8> = LpmTrie::try_from(map)?;
    for network in networks {
        let (prefix, addr) = filter::dst_key(network);
        trie.insert(&Key::new(prefix, addr), &1, 0)
            .with_context(|| format!("cannot fill DST_FILTER with {network}"))?;
    }
    Ok(())
}

fn fill_filter<K: aya::Pod + Ord>(ebpf: &mut Ebpf, name: &str, keys: &BTreeSet<K>) -> Result<()> {
    let map = ebpf
        .map_mut(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))?;
    let mut map: HashMap<_, K, u8> = HashMap::try_from(map)?;
    for key in keys {
        map.insert(key, &1, 0)
            .with_context(|| format!("cannot fill {name}"))?;
    }
    Ok(())
}

/// The kernel side's `PORT_SET`: bit `port` set for each port.
fn port_set(ports: &BTreeSet<u16>) -> [u64; PORT_WORDS] {
    let mut words = [0u64; PORT_WORDS];
    for &port in ports {
        words[usize::from(port >> 6)] |= 1 << (port & 63);
    }
    words
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
    fallbacks: Vec<(Backend, String)>,
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

    /// How the programs are attached.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The backends tried before [`Tracer::backend`] and why each could not be used (empty
    /// unless the backend was chosen automatically and the first choice failed).
    pub fn fallbacks(&self) -> &[(Backend, String)] {
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
                let family = Family::from_af(key.family).ok()?;
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
    /// next state (tracepoint backend). Each map is bounded by `probe_common::MAX_PENDING`;
    /// normally this is about the number of threads inside a connect.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_set_has_exactly_the_ports_bits() {
        let ports = BTreeSet::from([1, 63, 64, 8080, 65535]);
        let words = port_set(&ports);
        let set: Vec<u16> = (0..=u16::MAX)
            .filter(|&p| words[usize::from(p >> 6)] >> (p & 63) & 1 == 1)
            .collect();
        assert_eq!(set, ports.into_iter().collect::<Vec<_>>());
    }
}
