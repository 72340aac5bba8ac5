//! What a scrape or an OTLP export carries: the metric families, each a list of labelled
//! series, built once from the kernel's counts ([`Exposition::collect`]) and written out as
//! OpenMetrics text (`text`) or pushed over OTLP (`otlp`). One model for both, so a connect is
//! the same number under the same labels whichever way it leaves.
//!
//! # Labels that stay put
//!
//! With `--metrics-label cgroup` a series carries the caller's `cgroup_id`, the kernel's own
//! key, which never changes; its names (path, container, pod) are joined through
//! `tcpconn_cgroup_info{cgroup_id,cgroup,container_id,pod_uid} 1`, as kube-state-metrics joins
//! pods. With `--metrics-label container` the series carries the `container_id`, decided from
//! the cgroup's names the first time its connects are exported and then kept ([`Pins`]) for as
//! long as the kernel holds the cgroup's counts: a cgroup named late never moves from one
//! series to another.

use std::{
    collections::{BTreeMap, HashMap, btree_map::Entry},
    time::{Duration, Instant},
};

use probe_common::Named as _;
use probe_user::{
    ConnectCount, ConnectionCounts, Counters, DURATION_BUCKET_BOUNDS_NS, LATENCY_BUCKET_BOUNDS_NS,
    Outcome, ProgramStats, Role, WorkloadNames,
};

use super::WorkloadLabel;

/// The namespace of every metric (`tcpconn_connects_total`, ...). Not `probe_`: that is
/// blackbox_exporter's (`probe_success`, `probe_duration_seconds`), which dashboards and
/// recording rules select by prefix.
pub const PREFIX: &str = "tcpconn";

/// The label value of the overflow series: the connects of label sets beyond `--max-series`.
pub const OTHER: &str = "other";

/// Indexes into the kernel's latency buckets ([`LATENCY_BUCKET_BOUNDS_NS`], powers of two
/// microseconds) of the exported histogram's finite bounds: every other one, from 16 us to
/// 67 s (a factor of four apart). Twelve bounds keep a histogram at 15 samples, where the
/// kernel's 28 would make 31: the exposition is dominated by histograms, and connect latencies
/// (tens of microseconds on a host, milliseconds across a network, seconds for SYN
/// retransmits) are told apart as well. Merging buckets is exact: each exported bucket is the
/// sum of the kernel's below its bound.
pub const EXPORTED_BUCKETS: [usize; 12] = [4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26];

/// The exported histogram's finite upper bounds, in seconds (`+Inf` follows).
pub fn bucket_bounds_seconds() -> impl Iterator<Item = f64> {
    EXPORTED_BUCKETS
        .iter()
        .map(|&b| LATENCY_BUCKET_BOUNDS_NS[b] as f64 / 1e9)
}

/// How a family's samples are typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A cumulative count since tracing started (`_total`).
    Counter,
    /// A value now.
    Gauge,
    /// A histogram of seconds (`_bucket`, `_sum`, `_count`).
    Histogram,
    /// Constant 1, its labels the information (`_info`).
    Info,
}

/// One metric: its name without [`PREFIX`] nor suffix, help, type, unit and series.
#[derive(Debug)]
pub struct MetricFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The unit the name ends with (`seconds`), if any.
    pub unit: Option<&'static str>,
    pub series: Vec<Series>,
}

/// A series' labels, in order, their values as they are (the writers escape them).
pub type Labels = Vec<(&'static str, String)>;

/// One series of a family.
#[derive(Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub value: Value,
}

/// A series' value.
#[derive(Debug, PartialEq)]
pub enum Value {
    /// Counters, gauges of things, and info metrics (1).
    Count(u64),
    /// Counters and gauges of seconds.
    Seconds(f64),
    Histogram(Histogram),
}

/// A histogram of seconds: connect latencies (counted in the kernel) or connection durations.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub sum_seconds: f64,
    pub count: u64,
    /// Its buckets' finite upper bounds.
    pub bounds: Bounds,
    /// Per bucket of `bounds` (not cumulative), the last one `+Inf`.
    pub buckets: Vec<u64>,
}

/// The finite upper bounds of a [`Histogram`]'s buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bounds {
    /// Connect latencies: [`bucket_bounds_seconds`].
    Latency,
    /// Connection durations: [`DURATION_BUCKET_BOUNDS_NS`], 16 us to 19 hours.
    Duration,
}

impl Bounds {
    pub const ALL: [Bounds; 2] = [Bounds::Latency, Bounds::Duration];

    /// The bounds, in seconds (`+Inf` follows).
    pub fn seconds(self) -> Vec<f64> {
        match self {
            Bounds::Latency => bucket_bounds_seconds().collect(),
            Bounds::Duration => DURATION_BUCKET_BOUNDS_NS
                .iter()
                .map(|&ns| ns as f64 / 1e9)
                .collect(),
        }
    }
}

impl Histogram {
    /// An empty histogram with `bounds`.
    pub fn new(bounds: Bounds) -> Self {
        let buckets = match bounds {
            Bounds::Latency => EXPORTED_BUCKETS.len() + 1,
            Bounds::Duration => ConnectionCounts::DURATION_BUCKETS,
        };
        Histogram {
            sum_seconds: 0.0,
            count: 0,
            bounds,
            buckets: vec![0; buckets],
        }
    }

    /// Adds the kernel-bucketed latencies of `row`.
    fn add(&mut self, row: &ConnectCount) {
        self.sum_seconds += row.latency_ns as f64 / 1e9;
        // The buckets' sum, not `connects`: the kernel adds to each separately, and a read
        // between the two must still give a `_count` equal to the `+Inf` bucket.
        self.count += row.latency_buckets.iter().sum::<u64>();
        for (b, &n) in row.latency_buckets.iter().enumerate() {
            let exported = EXPORTED_BUCKETS.partition_point(|&bound| bound < b);
            self.buckets[exported] += n;
        }
    }

    /// Adds the durations of closed connections.
    fn add_durations(&mut self, connections: &ConnectionCounts) {
        self.sum_seconds += connections.duration_ns as f64 / 1e9;
        self.count += connections.closed;
        for (sum, n) in self.buckets.iter_mut().zip(connections.duration_buckets) {
            *sum += n;
        }
    }
}

/// What the series are labelled with, beyond family and port.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// `--count-by destination`: a `daddr` label.
    pub with_daddr: bool,
    /// `--names`: a `dns_name` label (empty for an address no answer named).
    pub with_names: bool,
    /// `--nat`: `nat_daddr` and `nat_dport` labels (empty when no NAT applied).
    pub with_nat: bool,
    /// `--metrics-label`.
    pub label: Option<WorkloadLabel>,
    /// `--accept`: `tcpconn_accepts_total`, before any accept too.
    pub with_accepts: bool,
}

/// How long a connect of a cgroup not named yet is held back from the `container_id` series,
/// waiting for its names (without file handles, a new cgroup is named by the next walk of the
/// tree, at most a second away), before it is exported as of no container for good.
pub const NAMING_GRACE: Duration = Duration::from_secs(5);

/// The names a cgroup's series were first exported with, by cgroup id, kept while the cgroup
/// has counts, and what retired cgroups had counted under series that go on (see the module's
/// doc).
#[derive(Debug, Default)]
pub struct Pins {
    names: HashMap<u64, WorkloadNames>,
    /// Since when each cgroup not named yet has been held back (`--metrics-label container`).
    unnamed: HashMap<u64, Instant>,
    /// By `container_id` series (its labels, side and outcome), the counts of its retired cgroups:
    /// the series is the sum of its cgroups', so without them it would go down. Kept while
    /// the container has a cgroup with counts.
    carried: BTreeMap<(Labels, Role, Option<Outcome>), ConnectCount>,
}

impl Pins {
    /// The names `id` is exported with: `now`'s on first use, the same ever after; with
    /// `refine`, names found after a first use that had none replace those (only an info
    /// metric shows them: the series' label is the id).
    fn names(&mut self, id: u64, now: Option<&WorkloadNames>, refine: bool) -> &WorkloadNames {
        self.unnamed.remove(&id);
        let pinned = self
            .names
            .entry(id)
            .or_insert_with(|| now.cloned().unwrap_or_default());
        if let (true, None, Some(now)) = (refine, &pinned.cgroup, now) {
            pinned.clone_from(now);
        }
        pinned
    }

    /// Whether a connect of cgroup `id`, named `now`, waits for its names before its
    /// `container_id` is decided (see [`NAMING_GRACE`]).
    fn held_back(&mut self, id: u64, now: Option<&WorkloadNames>) -> bool {
        if self.names.contains_key(&id) || now.is_some_and(|n| n.cgroup.is_some()) {
            return false;
        }
        let since = *self.unnamed.entry(id).or_insert_with(Instant::now);
        since.elapsed() < NAMING_GRACE
    }

    /// Forgets the cgroups not in `rows` (their counts were retired).
    fn keep_only(&mut self, rows: &[ConnectCount]) {
        let live: std::collections::HashSet<u64> =
            rows.iter().filter_map(|r| r.cgroup_id).collect();
        self.names.retain(|id, _| live.contains(id));
        self.unnamed.retain(|id, _| live.contains(id));
    }

    /// Takes in the rows of retired cgroups (from
    /// [`probe_user::Tracer::retire_gone_cgroups`]): labelled by container, their counts are
    /// carried on in the series they were part of; labelled by cgroup id, their series end.
    pub fn retire(&mut self, rows: &[ConnectCount], options: Options) {
        if options.label == Some(WorkloadLabel::Container) {
            let mut infos = BTreeMap::new();
            for row in rows {
                // Decided now if it never was: the cgroup is gone.
                let id = row.cgroup_id.unwrap_or(0);
                self.unnamed.insert(id, Instant::now() - NAMING_GRACE);
                let Some(labels) = labels(row, options, self, &mut infos) else {
                    continue;
                };
                match self.carried.entry((labels, row.role, row.outcome)) {
                    Entry::Vacant(entry) => {
                        entry.insert(row.clone());
                    }
                    Entry::Occupied(mut entry) => entry.get_mut().merge(row),
                }
            }
        }
        for id in rows.iter().filter_map(|r| r.cgroup_id) {
            self.names.remove(&id);
            self.unnamed.remove(&id);
        }
    }
}

/// What the counting bookkeeping adds to the counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bookkeeping {
    pub counters: Counters,
    /// Label sets (kernel keys) in use, and the most there may be (`--max-series`).
    pub series: u64,
    pub max_series: u64,
    /// Label sets retired (their cgroup gone), and their connects.
    pub retired_series: u64,
    pub retired_connects: u64,
}

/// Every metric family of one scrape or export.
#[derive(Debug, Default)]
pub struct Exposition(pub Vec<MetricFamily>);

impl Exposition {
    /// The families of `rows` (from [`probe_user::Tracer::connect_counts`]) and `book`:
    /// `tcpconn_connects_total{family,dport[,daddr][,cgroup_id|container_id]}` (rows of the same
    /// labels summed), with outcomes `tcpconn_connect_failures_total{...,reason,cause}` (every
    /// outcome but established and pending, with its cause), `tcpconn_syn_retransmits_total`
    /// and `tcpconn_connect_duration_seconds{...,outcome}`; the
    /// info metric of each labelled workload; what was lost, overflowed and retired; with
    /// `programs` (`--stats`) each eBPF program's runs, run time and skipped runs.
    pub fn collect(
        rows: &[ConnectCount],
        book: Bookkeeping,
        options: Options,
        pins: &mut Pins,
        programs: Option<&[ProgramStats]>,
    ) -> Exposition {
        pins.keep_only(rows);
        let mut connects: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut accepts: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut failures: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut retransmits: BTreeMap<Labels, u64> = BTreeMap::new();
        let mut durations: BTreeMap<Labels, Histogram> = BTreeMap::new();
        let mut connections: BTreeMap<Labels, ConnectionCounts> = BTreeMap::new();
        let mut infos: BTreeMap<Labels, ()> = BTreeMap::new();
        let traced_outcomes = rows.iter().any(|r| r.outcome.is_some());
        let lifetimes = rows.iter().any(|r| r.connections.is_some());
        let mut add = |labels: Labels, row: &ConnectCount| {
            // An accept's row is labelled like a connect's, by its local end.
            let calls = match row.role {
                Role::Client => &mut connects,
                Role::Server => &mut accepts,
            };
            *calls.entry(labels.clone()).or_default() += row.connects;
            // The connections of the established connects (the client's side of each) and of
            // the accepts (the server's).
            if let Some(counts) = &row.connections {
                let mut labels = labels.clone();
                labels.push(("role", row.role.name().to_string()));
                connections.entry(labels).or_default().merge(counts);
            }
            let Some(outcome) = row.outcome else {
                return;
            };
            *retransmits.entry(labels.clone()).or_default() += row.syn_retransmits;
            if outcome.is_failure() {
                let mut labels = labels.clone();
                labels.push(("reason", outcome.name().to_string()));
                let cause = row.cause.map_or("unknown", |c| c.name());
                labels.push(("cause", cause.to_string()));
                *failures.entry(labels).or_default() += row.connects;
            }
            let mut labels = labels;
            labels.push(("outcome", outcome.name().to_string()));
            durations
                .entry(labels)
                .or_insert_with(|| Histogram::new(Bounds::Latency))
                .add(row);
        };
        let mut containers = std::collections::HashSet::new();
        for row in rows {
            if let Some(labels) = labels(row, options, pins, &mut infos) {
                containers.extend(container_of(&labels));
                add(labels, row);
            }
        }
        // Retired cgroups' counts go on in the series of a container that still counts.
        pins.carried.retain(|(labels, _, _), _| {
            container_of(labels).is_some_and(|c| containers.contains(&c))
        });
        for ((labels, _, _), row) in &pins.carried {
            add(labels.clone(), row);
        }
        let counts = |map: BTreeMap<Labels, u64>| -> Vec<Series> {
            map.into_iter()
                .map(|(labels, n)| Series {
                    labels,
                    value: Value::Count(n),
                })
                .collect()
        };
        let mut families = vec![MetricFamily {
            name: "connects",
            help: "TCP connect calls traced (tcp_v4_connect / tcp_v6_connect), by destination",
            kind: Kind::Counter,
            unit: None,
            series: counts(connects),
        }];
        if options.with_accepts {
            families.push(MetricFamily {
                name: "accepts",
                help: "TCP connections local listeners accepted (inet_csk_accept), by local \
                       address and port",
                kind: Kind::Counter,
                unit: None,
                series: counts(accepts),
            });
        }
        if traced_outcomes {
            families.push(MetricFamily {
                name: "connect_failures",
                help: "TCP connects that did not come up, by destination, reason (the outcome) \
                       and cause (rst, icmp, local, drop, timeout, app)",
                kind: Kind::Counter,
                unit: None,
                series: counts(failures),
            });
            families.push(MetricFamily {
                name: "syn_retransmits",
                help: "SYN retransmits of the connects traced, by destination",
                kind: Kind::Counter,
                unit: None,
                series: counts(retransmits),
            });
            families.push(MetricFamily {
                name: "connect_duration_seconds",
                help: "Time from the connect call to its outcome, by destination and outcome",
                kind: Kind::Histogram,
                unit: Some("seconds"),
                series: durations
                    .into_iter()
                    .map(|(labels, h)| Series {
                        labels,
                        value: Value::Histogram(h),
                    })
                    .collect(),
            });
        }
        if lifetimes {
            families.extend(connection_families(connections));
        }
        if let Some(label) = options.label {
            let (name, help) = match label {
                WorkloadLabel::Cgroup => (
                    "cgroup",
                    "The names of each cgroup_id of the connect series (join on cgroup_id)",
                ),
                WorkloadLabel::Container => (
                    "container",
                    "The pod of each container_id of the connect series (join on container_id)",
                ),
            };
            families.push(MetricFamily {
                name,
                help,
                kind: Kind::Info,
                unit: None,
                series: counts(infos.into_keys().map(|l| (l, 1)).collect()),
            });
        }
        families.extend(bookkeeping(book));
        if let Some(programs) = programs {
            families.extend(program_families(programs));
        }
        Exposition(families)
    }
}

/// The families of the connections followed to their close (`--lifetime`), by the labels of
/// their connects' series and `role`: open now, the closed ones' payload bytes each way and
/// their durations.
fn connection_families(connections: BTreeMap<Labels, ConnectionCounts>) -> Vec<MetricFamily> {
    let series = |value: &dyn Fn(&ConnectionCounts) -> Value| -> Vec<Series> {
        connections
            .iter()
            .map(|(labels, counts)| Series {
                labels: labels.clone(),
                value: value(counts),
            })
            .collect()
    };
    vec![
        MetricFamily {
            name: "connections_active",
            help: "TCP connections traced from their connect (or accept) that are open now, by \
                   destination (the local end for a server's) and role",
            kind: Kind::Gauge,
            unit: None,
            series: series(&|c| Value::Count(c.active())),
        },
        MetricFamily {
            name: "bytes_sent",
            help: "Payload bytes sent and acknowledged on the traced connections that closed, by \
                   destination and role",
            kind: Kind::Counter,
            unit: None,
            series: series(&|c| Value::Count(c.bytes_sent)),
        },
        MetricFamily {
            name: "bytes_received",
            help: "Payload bytes received on the traced connections that closed, by destination \
                   and role",
            kind: Kind::Counter,
            unit: None,
            series: series(&|c| Value::Count(c.bytes_received)),
        },
        MetricFamily {
            name: "connection_duration_seconds",
            help: "Time from established to close of the traced connections that closed, by \
                   destination and role",
            kind: Kind::Histogram,
            unit: Some("seconds"),
            series: series(&|c| {
                let mut histogram = Histogram::new(Bounds::Duration);
                histogram.add_durations(c);
                Value::Histogram(histogram)
            }),
        },
    ]
}

/// The `container_id` label's value in `labels`, if any.
fn container_of(labels: &Labels) -> Option<String> {
    labels
        .iter()
        .find(|(name, _)| *name == "container_id")
        .map(|(_, value)| value.clone())
}

/// The labels of `row`'s connect series, or `None` while it is held back (see
/// [`NAMING_GRACE`]); records the info series of its workload in `infos`.
fn labels(
    row: &ConnectCount,
    options: Options,
    pins: &mut Pins,
    infos: &mut BTreeMap<Labels, ()>,
) -> Option<Labels> {
    let other = || OTHER.to_string();
    let mut labels: Labels = vec![
        ("family", row.family.name().to_string()),
        (
            "dport",
            if row.overflow {
                other()
            } else {
                row.dport.to_string()
            },
        ),
    ];
    if options.with_daddr {
        let daddr = match row.daddr {
            Some(daddr) if !row.overflow => daddr.to_string(),
            _ => other(),
        };
        labels.push(("daddr", daddr));
    }
    if options.with_names {
        let name = match &row.dns_name {
            _ if row.overflow => other(),
            Some(name) => name.to_string(),
            None => String::new(),
        };
        labels.push(("dns_name", name));
    }
    if options.with_nat {
        let (daddr, dport) = match row.nat_dst {
            _ if row.overflow => (other(), other()),
            Some(nat) => (nat.ip().to_string(), nat.port().to_string()),
            None => (String::new(), String::new()),
        };
        labels.push(("nat_daddr", daddr));
        labels.push(("nat_dport", dport));
    }
    let Some(label) = options.label else {
        return Some(labels);
    };
    let (name, value) = match (row.overflow, row.cgroup_id) {
        (true, _) | (false, None) => (label_name(label), other()),
        (false, Some(id))
            if label == WorkloadLabel::Container && pins.held_back(id, row.workload.as_ref()) =>
        {
            return None;
        }
        (false, Some(id)) => {
            let refine = label == WorkloadLabel::Cgroup;
            let names = pins.names(id, row.workload.as_ref(), refine);
            let opt = |s: &Option<std::sync::Arc<str>>| s.as_deref().unwrap_or("").to_string();
            match label {
                WorkloadLabel::Cgroup => {
                    infos.insert(
                        vec![
                            ("cgroup_id", id.to_string()),
                            ("cgroup", opt(&names.cgroup)),
                            ("container_id", opt(&names.container)),
                            ("pod_uid", opt(&names.pod)),
                        ],
                        (),
                    );
                    ("cgroup_id", id.to_string())
                }
                WorkloadLabel::Container => {
                    let container = opt(&names.container);
                    if !container.is_empty() {
                        infos.insert(
                            vec![
                                ("container_id", container.clone()),
                                ("pod_uid", opt(&names.pod)),
                            ],
                            (),
                        );
                    }
                    ("container_id", container)
                }
            }
        }
    };
    labels.push((name, value));
    Some(labels)
}

/// The connect series' label of `label`.
fn label_name(label: WorkloadLabel) -> &'static str {
    match label {
        WorkloadLabel::Cgroup => "cgroup_id",
        WorkloadLabel::Container => "container_id",
    }
}

/// What was lost, overflowed and retired, and the series budget.
fn bookkeeping(book: Bookkeeping) -> Vec<MetricFamily> {
    let one = |name, help, kind, n| MetricFamily {
        name,
        help,
        kind,
        unit: None,
        series: vec![Series {
            labels: Vec::new(),
            value: Value::Count(n),
        }],
    };
    let c = book.counters;
    vec![
        one(
            "events_dropped",
            "Connects not counted: a kernel map or the ring buffer was full",
            Kind::Counter,
            c.dropped,
        ),
        one(
            "events_missed",
            "Connects seen starting but never completing (missed returns, skipped runs, in flight at exit)",
            Kind::Counter,
            c.missed,
        ),
        one(
            "events_malformed",
            "Undecodable ring-buffer records",
            Kind::Counter,
            c.malformed,
        ),
        one(
            "series_overflow",
            "Connects counted under the \"other\" series because --max-series label sets were in use (still counted)",
            Kind::Counter,
            c.overflow,
        ),
        one(
            "series",
            "Label sets counted now (each a key of the counts map: the kernel's, or with --names or --nat userspace's)",
            Kind::Gauge,
            book.series,
        ),
        one(
            "series_limit",
            "Most label sets counted (--max-series); beyond it connects go to \"other\"",
            Kind::Gauge,
            book.max_series,
        ),
        one(
            "series_retired",
            "Label sets retired because their cgroup was gone for --retire-after (their series end)",
            Kind::Counter,
            book.retired_series,
        ),
        one(
            "retired_connects",
            "Connects of the retired label sets (counted before their series ended)",
            Kind::Counter,
            book.retired_connects,
        ),
    ]
}

/// The kernel's statistics of each program (`--stats`), labelled by program name.
fn program_families(programs: &[ProgramStats]) -> Vec<MetricFamily> {
    let series = |value: &dyn Fn(&ProgramStats) -> Value| -> Vec<Series> {
        programs
            .iter()
            .map(|p| Series {
                labels: vec![("program", p.name.clone())],
                value: value(p),
            })
            .collect()
    };
    vec![
        MetricFamily {
            name: "bpf_program_runs",
            help: "Runs of each eBPF program (kernel BPF statistics, --stats)",
            kind: Kind::Counter,
            unit: None,
            series: series(&|p| Value::Count(p.runs)),
        },
        MetricFamily {
            name: "bpf_program_run_seconds",
            help: "Time spent in each eBPF program (kernel BPF statistics, --stats)",
            kind: Kind::Counter,
            unit: Some("seconds"),
            series: series(&|p| Value::Seconds(p.run_time_ns as f64 / 1e9)),
        },
        MetricFamily {
            name: "bpf_program_recursion_misses",
            help: "Runs of each eBPF program the kernel skipped (already running on its CPU)",
            kind: Kind::Counter,
            unit: None,
            series: series(&|p| Value::Count(p.recursion_misses)),
        },
    ]
}
