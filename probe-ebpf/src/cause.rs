//! Why a connect failed, beyond what its socket says (`--outcome`): what happened to a socket in
//! SYN_SENT that only the packet path sees, noted in `SYN_TROUBLE` for the completion path
//! (`outcome::left_syn_sent`), which reads it only when a handshake fails.
//!
//! - [`icmp_error`]: a kprobe on `ip_icmp_error` and `ipv6_icmp_error`, which `tcp_v4_err` /
//!   `tcp_v6_err` call for a socket in SYN_SENT with the ICMP error that is about to end its
//!   connect (whether or not the socket asked for `IP_RECVERR`, since Linux 5.8; a kernel that
//!   made the call depend on it would lose the details, which the VM tests would show): its
//!   type, code and sender.
//!   Attached where the kernel has kprobes, whatever the backend; without, an ICMP error is
//!   still told from a reset and a timeout by the socket's own counters
//!   (`Cause::of_handshake`), without type and code.
//! - [`skb_dropped`]: the `skb:kfree_skb` tracepoint (raw), where the kernel gives a drop
//!   reason (5.17+): a packet of a socket in SYN_SENT (its SYN) freed as dropped inside this
//!   host, a netfilter or cgroup firewall's drop, a full queue, a neighbour that never
//!   answered... (`SKB_DROP_REASON_NOT_SPECIFIED` aside: drivers free sent packets so too).
//!
//! Both note any TCP socket in SYN_SENT, overwriting its previous note, with its connect's
//! initial sequence number: the first SYN goes out (and may be dropped) inside the connect
//! call, before the kprobe and fentry backends track the connect at the call's return, so a
//! check of the tracked connects would miss it. A note costs a map update, on drops and ICMP
//! errors only; the LRU bounds what a local user can make it hold (their own failing
//! handshakes evict others' notes, whose causes then fall back to what the socket says).

use aya_ebpf::{
    macros::{kprobe, raw_tracepoint},
    programs::{ProbeContext, RawTracePointContext},
};
use probe_common::{RawAddr, Trouble, state::SynTrouble};

use crate::{
    CAUSE_HOOKS, DROPS, SKB_OFFSETS, SOCK_OFFSETS, SYN_TROUBLE,
    sock::{self, IPPROTO_TCP, Sock, TCP_SYN_SENT},
};

/// kprobe on `ip_icmp_error` and `ipv6_icmp_error(struct sock *sk, struct sk_buff *skb, int
/// err, __be16 port, u32 info, u8 *payload)`: `skb` is the ICMP error, its network header the
/// outer IP header (who sent it), its transport header the ICMP header.
#[kprobe]
pub fn icmp_error(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(skb)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        on_icmp_error(sk, skb);
    }
    0
}

#[inline(always)]
fn on_icmp_error(sk: u64, skb: u64) {
    if !connecting_socket(sk) {
        return;
    }
    let offsets = SKB_OFFSETS.load();
    let head: u64 = sock::read_kernel(skb, offsets.head);
    let network: u16 = sock::read_kernel(skb, offsets.network_header);
    let transport: u16 = sock::read_kernel(skb, offsets.transport_header);
    // Type and code, the first two bytes of both ICMP and ICMPv6 headers.
    let [icmp_type, icmp_code]: [u8; 2] = sock::read_kernel(head, u32::from(transport));
    let ip = head + u64::from(network);
    // The IP version, in the first byte's high nibble; the source at byte 12 (IPv4) or 8.
    let version = sock::read_kernel::<u8>(ip, 0) >> 4;
    let (flags, icmp_from) = if version == 6 {
        (
            Trouble::ICMP | Trouble::ICMP_V6,
            sock::read_kernel::<RawAddr>(ip, 8),
        )
    } else {
        let v4: u32 = sock::read_kernel(ip, 12);
        (Trouble::ICMP, RawAddr([v4, 0, 0, 0]))
    };
    note(
        sk,
        Trouble {
            drop_reason: 0,
            icmp_type,
            icmp_code,
            flags,
            _pad: 0,
            icmp_from,
        },
    );
}

/// Raw tracepoint `skb:kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason
/// reason, ...)` (attached only where the third argument exists, 5.17+).
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn skb_dropped(ctx: RawTracePointContext) -> i32 {
    let (skb, reason): (u64, u64) = (ctx.arg(0), ctx.arg(2));
    let reason = reason as u32;
    if reason != DROPS.load().not_specified {
        on_dropped(skb, reason);
    }
    0
}

#[inline(always)]
fn on_dropped(skb: u64, reason: u32) {
    // The socket a packet being sent belongs to (none for most received packets).
    let sk: u64 = sock::read_kernel(skb, SKB_OFFSETS.load().sk);
    if sk == 0 || !connecting_socket(sk) {
        return;
    }
    let trouble = Trouble {
        drop_reason: reason,
        flags: Trouble::DROP,
        ..Trouble::NONE
    };
    note(sk, trouble);
}

/// Whether `sk` is a TCP socket in SYN_SENT.
#[inline(always)]
fn connecting_socket(sk: u64) -> bool {
    let socket = Sock::read(sk as *const u8, SOCK_OFFSETS.load());
    socket.state() == TCP_SYN_SENT && socket.protocol() == IPPROTO_TCP
}

/// Notes `trouble` as the current connect's of socket `sk`, with what was noted of that connect
/// before (a neighbour that never answers drops the SYN, then the kernel's own ICMP error ends
/// the connect: both are kept).
#[inline(always)]
fn note(sk: u64, trouble: Trouble) {
    let isn = sock::snd_una(sk as *const u8, SOCK_OFFSETS.load());
    if let Some(noted) = SYN_TROUBLE.get_ptr_mut(&sk) {
        // SAFETY: a value of the map, written field by field; the socket's hooks mostly run
        // under its lock (a drop freed later may race a note: the worst is a field of either).
        unsafe {
            if (*noted).isn == isn {
                let into = &mut (*noted).trouble;
                if trouble.flags & Trouble::DROP != 0 {
                    into.drop_reason = trouble.drop_reason;
                }
                if trouble.flags & Trouble::ICMP != 0 {
                    into.icmp_type = trouble.icmp_type;
                    into.icmp_code = trouble.icmp_code;
                    into.icmp_from = trouble.icmp_from;
                    into.flags &= !Trouble::ICMP_V6;
                }
                into.flags |= trouble.flags;
                return;
            }
        }
    }
    let value = SynTrouble {
        isn,
        _pad: 0,
        trouble,
    };
    let _ = SYN_TROUBLE.insert(&sk, &value, 0);
}

/// Whether userspace attached the ICMP hook (`CAUSE_HOOKS`).
#[inline(always)]
pub fn icmp_hooked() -> bool {
    CAUSE_HOOKS.get(0).is_some_and(|hooks| *hooks & 1 != 0)
}

/// The note of socket `sk`'s connect of initial sequence number `isn`, removed, if there is
/// one (a note of another ISN is an earlier connect's at the same address). Asked by the
/// completion path of a failed handshake only.
#[inline(always)]
pub fn take(sk: u64, isn: u32) -> Option<Trouble> {
    // SAFETY: a value of the map, copied at once.
    let noted = unsafe { SYN_TROUBLE.get(&sk) }.copied()?;
    let _ = SYN_TROUBLE.remove(&sk);
    (noted.isn == isn).then_some(noted.trouble)
}
