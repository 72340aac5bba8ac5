//! The stages of [`crate::TracerBuilder::attach`], in order: validate the options (nothing
//! touched yet) -> prepare (privileges, kernel features, the BTF read) -> then, for the
//! backend asked for or each of [`Backend::AUTO_ORDER`] until one attaches: load the object
//! with its globals and maps sized for that backend -> fill the filter maps -> attach.

use std::{collections::BTreeSet, os::fd::AsRawFd as _};

use aya::{
    Ebpf, EbpfLoader,
    maps::{CgroupArray, HashMap, LpmTrie, lpm_trie::Key},
};
use aya_log::EbpfLogger;
use probe_common::{
    COMM_LEN, FilterFlags, SockOffsets,
    config::{ContainerPrefix, DstKey, PORT_WORDS, TaskOffsets},
    limit,
    names::{global, map},
    state::{CountKey, CountValue},
};

use crate::{
    Backend, Mode, Report, Startup, TracerBuilder,
    btf::FunctionIds,
    error::{BackendError, Error, FilterError},
    filter, kernel,
};

/// What was loaded and attached, and what the tracer reports: what [`crate::Tracer`] is made
/// of besides the object.
pub(crate) struct Loaded {
    /// The backend attached.
    pub backend: Backend,
    /// Why the backends tried before it did not attach.
    pub fallbacks: Vec<BackendError>,
    /// Whether the object for kernels with BPF atomics was loaded.
    pub atomics: bool,
    /// Why the object with BPF atomics was not, though the kernel's version has them.
    pub atomics_rejected: Option<BackendError>,
    /// What the programs report.
    pub report: Report,
    /// Whether records carry the caller's identity, to be named.
    pub identity: bool,
    /// The most label sets counted (`TracerBuilder::max_series`).
    pub max_series: u32,
    /// Which cause hooks are attached (`--outcome`).
    pub failure_hooks: crate::FailureHooks,
    /// `--names`' settings, if asked.
    pub names: Option<crate::NamesConfig>,
    /// Whether `--nat` was asked.
    pub nat: bool,
    /// Counts kept by userspace from the events (`report` is then events).
    pub tally: Option<crate::tally::TallyConfig>,
    /// Whether connections are followed to their close (`--lifetime`).
    pub lifetime: bool,
    /// Whether a program runs from a BPF trampoline whatever the backend: `--accept`'s fexit
    /// program (detaching then waits as for the fentry backend).
    pub trampolines: bool,
}

/// The compiled kernel side, built by build.rs, for kernels without BPF atomics.
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

/// The same built with probe-ebpf's `atomics` feature, for kernels with them
/// ([`kernel::has_atomics`]): connects in SYN_SENT kept in a table of slots in front of the LRU
/// hash map (see [`crate::connecting::Connecting`]).
static PROBE_OBJECT_ATOMICS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-atomics"));

/// The kernel wakes the reader only once this much is waiting; below it, the reader's periodic
/// drain picks events up. A wake-up per event would cost more than the event itself.
const DEFAULT_WAKEUP_BYTES: u64 = limit::RING_BYTES as u64 / 4;

/// Filter values turned into the kernel side's keys.
pub(crate) struct FilterKeys {
    comms: BTreeSet<[u8; COMM_LEN]>,
    /// The `--cgroup` directories, open (the cgroup array takes descriptors).
    cgroups: Vec<std::fs::File>,
    containers: [ContainerPrefix; limit::MAX_CONTAINERS],
}

impl TracerBuilder {
    /// Whether records must carry the caller's identity: asked for, or counted per cgroup.
    pub(crate) fn needs_identity(&self) -> bool {
        self.identity || self.report.counts_per_cgroup() || self.names.is_some() || self.nat
    }

    /// Whether the kernel side reads task or namespace fields at all (records' identity, or
    /// the `--container` and `--netns` filters).
    fn needs_task_offsets(&self) -> bool {
        self.needs_identity() || !self.containers.is_empty() || !self.netns.is_empty()
    }
}

/// Stage 1: checks every filter and turns the filter values into map keys, touching nothing in
/// the kernel.
pub(crate) fn validate(options: &TracerBuilder) -> Result<FilterKeys, Error> {
    if options.ports.contains(&0) {
        return Err(FilterError::PortZero.into());
    }
    if !(1..=limit::MAX_COUNT_KEYS_LIMIT).contains(&options.max_series) {
        return Err(FilterError::MaxSeries {
            given: options.max_series,
            max: limit::MAX_COUNT_KEYS_LIMIT,
        }
        .into());
    }
    for (what, n, max) in [
        ("pids", options.pids.len(), limit::MAX_PIDS),
        ("uids", options.uids.len(), limit::MAX_UIDS),
        ("cgroups", options.cgroups.len(), limit::MAX_CGROUPS),
        (
            "containers",
            options.containers.len(),
            limit::MAX_CONTAINERS as u32,
        ),
        ("network namespaces", options.netns.len(), limit::MAX_NETNS),
        ("task names", options.comms.len(), limit::MAX_COMMS),
        (
            "destination networks",
            options.destinations.len(),
            limit::MAX_NETWORKS,
        ),
    ] {
        if n > max as usize {
            return Err(FilterError::TooMany { what, max }.into());
        }
    }
    let mut containers = [ContainerPrefix::EMPTY; limit::MAX_CONTAINERS];
    for (slot, id) in containers.iter_mut().zip(&options.containers) {
        *slot = filter::container_prefix(id)?;
    }
    Ok(FilterKeys {
        comms: options
            .comms
            .iter()
            .map(|c| filter::comm_key(c))
            .collect::<Result<_, _>>()?,
        cgroups: options
            .cgroups
            .iter()
            .map(|p| filter::cgroup_dir(p))
            .collect::<Result<_, _>>()?,
        containers,
    })
}

/// What loading needs of the system, found once whatever backends are tried.
pub(crate) struct Prepared {
    offsets: SockOffsets,
    task_offsets: TaskOffsets,
    /// The running kernel's type ids of the connect functions, for fentry and fexit: `None`
    /// when the offsets came from another BTF file (`TracerBuilder::btf_path`), whose ids are
    /// not the kernel's.
    pub functions: Option<FunctionIds>,
    /// Whether the kernel has BPF atomics: which object is loaded.
    pub atomics: bool,
    /// Whether, should the verifier reject the object with atomics, the one without is loaded
    /// instead (always, but for [`TEST_ATOMICS`]`=strict`).
    pub atomics_fallback: bool,
    /// The packet offsets and drop reasons the cause hooks need (with `--outcome`; `None`
    /// without, or if the kernel's BTF lacks them: the hooks are then left out).
    pub packets: Option<crate::btf::Packets>,
}

/// A hidden switch for tests, not an option of the command (nor for users): with
/// `PROBE_USER_TEST_ATOMICS=force` the object with BPF atomics is loaded whatever the kernel's
/// version says, so that a kernel whose verifier rejects them (5.10: `BPF_STX uses reserved
/// fields`) takes the fallback to the object without; with `=strict` the same without that
/// fallback, so that the verifier's rejection is the error. Used by tests/tests/attach.rs.
pub(crate) const TEST_ATOMICS: &str = "PROBE_USER_TEST_ATOMICS";

/// Which object to load (`atomics`) and whether to fall back from it ([`TEST_ATOMICS`]).
fn atomics_choice() -> (bool, bool) {
    match std::env::var(TEST_ATOMICS).as_deref() {
        Ok("force") => (true, true),
        Ok("strict") => (true, false),
        _ => (kernel::has_atomics(), true),
    }
}

/// Stage 2: checks privileges and kernel features, and reads the struct offsets (and the
/// connect functions' type ids) from BTF.
pub(crate) fn prepare(options: &TracerBuilder, startup: &mut Startup) -> Result<Prepared, Error> {
    kernel::check_privileges()?;
    if options.program_stats {
        kernel::check_stats_privileges()?;
    }
    let btf_started = std::time::Instant::now();
    let types = crate::btf::offsets(&options.btf_path)?;
    startup.btf = btf_started.elapsed();
    // Needed only by some options: a kernel whose task structs moved fails only those.
    let task_offsets = match types.task {
        Ok(offsets) => offsets,
        Err(error) if options.needs_task_offsets() => return Err(error),
        Err(_) => TaskOffsets::default(),
    };
    kernel::raise_memlock_limit();
    kernel::check_ring_buffer()?;
    let own_kernel = options.btf_path == std::path::Path::new(crate::btf::VMLINUX_BTF);
    let (atomics, atomics_fallback) = atomics_choice();
    let packets = match types.packets {
        _ if options.report.outcome_filter().is_none()
            && options.names.is_none()
            && !options.nat =>
        {
            None
        }
        Ok(packets) => Some(packets),
        // The DNS and NAT hooks read packets: neither without their offsets.
        Err(error) if options.names.is_some() || options.nat => return Err(error),
        Err(error) => {
            log::warn!("no ICMP types or drop reasons for failed connects: {error}");
            None
        }
    };
    if let Some((_, names)) = packets.as_ref().and_then(|p| p.drops.as_ref()) {
        crate::failure::set_drop_reasons(names.clone());
    }
    Ok(Prepared {
        offsets: types.sock,
        task_offsets,
        functions: own_kernel.then_some(types.functions),
        atomics,
        atomics_fallback,
        packets,
    })
}

/// Stage 3: loads the object for `backend` with its globals set (struct offsets, filter
/// flags, port bitmap, and what to report: [`Report::globals`]) and its maps sized for what `backend` and the options
/// use ([`map_entries`]).
pub(crate) fn load(
    options: &TracerBuilder,
    keys: &FilterKeys,
    prepared: &Prepared,
    backend: Backend,
) -> Result<Ebpf, Error> {
    let filters = FilterFlags {
        ports: u8::from(!options.ports.is_empty()),
        pids: u8::from(!options.pids.is_empty()),
        families: options.families.iter().fold(0, |bits, f| bits | f.bit()),
        uids: u8::from(!options.uids.is_empty()),
        // At most MAX_CGROUPS (64) and MAX_CONTAINERS (8), checked by `validate`.
        cgroups: options.cgroups.len() as u8,
        comms: u8::from(!options.comms.is_empty()),
        destinations: u8::from(!options.destinations.is_empty()),
        containers: options.containers.len() as u8,
        netns: u8::from(!options.netns.is_empty()),
        _pad: [0; 7],
    };
    let globals = options
        .report
        .globals(options.needs_identity(), options.caller_names);
    // aya-log's level is a load-time constant: with logging off the verifier removes the
    // logging code from the hot path entirely.
    let log_level = log::max_level() as u8;
    let packets = prepared.packets.as_ref();
    let skb_offsets = packets.map(|p| p.skb).unwrap_or_default();
    let drops = packets
        .and_then(|p| p.drops.as_ref())
        .map(|(config, _)| *config)
        .unwrap_or_default();
    let mut loader = EbpfLoader::new();
    for (name, entries) in map_entries(options, keys, backend, prepared.atomics) {
        loader.map_max_entries(name, entries);
    }
    loader
        .override_global(global::SOCK_OFFSETS, &prepared.offsets, true)
        .override_global(global::FILTERS, &filters, true)
        .override_global(global::PORT_SET, &port_set(&options.ports), true)
        .override_global(global::WAKEUP_BYTES, &DEFAULT_WAKEUP_BYTES, true)
        .override_global(global::ENTRY_ONLY, &globals.entry_only, true)
        .override_global(global::COUNT_BY, &globals.count_by, true)
        .override_global(global::OUTCOME, &globals.outcome, true)
        .override_global(global::TASK_OFFSETS, &prepared.task_offsets, true)
        .override_global(global::IDENTITY, &globals.identity, true)
        .override_global(global::CALLER_NAMES, &globals.caller_names, true)
        .override_global(global::CONTAINERS, &keys.containers, true)
        .override_global(global::COUNT_CGROUP, &globals.count_cgroup, true)
        .override_global(global::SKB_OFFSETS, &skb_offsets, true)
        .override_global(global::DROPS, &drops, true)
        .override_global(global::LIFETIME, &u8::from(options.lifetime), true)
        .override_global(aya_log::LEVEL, &log_level, false)
        .load(if prepared.atomics {
            PROBE_OBJECT_ATOMICS
        } else {
            PROBE_OBJECT
        })
        .map_err(|source| Error::Load {
            hint: kernel::memlock_hint(),
            source: crate::error::load_source(source),
        })
}

/// The entries of each map whose use depends on the backend and the options. The kernel
/// allocates a hash map's every entry when it creates the map, which was most of the load's
/// time in a TCG guest (`CONNECT_COUNTS`' 16,384 keys and more when not counting, above
/// all), so a map that the programs attached will never touch gets one entry, and a filter
/// map exactly its keys.
fn map_entries(
    options: &TracerBuilder,
    keys: &FilterKeys,
    backend: Backend,
    atomics: bool,
) -> [(&'static str, u32); 11] {
    let used = |yes: bool, entries: u32| if yes { entries } else { 1 };
    let exactly = |n: usize| n.max(1) as u32;
    // Room for the LRU's per-CPU free lists, so that MAX_CONNECTING sockets fit on any host.
    let cpus = aya::util::nr_cpus().map_or(1, |n| n.get());
    let connecting = limit::MAX_CONNECTING + limit::LRU_FREE_PER_CPU * cpus;
    let full = options.report.mode() == Mode::Full;
    let tracks_sockets =
        backend == Backend::Tracepoint || options.report.outcome_filter().is_some();
    [
        // Entry to return of each call: the kprobe backend's.
        (
            map::PENDING,
            used(backend == Backend::Kprobe && full, limit::MAX_PENDING),
        ),
        // SYN_SENT to the next state: the tracepoint backend's, and every backend's outcomes.
        // (with atomics, the LRU takes the table's overflow).
        (map::CONNECTING, used(tracks_sockets, connecting)),
        (
            map::CONNECTING_SLOTS,
            used(tracks_sockets && atomics, limit::MAX_CONNECTING),
        ),
        // Inner to outer exit of IPv4-mapped calls: the fexit programs'.
        (
            map::MAPPED_INNER,
            used(backend == Backend::Fentry && full, limit::MAX_MAPPED_CALLS),
        ),
        (
            map::CONNECT_COUNTS,
            used(
                options.report.count_by().is_some(),
                // The overflow keys in room of their own: 2 without outcomes, 28 with (a family,
                // outcome and cause each).
                options.max_series
                    + crate::count_map::overflow_keys(options.report.outcome_filter().is_some())
                        .len() as u32,
            ),
        ),
        // What the cause hooks saw of sockets in SYN_SENT: with outcomes only (with room for
        // the LRU's per-CPU free lists, as `CONNECTING`).
        (
            map::SYN_TROUBLE,
            used(
                options.report.outcome_filter().is_some(),
                limit::MAX_SYN_TROUBLE + limit::LRU_FREE_PER_CPU * cpus,
            ),
        ),
        // Connections from ESTABLISHED to CLOSE: with `--lifetime` only (room for the LRU's
        // per-CPU free lists too).
        (
            map::LIVE,
            used(
                options.lifetime,
                limit::MAX_LIVE + limit::LRU_FREE_PER_CPU * cpus,
            ),
        ),
        (map::PID_FILTER, exactly(options.pids.len())),
        (map::UID_FILTER, exactly(options.uids.len())),
        (map::NETNS_FILTER, exactly(options.netns.len())),
        (map::COMM_FILTER, exactly(keys.comms.len())),
    ]
}

/// Relays the programs' aya-log messages to `log`, if any level is enabled.
pub(crate) fn start_logger(
    ebpf: &mut Ebpf,
) -> Result<Option<EbpfLogger<&'static dyn log::Log>>, Error> {
    if log::max_level() == log::LevelFilter::Off {
        return Ok(None);
    }
    EbpfLogger::init(ebpf)
        .map(Some)
        .map_err(|e| Error::Log(Box::new(e)))
}

/// Stage 4: fills the filter maps.
pub(crate) fn fill_filters(
    ebpf: &mut Ebpf,
    options: &TracerBuilder,
    keys: &FilterKeys,
) -> Result<(), Error> {
    fill_set(ebpf, map::PID_FILTER, &options.pids)?;
    fill_set(ebpf, map::UID_FILTER, &options.uids)?;
    fill_set(ebpf, map::NETNS_FILTER, &options.netns)?;
    let name = map::CGROUP_FILTER;
    let map_error = |source| Error::Map {
        map: name,
        source: Box::new(source),
    };
    let mut cgroups = CgroupArray::try_from(map_mut(ebpf, name)?).map_err(map_error)?;
    for (index, dir) in (0..).zip(&keys.cgroups) {
        cgroups.set(index, dir.as_raw_fd(), 0).map_err(map_error)?;
    }
    fill_set(ebpf, map::COMM_FILTER, &keys.comms)?;
    if options.report.count_by().is_some() {
        // Where the kernel side counts the connects of label sets beyond the budget: in place
        // before anything is counted, in room of their own.
        let name = map::CONNECT_COUNTS;
        let map_error = |source| Error::Map {
            map: name,
            source: Box::new(source),
        };
        let mut counts: HashMap<_, CountKey, CountValue> =
            HashMap::try_from(map_mut(ebpf, name)?).map_err(map_error)?;
        let outcome = options.report.outcome_filter().is_some();
        for key in crate::count_map::overflow_keys(outcome) {
            counts
                .insert(&key, &CountValue::ZERO, 0)
                .map_err(map_error)?;
        }
    }
    let name = map::DST_FILTER;
    let mut trie: LpmTrie<_, DstKey, u8> =
        LpmTrie::try_from(map_mut(ebpf, name)?).map_err(|source| Error::Map {
            map: name,
            source: Box::new(source),
        })?;
    for network in &options.destinations {
        let (prefix, addr) = filter::dst_key(network);
        trie.insert(&Key::new(prefix, addr), &1, 0)
            .map_err(|source| Error::Map {
                map: name,
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// Fills the hash map `name` with `keys` (each with the value 1: present).
fn fill_set<K: aya::Pod + Ord>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: &BTreeSet<K>,
) -> Result<(), Error> {
    let fill = |map| -> Result<(), aya::maps::MapError> {
        let mut set: HashMap<_, K, u8> = HashMap::try_from(map)?;
        keys.iter().try_for_each(|key| set.insert(key, &1, 0))
    };
    fill(map_mut(ebpf, name)?).map_err(|source| Error::Map {
        map: name,
        source: Box::new(source),
    })
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::maps::Map, Error> {
    ebpf.map_mut(name)
        .ok_or_else(|| Error::Object(format!("map {name}")))
}

/// The kernel side's `PORT_SET`: bit `port` set for each port.
fn port_set(ports: &BTreeSet<u16>) -> [u64; PORT_WORDS] {
    let mut words = [0u64; PORT_WORDS];
    for &port in ports {
        words[usize::from(port >> 6)] |= 1 << (port & 63);
    }
    words
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
