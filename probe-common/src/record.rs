//! What the kernel side writes into the ring buffer: one record per reported connect, each
//! starting with a [`RecordHeader`] whose [`RecordKind`] says which record follows.
//!
//! A new kind of record is a new [`RecordKind`] variant, a `#[repr(C)]` struct that starts with
//! a [`RecordHeader`], and one decoder arm in userspace (the match there is exhaustive, so the
//! compiler points at it).

use crate::{COMM_LEN, RawAddr};

/// What a ring-buffer record is. Stored as a plain `u32` in [`RecordHeader::kind`] (userspace
/// must be able to read any bit pattern) and turned back with `TryFrom<u32>`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A [`ConnectRecord`]: one connect call with its 4-tuple, caller and result.
    Connect = 1,
    /// A [`TimestampRecord`]: only the time and family of a connect call (`--format minimal`).
    Timestamp = 2,
    /// An [`OutcomeRecord`]: a connect with how it ended (`--outcome`).
    Outcome = 3,
    /// A [`DnsRecord`]: a DNS answer delivered to a local socket (`--names`).
    Dns = 4,
    /// A [`NatRecord`]: a connect's SYN sent to another destination than the socket's
    /// (`--nat`).
    Nat = 5,
    /// A [`CloseRecord`]: a traced connection that closed, with its figures (`--lifetime`).
    Close = 6,
    /// A [`ConnectRecord`] of a connection a local listener accepted (`--accept`): the peer
    /// as its source, the local address and port as its destination, the accepting task as
    /// its caller, [`crate::Role::Server`].
    Accept = 7,
}

impl RecordKind {
    /// The header of a record of this kind.
    #[inline(always)]
    pub const fn header(self) -> RecordHeader {
        RecordHeader {
            kind: self as u32,
            _reserved: 0,
        }
    }
}

impl TryFrom<u32> for RecordKind {
    type Error = u32;

    /// The kind whose value is `kind`, or `kind` itself if there is none.
    fn try_from(kind: u32) -> Result<Self, u32> {
        match kind {
            1 => Ok(RecordKind::Connect),
            2 => Ok(RecordKind::Timestamp),
            3 => Ok(RecordKind::Outcome),
            4 => Ok(RecordKind::Dns),
            5 => Ok(RecordKind::Nat),
            6 => Ok(RecordKind::Close),
            7 => Ok(RecordKind::Accept),
            other => Err(other),
        }
    }
}

/// The first bytes of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// A [`RecordKind`] value.
    pub kind: u32,
    /// Zero; keeps the record body 8-byte aligned.
    pub _reserved: u32,
}

impl RecordHeader {
    /// Size in bytes of the header.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// One `tcp_v4_connect` / `tcp_v6_connect` call ([`RecordKind::Connect`]).
///
/// Addresses are in network byte order (IPv4 uses the first four bytes); ports are in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRecord {
    /// [`RecordKind::Connect`].
    pub header: RecordHeader,
    /// `CLOCK_BOOTTIME` nanoseconds when the connect call was entered.
    pub boot_ns: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Real user id of the caller.
    pub uid: u32,
    /// Return value of `tcp_v4_connect` / `tcp_v6_connect` (0 or a negative errno).
    pub ret: i32,
    /// Source address assigned by the kernel (zero if the call failed before assigning one).
    pub saddr: RawAddr,
    /// Destination address.
    pub daddr: RawAddr,
    /// Source port (host order), zero if the call failed before assigning one.
    pub sport: u16,
    /// Destination port (host order).
    pub dport: u16,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`] (a [`crate::Family`] value).
    pub family: u16,
    /// Which end of the connection this is (a [`crate::Role`] value): the client's for a
    /// connect, the server's for an accept.
    pub role: u16,
    /// The calling task's name, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Who the caller is beyond its pid (cgroup, namespaces): filled only when the `IDENTITY`
    /// global is set, zero otherwise.
    pub identity: Identity,
}

/// The workload a connect comes from, as the kernel knows it: the caller's cgroup v2 and pid
/// namespace, and the socket's network namespace. Read in the caller's context, only when
/// something needs it (the `IDENTITY` global: JSON output, the library's `identity()`, or a
/// filter or count that uses it), so the default configuration pays nothing for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The caller's cgroup v2 id (`bpf_get_current_cgroup_id`: the inode number of its
    /// directory on the cgroup2 filesystem; 1, the root, on a host that only mounts cgroup v1
    /// controllers).
    pub cgroup_id: u64,
    /// Inode number of the socket's network namespace (what `/proc/PID/ns/net` links to).
    pub netns: u32,
    /// Inode number of the caller's pid namespace (`/proc/PID/ns/pid`).
    pub pidns: u32,
    /// The caller's process id as its own pid namespace numbers it.
    pub ns_pid: u32,
    /// The caller's thread id as its own pid namespace numbers it.
    pub ns_tid: u32,
}

impl ConnectRecord {
    /// Size in bytes of one record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// What an entry hook alone writes when the `ENTRY_ONLY` global is set (`--format minimal`):
/// just what SystemTap's example 1 prints, with no return probe attached at all
/// ([`RecordKind::Timestamp`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampRecord {
    /// [`RecordKind::Timestamp`].
    pub header: RecordHeader,
    /// `CLOCK_BOOTTIME` nanoseconds when the connect call was entered.
    pub boot_ns: u64,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`] (a [`crate::Family`] value).
    pub family: u16,
    /// Explicit padding, always zero (two fields, not an array: zeroing an array is a call to
    /// the byte-by-byte `memset` in eBPF, on every connect of `--format minimal`).
    pub _pad16: u16,
    /// Explicit padding, always zero.
    pub _pad32: u32,
}

impl TimestampRecord {
    /// Size in bytes of one record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// A connect and how it ended ([`RecordKind::Outcome`], with `--outcome`): written when the
/// socket leaves SYN_SENT, or at the return of a call that failed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// The connect, as it is reported without `--outcome` except for its header's kind
    /// ([`RecordKind::Outcome`]).
    pub connect: ConnectRecord,
    /// Nanoseconds from the connect call (its `boot_ns`) to the outcome.
    pub latency_ns: u64,
    /// An [`crate::Outcome`] value.
    pub outcome: u32,
    /// The error the kernel gave (positive errno: the socket's `sk_err`, or `-ret` of a failed
    /// call), 0 if none.
    pub errno: u32,
    /// How many times the SYN was retransmitted before the outcome (the socket's
    /// `total_retrans`: a socket in SYN_SENT has sent nothing else); 0 for a failed call.
    pub syn_retransmits: u32,
    /// A [`crate::Cause`] value, 0 for none (established).
    pub cause: u32,
    /// What the cause hooks saw happen to the socket in SYN_SENT (zero if nothing).
    pub trouble: Trouble,
}

/// What happened to a socket in SYN_SENT beyond its own state, as the cause hooks saw it: an
/// ICMP error the kernel matched to it (`ip_icmp_error` / `ipv6_icmp_error`, which
/// `tcp_v4_err` / `tcp_v6_err` call for a socket in SYN_SENT before ending its connect), a SYN
/// of it dropped inside this host with a drop reason (`skb:kfree_skb`, 5.17+). Kept per socket
/// in the kernel's `SYN_TROUBLE` map ([`crate::state::SynTrouble`]) and carried in
/// [`OutcomeRecord`]s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trouble {
    /// The kernel's `enum skb_drop_reason` value of the last SYN dropped (with [`Trouble::DROP`]).
    pub drop_reason: u32,
    /// The ICMP (ICMPv6 for IPv6) type of the error (with [`Trouble::ICMP`]).
    pub icmp_type: u8,
    /// Its code.
    pub icmp_code: u8,
    /// [`Trouble::ICMP`] and [`Trouble::DROP`]: which fields are set.
    pub flags: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
    /// Who sent the ICMP error: the source address of its IP header (IPv4 in the first four
    /// bytes when `icmp_type` is an ICMPv4 type, as `flags` says).
    pub icmp_from: RawAddr,
}

impl Trouble {
    /// `icmp_type`, `icmp_code` and `icmp_from` are an ICMP error's.
    pub const ICMP: u8 = 1;
    /// `drop_reason` is a dropped SYN's.
    pub const DROP: u8 = 2;
    /// The ICMP error came over IPv6 (an ICMPv6 type and code; `icmp_from` is an IPv6 address).
    pub const ICMP_V6: u8 = 4;
    /// Nothing seen.
    pub const NONE: Trouble = Trouble {
        drop_reason: 0,
        icmp_type: 0,
        icmp_code: 0,
        flags: 0,
        _pad: 0,
        icmp_from: RawAddr([0; 4]),
    };
}

impl OutcomeRecord {
    /// Size in bytes of one record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Bytes of a DNS message a [`DnsRecord`] carries at most: the classic UDP maximum (RFC 1035),
/// which holds the question and the A/AAAA answers of almost every reply; a longer one is
/// carried cut, and its answers past the cut are not read.
pub const DNS_PAYLOAD_MAX: usize = 512;

/// A DNS message (UDP, source port 53) delivered to a local socket ([`RecordKind::Dns`], with
/// `--names`): what userspace learns names from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// [`RecordKind::Dns`].
    pub header: RecordHeader,
    /// `CLOCK_BOOTTIME` nanoseconds when it was delivered.
    pub boot_ns: u64,
    /// Inode number of the receiving socket's network namespace: the names it gives hold there
    /// only.
    pub netns: u32,
    /// The message's length (the UDP payload).
    pub len: u16,
    /// How many of its first bytes `payload` holds (at most [`DNS_PAYLOAD_MAX`], and only what
    /// the kernel held in one piece).
    pub captured: u16,
    /// The message, its first `captured` bytes.
    pub payload: [u8; DNS_PAYLOAD_MAX],
}

impl DnsRecord {
    /// Size in bytes of one record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// A connect's SYN leaving this host for another destination than its socket's: a destination
/// NAT rewrote it (a Kubernetes Service through kube-proxy's rules, a published port)
/// ([`RecordKind::Nat`], with `--nat`). Userspace joins it to the connect of the same socket
/// endpoints and network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatRecord {
    /// [`RecordKind::Nat`].
    pub header: RecordHeader,
    /// `CLOCK_BOOTTIME` nanoseconds when the SYN was queued to its device.
    pub boot_ns: u64,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// The socket's [`crate::Family`] (`AF_INET` for an IPv4-mapped connect).
    pub family: u16,
    /// The socket's source port (host order).
    pub sport: u16,
    /// The socket's source address.
    pub saddr: RawAddr,
    /// The socket's destination: what the application connected to.
    pub daddr: RawAddr,
    /// The socket's destination port (host order).
    pub dport: u16,
    /// The port the SYN was sent to (host order).
    pub nat_dport: u16,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The address the SYN was sent to (IPv4 in the first four bytes).
    pub nat_daddr: RawAddr,
}

impl NatRecord {
    /// Size in bytes of one record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// A traced connection that closed ([`RecordKind::Close`], with `--lifetime`): written when
/// its socket moves to CLOSE, with the kernel's own counters of the connection at that moment
/// (`struct tcp_sock`, as `tcp_info` reports them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseRecord {
    /// The connect that opened it, as it was reported (its header's kind is
    /// [`RecordKind::Close`]).
    pub connect: ConnectRecord,
    /// `CLOCK_BOOTTIME` nanoseconds when the connection was established.
    pub established_ns: u64,
    /// `CLOCK_BOOTTIME` nanoseconds when it closed.
    pub closed_ns: u64,
    /// How it ended, and its socket's counters then.
    pub figures: CloseFigures,
}

/// A connection's counters at its close and how it ended, from its socket (the kernel side
/// reads them into this, and copies it into the [`CloseRecord`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFigures {
    /// Payload bytes sent and acknowledged by the peer (`bytes_acked` without the SYN and
    /// FIN: [`crate::life::payload_sent`]).
    pub bytes_sent: u64,
    /// Payload bytes received (`bytes_received` without the FIN:
    /// [`crate::life::payload_received`]).
    pub bytes_received: u64,
    /// Segments sent (`segs_out`), the handshake's included.
    pub segs_out: u32,
    /// Segments received (`segs_in`).
    pub segs_in: u32,
    /// Segments retransmitted (`total_retrans`), the SYN's included.
    pub retransmits: u32,
    /// The smoothed round-trip time, microseconds (`srtt_us >> 3`).
    pub srtt_us: u32,
    /// A [`crate::End`] value: how the connection ended.
    pub end: u32,
    /// The error the kernel gave the socket (`sk_err`, positive errno), 0 if none.
    pub errno: u32,
}

impl CloseRecord {
    /// Size in bytes of one record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(RecordHeader::SIZE, 8);
        assert_eq!(
            ConnectRecord::SIZE,
            RecordHeader::SIZE + 8 + 4 * 4 + 16 * 2 + 2 * 4 + COMM_LEN + 24
        );
        assert_eq!(core::mem::size_of::<Identity>(), 24);
        assert_eq!(ConnectRecord::SIZE % 8, 0);
        assert_eq!(TimestampRecord::SIZE, RecordHeader::SIZE + 16);
        assert_eq!(core::mem::size_of::<Trouble>(), 24);
        assert_eq!(OutcomeRecord::SIZE, ConnectRecord::SIZE + 16 + 8 + 24);
        assert_eq!(DnsRecord::SIZE, RecordHeader::SIZE + 16 + DNS_PAYLOAD_MAX);
        assert_eq!(NatRecord::SIZE, RecordHeader::SIZE + 16 + 3 * 16 + 8);
        assert_eq!(CloseRecord::SIZE, ConnectRecord::SIZE + 4 * 8 + 6 * 4);
        assert_eq!(core::mem::size_of::<CloseFigures>(), 2 * 8 + 6 * 4);
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [
            RecordKind::Connect,
            RecordKind::Timestamp,
            RecordKind::Outcome,
            RecordKind::Dns,
            RecordKind::Nat,
            RecordKind::Close,
        ] {
            assert_eq!(RecordKind::try_from(kind.header().kind), Ok(kind));
        }
        assert_eq!(RecordKind::try_from(0), Err(0));
    }
}
