//! Ring-buffer records decoded into typed [`ConnectEvent`]s.

use std::net::SocketAddr;

use probe_common::{
    COMM_LEN, CloseRecord, ConnectRecord, DnsRecord, End, Family, Function, Identity, NatRecord,
    Outcome, OutcomeRecord, RawAddr, RecordHeader, RecordKind, Role, TimestampRecord,
};

use crate::WorkloadNames;

/// One traced `tcp_v4_connect` / `tcp_v6_connect` call, or (with
/// [`crate::TracerBuilder::accepts`], [`Role::Server`]) one connection a local listener
/// accepted: `src` is then the peer, `dst` the local address and port, the caller the
/// accepting task, `boot_ns` the accept's return.
///
/// A tracer reporting [`crate::Report::Timestamps`] fills only `boot_ns` and
/// `family`; the other fields are zero or unspecified.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectEvent {
    /// `CLOCK_BOOTTIME` nanoseconds at the call's entry (see [`crate::WallClock`]).
    pub boot_ns: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real user id.
    pub uid: u32,
    /// The address family (IPv4-mapped IPv6 destinations are IPv4, as the kernel connects
    /// them through `tcp_v4_connect`).
    pub family: Family,
    /// Source address and port the kernel assigned (unspecified if the call failed early).
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The call's return value: 0 or a negative errno (0 for an accept).
    pub ret: i32,
    /// Which end of the connection: [`Role::Client`] for a connect, [`Role::Server`] for an
    /// accept.
    pub role: Role,
    /// How the connect ended, with outcomes ([`crate::Outcomes::Tracked`]); `None` without.
    pub completion: Option<Completion>,
    /// Who made it beyond the pid, with [`crate::TracerBuilder::identity`]; `None` without.
    pub workload: Option<Workload>,
    /// The DNS name that gave the destination address to the socket's network namespace, with
    /// [`crate::TracerBuilder::names`]: the name the application asked for, while the answer's
    /// TTL (and a grace) covers the connect; `None` if no answer seen there gave it.
    pub dns_name: Option<std::sync::Arc<str>>,
    /// Where the connect's SYN was actually sent, with [`crate::TracerBuilder::nat`], if a
    /// destination NAT rewrote `dst` (kube-proxy's Service rules, a published port); `None`
    /// if none did.
    pub nat_dst: Option<SocketAddr>,
    comm: [u8; COMM_LEN],
}

/// The workload a connect comes from ([`crate::TracerBuilder::identity`]): the caller's cgroup
/// and namespaces as the kernel saw them at the call, and what the cgroup's path says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Workload {
    /// The caller's cgroup v2 id (the inode number of its directory on the cgroup2
    /// filesystem).
    pub cgroup_id: u64,
    /// The cgroup's path, and the container and pod it names (see
    /// [`WorkloadNames::of_cgroup`]).
    pub names: WorkloadNames,
    /// The caller's process id in its own pid namespace (`pid` is the host's).
    pub ns_pid: u32,
    /// The caller's thread id in its own pid namespace.
    pub ns_tid: u32,
    /// Inode number of the caller's pid namespace.
    pub pidns: u32,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
}

impl Workload {
    /// The kernel's part of a workload (userspace resolves the rest, see
    /// [`crate::identity::Workloads`]); `None` for a record without identity (cgroup ids start
    /// at 1).
    fn of(identity: &Identity) -> Option<Self> {
        (identity.cgroup_id != 0).then(|| Workload {
            cgroup_id: identity.cgroup_id,
            ns_pid: identity.ns_pid,
            ns_tid: identity.ns_tid,
            pidns: identity.pidns,
            netns: identity.netns,
            ..Workload::default()
        })
    }
}

/// How a connect ended and how long it took ([`crate::Outcomes::Tracked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completion {
    /// What ended it.
    pub outcome: Outcome,
    /// Nanoseconds from the connect call to the outcome (the SYN-ACK, the reset, the ICMP
    /// error, the kernel giving up, the close, or the call's failure; for
    /// [`Outcome::Pending`], the end of tracing). The kprobe and tracepoint backends start at
    /// the call's entry, the fentry backend at its return.
    pub latency_ns: u64,
    /// The error the kernel gave, a positive errno (`ECONNREFUSED`, `ETIMEDOUT`, ...; for a
    /// failed call `-ret`); 0 if none.
    pub errno: u32,
    /// How many times the SYN was retransmitted before the outcome (0 for a failed call, and
    /// for [`Outcome::Pending`], whose socket is not read at the end).
    pub syn_retransmits: u32,
    /// Why it failed; `None` if it did not (established, pending).
    pub cause: Option<crate::FailureCause>,
}

/// Why a ring-buffer record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The record is shorter than its header, or not as long as its kind's record.
    #[error("a record of {0} bytes")]
    Size(usize),
    /// The header names no [`RecordKind`].
    #[error("a record of unknown kind {0}")]
    Kind(u32),
    /// The family is neither `AF_INET` nor `AF_INET6`.
    #[error("a record of unknown family {0}")]
    Family(u16),
    /// The record's outcome is none of [`Outcome`]'s.
    #[error("a record of unknown outcome {0}")]
    Outcome(u32),
    /// The record is not a connect's (a DNS message, which only the tracer reads).
    #[error("a record of kind {0}, not a connect")]
    NotConnect(u32),
    /// The record's cause is none of [`crate::Cause`]'s.
    #[error("a record of unknown cause {0}")]
    Cause(u32),
    /// The record's end is none of [`End`]'s.
    #[error("a record of unknown end {0}")]
    End(u32),
    /// The record's role is none of [`Role`]'s.
    #[error("a record of unknown role {0}")]
    Role(u16),
}

/// What the tracer reports: a connect, with [`crate::TracerBuilder::accepts`] a connection a
/// local listener accepted, and with [`crate::TracerBuilder::lifetime`] the close of a
/// connection either opened. Exhaustive: a new kind of event is a breaking change, so a
/// `match` over these stays complete.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A traced connect call (and with outcomes, how it ended).
    Connect(ConnectEvent),
    /// A connection a local listener accepted ([`Role::Server`]: `src` the peer, `dst` the
    /// local address and port, the caller the accepting task).
    Accept(ConnectEvent),
    /// A traced connection that closed, or was still open when tracing ended.
    Close(CloseEvent),
}

impl Event {
    /// The connect, if this is one.
    pub fn connect(&self) -> Option<&ConnectEvent> {
        match self {
            Event::Connect(connect) => Some(connect),
            Event::Accept(_) | Event::Close(_) => None,
        }
    }
}

/// A traced connection from ESTABLISHED to its close ([`crate::TracerBuilder::lifetime`]): one
/// for every connect reported as established, when its socket closes, or with
/// [`End::Open`] for one still open when tracing ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseEvent {
    /// The connect that opened it, as it was reported (without its completion).
    pub connect: ConnectEvent,
    /// `CLOCK_BOOTTIME` nanoseconds when it was established.
    pub established_ns: u64,
    /// `CLOCK_BOOTTIME` nanoseconds when it closed (for [`End::Open`], when tracing ended).
    pub closed_ns: u64,
    /// How it ended.
    pub end: End,
    /// The error the kernel gave the socket (`ECONNRESET`, `ETIMEDOUT`, ...), 0 if none.
    pub errno: u32,
    /// The kernel's counters of the connection at its close, or for [`End::Open`] when
    /// tracing ended; `None` for one open whose socket could not be read then (it closed
    /// meanwhile, or the kernel cannot run the reading program: `BPF_PROG_TEST_RUN` of raw
    /// tracepoint programs).
    pub figures: Option<Figures>,
}

impl CloseEvent {
    /// Nanoseconds from established to closed.
    pub fn duration_ns(&self) -> u64 {
        self.closed_ns.saturating_sub(self.established_ns)
    }

    /// Decodes a close record.
    pub(crate) fn from_record(r: &CloseRecord) -> Result<Self, Malformed> {
        let f = &r.figures;
        let end = End::try_from(f.end).map_err(Malformed::End)?;
        Ok(CloseEvent {
            connect: ConnectEvent::from_record(&r.connect)?,
            established_ns: r.established_ns,
            closed_ns: r.closed_ns,
            end,
            errno: f.errno,
            figures: Some(Figures::from(f)),
        })
    }

    /// A connection still open at `now_ns`, from what the kernel side kept of it and its
    /// counters then, if read.
    pub(crate) fn open(
        live: &probe_common::state::LiveConnection,
        now_ns: u64,
        figures: Option<&probe_common::CloseFigures>,
    ) -> Result<Self, Malformed> {
        Ok(CloseEvent {
            connect: ConnectEvent::from_record(&live.connect)?,
            established_ns: live.established_ns,
            closed_ns: now_ns.max(live.established_ns),
            end: End::Open,
            errno: figures.map_or(0, |f| f.errno),
            figures: figures.map(Figures::from),
        })
    }
}

impl From<&probe_common::CloseFigures> for Figures {
    fn from(f: &probe_common::CloseFigures) -> Self {
        Figures {
            bytes_sent: f.bytes_sent,
            bytes_received: f.bytes_received,
            segs_out: f.segs_out,
            segs_in: f.segs_in,
            retransmits: f.retransmits,
            srtt_us: f.srtt_us,
        }
    }
}

/// A connection's counters at its close, the kernel's own (`struct tcp_sock`, as `tcp_info`
/// reports them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Figures {
    /// Payload bytes sent and acknowledged by the peer (`tcpi_bytes_acked`, which also counts
    /// the SYN and this side's FIN: left out here).
    pub bytes_sent: u64,
    /// Payload bytes received (`tcpi_bytes_received`, which also counts the peer's FIN: left
    /// out here).
    pub bytes_received: u64,
    /// Segments sent, the handshake's included (`tcpi_segs_out`).
    pub segs_out: u32,
    /// Segments received (`tcpi_segs_in`).
    pub segs_in: u32,
    /// Segments retransmitted, the SYN's included (`tcpi_total_retrans`).
    pub retransmits: u32,
    /// The smoothed round-trip time at the close, microseconds (`tcpi_rtt`).
    pub srtt_us: u32,
}

/// A ring-buffer record, decoded: a connect, or a DNS message the names are learned from
/// (`--names`).
/// A connect, the hot case, stays inline; a DNS message (536 bytes, rare) is boxed.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Record {
    Connect(ConnectEvent),
    Accept(ConnectEvent),
    Close(Box<CloseEvent>),
    Dns(Box<DnsRecord>),
    Nat(NatRecord),
}

impl Record {
    /// Decodes one ring-buffer record: its header's kind says which record follows.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let header = bytes
            .get(..RecordHeader::SIZE)
            .ok_or(Malformed::Size(bytes.len()))?;
        let header: RecordHeader = read_record(header)?;
        let event = match RecordKind::try_from(header.kind).map_err(Malformed::Kind)? {
            RecordKind::Connect => ConnectEvent::from_record(&read_record(bytes)?),
            RecordKind::Timestamp => ConnectEvent::from_timestamp(&read_record(bytes)?),
            RecordKind::Outcome => ConnectEvent::from_outcome(&read_record(bytes)?),
            RecordKind::Dns => return Ok(Record::Dns(Box::new(read_record(bytes)?))),
            RecordKind::Nat => return Ok(Record::Nat(read_record(bytes)?)),
            RecordKind::Close => {
                let close = CloseEvent::from_record(&read_record(bytes)?)?;
                return Ok(Record::Close(Box::new(close)));
            }
            RecordKind::Accept => {
                return ConnectEvent::from_record(&read_record(bytes)?).map(Record::Accept);
            }
        };
        event.map(Record::Connect)
    }
}

impl ConnectEvent {
    /// Decodes one ring-buffer record: its header's kind says which record follows.
    ///
    /// ```
    /// use probe_user::{ConnectEvent, Malformed};
    ///
    /// assert_eq!(ConnectEvent::decode(&[0; 3]), Err(Malformed::Size(3)));
    /// let unknown_kind = [0xff; 64];
    /// assert!(ConnectEvent::decode(&unknown_kind).is_err());
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        match Record::decode(bytes)? {
            Record::Connect(event) => Ok(event),
            Record::Dns(_) => Err(Malformed::NotConnect(RecordKind::Dns as u32)),
            Record::Nat(_) => Err(Malformed::NotConnect(RecordKind::Nat as u32)),
            Record::Close(_) => Err(Malformed::NotConnect(RecordKind::Close as u32)),
            Record::Accept(_) => Err(Malformed::NotConnect(RecordKind::Accept as u32)),
        }
    }

    /// The kernel function that connected the socket: `tcp_v4_connect` or `tcp_v6_connect`
    /// after the family (SystemTap's examples print it); `inet_csk_accept` for an accept.
    pub fn function(&self) -> Function {
        match self.role {
            Role::Client => self.family.connect_function(),
            Role::Server => Function::InetCskAccept,
        }
    }

    /// Builds an event from an entry-only record (only the time and function are known).
    pub fn from_timestamp(r: &TimestampRecord) -> Result<Self, Malformed> {
        let family = family(r.family)?;
        let any = family.ip(&RawAddr::default());
        Ok(Self {
            boot_ns: r.boot_ns,
            pid: 0,
            tid: 0,
            uid: 0,
            family,
            src: SocketAddr::new(any, 0),
            dst: SocketAddr::new(any, 0),
            ret: 0,
            role: Role::Client,
            completion: None,
            workload: None,
            dns_name: None,
            nat_dst: None,
            comm: [0; COMM_LEN],
        })
    }

    /// The event of an [`OutcomeRecord`].
    pub fn from_outcome(r: &OutcomeRecord) -> Result<Self, Malformed> {
        let outcome = Outcome::try_from(r.outcome).map_err(Malformed::Outcome)?;
        let cause = crate::FailureCause::decode(r.cause, &r.trouble).map_err(Malformed::Cause)?;
        Ok(Self {
            completion: Some(Completion {
                outcome,
                latency_ns: r.latency_ns,
                errno: r.errno,
                syn_retransmits: r.syn_retransmits,
                cause,
            }),
            ..Self::from_record(&r.connect)?
        })
    }

    /// Builds an event from a record as the kernel side wrote it.
    pub fn from_record(r: &ConnectRecord) -> Result<Self, Malformed> {
        let family = family(r.family)?;
        Ok(Self {
            boot_ns: r.boot_ns,
            pid: r.pid,
            tid: r.tid,
            uid: r.uid,
            family,
            src: SocketAddr::new(family.ip(&r.saddr), r.sport),
            dst: SocketAddr::new(family.ip(&r.daddr), r.dport),
            ret: r.ret,
            role: Role::from_u16(r.role).ok_or(Malformed::Role(r.role))?,
            completion: None,
            workload: Workload::of(&r.identity),
            dns_name: None,
            nat_dst: None,
            comm: r.comm,
        })
    }

    /// The calling task's name (lossy if the kernel's bytes are not UTF-8).
    pub fn comm(&self) -> std::borrow::Cow<'_, str> {
        let len = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.comm[..len])
    }
}

/// The family of a record's `AF_*` value.
pub(crate) fn family(af: u16) -> Result<Family, Malformed> {
    Family::from_af(af).ok_or(Malformed::Family(af))
}

/// Reads a plain-old-data record (header or whole record) if `bytes` is exactly its size.
fn read_record<T: Copy>(bytes: &[u8]) -> Result<T, Malformed> {
    if bytes.len() != std::mem::size_of::<T>() {
        return Err(Malformed::Size(bytes.len()));
    }
    // SAFETY: the length is checked and every record type is plain old data (any bit pattern is
    // valid); the ring buffer only guarantees 8-byte alignment, so read unaligned anyway.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv6Addr;

    use probe_common::{AF_INET, AF_INET6};

    use super::*;

    /// A record as the kernel side would write it.
    pub(crate) fn record(
        family: u16,
        saddr: &[u8],
        sport: u16,
        daddr: &[u8],
        dport: u16,
    ) -> ConnectRecord {
        let mut r = ConnectRecord {
            header: RecordKind::Connect.header(),
            boot_ns: 5_000_000_123,
            pid: 42,
            tid: 43,
            uid: 1000,
            ret: 0,
            saddr: RawAddr::default(),
            daddr: RawAddr::default(),
            sport,
            dport,
            family,
            role: 0,
            comm: [0; COMM_LEN],
            identity: Identity::default(),
        };
        let mut bytes = [0u8; 16];
        bytes[..saddr.len()].copy_from_slice(saddr);
        r.saddr = RawAddr::from_octets(bytes);
        let mut bytes = [0u8; 16];
        bytes[..daddr.len()].copy_from_slice(daddr);
        r.daddr = RawAddr::from_octets(bytes);
        r.comm[..4].copy_from_slice(b"curl");
        r
    }

    fn bytes_of<T>(r: &T) -> Vec<u8> {
        // SAFETY: every record type is plain old data without implicit padding.
        unsafe {
            std::slice::from_raw_parts((r as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_timestamp_record() {
        let r = TimestampRecord {
            header: RecordKind::Timestamp.header(),
            boot_ns: 77,
            family: AF_INET6,
            _pad16: 0,
            _pad32: 0,
        };
        let ev = ConnectEvent::decode(&bytes_of(&r)).unwrap();
        assert_eq!((ev.boot_ns, ev.family), (77, Family::V6));
        let bad = TimestampRecord { family: 3, ..r };
        assert_eq!(
            ConnectEvent::decode(&bytes_of(&bad)),
            Err(Malformed::Family(3))
        );
    }

    #[test]
    fn decodes_ipv4_record() {
        let r = record(AF_INET, &[127, 0, 0, 1], 59538, &[10, 1, 2, 3], 8080);
        let ev = ConnectEvent::decode(&bytes_of(&r)).unwrap();
        assert_eq!(ev.family, Family::V4);
        assert_eq!(ev.function(), Function::TcpV4Connect);
        assert_eq!(ev.src, "127.0.0.1:59538".parse().unwrap());
        assert_eq!(ev.dst, "10.1.2.3:8080".parse().unwrap());
        assert_eq!((ev.pid, ev.tid, ev.uid, ev.ret), (42, 43, 1000, 0));
        assert_eq!(ev.comm(), "curl");
    }

    #[test]
    fn decodes_ipv6_record() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::8".parse().unwrap();
        let r = record(AF_INET6, &src.octets(), 1, &dst.octets(), 443);
        let ev = ConnectEvent::decode(&bytes_of(&r)).unwrap();
        assert_eq!(ev.family, Family::V6);
        assert_eq!(ev.function(), Function::TcpV6Connect);
        assert_eq!(ev.src, "[fe80::1]:1".parse().unwrap());
        assert_eq!(ev.dst, "[2001:db8::8]:443".parse().unwrap());
    }

    #[test]
    fn full_comm_has_no_terminator() {
        let mut r = record(AF_INET, &[1, 1, 1, 1], 1, &[2, 2, 2, 2], 2);
        r.comm = *b"0123456789abcdef";
        assert_eq!(
            ConnectEvent::from_record(&r).unwrap().comm(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn rejects_wrong_size_kind_and_family() {
        let r = record(AF_INET, &[1, 1, 1, 1], 1, &[2, 2, 2, 2], 2);
        let bytes = bytes_of(&r);
        assert_eq!(
            ConnectEvent::decode(&bytes[..bytes.len() - 1]),
            Err(Malformed::Size(ConnectRecord::SIZE - 1))
        );
        assert_eq!(ConnectEvent::decode(&[]), Err(Malformed::Size(0)));
        assert_eq!(ConnectEvent::decode(&bytes[..7]), Err(Malformed::Size(7)));
        let mut unknown = r;
        unknown.header.kind = 99;
        assert_eq!(
            ConnectEvent::decode(&bytes_of(&unknown)),
            Err(Malformed::Kind(99))
        );
        let bad = record(7, &[1, 1, 1, 1], 1, &[2, 2, 2, 2], 2);
        assert_eq!(
            ConnectEvent::decode(&bytes_of(&bad)),
            Err(Malformed::Family(7))
        );
    }

    /// Arbitrary ring-buffer bytes: never a panic; a wrong size, an unknown kind or an unknown
    /// family is reported as such, and every well-sized record of a known kind and family
    /// decodes.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        const FAMILY_AT: usize = std::mem::offset_of!(ConnectRecord, family);
        const ROLE_AT: usize = std::mem::offset_of!(ConnectRecord, role);

        /// The size of the record of the kind in `bytes`' header, if it names one.
        fn size_of_kind(bytes: &[u8]) -> Option<usize> {
            let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
            match RecordKind::try_from(kind).ok()? {
                RecordKind::Connect => Some(ConnectRecord::SIZE),
                RecordKind::Timestamp => Some(TimestampRecord::SIZE),
                RecordKind::Outcome => Some(OutcomeRecord::SIZE),
                RecordKind::Dns => Some(probe_common::DnsRecord::SIZE),
                RecordKind::Nat => Some(NatRecord::SIZE),
                RecordKind::Close => Some(CloseRecord::SIZE),
                RecordKind::Accept => Some(ConnectRecord::SIZE),
            }
        }

        proptest! {
            #[test]
            fn any_bytes_decode_or_are_malformed(
                mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
                kind in 0u32..9,
            ) {
                if bytes.len() >= 4 {
                    bytes[..4].copy_from_slice(&kind.to_ne_bytes());
                }
                match ConnectEvent::decode(&bytes) {
                    Ok(_) => prop_assert_eq!(size_of_kind(&bytes), Some(bytes.len())),
                    Err(Malformed::Size(n)) => {
                        prop_assert_eq!(n, bytes.len());
                        prop_assert!(n < RecordHeader::SIZE || size_of_kind(&bytes) != Some(n));
                    }
                    Err(Malformed::Kind(k)) => {
                        prop_assert_eq!(k, kind);
                        prop_assert!(RecordKind::try_from(k).is_err());
                    }
                    Err(Malformed::Family(f)) => prop_assert!(f != AF_INET && f != AF_INET6),
                    Err(Malformed::Outcome(o)) => {
                        prop_assert_eq!(kind, RecordKind::Outcome as u32);
                        prop_assert!(Outcome::try_from(o).is_err());
                    }
                    Err(Malformed::NotConnect(k)) => {
                        prop_assert_eq!(size_of_kind(&bytes), Some(bytes.len()));
                        prop_assert!(
                            [RecordKind::Dns, RecordKind::Nat, RecordKind::Close, RecordKind::Accept]
                                .iter()
                                .any(|&n| n as u32 == k)
                        );
                    }
                    Err(Malformed::Cause(c)) => {
                        prop_assert_eq!(kind, RecordKind::Outcome as u32);
                        prop_assert!(crate::failure::Cause::try_from(c).is_err());
                    }
                    Err(Malformed::End(e)) => {
                        prop_assert_eq!(kind, RecordKind::Close as u32);
                        prop_assert!(probe_common::End::try_from(e).is_err());
                    }
                    Err(Malformed::Role(r)) => prop_assert!(Role::from_u16(r).is_none()),
                }
            }

            #[test]
            fn records_with_a_known_family_decode(
                mut bytes in proptest::collection::vec(any::<u8>(), ConnectRecord::SIZE),
                v6 in any::<bool>(),
            ) {
                let family = if v6 { AF_INET6 } else { AF_INET };
                bytes[..4].copy_from_slice(&(RecordKind::Connect as u32).to_ne_bytes());
                bytes[FAMILY_AT..FAMILY_AT + 2].copy_from_slice(&family.to_ne_bytes());
                bytes[ROLE_AT..ROLE_AT + 2].copy_from_slice(&(Role::Client as u16).to_ne_bytes());
                let ev = ConnectEvent::decode(&bytes).unwrap();
                let r: ConnectRecord = read_record(&bytes).unwrap();
                prop_assert_eq!(ev.family, if v6 { Family::V6 } else { Family::V4 });
                prop_assert_eq!((ev.src.port(), ev.dst.port()), (r.sport, r.dport));
                prop_assert_eq!((ev.pid, ev.tid, ev.uid, ev.ret, ev.boot_ns), (r.pid, r.tid, r.uid, r.ret, r.boot_ns));
            }
        }
    }
}
