//! The real destination of connects behind a destination NAT (`--nat`): the kernel side reports
//! each SYN that left for another destination than its socket's ([`probe_common::NatRecord`]);
//! the connect of the same socket endpoints in the same network namespace (any namespace for a
//! SYN seen forwarded through this host, without its socket), reported at its call's return or
//! at its outcome (after its SYN), takes it from here.
//!
//! The table holds at most [`NatTable::MAX`] SYNs not yet claimed (those of connects the filters
//! left out, above all); past it the oldest is forgotten (counted).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use probe_common::NatRecord;

use crate::event::family;

/// A connect's socket endpoints in a network namespace.
type Key = (u32, SocketAddr, SocketAddr);

/// The namespace of a SYN seen forwarded, without its socket (the kernel side's `forwarded`):
/// any connect of its endpoints claims it.
const FORWARDED: u32 = 0;

/// SYNs sent elsewhere than their socket's destination, by socket endpoints.
#[derive(Debug, Default)]
pub(crate) struct NatTable {
    /// Where each SYN went, and when (`CLOCK_BOOTTIME` ns).
    sent: HashMap<Key, (SocketAddr, u64)>,
    /// The same keys, oldest first (a key may be here more than once: a retransmitted SYN).
    order: VecDeque<Key>,
    /// SYNs forgotten unclaimed, the table being full.
    pub(crate) forgotten: u64,
}

impl NatTable {
    /// Most SYNs held unclaimed.
    pub(crate) const MAX: usize = 16_384;
    /// How long a SYN waits for its connect: longer than a connect can stay in SYN_SENT with
    /// the default retries (127 s), so a late `--outcome` report still finds it; a connect of
    /// the same endpoints much later does not take an old socket's.
    const TTL_NS: u64 = 10 * 60 * 1_000_000_000;

    /// Notes one SYN; returns whether the record was malformed.
    pub(crate) fn note(&mut self, record: &NatRecord) -> bool {
        let Ok(family) = family(record.family) else {
            return true;
        };
        let src = SocketAddr::new(family.ip(&record.saddr), record.sport);
        let dst = SocketAddr::new(family.ip(&record.daddr), record.dport);
        let nat = SocketAddr::new(family.ip(&record.nat_daddr), record.nat_dport);
        let key = (record.netns, src, dst);
        if self.sent.insert(key, (nat, record.boot_ns)).is_none() {
            self.order.push_back(key);
        }
        // The oldest go when the table is full or when they are too old to be claimed.
        while let Some(&oldest) = self.order.front() {
            let stale = self
                .sent
                .get(&oldest)
                .is_none_or(|&(_, at)| at.saturating_add(Self::TTL_NS) < record.boot_ns);
            if !stale && self.sent.len() <= Self::MAX {
                break;
            }
            self.order.pop_front();
            if self.sent.remove(&oldest).is_some() {
                self.forgotten += 1;
            }
        }
        // Keys claimed already linger in `order` until they come out at its front.
        if self.order.len() > 2 * Self::MAX {
            self.order.retain(|k| self.sent.contains_key(k));
        }
        false
    }

    /// Where the SYN of the connect from `src` to `dst` in namespace `netns` went, if a NAT
    /// sent it elsewhere: in its own namespace (seen with its socket), or else on this host's
    /// way in, forwarded (seen without a socket, so of no namespace: [`FORWARDED`]).
    pub(crate) fn claim(
        &mut self,
        netns: u32,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        self.sent
            .remove(&(netns, src, dst))
            .or_else(|| self.sent.remove(&(FORWARDED, src, dst)))
            .map(|(nat, _)| nat)
    }
}

#[cfg(test)]
mod tests {
    use probe_common::{AF_INET, RawAddr, RecordKind};

    use super::*;

    fn v4(octets: [u8; 4]) -> RawAddr {
        RawAddr([u32::from_ne_bytes(octets), 0, 0, 0])
    }

    fn record(sport: u16) -> NatRecord {
        NatRecord {
            header: RecordKind::Nat.header(),
            boot_ns: 1,
            netns: 7,
            family: AF_INET,
            sport,
            saddr: v4([10, 0, 0, 2]),
            daddr: v4([198, 51, 100, 10]),
            dport: 80,
            nat_dport: 8080,
            _pad: 0,
            nat_daddr: v4([10, 1, 2, 3]),
        }
    }

    #[test]
    fn a_connect_claims_its_syns_destination_once() {
        let mut table = NatTable::default();
        assert!(!table.note(&record(40000)));
        // A retransmitted SYN.
        assert!(!table.note(&record(40000)));
        let src: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let dst: SocketAddr = "198.51.100.10:80".parse().unwrap();
        assert_eq!(table.claim(8, src, dst), None);
        assert_eq!(
            table.claim(7, src, dst),
            Some("10.1.2.3:8080".parse().unwrap())
        );
        assert_eq!(table.claim(7, src, dst), None);
        // A SYN seen forwarded (no namespace) goes to the connect of its endpoints, whichever
        // namespace it is in; one of the connect's own namespace first.
        let mut forwarded = record(40000);
        forwarded.netns = FORWARDED;
        table.note(&forwarded);
        assert_eq!(
            table.claim(9, src, "198.51.100.10:81".parse().unwrap()),
            None
        );
        assert_eq!(
            table.claim(9, src, dst),
            Some("10.1.2.3:8080".parse().unwrap())
        );
        assert_eq!(table.claim(9, src, dst), None);
        let mut bad = record(1);
        bad.family = 99;
        assert!(table.note(&bad));
        // One left unclaimed longer than a connect can wait is forgotten.
        table.note(&record(40001));
        let mut later = record(40002);
        later.boot_ns = 11 * 60 * 1_000_000_000;
        table.note(&later);
        let old: SocketAddr = "10.0.0.2:40001".parse().unwrap();
        assert_eq!(table.claim(7, old, dst), None);
        assert_eq!(table.forgotten, 1);
    }

    #[test]
    fn unclaimed_syns_are_bounded_and_counted() {
        let mut table = NatTable::default();
        for i in 0..(NatTable::MAX + 10) {
            table.note(&record(i as u16 % 60000 + (i / 60000) as u16));
        }
        assert!(table.sent.len() <= NatTable::MAX);
        assert_eq!(table.forgotten, 10);
        assert!(table.order.len() <= 2 * NatTable::MAX + 1);
    }
}
