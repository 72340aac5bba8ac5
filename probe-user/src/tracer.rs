//! An attached [`Tracer`]: reading its events, counts, statistics and what was lost.

use std::{
    collections::VecDeque,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::ProgramFd,
};
use aya_log::EbpfLogger;
use probe_common::{
    CountBy, Outcome,
    names::map,
    outcome::latency_bucket,
    state::{CONNECTING_STALE_NS, CountKey, CountValue, PendingConnect, counter},
};

use crate::{
    Backend, CloseEvent, ConnectCount, ConnectEvent, Counters, Error, Event, ProgramStats, Retired,
    Startup, WorkloadNames, clock,
    connecting::Connecting,
    count_map::{CountMap, Presence},
    counts,
    dns::{DnsNames, Learned},
    error::BackendError,
    event::Record,
    identity::Workloads,
    live::Live,
    loader::Loaded,
    maps::{RunBarrier, reap_map, take_map},
    nat::NatTable,
    program_info,
    tally::Tally,
};

/// The workload names, whatever a panic elsewhere left behind (a cache: any state is usable).
fn lock(workloads: &Mutex<Workloads>) -> MutexGuard<'_, Workloads> {
    workloads
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connect call still waiting for its return probe after this long never gets it: its thread
/// exited after the kernel missed the return (a connect call takes microseconds).
const STALE_AFTER: Duration = Duration::from_secs(5);

/// A connect held in SYN_SENT longer than this will never be reported: no socket stays there
/// so long (see `CONNECTING_STALE_NS`), so its transition out of SYN_SENT was missed. The rule
/// the kernel side applies to its table of slots too.
const CONNECTING_STALE_AFTER: Duration = Duration::from_nanos(CONNECTING_STALE_NS);

/// How long [`Tracer::detach`] waits for program runs still in progress where the kernel
/// offers no way to wait for them exactly (see [`RunBarrier`]).
const DETACH_GRACE: Duration = Duration::from_millis(50);

/// How often [`Tracer::drain`] looks for stale calls.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// Attached probes and their event stream. Dropping it detaches everything.
///
/// The exact way to end: detach, drain what the programs emitted, then count what will never
/// be reported, so that every connect a program saw is printed, dropped or missed.
///
/// ```no_run
/// use std::time::Duration;
/// use probe_user::Tracer;
///
/// let mut tracer = Tracer::builder().filter_ports([443]).attach()?;
/// let print = |event: &probe_user::Event| println!("{event:?}");
/// for skipped in tracer.fallbacks() {
///     eprintln!("not {}: {skipped}", skipped.backend);
/// }
/// println!("tracing with {}", tracer.backend());
/// for _ in 0..10 {
///     tracer.drain(print);
///     std::thread::sleep(Duration::from_millis(100));
/// }
/// tracer.detach();
/// tracer.drain(print);
/// tracer.reap_pending(Duration::ZERO);
/// let counters = tracer.counters();
/// println!("{} events, {} lost", counters.events, counters.lost());
/// # Ok::<(), probe_user::Error>(())
/// ```
pub struct Tracer {
    backend: Backend,
    /// Whether a program runs from a BPF trampoline (the fentry backend's, `--accept`'s fexit).
    trampolines: bool,
    failure_hooks: crate::FailureHooks,
    // The DNS names learned (`--names`).
    names: Option<DnsNames>,
    // SYNs a NAT sent elsewhere, until their connect claims them (`--nat`).
    nat: Option<NatTable>,
    // Counts kept here from the events, when their keys hold a name or NAT destination.
    tally: Option<Tally>,
    fallbacks: Vec<BackendError>,
    atomics_rejected: Option<BackendError>,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    pending: HashMap<MapData, u64, PendingConnect>,
    connecting: Connecting,
    // With `--lifetime`: the connections followed to their close.
    live: Option<Live>,
    // Those still open at `detach`, for the next drain.
    open_at_end: VecDeque<CloseEvent>,
    counts: CountMap,
    max_series: u32,
    count_by: Option<CountBy>,
    // Whether count keys carry the caller's cgroup (by cgroup or container, or per cgroup too).
    count_cgroup: bool,
    // With identities (or counts by cgroup): the cgroup paths, containers and pods by cgroup
    // id, resolved once each (a lock, as `connect_counts` takes `&self`).
    workloads: Option<Mutex<Workloads>>,
    // With outcomes: the connects still in SYN_SENT at `detach`, as pending events for the
    // next drain, or (counting) as counts.
    outcome: bool,
    min_latency_ns: u64,
    pending_events: VecDeque<ConnectEvent>,
    pending_counts: Vec<(CountKey, CountValue)>,
    // Of those, the ones counted under an overflow key (the budget was in use).
    pending_overflow: u64,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    received: u64,
    malformed: u64,
    reaped: u64,
    last_reap: Instant,
    startup: Startup,
    // Waits for program runs in progress at `detach` (`None` if the kernel would not create
    // it: then `detach` waits `DETACH_GRACE`, and `inexact_exit` says so).
    barrier: Option<RunBarrier>,
    inexact_exit: bool,
    // Keeps kernel run-time accounting on while held (see TracerBuilder::program_stats).
    _stats: Option<std::os::fd::OwnedFd>,
    // The attached programs by name, through descriptors of their own: their run counts and
    // recursion misses stay readable after `detach`.
    programs: Vec<(String, ProgramFd)>,
    // Owns the programs and links (`None` once detached); declared last so it is dropped
    // after the maps above.
    ebpf: Option<Ebpf>,
}

impl Tracer {
    /// Takes the maps userspace reads out of the attached object.
    pub(crate) fn new(
        mut ebpf: Ebpf,
        Loaded {
            backend,
            fallbacks,
            atomics,
            atomics_rejected,
            report,
            identity,
            max_series,
            failure_hooks,
            names,
            nat,
            tally,
            lifetime,
            trampolines,
        }: Loaded,
        logger: Option<EbpfLogger<&'static dyn log::Log>>,
        stats: Option<std::os::fd::OwnedFd>,
        startup: Startup,
    ) -> Result<Self, Error> {
        // The programs that run on hooks: not `live_figures`, run by userspace at the end.
        let programs = ebpf
            .programs()
            .filter(|(name, _)| *name != probe_common::names::program::live_figures)
            .filter_map(|(name, program)| {
                let fd = program.fd().ok()?.try_clone().ok()?;
                Some((name.to_string(), fd))
            })
            .collect();
        Ok(Tracer {
            backend,
            trampolines: trampolines || backend == Backend::Fentry,
            failure_hooks,
            names: names.map(DnsNames::new),
            nat: nat.then(NatTable::default),
            tally: tally.map(Tally::new),
            fallbacks,
            atomics_rejected,
            programs,
            events: take_map(&mut ebpf, map::EVENTS)?,
            counters: take_map(&mut ebpf, map::COUNTERS)?,
            pending: take_map(&mut ebpf, map::PENDING)?,
            connecting: Connecting::new(&mut ebpf, atomics)?,
            live: if lifetime {
                Some(Live::new(&mut ebpf)?)
            } else {
                None
            },
            open_at_end: VecDeque::new(),
            counts: CountMap::new(take_map(&mut ebpf, map::CONNECT_COUNTS)?),
            max_series,
            count_by: report.count_by(),
            count_cgroup: report.counts_per_cgroup(),
            workloads: identity.then(|| Mutex::new(Workloads::new())),
            outcome: report.outcome_filter().is_some(),
            min_latency_ns: report.outcome_filter().map_or(0, |f| f.min_latency_ns()),
            pending_events: VecDeque::new(),
            pending_counts: Vec::new(),
            pending_overflow: 0,
            logger,
            received: 0,
            malformed: 0,
            reaped: 0,
            last_reap: Instant::now(),
            startup,
            barrier: RunBarrier::new()
                .inspect_err(|e| {
                    log::warn!("cannot wait for program runs at exit, will wait 50 ms: {e}")
                })
                .ok(),
            inexact_exit: false,
            _stats: stats,
            ebpf: Some(ebpf),
        })
    }

    /// Where attaching spent its time.
    pub fn startup(&self) -> Startup {
        self.startup
    }

    /// How the programs are attached.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What became of the DNS answers seen (with [`crate::TracerBuilder::names`]; `None`
    /// without).
    pub fn dns_stats(&self) -> Option<crate::DnsStats> {
        self.names.as_ref().map(DnsNames::stats)
    }

    /// SYNs a NAT sent elsewhere whose connect never claimed them before the table filled up
    /// (with [`crate::TracerBuilder::nat`]; `None` without): mostly connects the filters left
    /// out.
    pub fn nat_forgotten(&self) -> Option<u64> {
        self.nat.as_ref().map(|nat| nat.forgotten)
    }

    /// Which cause hooks are attached (with outcomes): whether failed connects carry ICMP
    /// details and drop reasons ([`crate::FailureCause`]).
    pub fn failure_hooks(&self) -> crate::FailureHooks {
        self.failure_hooks
    }

    /// The backends tried before [`Tracer::backend`] and why each could not be used (empty
    /// unless the backend was chosen automatically and the first choice failed).
    pub fn fallbacks(&self) -> &[BackendError] {
        &self.fallbacks
    }

    /// Why the eBPF object built for BPF atomics was not used although the kernel's version has
    /// them: the kernel rejected it (its verifier, with its log), so the object without them
    /// runs, which holds connects in SYN_SENT in the LRU map alone. `None` normally.
    pub fn atomics_rejected(&self) -> Option<&BackendError> {
        self.atomics_rejected.as_ref()
    }

    /// Hands every event waiting in the ring buffer to `on_event`; returns how many there were.
    /// Connects come as [`Event::Connect`]; with [`crate::TracerBuilder::lifetime`], closes as
    /// [`Event::Close`] (after [`Tracer::detach`], those still open).
    pub fn drain(&mut self, mut on_event: impl FnMut(&Event)) -> usize {
        let mut n = 0;
        // Pending connects come last, after the ring buffer's events (only once detached).
        let pending = std::mem::take(&mut self.pending_events);
        let mut workloads = self.workloads.as_ref().map(lock);
        let (dns, nat, tally) = (&mut self.names, &mut self.nat, &mut self.tally);
        let live = &mut self.live;
        // A connect's workload names, and its DNS name and NAT destination if `naming` (a close
        // gets those of its connect instead: see `Live::recall`).
        let mut name = |event: &mut ConnectEvent,
                        naming: bool,
                        dns: &Option<DnsNames>,
                        nat: &mut Option<NatTable>| {
            if let (Some(workloads), Some(workload)) = (&mut workloads, &mut event.workload) {
                workload.names = workloads.names_for(workload.cgroup_id, Some(event.pid));
            }
            if !naming {
                return;
            }
            if let (Some(dns), Some(workload)) = (dns, &event.workload) {
                event.dns_name = dns.name(workload.netns, event.dst.ip(), event.boot_ns);
            }
            if let (Some(nat), Some(workload)) = (nat, &event.workload) {
                event.nat_dst = nat.claim(workload.netns, event.src, event.dst);
            }
        };
        while let Some(record) = self.events.next() {
            match Record::decode(&record) {
                Ok(Record::Connect(mut event)) => {
                    name(&mut event, true, dns, nat);
                    if let Some(tally) = tally {
                        tally.add(&event);
                    }
                    if let Some(live) = live {
                        live.remember(&event);
                    }
                    on_event(&Event::Connect(event));
                    n += 1;
                }
                // A connection a local listener accepted (`--accept`): its workload named (no
                // DNS name or NAT: those are a connect's), counted under its server's side.
                Ok(Record::Accept(mut event)) => {
                    name(&mut event, false, dns, nat);
                    if let Some(tally) = tally {
                        tally.add(&event);
                    }
                    on_event(&Event::Accept(event));
                    n += 1;
                }
                // A connection that closed (`--lifetime`): named as its connect was.
                Ok(Record::Close(mut close)) => {
                    name(&mut close.connect, false, dns, nat);
                    if let Some(live) = live {
                        live.recall(&mut close.connect);
                    }
                    if let Some(tally) = tally {
                        tally.close(&close);
                    }
                    on_event(&Event::Close(*close));
                    n += 1;
                }
                // A DNS message (`--names`): learned from, not reported.
                Ok(Record::Dns(message)) => {
                    let learned = dns.as_mut().map(|dns| dns.learn(&message));
                    if learned == Some(Learned::Malformed) {
                        self.malformed += 1;
                    }
                }
                // A SYN a NAT sent elsewhere (`--nat`): kept for its connect.
                Ok(Record::Nat(syn)) => {
                    if nat.as_mut().is_some_and(|nat| nat.note(&syn)) {
                        self.malformed += 1;
                    }
                }
                Err(_) => self.malformed += 1,
            }
        }
        for mut event in pending {
            name(&mut event, true, dns, nat);
            if let Some(tally) = tally {
                tally.add(&event);
            }
            on_event(&Event::Connect(event));
            n += 1;
        }
        // Connections still open at the end come after every connect and close.
        for mut close in std::mem::take(&mut self.open_at_end) {
            name(&mut close.connect, false, dns, nat);
            if let Some(live) = live {
                live.recall(&mut close.connect);
            }
            on_event(&Event::Close(close));
            n += 1;
        }
        drop(workloads);
        self.received += n as u64;
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
        if self.last_reap.elapsed() >= REAP_EVERY {
            self.reap(STALE_AFTER, CONNECTING_STALE_AFTER);
        }
        n
    }

    /// The connect counts (with [`crate::Report::Counts`]; empty otherwise), most connects
    /// first: the kernel's, or those counted from the events drained so far when counting in
    /// userspace ([`Tracer::counts_in_userspace`]: drain first).
    ///
    /// ```no_run
    /// use probe_user::{CountBy, Outcomes, Report, Tracer};
    ///
    /// let report = Report::Counts { by: CountBy::Port, per_cgroup: false, outcome: Outcomes::Untracked };
    /// let tracer = Tracer::builder().report(report).attach()?;
    /// std::thread::sleep(std::time::Duration::from_secs(1));
    /// for row in tracer.connect_counts() {
    ///     println!("{:?} port {}: {}", row.family, row.dport, row.connects);
    /// }
    /// # Ok::<(), probe_user::Error>(())
    /// ```
    pub fn connect_counts(&self) -> Vec<ConnectCount> {
        let mut workloads = self.workloads.as_ref().map(lock);
        let names = |id| {
            workloads
                .as_mut()
                .map_or_else(WorkloadNames::default, |w| w.names(id))
        };
        if let Some(tally) = &self.tally {
            let config = tally.config;
            return counts::named_rows(config.by, config.per_cgroup, tally.entries(), names);
        }
        let Some(by) = self.count_by else {
            return Vec::new();
        };
        let kernel = self.counts.entries();
        let pending = self.pending_counts.iter().copied();
        counts::rows(
            by,
            self.count_cgroup,
            kernel.into_iter().chain(pending),
            names,
        )
    }

    /// Whether the counts are kept here from the events rather than by the kernel: when their
    /// keys hold what only userspace knows, a DNS name ([`crate::TracerBuilder::names`],
    /// [`CountBy::Name`]) or a NAT's destination ([`crate::TracerBuilder::nat`]). Each connect
    /// then crosses the ring buffer, and is counted as [`Tracer::drain`] (or the stream) takes
    /// it: drain often (the stream does every 50 ms), or the ring buffer fills and connects
    /// are dropped (counted).
    pub fn counts_in_userspace(&self) -> bool {
        self.tally.is_some()
    }

    /// The label sets (keys) counted at the last [`Tracer::connect_counts`] (by the kernel, or
    /// in userspace), and the most counted ([`crate::TracerBuilder::max_series`]); past that,
    /// connects go to the overflow rows.
    pub fn series(&self) -> (usize, u32) {
        match &self.tally {
            Some(tally) => (tally.series(), self.max_series),
            None => (self.counts.series(), self.max_series),
        }
    }

    /// Bytes of kernel memory the counts take (with [`crate::Report::Counts`]), as the kernel
    /// accounts the map (its fdinfo's `memlock`), if it says.
    pub fn counts_memory(&self) -> Option<u64> {
        self.count_by.and_then(|_| self.counts.memory())
    }

    /// Retires the counts of cgroups gone for at least `after`, counting per cgroup
    /// ([`crate::Report::Counts`]'s `per_cgroup`, or by cgroup or container): deletes their
    /// keys from the kernel's map, so that a node whose workloads come and go never fills its
    /// budget, and returns the rows this call retired (they leave
    /// [`Tracer::connect_counts`]; [`Tracer::retired`] keeps the totals). A cgroup is retired at
    /// the first call at least `after` past the first call that found it gone. Call it every so
    /// often (the command does every `after / 4`, at most a minute).
    ///
    /// Whether a cgroup exists is asked of the kernel by file handle where permitted
    /// (`CAP_DAC_READ_SEARCH`); otherwise by walking the cgroup2 mount's tree, once per call:
    /// a cgroup the walk does not find is gone if the mount shows the whole hierarchy, or if it
    /// was named from the tree or found by an earlier walk (a cgroup outside what a cgroup
    /// namespace's mount shows is never retired). Without a cgroup2 mount nothing is retired.
    pub fn retire_gone_cgroups(&mut self, after: Duration) -> Vec<ConnectCount> {
        let per_cgroup = match &self.tally {
            Some(tally) => tally.config.per_cgroup,
            None => self.count_cgroup,
        };
        let (Some(by), Some(workloads)) = (
            self.count_by.or(self.tally.as_ref().map(|t| t.config.by)),
            self.workloads.as_ref().filter(|_| per_cgroup),
        ) else {
            return Vec::new();
        };
        let mut workloads = lock(workloads);
        // Without file handles, one walk of the tree for the whole call.
        let mut walked = None;
        let presence = |id| match workloads.exists(id) {
            Some(known) => Some(Presence::Known(known)),
            None => {
                let named = workloads.named(id);
                walked
                    .get_or_insert_with(|| workloads.ids())
                    .as_ref()
                    .map(|(ids, whole)| Presence::Walked {
                        found: ids.contains(&id),
                        visible: *whole || named,
                    })
            }
        };
        let retired = match &mut self.tally {
            Some(tally) => tally.retire(after, presence),
            None => self
                .counts
                .retire(after, presence)
                .into_iter()
                .map(|(key, value)| (key, value, Default::default(), None))
                .collect(),
        };
        counts::named_rows(by, true, retired, |id| workloads.names(id))
    }

    /// Everything [`Tracer::retire_gone_cgroups`] retired so far.
    pub fn retired(&self) -> Retired {
        match &self.tally {
            Some(tally) => tally.retired(),
            None => self.counts.retired(),
        }
    }

    /// How many connects the kernel holds between their first and last hook: calls between
    /// their entry and return probes (kprobe backend), plus sockets between SYN_SENT and their
    /// next state (tracepoint backend). The maps are bounded by `probe_common::limit`'s
    /// `MAX_PENDING` and `MAX_CONNECTING`; normally this is about the number of threads inside a
    /// connect.
    pub fn pending_calls(&self) -> usize {
        self.pending.keys().filter(Result::is_ok).count() + self.connecting.len()
    }

    /// Forgets connect calls entered more than `max_age` ago that will never complete (their
    /// return probe never ran, or the socket's transition out of SYN_SENT was missed), and
    /// counts them as missed; returns how many. [`Tracer::drain`] does this for calls older
    /// than a few seconds (sockets in SYN_SENT: ten minutes; those in the kernel's table of
    /// slots only once detached); with `Duration::ZERO`, at the end
    /// of tracing (after [`Tracer::detach`]), it accounts for every call that will not be
    /// reported.
    pub fn reap_pending(&mut self, max_age: Duration) -> usize {
        self.reap(max_age, max_age)
    }

    fn reap(&mut self, calls_age: Duration, sockets_age: Duration) -> usize {
        self.last_reap = Instant::now();
        let now = clock::boot_now_ns();
        let cutoff = |age: Duration| now.saturating_sub(age.as_nanos() as u64);
        let calls = reap_map(&mut self.pending, cutoff(calls_age), |call| call.boot_ns);
        let detached = self.ebpf.is_none();
        let sockets = self.connecting.reap(cutoff(sockets_age), detached);
        self.reaped += (calls + sockets) as u64;
        calls + sockets
    }

    /// Detaches every program, so that nothing more is recorded, and waits for the runs still
    /// in progress (an update of a one-entry array of maps, which returns only after an RCU
    /// grace period), while keeping what they recorded readable: the ring
    /// buffer (a last [`Tracer::drain`] then sees every event), the calls in flight
    /// ([`Tracer::reap_pending`] with `Duration::ZERO` then counts them), the counts and
    /// counters, and the programs' statistics. This is the exact way to end: every connect a
    /// program saw is then printed, dropped or missed. Dropping the tracer detaches too.
    pub fn detach(&mut self) {
        if let Some(mut ebpf) = self.ebpf.take() {
            // Closing the links stops new runs; a run already in progress (a raw tracepoint
            // on another CPU, an fexit program preempted on a preemptible kernel) can still
            // write after that, until the barrier returns. The object itself is kept until
            // the connections still open are read, by its never attached `live_figures`.
            crate::backend::detach_all(&mut ebpf);
            let waited = self.barrier.as_ref().is_some_and(|b| b.wait().is_ok());
            if !waited {
                std::thread::sleep(DETACH_GRACE);
                self.inexact_exit = true;
            } else if self.trampolines {
                // The one window no RCU wait sees: a thread that returned from a traced
                // function into the fexit trampoline before the kernel patched it to skip the
                // programs, and was preempted there before the trampoline entered its RCU
                // section (a few instructions, preemptible kernels only). Such a thread gets
                // DETACH_GRACE to get in, then the barrier waits for its run again.
                std::thread::sleep(DETACH_GRACE);
                if let Some(barrier) = &self.barrier {
                    self.inexact_exit |= barrier.wait().is_err();
                }
            }
            if self.outcome {
                self.take_pending();
            }
            if let Some(live) = &mut self.live {
                let now = clock::boot_now_ns();
                for (connection, figures) in live.take_all(&ebpf) {
                    match CloseEvent::open(&connection, now, figures.as_ref()) {
                        Ok(close) => self.open_at_end.push_back(close),
                        Err(_) => self.malformed += 1,
                    }
                }
            }
        }
    }

    /// Whether [`Tracer::detach`] could not wait for the program runs in progress exactly (the
    /// kernel refused the map it waits with) and gave them a grace period instead: a run
    /// preempted for longer could then write after the last drain, unseen and uncounted.
    pub fn exit_inexact(&self) -> bool {
        self.inexact_exit
    }

    /// With outcomes, once detached: every connect still in SYN_SENT becomes a pending event
    /// (or count) for the last drain, rather than a missed one.
    fn take_pending(&mut self) {
        // What drain would have reaped as stale by now is stale still, not pending.
        self.reap(STALE_AFTER, CONNECTING_STALE_AFTER);
        let now = clock::boot_now_ns();
        // The label sets counted now, and those the pending connects add, against the budget.
        let mut label_sets: std::collections::HashSet<CountKey> = match self.count_by {
            Some(_) => self.counts.entries().into_iter().map(|(k, _)| k).collect(),
            None => Default::default(),
        };
        let mut series = self.counts.series();
        for record in self.connecting.take_all() {
            let latency_ns = now.saturating_sub(record.boot_ns);
            // `--min-latency` leaves out a connect pending for less (filtered, not lost).
            if latency_ns < self.min_latency_ns {
                continue;
            }
            let Ok(mut event) = ConnectEvent::from_record(&record) else {
                self.malformed += 1;
                continue;
            };
            event.completion = Some(crate::Completion {
                outcome: Outcome::Pending,
                latency_ns,
                errno: 0,
                syn_retransmits: 0,
                cause: None,
            });
            match self.count_by {
                None => self.pending_events.push_back(event),
                Some(by) => {
                    let cgroup_id = if self.count_cgroup {
                        record.identity.cgroup_id
                    } else {
                        0
                    };
                    let mut key = CountKey::new(
                        by as u8,
                        cgroup_id,
                        (record.daddr, record.dport),
                        record.family,
                        (Outcome::Pending as u8, 0),
                    );
                    // As the kernel side would: a new label set beyond the budget overflows.
                    if !label_sets.contains(&key) {
                        if series < self.max_series as usize {
                            series += 1;
                            label_sets.insert(key);
                        } else {
                            key = CountKey::overflow(record.family, (Outcome::Pending as u8, 0));
                            self.pending_overflow += 1;
                        }
                    }
                    let mut value = CountValue {
                        connects: 1,
                        latency_ns,
                        ..CountValue::ZERO
                    };
                    value.buckets[usize::from(latency_bucket(latency_ns))] = 1;
                    self.pending_counts.push((key, value));
                }
            }
        }
    }

    /// Run counts, times and recursion misses of the attached programs; runs and times are zero
    /// unless built with [`crate::TracerBuilder::program_stats`].
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.programs
            .iter()
            .filter_map(|(name, fd)| {
                let info = program_info::prog_info(fd.as_fd()).ok()?;
                Some(ProgramStats {
                    name: name.clone(),
                    runs: info.run_cnt,
                    run_time_ns: info.run_time_ns,
                    recursion_misses: info.recursion_misses,
                })
            })
            .collect()
    }

    /// Connects lost to program runs the kernel skipped (recursion misses). Left out: a skipped
    /// kretprobe run, whose call stays in `PENDING` and is counted when reaped; and a skipped
    /// run of either tracepoint program (`inet_sock_set_state`, `connect_outcome`), which can
    /// only be one nested in softirq over a run in process context, so never a CLOSE ->
    /// SYN_SENT start (that happens in the caller's context), only a completion, whose socket
    /// stays in `CONNECTING` (or `CONNECTING_SLOTS`) and is counted when reaped (or, with
    /// outcomes, reported as pending at the end), or the change of state of some unrelated
    /// socket.
    fn skipped_runs(&self) -> u64 {
        use probe_common::names::program;
        const ACCOUNTED_ELSEWHERE: [&str; 3] = [
            program::tcp_connect_return,
            program::inet_sock_set_state,
            program::connect_outcome,
        ];
        // With `--lifetime` a skipped run of the state-change programs can be a traced
        // connection's close, which nothing else accounts for: counted (whichever socket it was).
        let lifetime = self.live.is_some();
        self.program_stats()
            .iter()
            .filter(|p| {
                !ACCOUNTED_ELSEWHERE.contains(&p.name.as_str())
                    || (lifetime && p.name != program::tcp_connect_return)
            })
            .map(|p| p.recursion_misses)
            .sum()
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
                + total(counter::COUNTS_FULL)
                + self.connecting.evicted(total)
                + self.live.as_ref().map_or(0, |live| live.lost(total)),
            missed: total(counter::MISSED_RETURN) + self.reaped + self.skipped_runs(),
            malformed: self.malformed,
            overflow: total(counter::SERIES_OVERFLOW)
                + self.pending_overflow
                + self.tally.as_ref().map_or(0, |t| t.overflow),
        }
    }
}

/// The ring buffer's descriptor: readable when the kernel signals waiting events.
impl AsRawFd for Tracer {
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}
