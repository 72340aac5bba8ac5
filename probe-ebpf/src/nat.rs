//! The real destination behind a destination NAT (`--nat`): a connect's SYN, as it is queued to
//! its device after the netfilter hooks rewrote it, compared with its socket's destination.
//!
//! The raw tracepoint `net:net_dev_queue(struct sk_buff *skb)` runs for every packet a device
//! is given. A packet of a TCP socket in SYN_SENT is its connect's SYN (or a retransmit); if
//! its IP destination or TCP port differ from the socket's, a DNAT (kube-proxy's iptables or
//! nftables rules, a published port, an OUTPUT `dnat` rule) sent it elsewhere, and a
//! `NatRecord` says where. Any other packet costs a read of its socket pointer and, if it has
//! one, of the socket's head. IPVS, which forwards without rewriting in these hooks, is not
//! seen.
//!
//! A packet without a socket is being forwarded (a container's, from its veth): its
//! connection's conntrack entry says whether a DNAT on this host's PREROUTING (kube-proxy's
//! rules for a pod's connect to a Service) sent it elsewhere. Only the packet that opens a
//! TCP connection (conntrack's `IP_CT_NEW`, a SYN) is looked at: any other costs a read of its
//! `_nfct`.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use probe_common::{AF_INET, AF_INET6, Family, RawAddr, config::SkbOffsets, config::ct_tuple};

use crate::{
    SKB_OFFSETS, SOCK_OFFSETS, emit,
    sock::{self, IPPROTO_TCP, Sock, TCP_SYN_SENT},
    task,
};

/// TCP header flags.
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// The low bits of `skb->_nfct` (`NFCT_INFOMASK`) hold the packet's conntrack state, the rest
/// the `struct nf_conn *`.
const NFCT_INFOMASK: u64 = 7;
/// `IP_CT_NEW`: the packet opens its connection (for TCP, a SYN, or its retransmit).
const IP_CT_NEW: u64 = 2;

#[raw_tracepoint(tracepoint = "net_dev_queue")]
pub fn packet_queued(ctx: RawTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    on_packet_queued(skb);
    0
}

#[inline(always)]
fn on_packet_queued(skb: u64) {
    let offsets = SKB_OFFSETS.load();
    let sk: u64 = sock::read_kernel(skb, offsets.sk);
    if sk == 0 {
        forwarded(skb, &offsets);
        return;
    }
    let socket = Sock::read(sk as *const u8, SOCK_OFFSETS.load());
    if socket.state() != TCP_SYN_SENT || socket.protocol() != IPPROTO_TCP {
        return;
    }
    let to = socket.connection();
    let head: u64 = sock::read_kernel(skb, offsets.head);
    let network: u16 = sock::read_kernel(skb, offsets.network_header);
    let transport: u16 = sock::read_kernel(skb, offsets.transport_header);
    let ip = head + u64::from(network);
    // The packet must be the socket's own SYN, not one that wraps it (a tunnel's or IPsec's
    // outer packet, queued again with the socket still attached): its IP version the
    // family's, its protocol TCP (IPv4's byte 9, IPv6's next header at byte 6), its TCP
    // source port the socket's and its flags SYN without ACK.
    let first: u8 = sock::read_kernel(ip, 0);
    let protocol: u8 = match to.family {
        Family::V4 if first >> 4 == 4 => sock::read_kernel(ip, 9),
        Family::V6 if first >> 4 == 6 => sock::read_kernel(ip, 6),
        _ => return,
    };
    // Source port, destination port (big-endian), and byte 13: the flags.
    let tcp: [u8; 14] = sock::read_kernel(head + u64::from(transport), 0);
    let (saddr, sport) = socket.source(to.family);
    if protocol != IPPROTO_TCP as u8
        || u16::from_be_bytes([tcp[0], tcp[1]]) != sport
        || tcp[13] & (TCP_SYN | TCP_ACK) != TCP_SYN
    {
        return;
    }
    let nat_dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    // The IP destination: at byte 16 of an IPv4 header, 24 of an IPv6 one.
    let nat_daddr = match to.family {
        Family::V4 => RawAddr([sock::read_kernel(ip, 16), 0, 0, 0]),
        Family::V6 => sock::read_kernel(ip, 24),
    };
    if nat_daddr == to.addr && nat_dport == to.port {
        return;
    }
    emit::nat(task::netns(sk), &to, (saddr, sport), (nat_daddr, nat_dport));
}

/// A packet forwarded through this host: if it opens a TCP connection whose conntrack entry's
/// reply comes from elsewhere than where the client sent it (a DNAT on the way in), reports the
/// client's endpoints and where the SYN went. The client's network namespace is not known
/// here: the record's is 0, and userspace joins it to a connect by endpoints alone.
#[inline(always)]
fn forwarded(skb: u64, offsets: &SkbOffsets) {
    if offsets.nfct == 0 {
        return;
    }
    let nfct: u64 = sock::read_kernel(skb, offsets.nfct);
    if nfct & NFCT_INFOMASK != IP_CT_NEW {
        return;
    }
    let ct = nfct & !NFCT_INFOMASK;
    let original = ct + u64::from(offsets.ct_original);
    let protonum: u8 = sock::read_kernel(original, ct_tuple::PROTONUM);
    if protonum != IPPROTO_TCP as u8 {
        return;
    }
    let family = match sock::read_kernel::<u16>(original, ct_tuple::L3NUM) {
        AF_INET => Family::V4,
        AF_INET6 => Family::V6,
        _ => return,
    };
    let reply = ct + u64::from(offsets.ct_reply);
    let (daddr, dport) = endpoint(original, ct_tuple::DST_ADDR, ct_tuple::DST_PORT, family);
    let (nat_daddr, nat_dport) = endpoint(reply, ct_tuple::SRC_ADDR, ct_tuple::SRC_PORT, family);
    if nat_daddr == daddr && nat_dport == dport {
        return;
    }
    let source = endpoint(original, ct_tuple::SRC_ADDR, ct_tuple::SRC_PORT, family);
    let to = crate::filter::Destination {
        family,
        addr: daddr,
        port: dport,
    };
    emit::nat(0, &to, source, (nat_daddr, nat_dport));
}

/// An address and port of a conntrack tuple (the port in host order; an IPv4 address in the
/// first word, as every record holds one).
#[inline(always)]
fn endpoint(tuple: u64, addr: u32, port: u32, family: Family) -> (RawAddr, u16) {
    let addr = match family {
        Family::V4 => RawAddr([sock::read_kernel(tuple, addr), 0, 0, 0]),
        Family::V6 => sock::read_kernel(tuple, addr),
    };
    (addr, u16::from_be(sock::read_kernel(tuple, port)))
}
