//! Connects counted by userspace, from their events, when what they are counted by is known
//! only here: the destination's DNS name (`--names`, `--count-by name`) or the address a NAT
//! sent the SYN to (`--nat`). The kernel side then reports every admitted connect as an event
//! (as without counting), and [`Tally`] counts it exactly as the kernel would have (the same
//! [`CountKey`] and [`CountValue`], the same budget and overflow keys), with the name and NAT
//! destination beside the key. What the ring buffer could not carry is counted as dropped, as
//! for any event.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use probe_common::{
    CountBy, End, Outcome, RawAddr, Role, limit,
    outcome::{LATENCY_BUCKETS, latency_bucket},
    state::{CountKey, CountValue},
};

use crate::{
    CloseEvent, ConnectEvent, ConnectionCounts,
    count_map::{GoneCgroups, Presence},
    counts::Retired,
};

/// What a count's key holds beyond the kernel's [`CountKey`]: the destination's name and where
/// a NAT sent it (each `None` when not asked for, or when there was none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Naming {
    pub dns_name: Option<Arc<str>>,
    pub nat_dst: Option<SocketAddr>,
}

/// How connects are counted in userspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TallyConfig {
    /// What they are counted by (by name: the name and the port).
    pub by: CountBy,
    /// Keys carry the caller's cgroup (per cgroup, or by cgroup or container).
    pub per_cgroup: bool,
    /// The most label sets (keys besides the overflow keys).
    pub max_series: u32,
    /// Established connects are followed to their close ([`crate::TracerBuilder::lifetime`]):
    /// their rows count their connections too ([`ConnectionCounts`]).
    pub lifetime: bool,
}

/// One key's counts: its connects, and with lifetimes its connections.
#[derive(Clone, Copy, Debug)]
struct Counted {
    value: CountValue,
    connections: Option<ConnectionCounts>,
}

/// The connects counted so far, by key and naming.
#[derive(Debug)]
pub(crate) struct Tally {
    pub config: TallyConfig,
    counts: HashMap<(CountKey, Naming), Counted>,
    /// Label sets counted (keys besides the overflow keys).
    series: usize,
    /// Connects counted under an overflow key, the budget being in use.
    pub overflow: u64,
    gone: GoneCgroups,
    retired: Retired,
    /// With lifetimes, the established connects (and accepts) counted under an overflow key,
    /// by their side and endpoints, for their closes (at most `limit::MAX_LIVE`, as many as the
    /// kernel follows).
    overflowed: HashSet<(Role, SocketAddr, SocketAddr)>,
}

impl Tally {
    pub(crate) fn new(config: TallyConfig) -> Self {
        Tally {
            config,
            counts: HashMap::new(),
            series: 0,
            overflow: 0,
            gone: GoneCgroups::default(),
            retired: Retired::default(),
            overflowed: HashSet::new(),
        }
    }

    /// Counts one connect (or accept, under its server's side): under its key, or if that key
    /// is new and the budget is in use, under the overflow key of its family, outcome and cause
    /// (as the kernel side does) and side.
    pub(crate) fn add(&mut self, event: &ConnectEvent) {
        let completion = event.completion.as_ref();
        let outcome = completion.map_or(0, |c| c.outcome as u8);
        let cause = completion
            .and_then(|c| c.cause.as_ref())
            .map_or(0, |c| c.cause() as u8);
        let (mut key, naming) = self.key(event, (outcome, cause));
        let family = key.family;
        let mut entry = (key, naming);
        // An established connect, and an accept, are followed to their close (the kernel's
        // `LIVE`).
        let followed = self.config.lifetime
            && (event.role == Role::Server
                || completion.is_some_and(|c| c.outcome == Outcome::Established));
        if !self.counts.contains_key(&entry) {
            if self.series < self.config.max_series as usize {
                self.series += 1;
            } else {
                key = CountKey::overflow(family, (outcome, cause)).of_role(event.role);
                entry = (key, Naming::default());
                self.overflow += 1;
                if followed && self.overflowed.len() < limit::MAX_LIVE as usize {
                    self.overflowed.insert((event.role, event.src, event.dst));
                }
            }
        }
        let counted = self.counts.entry(entry).or_insert(Counted {
            value: CountValue::ZERO,
            connections: None,
        });
        if followed {
            counted.connections.get_or_insert_default().opened += 1;
        }
        let value = &mut counted.value;
        value.connects += 1;
        let Some(completion) = completion else {
            return;
        };
        value.latency_ns += completion.latency_ns;
        value.syn_retransmits += u64::from(completion.syn_retransmits);
        let bucket = latency_bucket(completion.latency_ns).min(LATENCY_BUCKETS);
        value.buckets[usize::from(bucket)] += 1;
    }

    /// Counts a connection's close ([`crate::TracerBuilder::lifetime`]) in the row its
    /// established connect (or its accept) was counted in: the overflow row if it went there,
    /// else its own. One still open at the end ([`End::Open`]) stays open; the close of a
    /// connection whose row was retired with its cgroup meanwhile is not counted.
    pub(crate) fn close(&mut self, close: &CloseEvent) {
        if !self.config.lifetime || close.end == End::Open {
            return;
        }
        let role = close.connect.role;
        // An accept has no outcome.
        let established = match role {
            Role::Client => (Outcome::Established as u8, 0),
            Role::Server => (0, 0),
        };
        let (key, naming) = self.key(&close.connect, established);
        let endpoints = (role, close.connect.src, close.connect.dst);
        let entry = if self.overflowed.remove(&endpoints) {
            (
                CountKey::overflow(key.family, established).of_role(role),
                Naming::default(),
            )
        } else {
            (key, naming)
        };
        let Some(counted) = self.counts.get_mut(&entry) else {
            return;
        };
        let bytes = close.figures.map(|f| (f.bytes_sent, f.bytes_received));
        counted
            .connections
            .get_or_insert_default()
            .close(close.duration_ns(), bytes);
    }

    /// A connect's key, as the kernel side would make it, and its naming.
    fn key(&self, event: &ConnectEvent, (outcome, cause): (u8, u8)) -> (CountKey, Naming) {
        let cgroup_id = match (&event.workload, self.config.per_cgroup) {
            (Some(workload), true) => workload.cgroup_id,
            _ => 0,
        };
        // By name the key keeps the port, as by port; the name is beside it.
        let by = match self.config.by {
            CountBy::Name => CountBy::Port,
            by => by,
        };
        let key = CountKey::new(
            by as u8,
            cgroup_id,
            (raw_addr(event.dst.ip()), event.dst.port()),
            event.family.af(),
            (outcome, cause),
        )
        .of_role(event.role);
        let naming = Naming {
            dns_name: event.dns_name.clone(),
            nat_dst: event.nat_dst,
        };
        (key, naming)
    }

    /// Every count, with its naming.
    pub(crate) fn entries(
        &self,
    ) -> impl Iterator<Item = (CountKey, CountValue, Naming, Option<ConnectionCounts>)> + '_ {
        self.counts.iter().map(|((key, naming), counted)| {
            (*key, counted.value, naming.clone(), counted.connections)
        })
    }

    /// Label sets counted (keys besides the overflow keys).
    pub(crate) fn series(&self) -> usize {
        self.series
    }

    /// What was retired so far.
    pub(crate) fn retired(&self) -> Retired {
        self.retired
    }

    /// Retires the counts of cgroups gone for at least `after`, as the kernel's map's are
    /// (see `CountMap::retire`), and returns them.
    pub(crate) fn retire(
        &mut self,
        after: Duration,
        presence: impl FnMut(u64) -> Option<Presence>,
    ) -> Vec<(CountKey, CountValue, Naming, Option<ConnectionCounts>)> {
        let with_keys: HashSet<u64> = self
            .counts
            .keys()
            .filter(|(key, _)| key.overflow == 0 && key.cgroup_id != 0)
            .map(|(key, _)| key.cgroup_id)
            .collect();
        let due: HashSet<u64> = self
            .gone
            .due(&with_keys, after, presence)
            .into_iter()
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let mut retired = Vec::new();
        self.counts.retain(|(key, naming), counted| {
            let keep = key.overflow != 0 || !due.contains(&key.cgroup_id);
            if !keep {
                retired.push((*key, counted.value, naming.clone(), counted.connections));
            }
            keep
        });
        self.series -= retired.len();
        self.retired.series += retired.len() as u64;
        self.retired.connects += retired.iter().map(|(_, v, _, _)| v.connects).sum::<u64>();
        retired
    }
}

/// The kernel's form of `ip` (as `Family::ip` reads it back).
fn raw_addr(ip: IpAddr) -> RawAddr {
    let mut octets = [0; 16];
    match ip {
        IpAddr::V4(v4) => octets[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => octets = v6.octets(),
    }
    RawAddr::from_octets(octets)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::{Completion, ConnectCount, WorkloadNames, counts::named_rows, format::tests::v4};

    fn config(by: CountBy, max_series: u32) -> TallyConfig {
        TallyConfig {
            by,
            per_cgroup: false,
            max_series,
            lifetime: false,
        }
    }

    /// `config` with lifetimes: established connects followed to their close.
    fn followed(by: CountBy, max_series: u32) -> TallyConfig {
        TallyConfig {
            lifetime: true,
            ..config(by, max_series)
        }
    }

    /// A connect to `dst` named `name`.
    fn to(dst: &str, name: Option<&str>) -> ConnectEvent {
        let mut event = v4();
        event.dst = dst.parse().unwrap();
        event.dns_name = name.map(Into::into);
        event
    }

    fn rows(tally: &Tally) -> Vec<ConnectCount> {
        named_rows(tally.config.by, false, tally.entries(), |_| {
            WorkloadNames::default()
        })
    }

    #[test]
    fn by_name_the_addresses_of_a_name_make_one_row() {
        let mut tally = Tally::new(config(CountBy::Name, 16));
        for event in [
            to("10.0.0.1:443", Some("api.example")),
            to("10.0.0.2:443", Some("api.example")),
            to("10.0.0.2:80", Some("api.example")),
            to("10.0.0.3:443", None),
        ] {
            tally.add(&event);
        }
        let got: Vec<_> = rows(&tally)
            .iter()
            .map(|r| {
                (
                    r.dns_name.as_deref().map(str::to_owned),
                    r.daddr,
                    r.dport,
                    r.connects,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Some("api.example".into()), None, 443, 2),
                (None, None, 443, 1),
                (Some("api.example".into()), None, 80, 1),
            ]
        );
        assert_eq!((tally.series(), tally.overflow), (3, 0));
    }

    #[test]
    fn by_destination_a_name_and_nat_stay_beside_the_address() {
        let mut tally = Tally::new(config(CountBy::Destination, 16));
        let mut natted = to("10.96.0.10:443", Some("svc.cluster.local"));
        natted.nat_dst = Some("10.0.3.17:8443".parse().unwrap());
        tally.add(&natted);
        tally.add(&natted);
        tally.add(&to("10.96.0.10:443", None));
        let rows = rows(&tally);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].connects, 2);
        assert_eq!(rows[0].daddr, Some("10.96.0.10".parse().unwrap()));
        assert_eq!(rows[0].dns_name.as_deref(), Some("svc.cluster.local"));
        assert_eq!(rows[0].nat_dst, natted.nat_dst);
        assert_eq!((rows[1].connects, rows[1].nat_dst), (1, None));
    }

    #[test]
    fn past_the_budget_connects_go_to_the_overflow_row_of_their_outcome() {
        let mut tally = Tally::new(config(CountBy::Name, 1));
        let completed = |name, outcome, latency_ns| {
            let mut event = to("10.0.0.1:443", Some(name));
            event.completion = Some(Completion {
                outcome,
                latency_ns,
                errno: 0,
                syn_retransmits: 1,
                cause: None,
            });
            event
        };
        tally.add(&completed("a", Outcome::Established, 1_000));
        tally.add(&completed("b", Outcome::Established, 3_000));
        tally.add(&completed("c", Outcome::Established, 5_000));
        tally.add(&completed("a", Outcome::Established, 7_000));
        assert_eq!((tally.series(), tally.overflow), (1, 2));
        let rows = rows(&tally);
        let other = rows.iter().find(|r| r.overflow).unwrap();
        assert_eq!((other.connects, other.latency_ns), (2, 8_000));
        assert_eq!(other.syn_retransmits, 2);
        assert_eq!(other.dns_name, None);
        assert_eq!(other.latency_buckets.iter().sum::<u64>(), 2);
        let a = rows.iter().find(|r| !r.overflow).unwrap();
        assert_eq!((a.dns_name.as_deref(), a.connects), (Some("a"), 2));
    }

    #[test]
    fn gone_cgroups_are_retired_with_their_counts() {
        let mut tally = Tally::new(TallyConfig {
            per_cgroup: true,
            ..config(CountBy::Name, 16)
        });
        for (cgroup, n) in [(7, 2), (8, 1)] {
            let mut event = to("10.0.0.1:443", Some("a"));
            event.workload = Some(crate::Workload {
                cgroup_id: cgroup,
                ..Default::default()
            });
            for _ in 0..n {
                tally.add(&event);
            }
        }
        let gone = |id| Some(Presence::Known(id != 7));
        let retired = tally.retire(Duration::ZERO, gone);
        assert_eq!(retired.len(), 1);
        assert_eq!((retired[0].0.cgroup_id, retired[0].1.connects), (7, 2));
        assert_eq!((tally.series(), tally.retired().connects), (1, 2));
        assert!(tally.entries().all(|(key, ..)| key.cgroup_id == 8));
    }

    /// An established connect to `dst`.
    fn established(dst: &str) -> ConnectEvent {
        let mut event = to(dst, None);
        event.completion = Some(Completion {
            outcome: Outcome::Established,
            latency_ns: 50_000,
            errno: 0,
            syn_retransmits: 0,
            cause: None,
        });
        event
    }

    /// The close of `connect` after `ms` milliseconds, `bytes` sent and received.
    fn closed(connect: &ConnectEvent, end: End, ms: u64, bytes: (u64, u64)) -> CloseEvent {
        let mut connect = connect.clone();
        connect.completion = None;
        CloseEvent {
            connect,
            established_ns: 1_000_000_000,
            closed_ns: 1_000_000_000 + ms * 1_000_000,
            end,
            errno: 0,
            figures: (end != End::Open).then_some(crate::Figures {
                bytes_sent: bytes.0,
                bytes_received: bytes.1,
                segs_out: 5,
                segs_in: 5,
                retransmits: 0,
                srtt_us: 40,
            }),
        }
    }

    #[test]
    fn closes_count_in_the_row_of_their_established_connect() {
        let mut tally = Tally::new(followed(CountBy::Destination, 16));
        let (a, b) = (established("10.0.0.1:443"), established("10.0.0.1:443"));
        let mut refused = to("10.0.0.1:443", None);
        refused.completion = Some(Completion {
            outcome: Outcome::Refused,
            ..a.completion.unwrap()
        });
        for event in [&a, &b, &refused] {
            tally.add(event);
        }
        tally.close(&closed(&a, End::FinLocal, 10, (100, 2_000)));
        // Still open at the end: not a close.
        tally.close(&closed(&b, End::Open, 0, (0, 0)));
        let rows = rows(&tally);
        let up = rows
            .iter()
            .find(|r| r.outcome == Some(Outcome::Established))
            .unwrap();
        let connections = up.connections.unwrap();
        assert_eq!((connections.opened, connections.closed), (2, 1));
        assert_eq!(connections.active(), 1);
        assert_eq!(
            (connections.bytes_sent, connections.bytes_received),
            (100, 2_000)
        );
        assert_eq!(connections.duration_ns, 10_000_000);
        // 10 ms: above 4.096 ms (bucket 4), at most 16.384 ms (bucket 5).
        assert_eq!(connections.duration_buckets[5], 1);
        assert_eq!(connections.duration_buckets.iter().sum::<u64>(), 1);
        let refused = rows
            .iter()
            .find(|r| r.outcome == Some(Outcome::Refused))
            .unwrap();
        assert_eq!(refused.connections, None);
    }

    #[test]
    fn past_the_budget_closes_count_in_the_overflow_row() {
        let mut tally = Tally::new(followed(CountBy::Destination, 1));
        let (kept, over) = (established("10.0.0.1:80"), established("10.0.0.2:80"));
        tally.add(&kept);
        tally.add(&over);
        tally.close(&closed(&over, End::RstReceived, 1, (1, 2)));
        let rows = rows(&tally);
        let other = rows
            .iter()
            .find(|r| r.overflow)
            .unwrap()
            .connections
            .unwrap();
        assert_eq!(
            (other.opened, other.closed, other.bytes_received),
            (1, 1, 2)
        );
        let own = rows
            .iter()
            .find(|r| !r.overflow)
            .unwrap()
            .connections
            .unwrap();
        assert_eq!((own.opened, own.closed), (1, 0));
    }

    #[test]
    fn accepts_and_their_closes_count_in_rows_of_their_own() {
        // Two rows of budget: the connects' and the accepts' to the same end.
        let mut tally = Tally::new(followed(CountBy::Destination, 2));
        let connect = established("127.0.0.1:8080");
        // The same connection seen from the listener: no outcome, the local end as dst.
        let mut accept = to("127.0.0.1:8080", None);
        accept.role = Role::Server;
        tally.add(&connect);
        tally.add(&accept);
        // Past the budget: an accept on another port goes to the accepts' overflow row.
        let mut over = to("127.0.0.1:9090", None);
        over.role = Role::Server;
        tally.add(&over);
        // Each side's close, with its own bytes; the overflowed accept's close too.
        tally.close(&closed(&connect, End::FinLocal, 3, (10, 20)));
        tally.close(&closed(&accept, End::FinPeer, 2, (20, 10)));
        tally.close(&closed(&over, End::RstReceived, 1, (0, 5)));
        let rows = rows(&tally);
        assert_eq!(rows.len(), 3, "{rows:?}");
        let row = |role, overflow| {
            rows.iter()
                .find(|r| r.role == role && r.overflow == overflow)
                .unwrap()
        };
        let (client, server) = (row(Role::Client, false), row(Role::Server, false));
        assert_eq!(
            (client.connects, client.outcome),
            (1, Some(Outcome::Established))
        );
        assert_eq!((server.connects, server.outcome), (1, None));
        assert_eq!(server.function(), probe_common::Function::InetCskAccept);
        assert_eq!(client.function(), probe_common::Function::TcpV4Connect);
        let bytes = |r: &ConnectCount| {
            let c = r.connections.unwrap();
            (c.opened, c.closed, c.bytes_sent, c.bytes_received)
        };
        assert_eq!(bytes(client), (1, 1, 10, 20));
        assert_eq!(bytes(server), (1, 1, 20, 10));
        let other = row(Role::Server, true);
        assert_eq!((other.connects, bytes(other)), (1, (1, 1, 0, 5)));
    }

    #[test]
    fn the_close_of_a_retired_row_is_not_counted_elsewhere() {
        let mut tally = Tally::new(TallyConfig {
            per_cgroup: true,
            ..followed(CountBy::Destination, 1)
        });
        let mut gone = established("10.0.0.1:80");
        gone.workload = Some(crate::Workload {
            cgroup_id: 7,
            ..Default::default()
        });
        tally.add(&gone);
        // Past the budget: the overflow row, which the retired row's close must not reach.
        let mut other = established("10.0.0.2:80");
        other.workload = gone.workload.clone();
        other.workload.as_mut().unwrap().cgroup_id = 8;
        tally.add(&other);
        tally.retire(Duration::ZERO, |id| Some(Presence::Known(id != 7)));
        let overflow = |tally: &Tally| {
            let rows = rows(tally);
            let row = rows
                .iter()
                .find(|r| r.overflow)
                .unwrap()
                .connections
                .unwrap();
            (row.opened, row.closed)
        };
        tally.close(&closed(&gone, End::FinLocal, 1, (1, 1)));
        assert_eq!(overflow(&tally), (1, 0));
        tally.close(&closed(&other, End::FinLocal, 1, (1, 1)));
        assert_eq!(overflow(&tally), (1, 1));
    }

    #[test]
    fn without_lifetimes_rows_have_no_connections() {
        let mut tally = Tally::new(config(CountBy::Destination, 16));
        let a = established("10.0.0.1:443");
        tally.add(&a);
        tally.close(&closed(&a, End::FinPeer, 1, (1, 1)));
        assert_eq!(rows(&tally)[0].connections, None);
    }

    proptest! {
        /// Whatever the connects and the budget, every one is counted once: by name and port
        /// exactly when the budget holds every label set, and else the overflow rows hold
        /// what the label sets in use do not.
        #[test]
        fn every_connect_is_counted_once(
            connects in proptest::collection::vec((0u8..6, 0u8..3, any::<bool>()), 0..200),
            max_series in 1u32..20,
        ) {
            let mut tally = Tally::new(config(CountBy::Name, max_series));
            let mut want: BTreeMap<(Option<String>, u16), u64> = BTreeMap::new();
            for &(name, port, named) in &connects {
                let name = named.then(|| format!("n{name}.example"));
                let port = 80 + u16::from(port);
                tally.add(&to(&format!("10.0.0.1:{port}"), name.as_deref()));
                *want.entry((name, port)).or_default() += 1;
            }
            let rows = rows(&tally);
            let total: u64 = rows.iter().map(|r| r.connects).sum();
            prop_assert_eq!(total, connects.len() as u64);
            let overflow: u64 = rows.iter().filter(|r| r.overflow).map(|r| r.connects).sum();
            prop_assert_eq!(overflow, tally.overflow);
            prop_assert!(tally.series() <= max_series as usize);
            prop_assert_eq!(tally.series(), want.len().min(max_series as usize));
            for row in rows.iter().filter(|r| !r.overflow) {
                let key = (row.dns_name.as_deref().map(str::to_owned), row.dport);
                prop_assert!(row.connects <= want[&key]);
                if want.len() <= max_series as usize {
                    prop_assert_eq!(row.connects, want[&key]);
                }
            }
        }
    }
}
