//! Reading `struct sock` and `struct sockaddr` fields.
//!
//! `struct sock` offsets come from the running kernel's BTF (the `SOCK_OFFSETS` global); the
//! sockaddr layouts are UAPI and fixed. Every read goes through `bpf_probe_read_kernel`, so a bad
//! pointer yields zeroes rather than a verifier rejection.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use probe_common::{Family, RawAddr, SockOffsets, config::SOCK_HEAD_LEN};

use crate::filter::Destination;

/// TCP states (`include/net/tcp_states.h`) and `IPPROTO_TCP`.
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_CLOSE: i32 = 7;
pub const IPPROTO_TCP: u16 = 6;

/// Reads a `T` at `base + offset`, or zeroes if the kernel refuses.
#[inline(always)]
fn read_at<T: Default>(base: *const u8, offset: u32) -> T {
    // SAFETY: bpf_probe_read_kernel copies with fault handling; it never dereferences directly.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
        .unwrap_or_default()
}

/// How a hook's pointer arguments can be read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// kprobe: plain numbers to the verifier, read with `bpf_probe_read_kernel`.
    Untyped,
    /// fentry/fexit: pointers typed by the kernel's BTF, which a program may load from
    /// directly (the verifier checks each load against the type's layout; a fault reads as
    /// zero): a load instead of a helper call.
    Typed,
}

/// Destination address and port a connect call was asked for, from its `struct sockaddr_in` or
/// `struct sockaddr_in6` argument of `addr_len` bytes. The port sits at offset 2 in both; the
/// address at 4 (v4) or 8 (v6, after `sin6_flowinfo`). What lies beyond `addr_len` was never
/// copied from the caller (the kernel's buffer holds stale stack bytes there; the call then
/// fails with EINVAL): it reads as zero. Port and address come in one read (one helper call
/// fewer per connect).
#[inline(always)]
pub fn sockaddr_destination(
    uaddr: *const u8,
    addr_len: i32,
    family: Family,
    args: Args,
) -> Destination {
    // The UAPI layouts, up to the address.
    #[repr(C)]
    #[derive(Default)]
    struct SockaddrIn {
        family: u16,
        port: u16,
        addr: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    struct SockaddrIn6 {
        family: u16,
        port: u16,
        flowinfo: u32,
        addr: [u32; 4],
    }
    let (port, addr) = match family {
        // `struct sockaddr` is 16 bytes (sa_family, sa_data[14]): it holds sockaddr_in's
        // fields, so these loads pass the verifier, but not sockaddr_in6's address.
        Family::V4 if args == Args::Typed && addr_len >= 8 => {
            // SAFETY: a BTF-typed pointer: verifier-checked loads that cannot fault.
            unsafe {
                (
                    core::ptr::read_volatile(uaddr.add(2).cast::<u16>()),
                    RawAddr([
                        core::ptr::read_volatile(uaddr.add(4).cast::<u32>()),
                        0,
                        0,
                        0,
                    ]),
                )
            }
        }
        Family::V4 if addr_len >= 8 => {
            let sin = read_at::<SockaddrIn>(uaddr, 0);
            (sin.port, RawAddr([sin.addr, 0, 0, 0]))
        }
        Family::V6 if addr_len >= 24 => {
            let sin6 = read_at::<SockaddrIn6>(uaddr, 0);
            (sin6.port, RawAddr(sin6.addr))
        }
        _ if addr_len >= 4 => (read_at(uaddr, 2), RawAddr::default()),
        _ => (0, RawAddr::default()),
    };
    Destination {
        family,
        addr,
        port: u16::from_be(port),
    }
}

/// The pending error (`sk_err`, a positive errno; 0 if none) of the socket at `sk`: what ended a
/// handshake, set before the socket moves to CLOSE. One field, so the head is not read.
#[inline(always)]
pub fn error(sk: *const u8, offsets: SockOffsets) -> u32 {
    read_at::<i32>(sk, offsets.sk_err).unsigned_abs()
}

/// The socket's `tcp_sock.segs_in` and `total_retrans`: TCP segments received, and segments
/// retransmitted (in SYN_SENT, the SYN's retransmits). Read where a handshake ends
/// (`--outcome`): `segs_in` only when it failed.
#[inline(always)]
pub fn segs_in(sk: *const u8, offsets: SockOffsets) -> u32 {
    read_at(sk, offsets.segs_in)
}

/// See [`segs_in`].
#[inline(always)]
pub fn total_retrans(sk: *const u8, offsets: SockOffsets) -> u32 {
    read_at(sk, offsets.total_retrans)
}

/// The socket's `tcp_sock.segs_out`: segments sent (`--lifetime`).
#[inline(always)]
pub fn segs_out(sk: *const u8, offsets: SockOffsets) -> u32 {
    read_at(sk, offsets.segs_out)
}

/// The socket's `tcp_sock.bytes_acked`: payload bytes the peer acknowledged (`--lifetime`).
#[inline(always)]
pub fn bytes_acked(sk: *const u8, offsets: SockOffsets) -> u64 {
    read_at(sk, offsets.bytes_acked)
}

/// The socket's `tcp_sock.bytes_received`: payload bytes received (`--lifetime`).
#[inline(always)]
pub fn bytes_received(sk: *const u8, offsets: SockOffsets) -> u64 {
    read_at(sk, offsets.bytes_received)
}

/// The socket's `tcp_sock.srtt_us`: the smoothed round-trip time in microseconds, shifted
/// left by 3 (`--lifetime`).
#[inline(always)]
pub fn srtt_us(sk: *const u8, offsets: SockOffsets) -> u32 {
    read_at(sk, offsets.srtt_us)
}

/// The socket's `tcp_sock.write_seq`: the sequence number after the last byte queued
/// (`--lifetime`).
#[inline(always)]
pub fn write_seq(sk: *const u8, offsets: SockOffsets) -> u32 {
    read_at(sk, offsets.write_seq)
}

/// Whether the peer's FIN arrived (`tcp_fin` set `SOCK_DONE` in `sk_flags`; `--lifetime`).
#[inline(always)]
pub fn fin_received(sk: *const u8, offsets: SockOffsets) -> bool {
    let flags: u64 = read_at(sk, offsets.sk_flags);
    (flags >> (offsets.sock_done & 63)) & 1 != 0
}

/// The socket's local and remote ports (`inet_sport`, `skc_dport`): a followed connection's
/// socket still holds them at its close (`--lifetime`).
#[inline(always)]
pub fn ports(sk: *const u8, offsets: SockOffsets) -> (u16, u16) {
    let local: u16 = read_at(sk, offsets.inet_sport);
    let remote: u16 = read_at(sk, offsets.dport);
    (u16::from_be(local), u16::from_be(remote))
}

/// The socket's state now (`skc_state`, a `TCP_*` value).
#[inline(always)]
pub fn state(sk: *const u8, offsets: SockOffsets) -> i32 {
    i32::from(read_at::<u8>(sk, offsets.state))
}

/// The socket's `tcp_sock.snd_una`: in SYN_SENT, its connect's initial sequence number.
#[inline(always)]
pub fn snd_una(sk: *const u8, offsets: SockOffsets) -> u32 {
    read_at(sk, offsets.snd_una)
}

/// Reads a `T` at `base + offset` (a kernel address as a number), or zeroes: for the cause
/// hooks' reads of packets.
#[inline(always)]
pub fn read_kernel<T: Default>(base: u64, offset: u32) -> T {
    read_at(base as *const u8, offset)
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

    /// The source to report for a connect call on this socket that returned `ret`: what the
    /// kernel assigned after success; none (`0.0.0.0:0`, `[::]:0`) after a failure, whatever the
    /// kernel left behind (6.x kernels clear it on the way out, 5.10 keeps the routed address),
    /// so that every kernel gives the same answer.
    #[inline(always)]
    pub fn reported_source(&self, family: Family, ret: i32) -> (RawAddr, u16) {
        if ret == 0 {
            self.source(family)
        } else {
            (RawAddr::default(), 0)
        }
    }

    /// Where the kernel sends a connect to the wildcard address `to` (`0.0.0.0`, `::`): to the
    /// socket's bound IPv4 source if it has one, else to loopback (`ip_route_connect` and
    /// `tcp_v6_connect` do the same).
    #[inline(always)]
    pub fn resolve_wildcard(&self, to: Destination) -> Destination {
        let addr = match to.family {
            Family::V4 => {
                let bound = self.source(Family::V4).0;
                if bound.is_unspecified() {
                    RawAddr([u32::to_be(0x7f00_0001), 0, 0, 0])
                } else {
                    bound
                }
            }
            Family::V6 if self.source(Family::V6).0.is_v4_mapped() => {
                RawAddr([0, 0, u32::to_be(0xffff), u32::to_be(0x7f00_0001)])
            }
            Family::V6 => RawAddr([0, 0, 0, u32::to_be(1)]),
        };
        Destination { addr, ..to }
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

    /// `skc_state`: the socket's TCP state.
    #[inline(always)]
    pub fn state(&self) -> i32 {
        i32::from(self.head_field::<u8>(self.offsets.state))
    }

    /// `sk_protocol` (`IPPROTO_TCP` for TCP).
    #[inline(always)]
    pub fn protocol(&self) -> u16 {
        read_at(self.ptr, self.offsets.protocol)
    }

    /// Whether a segment (for a connecting socket: its SYN) ever went out on this socket since
    /// it was created or last disconnected (`tcp_sock.segs_out`).
    #[inline(always)]
    pub fn sent_anything(&self) -> bool {
        read_at::<u32>(self.ptr, self.offsets.segs_out) != 0
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
