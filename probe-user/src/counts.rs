//! The kernel's connect counts as [`ConnectCount`] rows: each key's per-CPU values summed, the
//! latency buckets of one destination (or workload) and outcome merged into a histogram, and
//! by container the cgroups of one container merged into one row.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use probe_common::{
    CountBy, Family, Function, Outcome, Role,
    outcome::{LATENCY_BUCKETS, latency_bucket_bound_ns},
    state::{CountKey, CountValue},
};

use crate::{WorkloadNames, event, failure::Cause, tally::Naming};

/// The upper bounds, in nanoseconds, of the finite latency buckets of
/// [`ConnectCount::latency_buckets`] (1 us, 2 us, 4 us, ... 2^27 us): bucket `b` counts
/// latencies of at most `LATENCY_BUCKET_BOUNDS_NS[b]` and more than the bound before it; the
/// last bucket, one past these, counts the rest. A histogram's `le` bounds, for an agent.
///
/// ```
/// use probe_user::{ConnectCount, LATENCY_BUCKET_BOUNDS_NS};
///
/// assert_eq!(LATENCY_BUCKET_BOUNDS_NS[0], 1_000);
/// assert_eq!(LATENCY_BUCKET_BOUNDS_NS[10], 1_024_000);
/// assert!(LATENCY_BUCKET_BOUNDS_NS.is_sorted());
/// // Seconds, for a Prometheus histogram: `+Inf` follows the last.
/// let le: Vec<f64> = LATENCY_BUCKET_BOUNDS_NS.iter().map(|&ns| ns as f64 / 1e9).collect();
/// assert_eq!(le.len() + 1, ConnectCount::LATENCY_BUCKETS);
/// ```
pub const LATENCY_BUCKET_BOUNDS_NS: [u64; LATENCY_BUCKETS as usize] = {
    let mut bounds = [0; LATENCY_BUCKETS as usize];
    let mut b = 0;
    while b < LATENCY_BUCKETS {
        bounds[b as usize] = latency_bucket_bound_ns(b);
        b += 1;
    }
    bounds
};

/// Connects to one destination (or port, or from one cgroup or container), with outcomes one
/// outcome, counted in the kernel (see [`crate::Report::Counts`] and
/// [`crate::Tracer::connect_counts`]).
///
/// ```
/// use probe_user::{ConnectCount, Family};
///
/// let mut row = ConnectCount::new(Family::V4, Some([10, 0, 0, 1].into()), 443);
/// row.connects = 3;
/// assert_eq!(row.latency_buckets.len(), ConnectCount::LATENCY_BUCKETS);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectCount {
    /// The address family (and so the connect function).
    pub family: Family,
    /// The destination address; `None` when counting by port only.
    pub daddr: Option<IpAddr>,
    /// The destination port (0 when counting by cgroup or container).
    pub dport: u16,
    /// The cgroup v2 id of these connects' caller, when counted per cgroup (by cgroup, or per
    /// cgroup too); `None` otherwise (by container too).
    pub cgroup_id: Option<u64>,
    /// Who made these connects, counting by cgroup or container (or per cgroup too); `None`
    /// otherwise. By container, the cgroups of one container (or of none) make one row, whose
    /// names carry no cgroup path (see [`WorkloadNames::container_only`]).
    pub workload: Option<WorkloadNames>,
    /// How these connects ended, with outcomes; `None` without.
    pub outcome: Option<Outcome>,
    /// Why they failed (without the details of each connect), with outcomes; `None` without,
    /// and for connects that did not fail.
    pub cause: Option<Cause>,
    /// Connects since tracing started.
    pub connects: u64,
    /// Sum of their latencies in nanoseconds (with outcomes; 0 without).
    pub latency_ns: u64,
    /// How many of them took at most [`LATENCY_BUCKET_BOUNDS_NS`]`[b]` and more than the bound
    /// of `b - 1` (the last: longer than every bound), with outcomes; zero without.
    pub latency_buckets: [u64; ConnectCount::LATENCY_BUCKETS],
    /// Their SYN retransmits, summed (with outcomes; 0 without).
    pub syn_retransmits: u64,
    /// The DNS name their destination had (with [`crate::TracerBuilder::names`]; `None`
    /// without, and for connects to an address no answer named). Counted by name, the row's
    /// key is this name and the port.
    pub dns_name: Option<Arc<str>>,
    /// Where a destination NAT sent their SYN (with [`crate::TracerBuilder::nat`]; `None`
    /// without, and when no NAT applied).
    pub nat_dst: Option<SocketAddr>,
    /// The overflow row of its family (and outcome): the connects of every label set that
    /// found the kernel's map at its budget ([`crate::TracerBuilder::max_series`]). Its
    /// address, port, cgroup and workload are `None` and 0: it stands for all of them.
    pub overflow: bool,
    /// With [`crate::TracerBuilder::lifetime`], the rows of established connects (and of
    /// accepts): those connections followed to their close. `None` otherwise.
    pub connections: Option<ConnectionCounts>,
    /// Whose row it is: connects ([`Role::Client`]), or with
    /// [`crate::TracerBuilder::accepts`] the connections local listeners accepted
    /// ([`Role::Server`]: `connects` counts accepts, `daddr` and `dport` are the local end,
    /// there is no outcome).
    pub role: Role,
}

/// The upper bounds, in nanoseconds, of the finite buckets of
/// [`ConnectionCounts::duration_buckets`]: powers of 4 from 16 us to 2^36 us (about 19 hours),
/// the latency histogram's exported bounds carried on to the lengths of connections. The last
/// bucket, one past these, counts the rest.
///
/// ```
/// use probe_user::{ConnectionCounts, DURATION_BUCKET_BOUNDS_NS};
///
/// assert_eq!(DURATION_BUCKET_BOUNDS_NS[0], 16_000);
/// assert_eq!(DURATION_BUCKET_BOUNDS_NS[16], 68_719_476_736_000); // 19 h 5 min
/// assert_eq!(DURATION_BUCKET_BOUNDS_NS.len() + 1, ConnectionCounts::DURATION_BUCKETS);
/// ```
pub const DURATION_BUCKET_BOUNDS_NS: [u64; 17] = {
    let mut bounds = [0; 17];
    let mut b = 0;
    while b < bounds.len() {
        bounds[b] = 1000 << (4 + 2 * b);
        b += 1;
    }
    bounds
};

/// The connections of a count row followed from established to their close
/// ([`crate::TracerBuilder::lifetime`]), counted as their closes are drained: bytes and
/// durations are those of closed connections.
///
/// ```
/// use probe_user::ConnectionCounts;
///
/// let mut counts = ConnectionCounts::default();
/// counts.opened = 3;
/// counts.closed = 1;
/// assert_eq!(counts.active(), 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionCounts {
    /// Connections that came up and were followed (each an established connect of the row).
    pub opened: u64,
    /// Those of them that closed.
    pub closed: u64,
    /// Payload bytes the closed ones sent and had acknowledged (see [`crate::Figures`]).
    pub bytes_sent: u64,
    /// Payload bytes the closed ones received.
    pub bytes_received: u64,
    /// The closed ones' durations (established to close), summed, in nanoseconds.
    pub duration_ns: u64,
    /// How many closed ones lasted at most [`DURATION_BUCKET_BOUNDS_NS`]`[b]` and more than
    /// the bound of `b - 1` (the last: longer than every bound).
    pub duration_buckets: [u64; ConnectionCounts::DURATION_BUCKETS],
}

impl ConnectionCounts {
    /// The length of [`ConnectionCounts::duration_buckets`].
    pub const DURATION_BUCKETS: usize = DURATION_BUCKET_BOUNDS_NS.len() + 1;

    /// Connections open now: opened and not closed. A connection the kernel's table of
    /// followed connections lost (counted as dropped) stays open here.
    pub fn active(&self) -> u64 {
        self.opened.saturating_sub(self.closed)
    }

    /// Counts one closed connection of `duration_ns` and its payload bytes.
    pub(crate) fn close(&mut self, duration_ns: u64, bytes: Option<(u64, u64)>) {
        self.closed += 1;
        if let Some((sent, received)) = bytes {
            self.bytes_sent += sent;
            self.bytes_received += received;
        }
        self.duration_ns += duration_ns;
        let bucket = DURATION_BUCKET_BOUNDS_NS.partition_point(|&bound| bound < duration_ns);
        self.duration_buckets[bucket] += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &ConnectionCounts) {
        self.opened += other.opened;
        self.closed += other.closed;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.duration_ns += other.duration_ns;
        for (sum, n) in self.duration_buckets.iter_mut().zip(other.duration_buckets) {
            *sum += n;
        }
    }
}

impl ConnectCount {
    /// The length of [`ConnectCount::latency_buckets`]: one per bound of
    /// [`LATENCY_BUCKET_BOUNDS_NS`], and one for longer latencies.
    pub const LATENCY_BUCKETS: usize = LATENCY_BUCKETS as usize + 1;

    /// Adds `other`'s counts (connects, latencies, SYN retransmits, connections) to this row's,
    /// its labels left as they are: for an agent that folds rows together.
    pub fn merge(&mut self, other: &ConnectCount) {
        self.connects += other.connects;
        self.latency_ns += other.latency_ns;
        self.syn_retransmits += other.syn_retransmits;
        for (sum, n) in self.latency_buckets.iter_mut().zip(other.latency_buckets) {
            *sum += n;
        }
        if let Some(connections) = &other.connections {
            self.connections.get_or_insert_default().merge(connections);
        }
    }

    /// A row of no connects to `daddr` (or any address) and `dport`, of no workload or outcome.
    pub const fn new(family: Family, daddr: Option<IpAddr>, dport: u16) -> Self {
        ConnectCount {
            family,
            daddr,
            dport,
            cgroup_id: None,
            workload: None,
            outcome: None,
            cause: None,
            connects: 0,
            latency_ns: 0,
            latency_buckets: [0; ConnectCount::LATENCY_BUCKETS],
            syn_retransmits: 0,
            dns_name: None,
            nat_dst: None,
            overflow: false,
            connections: None,
            role: Role::Client,
        }
    }

    /// The kernel function its row counts calls of: the family's connect function, or
    /// `inet_csk_accept` for accepts.
    pub const fn function(&self) -> Function {
        match self.role {
            Role::Client => self.family.connect_function(),
            Role::Server => Function::InetCskAccept,
        }
    }
}

/// Connects retired from the kernel's counts because their cgroup was gone (see
/// [`crate::Tracer::retire_gone_cgroups`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retired {
    /// Label sets (kernel keys) deleted.
    pub series: u64,
    /// The connects they had counted.
    pub connects: u64,
}

/// The rows of the kernel's counts counted by `by`, most connects first. With `per_cgroup` the
/// keys carry the caller's cgroup id, named by `names`. One row per destination (or workload)
/// outcome and cause, with the value's buckets as its histogram; by container, the cgroups of
/// a container (or those of none) make one row; the overflow keys make one row per family,
/// outcome and cause. Keys of an unknown family are left out.
pub(crate) fn rows(
    by: CountBy,
    per_cgroup: bool,
    counts: impl IntoIterator<Item = (CountKey, CountValue)>,
    names: impl FnMut(u64) -> WorkloadNames,
) -> Vec<ConnectCount> {
    let counts = counts
        .into_iter()
        .map(|(key, value)| (key, value, Naming::default(), None));
    named_rows(by, per_cgroup, counts, names)
}

/// [`rows`] of counts whose keys carry a name and NAT destination too, and with lifetimes
/// their connections' counts (counted in userspace: see `tally`).
pub(crate) fn named_rows(
    by: CountBy,
    per_cgroup: bool,
    counts: impl IntoIterator<Item = (CountKey, CountValue, Naming, Option<ConnectionCounts>)>,
    mut names: impl FnMut(u64) -> WorkloadNames,
) -> Vec<ConnectCount> {
    type Row = (
        u8,
        bool,
        u16,
        Option<IpAddr>,
        u16,
        (u8, u8),
        u64,
        Option<WorkloadNames>,
        Naming,
    );
    let mut rows: BTreeMap<Row, ConnectCount> = BTreeMap::new();
    for (key, value, naming, connections) in counts {
        let Ok(family) = event::family(key.family) else {
            continue;
        };
        let overflow = key.overflow != 0;
        let daddr = (by == CountBy::Destination && !overflow).then(|| family.ip(&key.daddr));
        let (cgroup_id, workload) = match (per_cgroup && !overflow, by) {
            (false, _) => (None, None),
            (true, CountBy::Container) => (None, Some(names(key.cgroup_id).container_only())),
            (true, _) => (Some(key.cgroup_id), Some(names(key.cgroup_id))),
        };
        // By container, one row per container (a cgroup's names without its path).
        let group = (cgroup_id.unwrap_or(0), workload.clone());
        let dport = if overflow { 0 } else { key.dport };
        let id = (overflow, key.family, daddr, dport, (key.outcome, key.cause));
        let row = rows
            .entry((
                key.role,
                id.0,
                id.1,
                id.2,
                id.3,
                id.4,
                group.0,
                group.1,
                naming.clone(),
            ))
            .or_insert_with(|| ConnectCount {
                cgroup_id,
                workload,
                dns_name: naming.dns_name,
                nat_dst: naming.nat_dst,
                outcome: Outcome::try_from(u32::from(key.outcome)).ok(),
                cause: Cause::try_from(u32::from(key.cause)).ok(),
                overflow,
                role: Role::from_u16(u16::from(key.role)).unwrap_or_default(),
                ..ConnectCount::new(family, daddr, dport)
            });
        row.connects += value.connects;
        row.latency_ns += value.latency_ns;
        row.syn_retransmits += value.syn_retransmits;
        if let Some(connections) = connections {
            row.connections.get_or_insert_default().merge(&connections);
        }
        if row.outcome.is_some() {
            for (sum, n) in row.latency_buckets.iter_mut().zip(value.buckets) {
                *sum += n;
            }
        }
    }
    // An overflow key with no connects is room reserved that nothing has needed yet.
    let mut counts: Vec<ConnectCount> = rows
        .into_values()
        .filter(|r| !r.overflow || r.connects > 0)
        .collect();
    counts.sort_by(|a, b| {
        let workload = |c: &ConnectCount| {
            c.workload
                .as_ref()
                .map(|w| (w.cgroup.clone(), w.container.clone(), c.cgroup_id))
        };
        b.connects.cmp(&a.connects).then_with(|| {
            (
                a.role,
                a.overflow,
                &a.dns_name,
                a.dport,
                a.daddr,
                a.nat_dst,
                a.outcome,
                a.cause,
                workload(a),
            )
                .cmp(&(
                    b.role,
                    b.overflow,
                    &b.dns_name,
                    b.dport,
                    b.daddr,
                    b.nat_dst,
                    b.outcome,
                    b.cause,
                    workload(b),
                ))
        })
    });
    counts
}

#[cfg(test)]
mod tests {
    use probe_common::{AF_INET, AF_INET6, RawAddr, outcome::latency_bucket};

    use super::*;

    const CONTAINER: &str = "4f3a0b9c2d1e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
    const POD: &str = "0b2c5e1a-3d4f-4a6b-8c9d-0e1f2a3b4c5d";

    fn v4(octets: [u8; 4]) -> RawAddr {
        RawAddr([u32::from_ne_bytes(octets), 0, 0, 0])
    }

    /// A kernel key as the kernel side makes it.
    fn key(by: CountBy, cgroup: u64, dst: ([u8; 4], u16), outcome: u8) -> CountKey {
        CountKey::new(by as u8, cgroup, (v4(dst.0), dst.1), AF_INET, (outcome, 0))
    }

    /// A kernel value of `connects` without latencies.
    fn value(connects: u64) -> CountValue {
        CountValue {
            connects,
            ..CountValue::ZERO
        }
    }

    /// A kernel value of one connect per latency in `ns`, as the kernel side adds them.
    fn latencies(ns: &[u64]) -> CountValue {
        let mut value = CountValue::ZERO;
        for &ns in ns {
            value.connects += 1;
            value.latency_ns += ns;
            value.buckets[usize::from(latency_bucket(ns))] += 1;
        }
        value
    }

    /// Cgroup 1 a container's, 2 a sub-cgroup of it, 3 in a pod but no container, others
    /// unresolved.
    fn names(id: u64) -> WorkloadNames {
        let pod = format!("/kubepods/burstable/pod{POD}");
        match id {
            1 => WorkloadNames::of_cgroup(format!("{pod}/{CONTAINER}")),
            2 => WorkloadNames::of_cgroup(format!("{pod}/{CONTAINER}/sub")),
            3 => WorkloadNames::of_cgroup(pod),
            _ => WorkloadNames::default(),
        }
    }

    #[test]
    fn destinations_rows_most_connects_first() {
        let (a, b) = (([10, 0, 0, 1], 80), ([10, 0, 0, 2], 443));
        let by = CountBy::Destination;
        let counts = [
            (key(by, 0, a, 0), value(2)),
            (key(by, 0, b, 0), value(5)),
            (key(by, 0, a, 0), value(1)), // the same key again (the pending ones)
        ];
        let got = rows(by, false, counts, |_| unreachable!("not per cgroup"));
        let want: Vec<(Option<IpAddr>, u16, u64)> = vec![
            (Some([10, 0, 0, 2].into()), 443, 5),
            (Some([10, 0, 0, 1].into()), 80, 3),
        ];
        let got_rows: Vec<_> = got.iter().map(|c| (c.daddr, c.dport, c.connects)).collect();
        assert_eq!(got_rows, want);
        assert!(
            got.iter()
                .all(|c| c.workload.is_none() && c.cgroup_id.is_none())
        );
        assert!(
            got.iter()
                .all(|c| c.outcome.is_none() && c.latency_buckets == [0; 29])
        );
    }

    #[test]
    fn ports_rows_have_no_address_and_unknown_families_are_left_out() {
        let by = CountBy::Port;
        let mut v6 = key(by, 0, ([0; 4], 443), 0);
        v6.family = AF_INET6;
        let mut bad = v6;
        bad.family = 3;
        let counts = [
            (key(by, 0, ([0; 4], 443), 0), value(2)),
            (v6, value(1)),
            (bad, value(9)),
        ];
        let got = rows(by, false, counts, |_| unreachable!());
        let families: Vec<_> = got
            .iter()
            .map(|c| (c.family, c.daddr, c.connects))
            .collect();
        assert_eq!(families, [(Family::V4, None, 2), (Family::V6, None, 1)]);
    }

    #[test]
    fn latency_buckets_of_an_outcome_make_one_histogram() {
        let by = CountBy::Port;
        let established = Outcome::Established as u8;
        let dst = ([0; 4], 80);
        let counts = [
            // <= 1 us (twice), <= 2.048 ms, past every bound.
            (
                key(by, 0, dst, established),
                latencies(&[900, 600, 1_500_000, 200_000_000_000]),
            ),
            (
                key(by, 0, dst, Outcome::Refused as u8),
                latencies(&[70_000; 4]),
            ),
        ];
        let got = rows(by, false, counts, |_| unreachable!());
        assert_eq!(got.len(), 2);
        // As many connects: established sorts first.
        let (up, refused) = (&got[0], &got[1]);
        assert_eq!(
            (refused.outcome, refused.connects),
            (Some(Outcome::Refused), 4)
        );
        let mut want = [0; ConnectCount::LATENCY_BUCKETS];
        want[usize::from(latency_bucket(70_000))] = 4;
        assert_eq!(refused.latency_buckets, want);
        assert_eq!((up.outcome, up.connects), (Some(Outcome::Established), 4));
        assert_eq!(up.latency_ns, 900 + 600 + 1_500_000 + 200_000_000_000);
        let mut want = [0; ConnectCount::LATENCY_BUCKETS];
        want[0] = 2;
        want[11] = 1;
        want[ConnectCount::LATENCY_BUCKETS - 1] = 1;
        assert_eq!(up.latency_buckets, want);
        assert!(LATENCY_BUCKET_BOUNDS_NS[10] < 1_500_000);
        assert!(1_500_000 <= LATENCY_BUCKET_BOUNDS_NS[11]);
    }

    #[test]
    fn overflow_keys_make_one_row_per_family_and_outcome_once_used() {
        let by = CountBy::Destination;
        let refused = Outcome::Refused as u8;
        let counts = [
            (key(by, 1, ([10, 0, 0, 1], 80), refused), value(2)),
            (CountKey::overflow(AF_INET, (refused, 0)), value(5)),
            (CountKey::overflow(AF_INET6, (refused, 0)), value(0)),
        ];
        let got = rows(by, true, counts, names);
        let got: Vec<_> = got
            .iter()
            .map(|c| {
                (
                    c.overflow,
                    c.family,
                    c.daddr,
                    c.dport,
                    c.cgroup_id,
                    c.connects,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (true, Family::V4, None, 0, None, 5),
                (
                    false,
                    Family::V4,
                    Some([10, 0, 0, 1].into()),
                    80,
                    Some(1),
                    2
                ),
            ]
        );
    }

    #[test]
    fn per_cgroup_rows_keep_each_cgroup_and_its_names() {
        let by = CountBy::Cgroup;
        let counts = [1, 2, 3, 9, 1].map(|id| (key(by, id, ([0; 4], 0), 0), value(id)));
        let got = rows(by, true, counts, names);
        let ids: Vec<_> = got.iter().map(|c| (c.cgroup_id, c.connects)).collect();
        assert_eq!(
            ids,
            [(Some(9), 9), (Some(3), 3), (Some(1), 2), (Some(2), 2)]
        );
        for row in &got {
            assert_eq!(row.workload, Some(names(row.cgroup_id.unwrap())));
        }
    }

    #[test]
    fn by_container_the_cgroups_of_a_container_make_one_row() {
        let by = CountBy::Container;
        let counts = [1, 2, 3, 9].map(|id| (key(by, id, ([0; 4], 0), 0), value(id)));
        let got = rows(by, true, counts, names);
        let container = WorkloadNames::of_cgroup(format!("/kubepods/pod{POD}/{CONTAINER}"));
        let want = [
            // The cgroups of no container (in a pod or unresolved): no pod either.
            (None, WorkloadNames::default(), 12),
            (None, container.container_only(), 3),
        ];
        let got: Vec<_> = got
            .iter()
            .map(|c| (c.cgroup_id, c.workload.clone().unwrap(), c.connects))
            .collect();
        assert_eq!(got, want);
        assert_eq!(want[1].1.container.as_deref(), Some(CONTAINER));
        assert_eq!(want[1].1.pod.as_deref(), Some(POD));
        assert_eq!(want[1].1.cgroup, None);
    }

    #[test]
    fn per_cgroup_too_splits_a_destination_by_cgroup() {
        let by = CountBy::Destination;
        let dst = ([10, 0, 0, 1], 80);
        let counts = [
            (key(by, 1, dst, 0), value(1)),
            (key(by, 3, dst, 0), value(2)),
        ];
        let got = rows(by, true, counts, names);
        let got: Vec<_> = got
            .iter()
            .map(|c| (c.dport, c.cgroup_id, c.connects))
            .collect();
        assert_eq!(got, [(80, Some(3), 2), (80, Some(1), 1)]);
    }
}
