//! What userspace decides before loading: the load-time globals (constants to the verifier) and
//! the keys of the filter maps.

use crate::{Family, Named, RawAddr};

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
    /// `segs_out` of `struct tcp_sock` (`u32`): segments handed out by `__tcp_transmit_skb`,
    /// zero in a new socket (and again after `tcp_disconnect`) until a SYN really goes out, so
    /// the tracepoint backend tells a call that failed inside after SYN_SENT (nothing sent) from
    /// a connect that was refused, timed out or closed (its SYN went out).
    pub segs_out: u32,
    /// `sk_err` of `struct sock` (`int`): the error that ended a handshake (`--outcome`).
    pub sk_err: u32,
    /// `skc_state` (`unsigned char`, a TCP state): whether a connect call that returned is
    /// still in SYN_SENT (`--outcome`; a socket in repair mode is ESTABLISHED already).
    pub state: u32,
    /// `segs_in` of `struct tcp_sock` (`u32`): TCP segments received. A handshake that ended
    /// with a reset received one; one ended by an ICMP error received none (`--outcome`).
    pub segs_in: u32,
    /// `total_retrans` of `struct tcp_sock` (`u32`): segments retransmitted, which in SYN_SENT
    /// are the SYN's retransmits (`--outcome`; zeroed by `tcp_disconnect`).
    pub total_retrans: u32,
    /// `snd_una` of `struct tcp_sock` (`u32`): in SYN_SENT the connect's initial sequence
    /// number, which tells one connect of a socket address from another (`--outcome`).
    pub snd_una: u32,
    /// `bytes_acked` of `struct tcp_sock` (`u64`): payload bytes the peer acknowledged
    /// (`--lifetime`).
    pub bytes_acked: u32,
    /// `bytes_received` of `struct tcp_sock` (`u64`): payload bytes received (`--lifetime`).
    pub bytes_received: u32,
    /// `srtt_us` of `struct tcp_sock` (`u32`): the smoothed round-trip time in microseconds,
    /// shifted left by 3 (`--lifetime`).
    pub srtt_us: u32,
    /// `write_seq` of `struct tcp_sock` (`u32`): the sequence number after the last byte
    /// queued, the FIN included once sent; equal to `snd_una` when all of it was acknowledged
    /// (`--lifetime`: whether `bytes_acked` counts this side's FIN).
    pub write_seq: u32,
    /// `skc_flags` of `struct sock_common` (`sk_flags`, `unsigned long`), whose [`SockOffsets::sock_done`] bit
    /// `tcp_fin` sets when the peer's FIN arrives (`--lifetime`: whether `bytes_received`
    /// counts it).
    pub sk_flags: u32,
    /// The value of `SOCK_DONE` in `enum sock_flags` (a bit number of `sk_flags`).
    pub sock_done: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

/// Offsets of the `struct sk_buff` fields the cause hooks read (the `SKB_OFFSETS` global,
/// resolved from BTF like [`SockOffsets`]): bytes from the start of `struct sk_buff`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkbOffsets {
    /// `sk` (`struct sock *`): the socket a packet being sent belongs to.
    pub sk: u32,
    /// `head` (`unsigned char *`): the start of the buffer the header offsets count from.
    pub head: u32,
    /// `network_header` (`u16`): where the IP header is, from `head`.
    pub network_header: u32,
    /// `transport_header` (`u16`): where the ICMP header is in an ICMP error (the UDP header
    /// in a datagram), from `head`.
    pub transport_header: u32,
    /// `data` (`unsigned char *`): where the packet's data starts (`--names`).
    pub data: u32,
    /// `len` (`unsigned int`): the packet's length from `data`, its fragments included.
    pub len: u32,
    /// `data_len` (`unsigned int`): how much of `len` is in fragments, not after `data`.
    pub data_len: u32,
    /// `_nfct` (`unsigned long`): the packet's conntrack entry (`struct nf_conn *`) and, in
    /// its low bits, the packet's conntrack state (`--nat`: forwarded SYNs); 0 when the
    /// kernel's BTF has no conntrack (then forwarded SYNs are not looked at).
    pub nfct: u32,
    /// Where the original-direction tuple is in `struct nf_conn`
    /// (`tuplehash[IP_CT_DIR_ORIGINAL].tuple`): what the client sent.
    pub ct_original: u32,
    /// Where the reply-direction tuple is (`tuplehash[IP_CT_DIR_REPLY].tuple`): its source is
    /// where a DNAT sent the connection.
    pub ct_reply: u32,
}

/// The layout of `struct nf_conntrack_tuple`, the same on every kernel (a UAPI-shaped struct
/// that netlink mirrors): byte offsets from its start.
pub mod ct_tuple {
    /// `src.u3`: the source address (`union nf_inet_addr`, 16 bytes; IPv4 in the first 4).
    pub const SRC_ADDR: u32 = 0;
    /// `src.u.all`: the source port, big-endian.
    pub const SRC_PORT: u32 = 16;
    /// `src.l3num`: the address family (`AF_INET`, `AF_INET6`).
    pub const L3NUM: u32 = 18;
    /// `dst.u3`: the destination address.
    pub const DST_ADDR: u32 = 20;
    /// `dst.u.all`: the destination port, big-endian.
    pub const DST_PORT: u32 = 36;
    /// `dst.protonum`: the transport protocol.
    pub const PROTONUM: u32 = 38;
}

/// The drop-reason hook's settings (the `DROPS` global), from the kernel's BTF
/// (`enum skb_drop_reason`, Linux 5.17+).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropConfig {
    /// `SKB_DROP_REASON_NOT_SPECIFIED`: a free that says nothing of why (drivers free sent
    /// packets this way too), not noted.
    pub not_specified: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

/// Offsets of the task, pid, namespace and cgroup fields the kernel side reads for a record's
/// [`crate::Identity`] and for `--container` (the `TASK_OFFSETS` global, resolved from BTF like
/// [`SockOffsets`]). All are bytes from the start of the struct named.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.thread_pid` (`struct pid *`).
    pub thread_pid: u32,
    /// `task_struct.group_leader` (`struct task_struct *`).
    pub group_leader: u32,
    /// `task_struct.cgroups` (`struct css_set *`).
    pub cgroups: u32,
    /// `pid.level` (`unsigned int`: depth of the pid namespace the task lives in).
    pub pid_level: u32,
    /// `pid.numbers` (`struct upid[]`, one per level).
    pub pid_numbers: u32,
    /// Size of `struct upid`.
    pub upid_size: u32,
    /// `upid.nr` (`int`).
    pub upid_nr: u32,
    /// `upid.ns` (`struct pid_namespace *`).
    pub upid_ns: u32,
    /// `pid_namespace.ns.inum` (`unsigned int`).
    pub pidns_inum: u32,
    /// `sock_common.skc_net` (`possible_net_t`, whose only field is `struct net *net`).
    pub sk_net: u32,
    /// `net.ns.inum` (`unsigned int`).
    pub net_inum: u32,
    /// `css_set.dfl_cgrp` (`struct cgroup *`: the task's cgroup v2).
    pub dfl_cgrp: u32,
    /// `cgroup.kn` (`struct kernfs_node *`: its directory).
    pub cgroup_kn: u32,
    /// `kernfs_node.name` (`const char *`: the directory's name).
    pub kn_name: u32,
    /// `kernfs_node.parent` (`__parent` since Linux 6.15; `struct kernfs_node *`).
    pub kn_parent: u32,
}

/// One `--container` id: its first `len` hex digits (12 to 64, lowercase), which the leaf
/// directory of the caller's cgroup must name (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, or `<id>` itself; see [`CONTAINER_NAME_PREFIXES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerPrefix {
    /// Number of digits in `id` (0: an unused slot).
    pub len: u32,
    /// The digits, ASCII.
    pub id: [u8; 64],
}

impl ContainerPrefix {
    /// An unused slot.
    pub const EMPTY: ContainerPrefix = ContainerPrefix {
        len: 0,
        id: [0; 64],
    };
}

/// What a container runtime puts before the container id in the name of the container's cgroup
/// directory (systemd cgroup drivers; the cgroupfs drivers name it by the id alone): Docker,
/// Podman, CRI-O, containerd's CRI plugin. A `-conmon-` directory (Podman's and CRI-O's
/// monitor) is not the container: its digits follow `conmon-`, so no id prefix matches there.
pub const CONTAINER_NAME_PREFIXES: [&str; 4] = ["docker-", "libpod-", "crio-", "cri-containerd-"];

/// Bytes of a cgroup directory's name the kernel side reads for `--container`: the longest
/// prefix of [`CONTAINER_NAME_PREFIXES`], a whole id and the byte after it.
pub const CONTAINER_NAME_LEN: usize = 80;

/// Bytes at the start of `struct sock` that hold every IPv4 field of `sock_common` (`skc_daddr`,
/// `skc_rcv_saddr`, `skc_dport`, `skc_num`, `skc_family`); the kernel side reads them at once.
pub const SOCK_HEAD_LEN: usize = 24;

/// Flags of the in-kernel filters, set by userspace as the `FILTERS` global before loading. With
/// a flag clear, the verifier sees a constant and drops the map lookup altogether. Aligned to 8
/// bytes (padding explicit), so that every hook loads it in two words rather than byte by byte.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterFlags {
    /// Non-zero: only destination ports whose bit is set in `PORT_SET` are traced.
    pub ports: u8,
    /// Non-zero: only pids present in `PID_FILTER` are traced.
    pub pids: u8,
    /// The [`Family::bit`]s of the families traced (the per-family hooks are simply not
    /// attached for a family left out; the tcp_connect and tracepoint hooks check this).
    pub families: u8,
    /// Non-zero: only uids present in `UID_FILTER` are traced.
    pub uids: u8,
    /// The number of `CGROUP_FILTER` slots in use: only tasks in one of those cgroup (v2)
    /// directories or below are traced (0: no such filter).
    pub cgroups: u8,
    /// Non-zero: only tasks whose `comm` is present in `COMM_FILTER` are traced.
    pub comms: u8,
    /// Non-zero: only destinations inside a network of `DST_FILTER` are traced.
    pub destinations: u8,
    /// The number of `CONTAINERS` slots in use: only tasks whose cgroup names one of those
    /// containers are traced (0: no such filter).
    pub containers: u8,
    /// Non-zero: only sockets in a network namespace present in `NETNS_FILTER` are traced.
    pub netns: u8,
    pub _pad: [u8; 7],
}

impl FilterFlags {
    /// No filter: every connect of both families.
    pub const NONE: FilterFlags = FilterFlags {
        ports: 0,
        pids: 0,
        families: Family::V4.bit() | Family::V6.bit(),
        uids: 0,
        cgroups: 0,
        comms: 0,
        destinations: 0,
        containers: 0,
        netns: 0,
        _pad: [0; 7],
    };
}

/// 64-bit words of the `PORT_SET` bitmap: one bit per port, 0 to 65535.
pub const PORT_WORDS: usize = 65536 / 64;

/// A destination (or network) in the `DST_FILTER` LPM trie: the family in a word of its own,
/// then the address, so that one trie serves both families and an IPv6 network (even `::/0`)
/// never matches an IPv4 destination, nor the reverse. An IPv4-mapped IPv6 destination is an
/// IPv4 one (the kernel connects it through `tcp_v4_connect`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DstKey {
    /// `AF_INET` or `AF_INET6` in network byte order (the trie compares bytes in memory order).
    pub family: u32,
    /// The address (IPv4 in the first word, the rest zero).
    pub addr: RawAddr,
}

impl DstKey {
    /// Bits of the key before the address: a network of `prefix` bits is a trie entry of
    /// `FAMILY_BITS + prefix` bits, and a destination is looked up with all `FULL_BITS`.
    pub const FAMILY_BITS: u32 = 32;
    /// Bits of a whole key.
    pub const FULL_BITS: u32 = Self::FAMILY_BITS + 128;

    /// The key of a destination (or network) of `family` at `addr`.
    #[inline(always)]
    pub fn new(family: Family, addr: RawAddr) -> Self {
        DstKey {
            family: u32::from(family.af()).to_be(),
            addr,
        }
    }
}

/// What `--count` aggregates connects by. The `COUNT_BY` global holds `CountBy as u8`, or
/// [`CountBy::OFF`] when every connect is an event instead.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CountBy {
    /// Destination address and port.
    Destination = 1,
    /// Destination port only (the address is left zero in the key).
    Port = 2,
    /// The caller's cgroup (v2) only: the key's destination is left zero, its `cgroup_id` set.
    Cgroup = 3,
    /// The caller's container: counted by cgroup in the kernel (as [`CountBy::Cgroup`]), the
    /// cgroups of one container merged by userspace.
    Container = 4,
    /// The DNS name of the destination (and its port): the name is learned by userspace from
    /// DNS answers, so connects counted by name are events that userspace counts, never a
    /// `COUNT_BY` value (the kernel side reports them as with [`CountBy::OFF`]).
    Name = 5,
}

impl CountBy {
    /// The `COUNT_BY` value when not counting: every connect is an event in the ring buffer.
    pub const OFF: u8 = 0;
}

impl Named for CountBy {
    const ALL: &'static [Self] = &[
        CountBy::Destination,
        CountBy::Port,
        CountBy::Cgroup,
        CountBy::Container,
        CountBy::Name,
    ];

    fn name(self) -> &'static str {
        match self {
            CountBy::Destination => "destination",
            CountBy::Port => "port",
            CountBy::Cgroup => "cgroup",
            CountBy::Container => "container",
            CountBy::Name => "name",
        }
    }
}

impl core::fmt::Display for CountBy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
