//! Types and constants shared by the kernel side (`probe-ebpf`) and userspace (`probe-user`).
//!
//! Everything here crosses the kernel boundary, so every layout is `#[repr(C)]`, every enum has
//! an explicit representation, and every name or number (map, program and global names, map
//! sizes, record kinds, families) has its one definition here:
//!
//! - [`names`]: the maps, globals and programs of the eBPF object, by the name userspace looks
//!   them up with (the kernel side checks at compile time that its items carry these names);
//! - [`record`]: what the kernel side writes into the ring buffer, each record tagged with its
//!   [`RecordKind`];
//! - [`config`]: what userspace sets before loading (globals) and writes into the filter maps;
//! - [`state`]: the values of the kernel side's own maps (calls in flight, counts, counters);
//! - [`outcome`]: how a connect ended (`--outcome`), and its latency buckets;
//! - [`life`]: how a connection ended (`--lifetime`);
//! - [`Family`], [`Function`] and [`Backend`]: address families, the traced kernel functions,
//!   and the ways of hooking them.
#![no_std]

pub mod config;
pub mod life;
pub mod names;
pub mod outcome;
pub mod record;
pub mod state;

pub use config::{CountBy, FilterFlags, SockOffsets};
pub use life::End;
pub use outcome::{Cause, Outcome, OutcomeConfig};
pub use record::{
    CloseFigures, CloseRecord, ConnectRecord, DNS_PAYLOAD_MAX, DnsRecord, Identity, NatRecord,
    OutcomeRecord, RecordHeader, RecordKind, TimestampRecord, Trouble,
};

/// `AF_INET` as the kernel and `sockaddr_in` spell it.
pub const AF_INET: u16 = 2;
/// `AF_INET6` as the kernel and `sockaddr_in6` spell it.
pub const AF_INET6: u16 = 10;

/// Length of a task's `comm`, as in the kernel's `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// Sizes of the kernel side's maps: each bounds one thing, named for it.
pub mod limit {
    /// Most pids `--pid` may name (entries of `PID_FILTER`).
    pub const MAX_PIDS: u32 = 1024;
    /// Most uids `--uid` may name (entries of `UID_FILTER`).
    pub const MAX_UIDS: u32 = 1024;
    /// Most cgroups `--cgroup` may name (slots of the `CGROUP_FILTER` cgroup array: the kernel
    /// side asks `bpf_current_task_under_cgroup` of each in turn).
    pub const MAX_CGROUPS: u32 = 64;
    /// Most container ids `--container` may name (entries of the `CONTAINERS` global).
    pub const MAX_CONTAINERS: usize = 8;
    /// Most network namespaces `--netns` may name (entries of `NETNS_FILTER`).
    pub const MAX_NETNS: u32 = 1024;
    /// Most task names `--comm` may name (entries of `COMM_FILTER`).
    pub const MAX_COMMS: u32 = 1024;
    /// Most destination networks `--dst` may name (entries of `DST_FILTER`).
    pub const MAX_NETWORKS: u32 = 1024;
    /// Connect calls between their entry and return probes that the kernel side tracks at once
    /// (entries of `PENDING`).
    pub const MAX_PENDING: u32 = 8192;
    /// Sockets between SYN_SENT and their next state that the kernel side tracks at once: the
    /// tracepoint backend's connects, and with `--outcome` every backend's. The entries of the
    /// LRU `CONNECTING`, and with BPF atomics as many slots of `CONNECTING_SLOTS` in front of
    /// it. A power of two: a slot's index is a hash of the socket's address masked by it.
    pub const MAX_CONNECTING: u32 = 1 << 13;
    /// The slots of `CONNECTING_SLOTS` a socket may take: from the one its address hashes to,
    /// this many in a row. Full, its connect goes to the LRU `CONNECTING`.
    pub const CONNECTING_PROBES: u32 = 4;
    /// Free entries the kernel's LRU maps keep per CPU (`LOCAL_FREE_TARGET` in
    /// kernel/bpf/bpf_lru_list.c): until a 2025 fix, an LRU of N entries could start evicting
    /// with only N - 128 x (CPUs - 1) in use, so `CONNECTING` gets this much per possible CPU
    /// on top of [`MAX_CONNECTING`] (set at load).
    pub const LRU_FREE_PER_CPU: u32 = 128;
    /// Slots of the per-CPU `RECORD_SCRATCH`: one per hook that builds a record there, so that
    /// a run preempted (fexit, on a preemptible kernel) or interrupted while filling its slot
    /// is never overwritten by another hook's.
    pub const SCRATCH_SLOTS: u32 = 4;
    /// Sockets in SYN_SENT whose ICMP error or dropped SYN the cause hooks keep at once
    /// (entries of the LRU `SYN_TROUBLE`): as many as connects are tracked. Past it the oldest
    /// note is evicted and its connect's cause falls back to what the socket itself says
    /// (`timeout`, or `icmp` without type and code).
    pub const MAX_SYN_TROUBLE: u32 = MAX_CONNECTING;
    /// IPv4-mapped connects between their inner and outer exit (entries of the LRU
    /// `MAPPED_INNER`; more threads inside such a call at once than this is not expected).
    pub const MAX_MAPPED_CALLS: u32 = 1024;
    /// Traced connections open at once whose close is reported (entries of the LRU `LIVE`,
    /// `--lifetime`). Past it the connection least recently changing state is evicted, and
    /// counted as dropped.
    pub const MAX_LIVE: u32 = 1 << 14;
    /// Label sets `--count` and `--metrics` keep by default (`--max-series`: the entries of
    /// `CONNECT_COUNTS`, besides [`OVERFLOW_KEYS`]); connects with a new label set beyond it are
    /// counted under an overflow key. About 5.6 MiB of kernel memory (an entry is a 32-byte key
    /// and a 256-byte value, plus the hash table's own ~70 bytes: about 350 bytes), the same on
    /// any number of CPUs.
    pub const MAX_COUNT_KEYS: u32 = 16384;
    /// Most label sets `--max-series` may ask for (about 350 MiB of kernel memory).
    pub const MAX_COUNT_KEYS_LIMIT: u32 = 1 << 20;
    /// Entries of `CONNECT_COUNTS` reserved for its overflow keys at most: one per family,
    /// outcome and cause that outcome can have (`state::CountKey::overflow`,
    /// `Outcome::causes`; one per family without outcomes).
    pub const OVERFLOW_KEYS: u32 = 2 * 14;
    /// Size of the event ring buffer in bytes (a power-of-two multiple of the page size).
    pub const RING_BYTES: u32 = 1 << 20;
}

/// A fixed set of values with one name each (`--format`, `--attach`, `--count-by`): one table
/// serves parsing, printing and listing the choices.
pub trait Named: Copy + PartialEq + 'static {
    /// Every value, in the order they are listed.
    const ALL: &'static [Self];

    /// The value's name.
    fn name(self) -> &'static str;

    /// The value named `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
}

/// An address family. The discriminants are the kernel's `AF_INET` / `AF_INET6`, as records
/// and count keys store them (as plain `u16`: any bit pattern must be readable).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4, traced at `tcp_v4_connect` (IPv4-mapped IPv6 destinations included).
    V4 = AF_INET,
    /// IPv6, traced at `tcp_v6_connect`.
    V6 = AF_INET6,
}

impl Family {
    /// `AF_INET` or `AF_INET6`.
    #[inline(always)]
    pub const fn af(self) -> u16 {
        self as u16
    }

    /// The family of the kernel's `AF_INET` / `AF_INET6`.
    #[inline(always)]
    pub const fn from_af(af: u16) -> Option<Self> {
        match af {
            AF_INET => Some(Family::V4),
            AF_INET6 => Some(Family::V6),
            _ => None,
        }
    }

    /// This family's bit in [`FilterFlags::families`].
    #[inline(always)]
    pub const fn bit(self) -> u8 {
        match self {
            Family::V4 => 1,
            Family::V6 => 2,
        }
    }

    /// The kernel function that connects a socket of this family.
    pub const fn connect_function(self) -> Function {
        match self {
            Family::V4 => Function::TcpV4Connect,
            Family::V6 => Function::TcpV6Connect,
        }
    }

    /// `"ipv4"` or `"ipv6"`.
    pub const fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// An address of this family as the kernel side stores it (IPv4 in the first four bytes).
    pub fn ip(self, addr: &RawAddr) -> core::net::IpAddr {
        let bytes = addr.octets();
        match self {
            Family::V4 => core::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
            Family::V6 => core::net::Ipv6Addr::from(bytes).into(),
        }
    }
}

/// A kernel function the programs hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    /// `int tcp_v4_connect(struct sock *sk, struct sockaddr *uaddr, int addr_len)`.
    TcpV4Connect,
    /// `int tcp_v6_connect(struct sock *sk, struct sockaddr *uaddr, int addr_len)`.
    TcpV6Connect,
    /// `int tcp_connect(struct sock *sk)`: called by both once the source is assigned and the
    /// SYN is about to go out (`--successes-only`).
    TcpConnect,
    /// `struct sock *inet_csk_accept(struct sock *sk, ...)`: returns the connection a listener
    /// accepted (`--accept`), in the accepting task's context.
    InetCskAccept,
}

impl Function {
    /// The function's name in the kernel (and in SystemTap's output).
    pub const fn name(self) -> &'static str {
        match self {
            Function::TcpV4Connect => "tcp_v4_connect",
            Function::TcpV6Connect => "tcp_v6_connect",
            Function::TcpConnect => "tcp_connect",
            Function::InetCskAccept => "inet_csk_accept",
        }
    }
}

/// Which end of a connection a record is of, as records store it (a plain `u16`).
#[repr(u16)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The connecting side: a `tcp_v4_connect` / `tcp_v6_connect` call.
    #[default]
    Client = 0,
    /// The listening side: a connection a local listener accepted (`inet_csk_accept`).
    Server = 1,
}

impl Role {
    /// The role whose value is `value`, if any.
    pub const fn from_u16(value: u16) -> Option<Role> {
        match value {
            0 => Some(Role::Client),
            1 => Some(Role::Server),
            _ => None,
        }
    }
}

impl Named for Role {
    const ALL: &'static [Self] = &[Role::Client, Role::Server];

    fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// How the kernel side is attached (`--attach`). Every backend reports the same connects with
/// the same fields, except where noted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A kprobe and a kretprobe on `tcp_v4_connect` / `tcp_v6_connect`, as SystemTap does.
    /// Needs `CONFIG_KPROBES`.
    Kprobe,
    /// An fexit program on each connect function (arguments and return value at once; time
    /// taken at the return). Needs BPF trampolines (x86_64 since Linux 5.5; arm64 since 6.4, which
    /// added the ftrace direct calls that attaching to a kernel function needs; with
    /// `CONFIG_FUNCTION_TRACER`); cheaper than a kprobe and never misses a return.
    Fentry,
    /// The `sock:inet_sock_set_state` tracepoint, attached raw. Works without kprobes or
    /// trampolines, but reports only calls that get as far as sending a SYN (`ret` is 0), each
    /// once the socket leaves SYN_SENT (established, refused or given up).
    Tracepoint,
}

impl Backend {
    /// The order `auto` tries them in: fentry first where the kernel can attach it to the
    /// connect functions (BPF trampolines: cheaper than a kprobe and a kretprobe, and never
    /// misses a return), then kprobe (kernels without trampolines), then the tracepoint. Each
    /// is tried for real, as libbpf-tools' `fentry_can_attach` does: loading and attaching
    /// tells what the kernel supports, not its version.
    pub const AUTO_ORDER: [Backend; 3] = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];

    /// The `--attach` name (a `const fn`, so tools can name a backend in constants).
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Kprobe => "kprobe",
            Backend::Fentry => "fentry",
            Backend::Tracepoint => "tracepoint",
        }
    }

    /// Whether connect calls that fail inside the kernel are reported (with their error).
    pub fn reports_failed_calls(self) -> bool {
        self != Backend::Tracepoint
    }
}

impl Named for Backend {
    const ALL: &'static [Self] = &[Backend::Kprobe, Backend::Fentry, Backend::Tracepoint];

    fn name(self) -> &'static str {
        Backend::name(self)
    }
}

impl core::fmt::Display for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

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

    /// Whether this IPv6 address is IPv4-mapped (`::ffff:a.b.c.d`: the words 0, 0, be(0xffff),
    /// a.b.c.d), which the kernel connects through `tcp_v4_connect`.
    #[inline(always)]
    pub fn is_v4_mapped(&self) -> bool {
        self.0[0] == 0 && self.0[1] == 0 && self.0[2] == u32::to_be(0xffff)
    }

    /// Whether this is the wildcard address (`0.0.0.0`, `::`), which a connect asks the kernel
    /// to resolve (to loopback, or the socket's bound source).
    #[inline(always)]
    pub fn is_unspecified(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The IPv4 address inside an IPv4-mapped one, in the first word.
    #[inline(always)]
    pub fn unmapped(&self) -> RawAddr {
        RawAddr([self.0[3], 0, 0, 0])
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are #[repr(C)] plain integers and arrays with explicit padding, so every
    // bit pattern is valid.
    unsafe impl aya::Pod for super::RawAddr {}
    unsafe impl aya::Pod for super::record::ConnectRecord {}
    unsafe impl aya::Pod for super::record::TimestampRecord {}
    unsafe impl aya::Pod for super::config::SockOffsets {}
    unsafe impl aya::Pod for super::config::SkbOffsets {}
    unsafe impl aya::Pod for super::config::DropConfig {}
    unsafe impl aya::Pod for super::config::FilterFlags {}
    unsafe impl aya::Pod for super::config::DstKey {}
    unsafe impl aya::Pod for super::state::PendingConnect {}
    unsafe impl aya::Pod for super::state::ConnectingSlot {}
    unsafe impl aya::Pod for super::state::LiveConnection {}
    unsafe impl aya::Pod for super::record::CloseFigures {}
    unsafe impl aya::Pod for super::state::CountKey {}
    unsafe impl aya::Pod for super::state::CountValue {}
    unsafe impl aya::Pod for super::record::OutcomeRecord {}
    unsafe impl aya::Pod for super::outcome::OutcomeConfig {}
    unsafe impl aya::Pod for super::record::Identity {}
    unsafe impl aya::Pod for super::state::SynTrouble {}
    unsafe impl aya::Pod for super::config::TaskOffsets {}
    unsafe impl aya::Pod for super::config::ContainerPrefix {}
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
    fn families_round_trip_their_kernel_value() {
        for family in [Family::V4, Family::V6] {
            assert_eq!(Family::from_af(family.af()), Some(family));
        }
        assert_eq!(Family::from_af(7), None);
        assert_eq!(Family::V4.bit() & Family::V6.bit(), 0);
    }

    #[test]
    fn named_values_round_trip() {
        for &backend in Backend::ALL {
            assert_eq!(Backend::from_name(backend.name()), Some(backend));
        }
        for &by in CountBy::ALL {
            assert_eq!(CountBy::from_name(by.name()), Some(by));
        }
        assert_eq!(Backend::from_name("uprobe"), None);
    }
}
