//! Types and constants shared by the kernel side (`probe-ebpf`) and userspace (`probe-user`).
//!
//! Everything here crosses the kernel boundary, so every layout is `#[repr(C)]` and every number
//! (map sizes, flags, families) has its one definition here.
#![no_std]

/// `AF_INET` as the kernel and `sockaddr_in` spell it.
pub const AF_INET: u16 = 2;
/// `AF_INET6` as the kernel and `sockaddr_in6` spell it.
pub const AF_INET6: u16 = 10;

/// 64-bit words of the `PORT_SET` bitmap: one bit per port, 0 to 65535.
pub const PORT_WORDS: usize = 65536 / 64;
/// Most pids `--pid` may name (entries of the `PID_FILTER` map), and likewise uids (`--uid`),
/// cgroups (`--cgroup`), task names (`--comm`) and destination networks (`--dst`).
pub const MAX_PIDS: u32 = 1024;
/// Connects in flight between entry and return that the kernel side tracks at once.
pub const MAX_PENDING: u32 = 8192;
/// Size of the event ring buffer in bytes (a power-of-two multiple of the page size).
pub const RING_BYTES: u32 = 1 << 20;

/// Index of each counter in the `COUNTERS` per-CPU array (written by the kernel side).
pub mod counter {
    /// Events lost because the ring buffer was full.
    pub const RING_FULL: u32 = 0;
    /// Connects not traced because the map of connects in flight was full.
    pub const PENDING_FULL: u32 = 1;
    /// Connects whose return probe never ran (the kernel's kretprobe ran out of instances), seen
    /// when the same thread enters its next connect.
    pub const MISSED_RETURN: u32 = 2;
    /// Connects not counted (`--count`) because the map of counts was full.
    pub const COUNTS_FULL: u32 = 3;
    /// Number of counters.
    pub const COUNT: u32 = 4;
}

/// What `--count` aggregates connects by (the kernel side's `COUNT_BY` global).
pub mod count_by {
    /// Not counting: every connect is an event in the ring buffer.
    pub const NONE: u8 = 0;
    /// Destination address and port.
    pub const DESTINATION: u8 = 1;
    /// Destination port only (the address is left zero).
    pub const PORT: u8 = 2;
}

/// Most distinct keys `--count` keeps (entries of the `CONNECT_COUNTS` map); connects with a
/// new key beyond it are counted as dropped.
pub const MAX_COUNT_KEYS: u32 = 16384;

/// A key of the kernel's `CONNECT_COUNTS` map: what `--count` counts connects by.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountKey {
    /// Destination address (zero when counting by port only).
    pub daddr: RawAddr,
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    pub _pad: u32,
}

/// Length of a task's `comm`, as in the kernel's `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// An IPv4 or IPv6 address as its network-order bytes (IPv4 in the first four), stored as words:
/// eBPF code copies a byte array one byte at a time, but words four bytes at a time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawAddr(pub [u32; 4]);

impl RawAddr {
    /// The 16 bytes in memory order (network order).
    pub fn octets(&self) -> [u8; 16] {
        let [a, b, c, d] = self.0.map(u32::to_ne_bytes);
        core::array::from_fn(|i| [a, b, c, d][i / 4][i % 4])
    }

    /// The address whose memory holds `bytes`.
    pub fn from_octets(bytes: [u8; 16]) -> Self {
        let word =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Self([word(0), word(4), word(8), word(12)])
    }

    /// The IPv4 address in the first word as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub fn v4_mapped(&self) -> RawAddr {
        RawAddr([0, 0, u32::to_be(0xffff), self.0[0]])
    }

    /// Whether this IPv6 address is IPv4-mapped (`::ffff:a.b.c.d`: the words 0, 0, be(0xffff),
    /// a.b.c.d), which the kernel connects through `tcp_v4_connect`.
    pub fn is_v4_mapped(&self) -> bool {
        self.0[0] == 0 && self.0[1] == 0 && self.0[2] == u32::to_be(0xffff)
    }
}

/// One `tcp_v4_connect` / `tcp_v6_connect` call, as the kernel side writes it into the ring buffer.
///
/// Addresses are in network byte order (IPv4 uses the first four bytes); ports are in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRecord {
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
    /// [`AF_INET`] for `tcp_v4_connect`, [`AF_INET6`] for `tcp_v6_connect`.
    pub family: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
    /// The calling task's name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

impl ConnectRecord {
    /// Size in bytes of one record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// What an entry probe alone writes when the `ENTRY_ONLY` global is set (`--format minimal`):
/// just what SystemTap's example 1 prints, with no return probe attached at all.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampRecord {
    /// `CLOCK_BOOTTIME` nanoseconds when the connect call was entered.
    pub boot_ns: u64,
    /// [`AF_INET`] for `tcp_v4_connect`, [`AF_INET6`] for `tcp_v6_connect`.
    pub family: u16,
    /// Explicit padding, always zero.
    pub _pad: [u16; 3],
}

impl TimestampRecord {
    /// Size in bytes of one record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Offsets (bytes from the start of `struct sock`) of the `struct sock_common` fields the kernel
/// side reads. Userspace resolves them from the running kernel's BTF and sets the `SOCK_OFFSETS`
/// global before loading, because Rust eBPF cannot emit CO-RE relocations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `skc_daddr` (IPv4 destination, `__be32`).
    pub daddr: u32,
    /// `skc_rcv_saddr` (IPv4 bound source, `__be32`).
    pub rcv_saddr: u32,
    /// `skc_num` (source port, host order `__u16`).
    pub num: u32,
    /// `skc_dport` (destination port, `__be16`).
    pub dport: u32,
    /// `skc_family` (`unsigned short`).
    pub family: u32,
    /// `skc_v6_daddr` (IPv6 destination, `struct in6_addr`).
    pub v6_daddr: u32,
    /// `skc_v6_rcv_saddr` (IPv6 bound source, `struct in6_addr`).
    pub v6_rcv_saddr: u32,
    /// `sk_protocol` (`u16`; `IPPROTO_TCP` for TCP sockets), for the state-change tracepoint,
    /// which other protocols share.
    pub protocol: u32,
    /// `inet_sport` of `struct inet_sock` (source port, `__be16`): unlike `skc_num` it survives
    /// the port's release when a connecting socket closes, so the tracepoint backend reads it.
    pub inet_sport: u32,
}

/// Bytes at the start of `struct sock` that hold every IPv4 field of `sock_common` (`skc_daddr`,
/// `skc_rcv_saddr`, `skc_dport`, `skc_num`, `skc_family`); the kernel side reads them at once.
pub const SOCK_HEAD_LEN: usize = 24;

/// Flags of the in-kernel filters, set by userspace as the `FILTERS` global before loading. With
/// a flag clear, the verifier sees a constant and drops the map lookup altogether.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterFlags {
    /// Non-zero: only destination ports whose bit is set in `PORT_SET` are traced.
    pub ports: u8,
    /// Non-zero: only pids present in `PID_FILTER` are traced.
    pub pids: u8,
    /// [`FAMILY_V4`] and/or [`FAMILY_V6`]: the families traced by the tcp_connect hook (the
    /// per-family hooks are simply not attached for a family left out).
    pub families: u8,
    /// Non-zero: only uids present in `UID_FILTER` are traced.
    pub uids: u8,
    /// Non-zero: only tasks in a cgroup (v2) whose id is present in `CGROUP_FILTER` are traced.
    pub cgroups: u8,
    /// Non-zero: only tasks whose `comm` is present in `COMM_FILTER` are traced.
    pub comms: u8,
    /// Non-zero: only destinations inside a network of `DST_FILTER` are traced.
    pub destinations: u8,
}

/// A destination network in the `DST_FILTER` LPM trie: IPv4 networks are stored IPv4-mapped
/// (`::ffff:a.b.c.d`, prefix + 96), so one trie serves both families.
pub type DstKey = RawAddr;

/// Prefix length in the `DST_FILTER` trie of an IPv4 network of `prefix` bits.
pub const fn mapped_prefix(prefix: u32) -> u32 {
    96 + prefix
}

/// Bit of IPv4 in [`FilterFlags::families`].
pub const FAMILY_V4: u8 = 1;
/// Bit of IPv6 in [`FilterFlags::families`].
pub const FAMILY_V6: u8 = 2;

/// The process that started a connect, remembered by the tracepoint backend from the socket's
/// CLOSE -> SYN_SENT transition (in the caller's context) until its next transition, when the
/// source port is known (keyed by socket address in the kernel's `CONNECTING` map).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Connecting {
    /// `CLOCK_BOOTTIME` at the CLOSE -> SYN_SENT transition, inside the connect call.
    pub boot_ns: u64,
    pub pid_tgid: u64,
    pub uid: u32,
    pub comm: [u8; COMM_LEN],
    pub _pad: u32,
}

/// A connect call between its entry and its return probe, keyed by pid_tgid in the kernel's
/// `PENDING` map (userspace reaps entries whose return never came).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingConnect {
    /// The `struct sock *` being connected.
    pub sk: u64,
    /// `CLOCK_BOOTTIME` at entry.
    pub boot_ns: u64,
    /// The requested destination.
    pub daddr: RawAddr,
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`: which function was entered.
    pub family: u16,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are #[repr(C)] plain integers and arrays with explicit padding, so every
    // bit pattern is valid.
    unsafe impl aya::Pod for super::ConnectRecord {}
    unsafe impl aya::Pod for super::TimestampRecord {}
    unsafe impl aya::Pod for super::SockOffsets {}
    unsafe impl aya::Pod for super::FilterFlags {}
    unsafe impl aya::Pod for super::PendingConnect {}
    unsafe impl aya::Pod for super::RawAddr {}
    unsafe impl aya::Pod for super::CountKey {}
    unsafe impl aya::Pod for super::Connecting {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_addr_round_trips_octets() {
        let bytes: [u8; 16] = core::array::from_fn(|i| i as u8 * 7);
        assert_eq!(RawAddr::from_octets(bytes).octets(), bytes);
    }

    #[test]
    fn event_layout_has_no_implicit_padding() {
        assert_eq!(ConnectRecord::SIZE, 8 + 4 * 4 + 16 * 2 + 2 * 4 + COMM_LEN);
        assert_eq!(ConnectRecord::SIZE % 8, 0);
        assert_eq!(TimestampRecord::SIZE, 16);
        assert_ne!(
            TimestampRecord::SIZE,
            ConnectRecord::SIZE,
            "records are told apart by size"
        );
    }
}
