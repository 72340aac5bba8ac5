//! The DNS names of destinations (`--names`): which name gave each address to each network
//! namespace, learned from the DNS answers the kernel side saw delivered to local sockets
//! ([`probe_common::DnsRecord`]), parsed here with `simple-dns`.
//!
//! An answer maps each A/AAAA address it gives for the name asked (its question, at the end of
//! a CNAME chain that starts there) to that name, in the namespace of the socket it was
//! delivered to, for its TTL (at most a day) and a grace. A connect is named by the entry of its
//! socket's namespace and destination address that covers its time. Nothing in an answer is
//! trusted: records off the chain are ignored, and a message that does not parse changes
//! nothing and is counted (as are messages cut by the kernel side, and those that are no
//! answer). The cache holds at most `max` entries; past it, the entry that expires first in the
//! namespace holding the most is evicted (counted), so a flood of answers in one namespace
//! evicts its own names.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use probe_common::DnsRecord;
use simple_dns::{Packet, PacketFlag, RCODE, rdata::RData};

/// `--names`' settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamesConfig {
    /// How long past an answer's TTL its names still name connects (clients and resolvers
    /// keep answers a little longer than their TTL; default 30 s).
    pub grace: Duration,
    /// Most (namespace, address) entries kept (default [`NamesConfig::DEFAULT_MAX`]).
    pub max: usize,
}

impl NamesConfig {
    /// The default size of the cache: about 4 MiB at its fullest with names of 30 bytes.
    pub const DEFAULT_MAX: usize = 16_384;
    /// The largest `max`.
    pub const MAX_MAX: usize = 1 << 20;
}

impl Default for NamesConfig {
    fn default() -> Self {
        NamesConfig {
            grace: Duration::from_secs(30),
            max: NamesConfig::DEFAULT_MAX,
        }
    }
}

/// What became of the DNS messages seen (`Tracer::dns_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsStats {
    /// Answers that gave at least one address.
    pub answers: u64,
    /// Messages that did not parse as DNS (also counted as malformed records).
    pub malformed: u64,
    /// Messages the kernel side could not carry whole (longer than 512 bytes, or not in one
    /// piece in the kernel's buffer): not read.
    pub cut: u64,
    /// Messages that were no answer with an address: queries, errors (NXDOMAIN...), answers
    /// without A or AAAA records. Nothing to learn.
    pub ignored: u64,
    /// Entries evicted before they expired, the cache being full (from the namespace that held
    /// the most).
    pub evicted: u64,
    /// Entries held now.
    pub entries: usize,
}

/// What one DNS message taught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learned {
    /// Names (at least one address).
    Names,
    /// Nothing: no answer with an address, or cut.
    Nothing,
    /// Not DNS.
    Malformed,
}

/// One name of an address in a namespace.
#[derive(Clone, Debug)]
struct Entry {
    name: Arc<str>,
    /// When the first answer of this name was delivered (`CLOCK_BOOTTIME` ns): an answer
    /// repeating it extends `expires_ns` only.
    learned_ns: u64,
    /// When it stops naming connects (its TTL and the grace after the last answer).
    expires_ns: u64,
    /// The name the address had before another answer named it differently, for connects
    /// made before that answer but reported after it (with `--outcome`, at their outcome).
    previous: Option<Box<Entry>>,
}

impl Entry {
    /// Whether it names connects made at `at_ns`.
    fn covers(&self, at_ns: u64) -> bool {
        self.learned_ns <= at_ns && at_ns <= self.expires_ns
    }
}

type Key = (u32, IpAddr);

/// The longest TTL taken: a day (an answer may say up to 68 years).
const MAX_TTL: u32 = 86_400;
/// How long an entry is kept past its expiry, for connects reported late (with `--outcome`, at
/// their outcome, which may come minutes after the call the name is looked up for).
const RETAIN_NS: u64 = 10 * 60 * 1_000_000_000;

/// The names learned, by network namespace and address.
#[derive(Debug, Default)]
pub(crate) struct DnsNames {
    config: NamesConfig,
    entries: HashMap<Key, Entry>,
    /// The same entries by expiry, to expire in order.
    by_expiry: BTreeSet<(u64, Key)>,
    /// The same entries by namespace and expiry, to evict from the namespace that holds the
    /// most.
    by_netns: HashMap<u32, BTreeSet<(u64, IpAddr)>>,
    stats: DnsStats,
}

impl DnsNames {
    pub(crate) fn new(config: NamesConfig) -> Self {
        DnsNames {
            config,
            ..DnsNames::default()
        }
    }

    /// Learns from one DNS message the kernel side saw.
    pub(crate) fn learn(&mut self, record: &DnsRecord) -> Learned {
        let captured = usize::from(record.captured).min(record.payload.len());
        if captured != usize::from(record.len) {
            self.stats.cut += 1;
            return Learned::Nothing;
        }
        let (name, addresses) = match answers(&record.payload[..captured]) {
            Err(Malformed) => {
                self.stats.malformed += 1;
                return Learned::Malformed;
            }
            Ok(Some(answer)) if !answer.1.is_empty() => answer,
            Ok(_) => {
                self.stats.ignored += 1;
                return Learned::Nothing;
            }
        };
        self.stats.answers += 1;
        self.expire(record.boot_ns);
        let name: Arc<str> = name.into();
        let grace_ns = self.config.grace.as_nanos() as u64;
        for (ip, ttl) in addresses {
            // RFC 2181: a TTL with its top bit set is 0.
            let ttl = if ttl & 0x8000_0000 != 0 {
                0
            } else {
                ttl.min(MAX_TTL)
            };
            let key = (record.netns, unmapped(ip));
            let expires_ns = record
                .boot_ns
                .saturating_add(u64::from(ttl) * 1_000_000_000)
                .saturating_add(grace_ns);
            let old = self.entries.get(&key).cloned();
            // A repeated name lasts as long as its longest answer.
            let expires_ns = match &old {
                Some(old) if old.name == name => old.expires_ns.max(expires_ns),
                _ => expires_ns,
            };
            if !self.forget(key) && self.entries.len() >= self.config.max {
                self.evict();
            }
            self.by_expiry.insert((expires_ns, key));
            self.by_netns
                .entry(key.0)
                .or_default()
                .insert((expires_ns, key.1));
            let entry = match old {
                // The same name again: named since its first answer.
                Some(old) if old.name == name => Entry { expires_ns, ..old },
                // Another name: the old one still names the connects made before now (one
                // name back is kept, without its own history).
                old => Entry {
                    name: name.clone(),
                    learned_ns: record.boot_ns,
                    expires_ns,
                    previous: old.map(|old| {
                        Box::new(Entry {
                            previous: None,
                            ..old
                        })
                    }),
                },
            };
            self.entries.insert(key, entry);
        }
        Learned::Names
    }

    /// Removes the entry of `key`; returns whether there was one.
    fn forget(&mut self, key: Key) -> bool {
        let Some(old) = self.entries.remove(&key) else {
            return false;
        };
        self.by_expiry.remove(&(old.expires_ns, key));
        if let Some(set) = self.by_netns.get_mut(&key.0) {
            set.remove(&(old.expires_ns, key.1));
            if set.is_empty() {
                self.by_netns.remove(&key.0);
            }
        }
        true
    }

    /// Evicts the entry that expires first in the namespace holding the most (counted).
    fn evict(&mut self) {
        let victim = self
            .by_netns
            .iter()
            .max_by_key(|(_, set)| set.len())
            .and_then(|(&netns, set)| set.first().map(|&(_, ip)| (netns, ip)));
        if let Some(key) = victim {
            self.forget(key);
            self.stats.evicted += 1;
        }
    }

    /// The name that gave `ip` to network namespace `netns`, covering `at_ns`.
    pub(crate) fn name(&self, netns: u32, ip: IpAddr, at_ns: u64) -> Option<Arc<str>> {
        let entry = self.entries.get(&(netns, unmapped(ip)))?;
        if entry.covers(at_ns) {
            return Some(entry.name.clone());
        }
        // A connect made before the answer that renamed the address.
        let previous = entry.previous.as_deref()?;
        (at_ns < entry.learned_ns && previous.covers(at_ns)).then(|| previous.name.clone())
    }

    /// Forgets the entries expired by `now_ns` for longer than [`RETAIN_NS`].
    fn expire(&mut self, now_ns: u64) {
        while let Some(&(expires_ns, key)) = self.by_expiry.first() {
            if expires_ns.saturating_add(RETAIN_NS) >= now_ns {
                break;
            }
            self.forget(key);
        }
    }

    pub(crate) fn stats(&self) -> DnsStats {
        DnsStats {
            entries: self.entries.len(),
            ..self.stats
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps (how an A answer names it).
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A message that is not DNS.
struct Malformed;

/// The name asked and an address (with its TTL) a DNS message answers.
type Answer = (String, Vec<(IpAddr, u32)>);

/// The name asked and the addresses (with their TTLs) a DNS message answers for it, following
/// CNAMEs from the name asked; `None` if it is no successful response to one question.
fn answers(message: &[u8]) -> Result<Option<Answer>, Malformed> {
    // Counts no message of this length can hold (a question takes at least 5 bytes, a record
    // 11) are refused before the parser reserves room for them.
    let count = |at: usize| usize::from(u16::from_be_bytes([message[at], message[at + 1]]));
    if message.len() < 12
        || 12 + 5 * count(4) + 11 * (count(6) + count(8) + count(10)) > message.len()
    {
        return Err(Malformed);
    }
    let packet = Packet::parse(message).map_err(|_| Malformed)?;
    if !packet.has_flags(PacketFlag::RESPONSE) || packet.rcode() != RCODE::NoError {
        return Ok(None);
    }
    let [question] = packet.questions.as_slice() else {
        return Ok(None);
    };
    let asked = question.qname.to_string().to_ascii_lowercase();
    // Each owner name lowercased once.
    let owners: Vec<String> = packet
        .answers
        .iter()
        .map(|r| r.name.to_string().to_ascii_lowercase())
        .collect();
    // The names that stand for the one asked: it, and each CNAME target reached from it. A
    // chain is at most as long as the answers (each link is one), so as many passes as there
    // are answers follow any order; usually the first pass does.
    let mut chain = vec![asked];
    for _ in 0..packet.answers.len() {
        let before = chain.len();
        for (record, owner) in packet.answers.iter().zip(&owners) {
            if let RData::CNAME(target) = &record.rdata {
                let target = target.0.to_string().to_ascii_lowercase();
                if chain.contains(owner) && !chain.contains(&target) {
                    chain.push(target);
                }
            }
        }
        if chain.len() == before {
            break;
        }
    }
    let addresses = packet
        .answers
        .iter()
        .zip(&owners)
        .filter(|(_, owner)| chain.contains(owner))
        .filter_map(|(r, _)| match &r.rdata {
            RData::A(a) => Some((IpAddr::V4(Ipv4Addr::from(a.address)), r.ttl)),
            RData::AAAA(aaaa) => Some((IpAddr::V6(Ipv6Addr::from(aaaa.address)), r.ttl)),
            _ => None,
        })
        .collect();
    // The name as asked (its case kept), without the root's trailing dot.
    Ok(Some((question.qname.to_string(), addresses)))
}

#[cfg(test)]
mod tests {
    use probe_common::{DNS_PAYLOAD_MAX, RecordKind};
    use proptest::prelude::*;
    use simple_dns::{CLASS, Name, Question, ResourceRecord, TYPE, rdata};

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// A response to `asked` with `answers` (owner, data, ttl).
    fn response(asked: &str, answers: &[(&str, RData<'static>, u32)]) -> Vec<u8> {
        let mut packet = Packet::new_reply(7);
        packet.questions.push(Question::new(
            Name::new_unchecked(asked).into_owned(),
            TYPE::A.into(),
            CLASS::IN.into(),
            false,
        ));
        for (owner, data, ttl) in answers {
            packet.answers.push(ResourceRecord::new(
                Name::new_unchecked(owner).into_owned(),
                CLASS::IN,
                *ttl,
                data.clone(),
            ));
        }
        packet.build_bytes_vec().unwrap()
    }

    fn record(netns: u32, at_ns: u64, message: &[u8]) -> DnsRecord {
        let mut record = DnsRecord {
            header: RecordKind::Dns.header(),
            boot_ns: at_ns,
            netns,
            len: message.len() as u16,
            captured: message.len().min(DNS_PAYLOAD_MAX) as u16,
            payload: [0; DNS_PAYLOAD_MAX],
        };
        let n = usize::from(record.captured);
        record.payload[..n].copy_from_slice(&message[..n]);
        record
    }

    fn a(ip: [u8; 4]) -> RData<'static> {
        RData::A(rdata::A {
            address: u32::from_be_bytes(ip),
        })
    }

    fn cname(to: &str) -> RData<'static> {
        RData::CNAME(rdata::CNAME(Name::new_unchecked(to).into_owned()))
    }

    #[test]
    fn an_address_is_named_by_the_name_asked_in_its_namespace_for_its_ttl() {
        let mut names = DnsNames::new(NamesConfig {
            grace: Duration::from_secs(1),
            max: 16,
        });
        let ip: IpAddr = "10.0.3.17".parse().unwrap();
        // A CNAME chain, out of order, and a record off the chain that must not name anything.
        let message = response(
            "API.example.com",
            &[
                ("lb.example.net", a([10, 0, 3, 17]), 5),
                ("api.example.com", cname("edge.example.org"), 60),
                ("edge.example.org", cname("lb.example.net"), 60),
                ("evil.example", a([10, 9, 9, 9]), 60),
            ],
        );
        assert_eq!(
            names.learn(&record(1, 10 * SECOND, &message)),
            Learned::Names
        );
        assert_eq!(
            names.name(1, ip, 11 * SECOND).as_deref(),
            Some("API.example.com")
        );
        // Not in another namespace, not before the answer, not past TTL and grace.
        assert_eq!(names.name(2, ip, 11 * SECOND), None);
        assert_eq!(names.name(1, ip, 9 * SECOND), None);
        assert!(names.name(1, ip, 16 * SECOND).is_some());
        assert_eq!(names.name(1, ip, 16 * SECOND + 1), None);
        assert_eq!(
            names.name(1, "10.9.9.9".parse().unwrap(), 11 * SECOND),
            None
        );
        // An IPv4-mapped destination is the IPv4 address.
        assert!(
            names
                .name(1, "::ffff:10.0.3.17".parse().unwrap(), 11 * SECOND)
                .is_some()
        );
        // The same address answered for another name in another namespace.
        let other = response("db.internal", &[("db.internal", a([10, 0, 3, 17]), 5)]);
        names.learn(&record(2, 12 * SECOND, &other));
        assert_eq!(
            names.name(2, ip, 13 * SECOND).as_deref(),
            Some("db.internal")
        );
        assert_eq!(
            names.name(1, ip, 13 * SECOND).as_deref(),
            Some("API.example.com")
        );
        assert_eq!(names.stats().answers, 2);
    }

    /// A connect reported after a later answer (its outcome, with `--outcome`) keeps the name
    /// it had when it was made: a repeated answer does not move the name's start, and an
    /// answer naming the address differently names only the connects made after it.
    #[test]
    fn a_later_answer_does_not_rename_an_earlier_connect() {
        let mut names = DnsNames::new(NamesConfig {
            grace: Duration::ZERO,
            max: 16,
        });
        let ip: IpAddr = "10.0.3.17".parse().unwrap();
        let api = response("api.test", &[("api.test", a([10, 0, 3, 17]), 60)]);
        let db = response("db.test", &[("db.test", a([10, 0, 3, 17]), 5)]);
        names.learn(&record(1, 10 * SECOND, &api));
        // The same answer again (another thread resolving): a connect at 11 s keeps its name.
        names.learn(&record(1, 12 * SECOND, &api));
        assert_eq!(names.name(1, ip, 11 * SECOND).as_deref(), Some("api.test"));
        // Named for the longer of the two answers' lives.
        assert!(names.name(1, ip, 72 * SECOND).is_some());
        assert_eq!(names.name(1, ip, 72 * SECOND + 1), None);
        // Another name for the address: before it, api; from it, db.
        names.learn(&record(1, 20 * SECOND, &db));
        assert_eq!(names.name(1, ip, 19 * SECOND).as_deref(), Some("api.test"));
        assert_eq!(names.name(1, ip, 21 * SECOND).as_deref(), Some("db.test"));
        assert_eq!(names.name(1, ip, 9 * SECOND), None);
        // Past db's TTL, nothing: the previous name only covers the time before db's answer.
        assert_eq!(names.name(1, ip, 26 * SECOND), None);
        assert_eq!(names.stats().entries, 1);
    }

    #[test]
    fn a_flood_in_one_namespace_evicts_its_own_names() {
        let mut names = DnsNames::new(NamesConfig {
            grace: Duration::ZERO,
            max: 4,
        });
        let other = response("db.test", &[("db.test", a([10, 0, 0, 9]), 5)]);
        names.learn(&record(1, SECOND, &other));
        // Another namespace answers itself with the longest TTLs, many times.
        for i in 0..20u8 {
            let owner = format!("f{i}.test");
            let message = response(&owner, &[(&owner, a([10, 1, 0, i]), 0x7fff_ffff)]);
            names.learn(&record(2, SECOND, &message));
        }
        let db = names.name(1, "10.0.0.9".parse().unwrap(), 2 * SECOND);
        assert_eq!(db.as_deref(), Some("db.test"));
        assert!(
            names
                .name(2, "10.1.0.19".parse().unwrap(), 2 * SECOND)
                .is_some()
        );
        // Capped at a day.
        assert!(
            names
                .name(2, "10.1.0.19".parse().unwrap(), 86_402 * SECOND)
                .is_none()
        );
        assert_eq!(names.stats().evicted, 17);
        // A TTL with its top bit set is 0.
        let top = response("t.test", &[("t.test", a([10, 2, 0, 1]), 0x8000_0001)]);
        names.learn(&record(3, SECOND, &top));
        assert!(
            names
                .name(3, "10.2.0.1".parse().unwrap(), SECOND + 1)
                .is_none()
        );
    }

    #[test]
    fn a_full_cache_evicts_what_expires_first_and_counts_it() {
        let mut names = DnsNames::new(NamesConfig {
            grace: Duration::ZERO,
            max: 2,
        });
        for (i, ttl) in [(1u8, 50), (2, 10), (3, 30)] {
            let owner = format!("n{i}.test");
            let message = response(&owner, &[(&owner, a([10, 0, 0, i]), ttl)]);
            names.learn(&record(1, SECOND, &message));
        }
        let named = |i: u8| names.name(1, IpAddr::from([10, 0, 0, i]), 2 * SECOND);
        assert_eq!(
            (named(1).is_some(), named(2), named(3).is_some()),
            (true, None, true)
        );
        assert_eq!(names.stats().evicted, 1);
        assert_eq!(names.stats().entries, 2);
    }

    #[test]
    fn what_is_no_answer_changes_nothing_and_is_counted() {
        let mut names = DnsNames::new(NamesConfig::default());
        let good = response("a.test", &[("a.test", a([10, 0, 0, 1]), 60)]);
        // Garbage, a cut message, a query, an error response.
        let mut cut = record(1, SECOND, &good);
        cut.len += 100;
        let mut query = good.clone();
        query[2] &= 0x7f;
        let mut failed = good.clone();
        failed[3] |= 3;
        let garbage = record(1, SECOND, b"\x01\x02garbage");
        assert_eq!(names.learn(&garbage), Learned::Malformed);
        for r in [cut, record(1, SECOND, &query), record(1, SECOND, &failed)] {
            assert_eq!(names.learn(&r), Learned::Nothing);
        }
        // Counts no message this long can hold.
        let mut huge = good.clone();
        huge[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(names.learn(&record(1, SECOND, &huge)), Learned::Malformed);
        let stats = names.stats();
        assert_eq!((stats.malformed, stats.cut, stats.ignored), (2, 1, 2));
        assert_eq!(stats.entries, 0);
    }

    proptest! {
        /// Any bytes, as the kernel side may carry them, neither panic nor grow the cache past
        /// its bound.
        #[test]
        fn arbitrary_messages_never_panic_nor_overgrow(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..DNS_PAYLOAD_MAX), 1..40),
            netns in 0u32..3,
        ) {
            let mut names = DnsNames::new(NamesConfig { grace: Duration::from_secs(1), max: 8 });
            for (i, m) in messages.iter().enumerate() {
                names.learn(&record(netns, i as u64 * SECOND, m));
                prop_assert!(names.stats().entries <= 8);
                prop_assert_eq!(names.entries.len(), names.by_expiry.len());
                let per_netns: usize = names.by_netns.values().map(BTreeSet::len).sum();
                prop_assert_eq!(names.entries.len(), per_netns);
            }
        }

        /// Well-formed answers with arbitrary names and addresses keep the bound too.
        #[test]
        fn many_answers_keep_the_bound(ips in proptest::collection::vec(any::<[u8; 4]>(), 1..64)) {
            let mut names = DnsNames::new(NamesConfig { grace: Duration::ZERO, max: 8 });
            for (i, ip) in ips.iter().enumerate() {
                let message = response("x.test", &[("x.test", a(*ip), (i % 5) as u32)]);
                let learned = names.learn(&record(1, i as u64 * SECOND, &message));
                prop_assert_eq!(learned, Learned::Names);
                prop_assert!(names.stats().entries <= 8);
                prop_assert_eq!(names.entries.len(), names.by_expiry.len());
                let per_netns: usize = names.by_netns.values().map(BTreeSet::len).sum();
                prop_assert_eq!(names.entries.len(), per_netns);
            }
        }
    }
}
