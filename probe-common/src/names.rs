//! The names of the eBPF object's maps, globals and programs: userspace looks them up by these
//! constants, and the kernel side ties each of its items to its constant at compile time (see
//! `check_names!` in probe-ebpf), so renaming one side alone does not compile.
//!
//! Each constant's value is its own identifier, which is the item's name in the object.

macro_rules! names {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            #[allow(non_upper_case_globals)]
            pub const $name: &str = stringify!($name);
        )*
    };
}

/// Maps (`#[map]` statics of probe-ebpf).
pub mod map {
    names! {
        /// Ring buffer of records (kernel -> userspace).
        EVENTS,
        /// Per-CPU loss counters (`crate::state::counter`).
        COUNTERS,
        /// Connect calls between entry and return (kprobe backend).
        PENDING,
        /// Sockets between SYN_SENT and their next state (tracepoint backend; every backend
        /// with `--outcome`): an LRU hash (with BPF atomics, the overflow of the next).
        CONNECTING,
        /// The same with BPF atomics: an array of `crate::state::ConnectingSlot`.
        CONNECTING_SLOTS,
        /// Whether `CONNECTING` took any overflow of `CONNECTING_SLOTS` (kernel side only).
        CONNECTING_OVERFLOWED,
        /// Per-CPU room for building a record (kernel side only).
        RECORD_SCRATCH,
        /// IPv4-mapped connects between their inner and outer exit (fentry backend).
        MAPPED_INNER,
        /// Connects per key (`--count`, `--metrics`).
        CONNECT_COUNTS,
        /// `--pid` filter.
        PID_FILTER,
        /// `--uid` filter.
        UID_FILTER,
        /// `--cgroup` filter (a cgroup array: each directory and everything below it).
        CGROUP_FILTER,
        /// `--netns` filter.
        NETNS_FILTER,
        /// `--comm` filter.
        COMM_FILTER,
        /// `--dst` filter (LPM trie).
        DST_FILTER,
        /// What the cause hooks saw happen to sockets in SYN_SENT (`--outcome`): an LRU of
        /// `crate::state::SynTrouble` by socket address.
        SYN_TROUBLE,
        /// Which cause hooks userspace attached (`--outcome`): one `u32`, bit 0 the ICMP hook.
        CAUSE_HOOKS,
        /// Traced connections between ESTABLISHED and CLOSE (`--lifetime`): an LRU of
        /// `crate::state::LiveConnection` by socket address.
        LIVE,
        /// An open connection's `crate::CloseFigures`, written by `live_figures` (one entry).
        OPEN_FIGURES,
    }
}

/// Globals set by userspace before loading (constants to the verifier).
pub mod global {
    names! {
        /// `crate::SockOffsets` from BTF.
        SOCK_OFFSETS,
        /// `crate::FilterFlags`.
        FILTERS,
        /// `u8`: non-zero for `--format minimal` (entry hooks emit timestamp records).
        ENTRY_ONLY,
        /// `u64`: ring-buffer fill at which the kernel wakes the reader.
        WAKEUP_BYTES,
        /// `u8`: `crate::CountBy as u8`, or `CountBy::OFF`.
        COUNT_BY,
        /// `[u64; PORT_WORDS]`: the `--filter-port` bitmap.
        PORT_SET,
        /// `crate::OutcomeConfig` (`--outcome`, `--failed-only`, `--min-latency`).
        OUTCOME,
        /// `crate::config::TaskOffsets` from BTF (identity fields, `--container`).
        TASK_OFFSETS,
        /// `u8`: non-zero when records carry `crate::Identity`.
        IDENTITY,
        /// `u8`: non-zero when records carry the caller's uid and comm.
        CALLER_NAMES,
        /// `[crate::config::ContainerPrefix; MAX_CONTAINERS]`: the `--container` ids.
        CONTAINERS,
        /// `u8`: non-zero when `--count` keys carry the caller's cgroup id.
        COUNT_CGROUP,
        /// `crate::config::SkbOffsets` from BTF (the cause hooks).
        SKB_OFFSETS,
        /// `crate::config::DropConfig` from BTF (the drop-reason hook).
        DROPS,
        /// `u8`: non-zero when traced connections are followed to their close (`--lifetime`).
        LIFETIME,
    }
}

/// Programs (the hooks' function names in probe-ebpf).
pub mod program {
    names! {
        /// kprobe on tcp_v4_connect.
        tcp_v4_connect,
        /// kprobe on tcp_v6_connect.
        tcp_v6_connect,
        /// kretprobe on both connect functions.
        tcp_connect_return,
        /// kprobe on tcp_connect (`--successes-only`).
        tcp_connect,
        /// fentry on tcp_v4_connect (`--format minimal`).
        fentry_tcp_v4_connect,
        /// fentry on tcp_v6_connect (`--format minimal`).
        fentry_tcp_v6_connect,
        /// fexit on tcp_v4_connect.
        fexit_tcp_v4_connect,
        /// fexit on tcp_v6_connect.
        fexit_tcp_v6_connect,
        /// fentry on tcp_connect (`--successes-only`).
        fentry_tcp_connect,
        /// raw tracepoint sock:inet_sock_set_state.
        inet_sock_set_state,
        /// raw tracepoint sock:inet_sock_set_state, completions only (`--outcome` with the
        /// kprobe and fentry backends).
        connect_outcome,
        /// kprobe on ip_icmp_error and ipv6_icmp_error (`--outcome`: an ICMP error matched to
        /// a socket in SYN_SENT).
        icmp_error,
        /// raw tracepoint skb:kfree_skb (`--outcome`, 5.17+: a SYN dropped in this host).
        skb_dropped,
        /// kprobe on __udp_enqueue_schedule_skb (`--names`: DNS answers delivered to local
        /// sockets).
        udp_delivered,
        /// raw tracepoint net:net_dev_queue (`--nat`: a connect's SYN leaving for another
        /// destination than its socket's).
        packet_queued,
        /// kretprobe on inet_csk_accept (`--accept`: the connection a listener accepted, where
        /// the kernel cannot attach fexit programs).
        inet_csk_accept,
        /// fexit on inet_csk_accept(sk, flags, err, kern), before Linux 6.10 (`--accept`,
        /// where the kernel has BPF trampolines).
        fexit_inet_csk_accept,
        /// fexit on inet_csk_accept(sk, arg), Linux 6.10 and later (`--accept`).
        fexit_inet_csk_accept2,
        /// Never attached: run by userspace once detached (`BPF_PROG_TEST_RUN`) for each
        /// connection still in `LIVE`, to read its counters so far (`--lifetime`).
        live_figures,
    }
}
