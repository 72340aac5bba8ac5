//! Reading `struct sock` and `struct sockaddr` fields.
//!
//! `struct sock` offsets come from the running kernel's BTF (the `SOCK_OFFSETS` global); the
//! sockaddr layouts are UAPI and fixed. Every read goes through `bpf_probe_read_kernel`, so a bad
//! pointer yields zeroes rather than a verifier rejection.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use probe_common::{Family, RawAddr, SockOffsets, config::SOCK_HEAD_LEN};

use crate::filter::Destination;

/// Reads a `T` at `base + offset`, or zeroes if the kernel refuses.
#[inline(always)]
fn read_at<T: Default>(base: *const u8, offset: u32) -> T {
    // SAFETY: bpf_probe_read_kernel copies with fault handling; it never dereferences directly.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
        .unwrap_or_default()
}

/// Reads an address of `family` at `base + offset`.
#[inline(always)]
fn read_addr(base: *const u8, offset: u32, family: Family) -> RawAddr {
    match family {
        Family::V4 => RawAddr([read_at(base, offset), 0, 0, 0]),
        Family::V6 => RawAddr(read_at(base, offset)),
    }
}

/// Destination address and port a connect call was asked for, from its `struct sockaddr_in` or
/// `struct sockaddr_in6` argument. The port sits at offset 2 in both; the address at 4 (v4) or
/// 8 (v6, after `sin6_flowinfo`).
#[inline(always)]
pub fn sockaddr_destination(uaddr: *const u8, family: Family) -> Destination {
    let port: u16 = read_at(uaddr, 2);
    let addr_offset = match family {
        Family::V4 => 4,
        Family::V6 => 8,
    };
    Destination {
        family,
        addr: read_addr(uaddr, addr_offset, family),
        port: u16::from_be(port),
    }
}

/// A socket being connected. Its first [`SOCK_HEAD_LEN`] bytes, which hold every IPv4 field of
/// `sock_common` (userspace checks this against BTF), are read with one helper call instead of
/// one per field; only the IPv6 addresses, further in, are read separately.
pub struct Sock {
    ptr: *const u8,
    head: [u64; SOCK_HEAD_LEN / 8],
    offsets: SockOffsets,
}

impl Sock {
    #[inline(always)]
    pub fn read(ptr: *const u8, offsets: SockOffsets) -> Self {
        Self {
            ptr,
            head: read_at(ptr, 0),
            offsets,
        }
    }

    /// A field of the head at `offset` (a load-time constant, so the verifier sees the bound).
    #[inline(always)]
    fn head_field<T: Copy + Default>(&self, offset: u32) -> T {
        if offset as usize + core::mem::size_of::<T>() > SOCK_HEAD_LEN {
            return T::default();
        }
        // SAFETY: in bounds of `head` (checked above); read_unaligned copes with any offset.
        unsafe {
            self.head
                .as_ptr()
                .cast::<u8>()
                .add(offset as usize)
                .cast::<T>()
                .read_unaligned()
        }
    }

    #[inline(always)]
    fn addr(&self, v4_offset: u32, v6_offset: u32, family: Family) -> RawAddr {
        match family {
            Family::V4 => RawAddr([self.head_field(v4_offset), 0, 0, 0]),
            Family::V6 => RawAddr(read_at(self.ptr, v6_offset)),
        }
    }

    /// Source address and port the kernel assigned (valid once the source is chosen, inside
    /// `tcp_v*_connect`). `skc_num` is in host order, unlike `skc_dport`.
    #[inline(always)]
    pub fn source(&self, family: Family) -> (RawAddr, u16) {
        let o = &self.offsets;
        (
            self.addr(o.rcv_saddr, o.v6_rcv_saddr, family),
            self.head_field(o.num),
        )
    }

    /// Destination address the kernel settled on: it resolves a wildcard destination
    /// (`0.0.0.0`, `::`) to loopback, so after a successful call this beats the sockaddr's.
    #[inline(always)]
    pub fn destination(&self, family: Family) -> RawAddr {
        self.addr(self.offsets.daddr, self.offsets.v6_daddr, family)
    }

    /// The destination to report for a connect call on this socket that returned `ret`: the
    /// socket's own address after success, the `requested` one after a failure (which may have
    /// cleared the socket's).
    #[inline(always)]
    pub fn reported_destination(&self, requested: Destination, ret: i32) -> Destination {
        if ret == 0 {
            Destination {
                addr: self.destination(requested.family),
                ..requested
            }
        } else {
            requested
        }
    }

    /// Family, destination address and port of a connecting socket. An IPv6 socket connecting
    /// to an IPv4-mapped address went through tcp_v4_connect: it is reported as IPv4, from the
    /// IPv4 fields that call filled in.
    #[inline(always)]
    pub fn connection(&self) -> Destination {
        let port = u16::from_be(self.head_field(self.offsets.dport));
        if self.family() == Family::V6.af() {
            let addr = self.destination(Family::V6);
            if !addr.is_v4_mapped() {
                return Destination {
                    family: Family::V6,
                    addr,
                    port,
                };
            }
        }
        Destination {
            family: Family::V4,
            addr: self.destination(Family::V4),
            port,
        }
    }

    /// `skc_family` (`AF_INET`, `AF_INET6`): `AF_INET6` for an IPv6 socket even inside
    /// tcp_v4_connect (IPv4-mapped).
    #[inline(always)]
    pub fn family(&self) -> u16 {
        self.head_field(self.offsets.family)
    }

    /// `sk_protocol` (`IPPROTO_TCP` for TCP).
    #[inline(always)]
    pub fn protocol(&self) -> u16 {
        read_at(self.ptr, self.offsets.protocol)
    }

    /// Source address and port as `struct inet_sock` keeps them: still set while a connecting
    /// socket is being closed (refused), when `skc_num` is already cleared; 0 if no source port
    /// was ever assigned.
    #[inline(always)]
    pub fn bound_source(&self, family: Family) -> (RawAddr, u16) {
        let port: u16 = read_at(self.ptr, self.offsets.inet_sport);
        let (addr, _) = self.source(family);
        (addr, u16::from_be(port))
    }
}
