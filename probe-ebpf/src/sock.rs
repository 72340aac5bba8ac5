//! Reading `struct sock` and `struct sockaddr` fields.
//!
//! `struct sock` offsets come from the running kernel's BTF (the `SOCK_OFFSETS` global); the
//! sockaddr layouts are UAPI and fixed. Every read goes through `bpf_probe_read_kernel`, so a bad
//! pointer yields zeroes rather than a verifier rejection.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use probe_common::{AF_INET, AF_INET6, RawAddr, SockOffsets};

/// Reads a `T` at `base + offset`, or zeroes if the kernel refuses.
#[inline(always)]
fn read_at<T: Default>(base: *const u8, offset: u32) -> T {
    // SAFETY: bpf_probe_read_kernel copies with fault handling; it never dereferences directly.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
        .unwrap_or_default()
}

/// Reads an address of `family` at `base + offset`.
#[inline(always)]
fn read_addr(base: *const u8, offset: u32, family: u16) -> RawAddr {
    if family == AF_INET {
        RawAddr([read_at(base, offset), 0, 0, 0])
    } else {
        RawAddr(read_at(base, offset))
    }
}

/// Destination address and port a connect call was asked for, from its `struct sockaddr_in` or
/// `struct sockaddr_in6` argument. The port sits at offset 2 in both; the address at 4 (v4) or
/// 8 (v6, after `sin6_flowinfo`).
#[inline(always)]
pub fn sockaddr_destination(uaddr: *const u8, family: u16) -> (RawAddr, u16) {
    let port: u16 = read_at(uaddr, 2);
    let addr_offset = if family == AF_INET { 4 } else { 8 };
    (read_addr(uaddr, addr_offset, family), u16::from_be(port))
}

/// Source address and port the kernel assigned to `sk` (valid once `tcp_v*_connect` returned).
#[inline(always)]
pub fn sock_source(sk: *const u8, offsets: &SockOffsets, family: u16) -> (RawAddr, u16) {
    let addr_offset = if family == AF_INET {
        offsets.rcv_saddr
    } else {
        offsets.v6_rcv_saddr
    };
    // skc_num is already in host order, unlike skc_dport.
    (read_addr(sk, addr_offset, family), read_at(sk, offsets.num))
}

/// Destination address the kernel settled on for `sk`: it resolves a wildcard destination
/// (`0.0.0.0`, `::`) to loopback, so after a successful call this beats the sockaddr's.
#[inline(always)]
pub fn sock_destination(sk: *const u8, offsets: &SockOffsets, family: u16) -> RawAddr {
    let addr_offset = if family == AF_INET {
        offsets.daddr
    } else {
        offsets.v6_daddr
    };
    read_addr(sk, addr_offset, family)
}

/// Family, destination address and destination port of a connecting `sk`. An IPv6 socket
/// connecting to an IPv4-mapped address went through tcp_v4_connect: it is reported as IPv4,
/// from the IPv4 fields that call filled in.
#[inline(always)]
pub fn sock_connection(sk: *const u8, offsets: &SockOffsets) -> (u16, RawAddr, u16) {
    let mut family: u16 = read_at(sk, offsets.family);
    if family == AF_INET6 {
        let v6 = sock_destination(sk, offsets, AF_INET6);
        // ::ffff:a.b.c.d is words 0, 0, be(0xffff), a.b.c.d.
        if v6.0[0] == 0 && v6.0[1] == 0 && v6.0[2] == u32::to_be(0xffff) {
            family = AF_INET;
        } else {
            let dport: u16 = read_at(sk, offsets.dport);
            return (family, v6, u16::from_be(dport));
        }
    }
    let dport: u16 = read_at(sk, offsets.dport);
    (
        family,
        sock_destination(sk, offsets, AF_INET),
        u16::from_be(dport),
    )
}
