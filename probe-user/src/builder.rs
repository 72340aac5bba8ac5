//! [`TracerBuilder`]: what to trace (filters, families), what to report ([`Report`]) and how
//! (backend): plain options, which `attach.rs` checks and turns into an attached
//! [`crate::Tracer`].

use std::{collections::BTreeSet, path::PathBuf};

use ipnet::IpNet;
use probe_common::{Backend, Family};

#[cfg(doc)]
use crate::Tracer;
use crate::{Report, btf};

/// Options of a [`Tracer`]: filters (applied in the kernel), families, what to report and how
/// to attach.
///
/// ```no_run
/// use probe_user::{CountBy, Family, OutcomeFilter, Outcomes, Report, Tracer};
///
/// let tracer = Tracer::builder()
///     .filter_ports([443, 8443])
///     .family(Family::V4)
///     .report(Report::Counts {
///         by: CountBy::Destination,
///         per_cgroup: false,
///         outcome: Outcomes::Tracked(OutcomeFilter::default()),
///     })
///     .attach()?;
/// # Ok::<(), probe_user::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TracerBuilder {
    pub(crate) ports: BTreeSet<u16>,
    pub(crate) pids: BTreeSet<u32>,
    pub(crate) uids: BTreeSet<u32>,
    pub(crate) cgroups: Vec<PathBuf>,
    pub(crate) containers: Vec<String>,
    pub(crate) netns: BTreeSet<u32>,
    pub(crate) comms: BTreeSet<String>,
    pub(crate) destinations: Vec<IpNet>,
    pub(crate) families: Vec<Family>,
    pub(crate) report: Report,
    pub(crate) program_stats: bool,
    pub(crate) btf_path: PathBuf,
    pub(crate) backend: Option<Backend>,
    pub(crate) identity: bool,
    pub(crate) caller_names: bool,
    pub(crate) max_series: u32,
    pub(crate) names: Option<crate::NamesConfig>,
    pub(crate) nat: bool,
    pub(crate) lifetime: bool,
    pub(crate) accepts: bool,
}

impl Default for TracerBuilder {
    fn default() -> Self {
        Self {
            ports: BTreeSet::new(),
            pids: BTreeSet::new(),
            uids: BTreeSet::new(),
            cgroups: Vec::new(),
            containers: Vec::new(),
            netns: BTreeSet::new(),
            comms: BTreeSet::new(),
            destinations: Vec::new(),
            families: vec![Family::V4, Family::V6],
            report: Report::default(),
            program_stats: false,
            btf_path: PathBuf::from(btf::VMLINUX_BTF),
            backend: None,
            identity: false,
            caller_names: true,
            max_series: probe_common::limit::MAX_COUNT_KEYS,
            names: None,
            nat: false,
            lifetime: false,
            accepts: false,
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

    /// Traces only connects made by tasks in these cgroup v2 directories or below them (e.g.
    /// `/sys/fs/cgroup/system.slice` admits every service; cgroups created later included).
    pub fn filter_cgroups(mut self, paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.cgroups.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Traces only connects made by tasks of these containers: each id a prefix of at least 12
    /// hex digits of a container id (as `docker ps` shortens them), matched in the kernel
    /// against the name of the caller's cgroup v2 directory (`docker-<id>.scope`,
    /// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, or `<id>`), so
    /// containers started later are traced too.
    pub fn filter_containers(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.containers.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Traces only connects of sockets in these network namespaces (inode numbers, as
    /// `/proc/PID/ns/net` links to `net:[INODE]` and `lsns -t net` lists them).
    pub fn filter_netns(mut self, inodes: impl IntoIterator<Item = u32>) -> Self {
        self.netns.extend(inodes);
        self
    }

    /// Whether to report who made each connect beyond its pid ([`crate::Workload`] in every
    /// event): its cgroup (id and path), container and pod, pid namespace and pids in it, and
    /// network namespace (default: not). Read in the kernel only when asked, so tracers
    /// without it pay nothing.
    pub fn identity(mut self, yes: bool) -> Self {
        self.identity = yes;
        self
    }

    /// Names each connect's destination by the DNS answer that gave its address to the
    /// socket's network namespace ([`crate::ConnectEvent::dns_name`]), from the answers the
    /// kernel sees delivered to local UDP sockets (a kprobe: kernels with kprobes only). Events
    /// then carry the workload ([`TracerBuilder::identity`]), whose network namespace keys the
    /// names. With [`Report::Counts`], each row carries its name too
    /// ([`crate::ConnectCount::dns_name`]; implied by [`crate::CountBy::Name`]), counted
    /// from the events ([`Tracer::counts_in_userspace`]).
    pub fn names(mut self, config: crate::NamesConfig) -> Self {
        self.names = Some(config);
        self
    }

    /// Gives each connect whose SYN a destination NAT sent elsewhere the address it was sent
    /// to ([`crate::ConnectEvent::nat_dst`]), seen as the SYN is queued to its device (the
    /// `net:net_dev_queue` tracepoint, which every transmitted packet then passes through); for
    /// a connect this host forwards (a pod's, through its veth), from the conntrack entry of
    /// its SYN as it leaves.
    /// Events then carry the workload, whose network namespace joins a SYN to its connect.
    /// With [`Report::Counts`], each row carries it too ([`crate::ConnectCount::nat_dst`]),
    /// counted from the events ([`Tracer::counts_in_userspace`]).
    pub fn nat(mut self, yes: bool) -> Self {
        self.nat = yes;
        self
    }

    /// Follows each connect that came up to its close: the tracer then also reports an
    /// [`crate::Event::Close`] for it, with its duration, bytes and segments each way,
    /// retransmits, round-trip time and how it ended, when its socket closes (from
    /// `sock:inet_sock_set_state`, which every backend then attaches), or as
    /// [`crate::End::Open`] after [`Tracer::detach`] if it is still open. With
    /// [`Report::Counts`], counted in userspace from those events instead
    /// ([`Tracer::counts_in_userspace`]): the rows of established connects carry their
    /// connections' counts ([`crate::ConnectCount::connections`]: open now, closed, bytes,
    /// durations). Needs outcomes ([`crate::Outcomes::Untracked`] becomes
    /// [`crate::Outcomes::Tracked`]), established connects among them, else
    /// [`crate::TracerBuilder::attach`] fails with [`crate::Conflict::LifetimeNeedsOutcomes`].
    pub fn lifetime(mut self, yes: bool) -> Self {
        self.lifetime = yes;
        self
    }

    /// Also reports each connection a local listener accepts, as an [`crate::Event::Accept`]
    /// ([`crate::Role::Server`]): the peer as `src`, the local address and port as `dst`, the
    /// task that accepted it as the caller, from the return of `inet_csk_accept` (every
    /// backend: an fexit program where the kernel has BPF trampolines, else a kretprobe; with
    /// neither, [`crate::TracerBuilder::attach`] fails with [`crate::Error::Accepts`]). The
    /// filters apply as to a connect: the caller filters to the
    /// accepting task, the destination filters (`filter_ports`, `filter_destinations`,
    /// `families`) to the local end. With [`TracerBuilder::lifetime`] accepted connections are
    /// followed to their close too, from the accept. Counted ([`Report::Counts`]), accepts
    /// make rows of their own ([`crate::ConnectCount::role`]), counted in userspace. Not with
    /// [`Report::Timestamps`]: `attach` fails with [`crate::Conflict::TimestampsAccepts`].
    pub fn accepts(mut self, yes: bool) -> Self {
        self.accepts = yes;
        self
    }

    /// Whether events carry the caller's uid and name (default: they do). Without, `uid` is
    /// 0 and `comm` empty: two kernel helper calls fewer per connect, for consumers that print
    /// neither (SystemTap's formats do not). Filters on them (`filter_uids`, `filter_comms`)
    /// apply either way.
    pub fn caller_names(mut self, yes: bool) -> Self {
        self.caller_names = yes;
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

    /// What to report (default: an event for each connect at its call's return).
    pub fn report(mut self, report: Report) -> Self {
        self.report = report;
        self
    }

    /// The most label sets (keys) the kernel counts by, with [`Report::Counts`]: 1 to
    /// `probe_common::limit::MAX_COUNT_KEYS_LIMIT`, by default
    /// `probe_common::limit::MAX_COUNT_KEYS` (16,384). A connect with a new label set beyond
    /// it is counted under the overflow row of its family and outcome
    /// ([`crate::ConnectCount::overflow`]), so totals stay exact; [`crate::Counters::overflow`]
    /// says how many were. Each costs about 350 bytes of kernel memory, whatever the number of
    /// CPUs.
    pub fn max_series(mut self, n: u32) -> Self {
        self.max_series = n;
        self
    }

    /// Whether the kernel accounts each program's run count and run time while the tracer
    /// lives (as `kernel.bpf_stats_enabled` does), for [`Tracer::program_stats`] (default:
    /// not). This costs a clock read per program run.
    pub fn program_stats(mut self, yes: bool) -> Self {
        self.program_stats = yes;
        self
    }

    /// Attaches with this backend only, instead of the first of [`Backend::AUTO_ORDER`] that
    /// works here.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Reads struct offsets from this BTF file instead of the running kernel's.
    pub fn btf_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.btf_path = path.into();
        self
    }
}
