//! DNS answers delivered to local sockets (`--names`), for userspace to learn which name gave
//! each address to each network namespace.
//!
//! A kprobe on `__udp_enqueue_schedule_skb(struct sock *sk, struct sk_buff *skb)`, where the
//! kernel queues a datagram to a UDP socket (IPv4 and IPv6 alike): a datagram from port 53 is
//! copied, as far as the kernel holds it in one piece and up to `DNS_PAYLOAD_MAX` bytes, into
//! a `DnsRecord` with the socket's network namespace. Parsing is userspace's (a maintained DNS
//! parser), so nothing here trusts the payload. Every other datagram costs three reads.

use aya_ebpf::{macros::kprobe, programs::ProbeContext};
use probe_common::DNS_PAYLOAD_MAX;

use crate::{SKB_OFFSETS, emit, sock, task};

/// The port DNS answers come from.
const DNS_PORT: u16 = 53;
/// A UDP header's length.
const UDP_HEADER: u64 = 8;

#[kprobe]
pub fn udp_delivered(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(skb)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        on_udp_delivered(sk, skb);
    }
    0
}

#[inline(always)]
fn on_udp_delivered(sk: u64, skb: u64) {
    let offsets = SKB_OFFSETS.load();
    let head: u64 = sock::read_kernel(skb, offsets.head);
    let transport: u16 = sock::read_kernel(skb, offsets.transport_header);
    let udp = head + u64::from(transport);
    // Source port, destination port, length, checksum: big-endian.
    let header: [u8; 8] = sock::read_kernel(udp, 0);
    if u16::from_be_bytes([header[0], header[1]]) != DNS_PORT {
        return;
    }
    let len = u16::from_be_bytes([header[4], header[5]]).saturating_sub(UDP_HEADER as u16);
    // The part of the packet in one piece: from `data`, its length less the fragments'.
    let data: u64 = sock::read_kernel(skb, offsets.data);
    let skb_len: u32 = sock::read_kernel(skb, offsets.len);
    let frags: u32 = sock::read_kernel(skb, offsets.data_len);
    let linear_end = data + u64::from(skb_len.saturating_sub(frags));
    let payload = udp + UDP_HEADER;
    let held = linear_end.saturating_sub(payload);
    let captured = u64::from(len).min(held).min(DNS_PAYLOAD_MAX as u64) as usize;
    emit::dns(task::netns(sk), len, |buffer| {
        // Bounded for the verifier: `captured` is at most DNS_PAYLOAD_MAX.
        if captured == 0 || captured > DNS_PAYLOAD_MAX {
            return 0;
        }
        let copied = unsafe {
            aya_ebpf::helpers::bpf_probe_read_kernel_buf(
                payload as *const u8,
                &mut buffer[..captured],
            )
        };
        if copied.is_ok() { captured as u16 } else { 0 }
    });
}
