//! A DNS server for tests ([`Responder`]: UDP, answering A and AAAA queries from a [`Zone`], CNAME
//! chains followed, each record with its TTL, or garbled answers on purpose) and the client side
//! ([`resolve`]) that a test calls before connecting to an address it got, as an application's
//! resolver would. simple-dns builds and parses the messages.
//!
//! Start the responder inside the network namespace whose connects it names (`NetNs::run`):
//! its socket stays there. It answers from the port it is bound to, 53 for a real server.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use simple_dns::{
    CLASS, Name, Packet, PacketFlag, Question, RCODE, ResourceRecord, TYPE,
    rdata::{A, AAAA, CNAME, RData},
};

/// What a name holds.
#[derive(Clone, Debug)]
enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
}

/// How [`Responder`] garbles the answer for a name of [`Zone::malformed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The answer's owner name is a compression pointer to itself (a name without end); its type,
    /// class, TTL and address are sound.
    NameLoop,
    /// The packet stops inside the answer's address (its length says 4 bytes, 2 are there).
    Truncated,
}

/// The records a [`Responder`] serves: names to addresses and aliases, each with its TTL.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    records: Vec<(String, u32, Data)>,
    malformed: BTreeMap<String, (Malformed, Ipv4Addr)>,
}

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    /// `name` has the IPv4 address `addr` (an A record), for `ttl` seconds.
    pub fn a(mut self, name: &str, ttl: u32, addr: Ipv4Addr) -> Zone {
        self.records.push((name.into(), ttl, Data::A(addr)));
        self
    }

    /// `name` has the IPv6 address `addr` (an AAAA record), for `ttl` seconds.
    pub fn aaaa(mut self, name: &str, ttl: u32, addr: Ipv6Addr) -> Zone {
        self.records.push((name.into(), ttl, Data::Aaaa(addr)));
        self
    }

    /// `name` is an alias of `target` (a CNAME record), for `ttl` seconds.
    pub fn cname(mut self, name: &str, ttl: u32, target: &str) -> Zone {
        self.records
            .push((name.into(), ttl, Data::Cname(target.into())));
        self
    }

    /// Any question about `name` gets an answer garbled as `how`, which would otherwise say that
    /// `name` has the address `addr`.
    pub fn malformed(mut self, name: &str, how: Malformed, addr: Ipv4Addr) -> Zone {
        self.malformed.insert(name.into(), (how, addr));
        self
    }

    /// The reply to the query `query` (None: not a query worth answering).
    fn reply(&self, query: &[u8]) -> Option<Vec<u8>> {
        let query = Packet::parse(query).ok()?;
        let question = query.questions.first()?;
        let asked = question.qname.to_string();
        let mut reply = Packet::new_reply(query.id());
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        reply.questions.push(question.clone());
        if let Some(&(how, addr)) = self.malformed.get(&asked) {
            return Some(garbled(reply, &asked, how, addr));
        }
        // The CNAME chain from the asked name, then the records of the asked type at its end.
        let mut name = asked.clone();
        for _ in 0..8 {
            let Some((_, ttl, Data::Cname(target))) = self
                .records
                .iter()
                .find(|(n, _, d)| *n == name && matches!(d, Data::Cname(_)))
            else {
                break;
            };
            reply.answers.push(record(&name, *ttl, cname_rdata(target)));
            name = target.clone();
        }
        for (n, ttl, data) in &self.records {
            let rdata = match data {
                Data::A(addr) if question.qtype == TYPE::A.into() => RData::A(A::from(*addr)),
                Data::Aaaa(addr) if question.qtype == TYPE::AAAA.into() => {
                    RData::AAAA(AAAA::from(*addr))
                }
                _ => continue,
            };
            if *n == name {
                reply.answers.push(record(n, *ttl, rdata));
            }
        }
        if reply.answers.is_empty() && !self.records.iter().any(|(n, _, _)| *n == name) {
            *reply.rcode_mut() = RCODE::NameError;
        }
        reply.build_bytes_vec().ok()
    }
}

/// One IN record, owning its name.
fn record(name: &str, ttl: u32, rdata: RData<'static>) -> ResourceRecord<'static> {
    ResourceRecord::new(
        Name::new_unchecked(name).into_owned(),
        CLASS::IN,
        ttl,
        rdata,
    )
}

fn cname_rdata(target: &str) -> RData<'static> {
    RData::CNAME(CNAME(Name::new_unchecked(target).into_owned()))
}

/// `reply` (its question only) with one answer saying `name` has `addr`, garbled as `how`.
fn garbled(mut reply: Packet<'_>, name: &str, how: Malformed, addr: Ipv4Addr) -> Vec<u8> {
    match how {
        Malformed::NameLoop => {
            let mut bytes = reply.build_bytes_vec().unwrap();
            // One answer: its owner name a pointer (0b11 then a 14-bit offset) to itself.
            bytes[6..8].copy_from_slice(&1u16.to_be_bytes());
            let here = bytes.len() as u16;
            bytes.extend_from_slice(&(0xc000 | here).to_be_bytes());
            bytes.extend_from_slice(&[0, 1, 0, 1]); // type A, class IN
            bytes.extend_from_slice(&300u32.to_be_bytes());
            bytes.extend_from_slice(&4u16.to_be_bytes());
            bytes.extend_from_slice(&addr.octets());
            bytes
        }
        Malformed::Truncated => {
            reply
                .answers
                .push(record(name, 300, RData::A(A::from(addr))));
            let mut bytes = reply.build_bytes_vec().unwrap();
            bytes.truncate(bytes.len() - 2);
            bytes
        }
    }
}

/// A DNS server on UDP answering from a [`Zone`] on a thread of its own, until dropped.
pub struct Responder {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// Serves `zone` on `bind` (e.g. `127.0.0.1:53`, `[::1]:53`), in the calling thread's
    /// network namespace.
    pub fn start(bind: &str, zone: Zone) -> Responder {
        let socket = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind udp {bind}: {e}"));
        // Checked every 100 ms: how the thread learns it is dropped.
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answered, stop) = (answered.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(reply) = zone.reply(&buf[..len]) {
                        socket.send_to(&reply, from).unwrap();
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Responder {
            addr,
            answered,
            stop,
            thread: Some(thread),
        }
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many replies it has sent.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The record type a [`resolve`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qtype {
    A,
    Aaaa,
}

/// What a [`resolve`] got: the aliases followed (CNAME targets, in order) and the addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub aliases: Vec<String>,
    pub addrs: Vec<IpAddr>,
    pub ttls: Vec<u32>,
}

/// Asks `server` for the `qtype` records of `name` from a UDP socket made in the calling
/// thread's network namespace, as a stub resolver does, and returns the answer. An answer that
/// does not parse is an `InvalidData` error; no answer within 2 s is a timeout.
pub fn resolve(server: SocketAddr, name: &str, qtype: Qtype) -> std::io::Result<Resolved> {
    static IDS: AtomicU16 = AtomicU16::new(0x5eed);
    let id = IDS.fetch_add(1, Ordering::Relaxed);
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
    };
    let socket = UdpSocket::bind(any)?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut query = Packet::new_query(id);
    query.set_flags(PacketFlag::RECURSION_DESIRED);
    let wanted = match qtype {
        Qtype::A => TYPE::A,
        Qtype::Aaaa => TYPE::AAAA,
    };
    query.questions.push(Question::new(
        Name::new_unchecked(name),
        wanted.into(),
        CLASS::IN.into(),
        false,
    ));
    socket.send(&query.build_bytes_vec().map_err(invalid)?)?;
    let mut buf = [0u8; 1500];
    let len = socket.recv(&mut buf)?;
    let reply = Packet::parse(&buf[..len]).map_err(invalid)?;
    if reply.id() != id {
        return Err(invalid(format!("reply id {} to query {id}", reply.id())));
    }
    let mut resolved = Resolved::default();
    for answer in &reply.answers {
        match &answer.rdata {
            RData::CNAME(CNAME(target)) => resolved.aliases.push(target.to_string()),
            RData::A(a) => resolved.addrs.push(Ipv4Addr::from(a.address).into()),
            RData::AAAA(a) => resolved.addrs.push(Ipv6Addr::from(a.address).into()),
            _ => continue,
        }
        resolved.ttls.push(answer.ttl);
    }
    Ok(resolved)
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The responder's answers, as the client parses them: CNAME chains followed, types kept
    /// apart, unknown names refused, garbled answers refused by the parser.
    #[test]
    fn answers_follow_the_zone() {
        let zone = Zone::new()
            .a("v4.test", 7, Ipv4Addr::new(127, 0, 0, 7))
            .aaaa("v4.test", 8, Ipv6Addr::LOCALHOST)
            .cname("www.chain.test", 60, "edge.chain.test")
            .cname("edge.chain.test", 60, "host.cdn.test")
            .a("host.cdn.test", 5, Ipv4Addr::new(127, 0, 0, 9))
            .malformed(
                "loop.test",
                Malformed::NameLoop,
                Ipv4Addr::new(127, 0, 0, 10),
            )
            .malformed(
                "cut.test",
                Malformed::Truncated,
                Ipv4Addr::new(127, 0, 0, 10),
            );
        let server = Responder::start("127.0.0.1:0", zone);
        let at = server.addr();
        let v4 = resolve(at, "v4.test", Qtype::A).unwrap();
        assert_eq!(v4.addrs, [IpAddr::from([127, 0, 0, 7])]);
        assert_eq!(v4.ttls, [7]);
        let v6 = resolve(at, "v4.test", Qtype::Aaaa).unwrap();
        assert_eq!(v6.addrs, [IpAddr::from(Ipv6Addr::LOCALHOST)]);
        let chain = resolve(at, "www.chain.test", Qtype::A).unwrap();
        assert_eq!(chain.aliases, ["edge.chain.test", "host.cdn.test"]);
        assert_eq!(chain.addrs, [IpAddr::from([127, 0, 0, 9])]);
        assert_eq!(chain.ttls, [60, 60, 5]);
        assert_eq!(
            resolve(at, "none.test", Qtype::A).unwrap(),
            Resolved::default()
        );
        for garbled in ["loop.test", "cut.test"] {
            let err = resolve(at, garbled, Qtype::A).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{garbled}");
        }
        assert_eq!(server.answered(), 6);
    }
}
