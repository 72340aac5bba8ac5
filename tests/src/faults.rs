//! Ways for a test to make a connect fail for a known reason, with real sockets and packets:
//! SYNs that vanish ([`FullListener`]), SYNs dropped inside this host by a cgroup egress
//! program ([`EgressDrop`]), ICMP errors injected as a router on the way would send them
//! ([`send_icmp_unreachable`], [`send_icmp6_unreachable`], quoting a SYN captured with
//! [`Capture`]), and connects followed to their end as the client sees them ([`Ended`]).

use std::{
    io::Read as _,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{Cgroup, CgroupTree, tcp_info};

/// Sets the `IPPROTO_TCP` option `option` of `socket` to `value`.
pub fn set_tcp_option(socket: &Socket, option: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt on an open socket with a valid int and its size.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        ret,
        0,
        "option {option}: {}",
        std::io::Error::last_os_error()
    );
}

/// Port 0 of the loopback address of `dst`'s kind, to bind a client connecting to `dst` to
/// (a failed connect may leave no source to read after it).
pub fn any_loopback_port(dst: SocketAddr) -> SocketAddr {
    let ip: IpAddr = match dst.ip() {
        IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some() => {
            Ipv4Addr::LOCALHOST.to_ipv6_mapped().into()
        }
        IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, 0)
}

/// A port of `ip` nobody listens on: connects to it are refused (a reset). It stays bound
/// (without listening) as long as the socket lives, so that no client is given it as its own
/// source port (a connect from a port to itself succeeds).
pub fn closed_port(ip: IpAddr) -> (Socket, SocketAddr) {
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.bind(&addr.into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

/// A listener on `ip` that never accepts, its accept queue filled by connections it keeps: the
/// kernel drops any later SYN to it, so connects to it stay in SYN_SENT, retransmitting their
/// SYN, until the client gives up, closes them, or an ICMP error ends them.
pub struct FullListener {
    /// Where it listens.
    pub addr: SocketAddr,
    _server: Socket,
    _queued: Vec<TcpStream>,
}

impl FullListener {
    /// Listens on `ip` (a loopback address) and fills the accept queue.
    pub fn on(ip: IpAddr) -> FullListener {
        let addr = SocketAddr::new(ip, 0);
        let server = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        server.bind(&addr.into()).unwrap();
        // A backlog of 1 holds two connections (with 0, the first SYN would be answered with a
        // SYN cookie, which a kernel may lack).
        server.listen(1).unwrap();
        let addr = server.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // For a listener: connections waiting to be accepted, and the backlog.
            let info = tcp_info(&server);
            let (waiting, backlog) = (info.tcpi_unacked, info.tcpi_sacked);
            if waiting > backlog {
                break;
            }
            // One at a time: a SYN arriving while another handshake is half done could meet a
            // full SYN queue.
            if waiting as usize == queued.len() {
                queued.push(
                    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                        .expect("the listener answers until its accept queue is full"),
                );
            }
            assert!(
                Instant::now() < deadline,
                "the accept queue of {addr} never filled"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        FullListener {
            addr,
            _server: server,
            _queued: queued,
        }
    }
}

/// A non-blocking connect to `dst` from a socket bound to a loopback port (its source known
/// before the call), with `TCP_SYNCNT` set to `syncnt` if given; left in progress.
pub fn start_connect(dst: SocketAddr, syncnt: Option<i32>) -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
    socket.bind(&any_loopback_port(dst).into()).unwrap();
    if let Some(n) = syncnt {
        set_tcp_option(&socket, libc::TCP_SYNCNT, n);
    }
    socket.set_nonblocking(true).unwrap();
    let e = socket.connect(&dst.into()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINPROGRESS), "{e}");
    let src = crate::unmapped(socket.local_addr().unwrap().as_socket().unwrap());
    (socket, src)
}

/// The kernel's TCP_ESTABLISHED and TCP_CLOSE (`tcpi_state`).
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;

/// How a connect ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    /// Its error (`SO_ERROR`), `None` if it came up.
    pub errno: Option<i32>,
    /// How many times its SYN was retransmitted (`tcpi_total_retrans` once it ended).
    pub retransmits: u32,
}

/// Waits (up to `limit`) until `socket`'s connect has ended: established, or back in CLOSE.
/// The retransmissions are read before the error is taken (a blocking connect that fails
/// disconnects the socket, which clears them: hence a non-blocking one); the error only once
/// the state is final, which the kernel sets after the transition's tracepoint ran.
pub fn wait_for_the_end(socket: &Socket, limit: Duration) -> Ended {
    let deadline = Instant::now() + limit;
    let info = loop {
        let info = tcp_info(socket);
        if matches!(info.tcpi_state, TCP_ESTABLISHED | TCP_CLOSE) {
            break info;
        }
        assert!(Instant::now() < deadline, "the connect never ended");
        std::thread::sleep(Duration::from_millis(10));
    };
    Ended {
        errno: socket
            .take_error()
            .unwrap()
            .map(|e| e.raw_os_error().unwrap()),
        retransmits: info.tcpi_total_retrans,
    }
}

/// Waits until the SYN of `socket`'s connect in progress has been retransmitted `n` times.
pub fn wait_for_retransmits(socket: &Socket, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tcp_info(socket).tcpi_total_retrans < n {
        assert!(Instant::now() < deadline, "fewer than {n} retransmissions");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `socket`'s connect has ended, then takes its error (see [`wait_for_the_end`]).
pub fn error_once_closed(socket: &Socket) -> Option<i32> {
    wait_for_the_end(socket, Duration::from_secs(5)).errno
}

/// A raw socket receiving a copy of every TCP packet delivered on this host (loopback's
/// included), opened before a connect so that it sees its first SYN.
pub struct Capture {
    socket: Socket,
    v6: bool,
}

impl Capture {
    /// Captures TCP over IPv4, or over IPv6.
    pub fn tcp(v6: bool) -> Capture {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::TCP)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Capture { socket, v6 }
    }

    /// The first SYN from `src` to `dst` captured, as an ICMP error quotes it: its IP header
    /// and TCP header (of which the kernel checks the ports and sequence number). A raw IPv6
    /// socket receives no IPv6 header: it is rebuilt from what is known.
    pub fn syn(&self, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut packet = [0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "no SYN {src} -> {dst} captured");
            let n = match (&self.socket).read(&mut packet) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => panic!("capture: {e}"),
            };
            let packet = &packet[..n];
            let found = if self.v6 {
                syn_of_v6(packet, src, dst)
            } else {
                syn_of_v4(packet, src, dst)
            };
            if let Some(quoted) = found {
                return quoted;
            }
        }
    }
}

/// Whether `tcp` (a TCP header at least) is a SYN without ACK from port `sport` to `dport`.
fn is_syn(tcp: &[u8], sport: u16, dport: u16) -> bool {
    let port = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    tcp.len() >= 20 && port(0) == sport && port(2) == dport && tcp[13] & 0x12 == 0x02
}

/// `packet` (an IPv4 packet) if it is the SYN from `src` to `dst`: its header and TCP header.
fn syn_of_v4(packet: &[u8], src: SocketAddr, dst: SocketAddr) -> Option<Vec<u8>> {
    let (IpAddr::V4(sip), IpAddr::V4(dip)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only: {src} -> {dst}");
    };
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    if packet[0] >> 4 != 4 || ihl < 20 || packet.len() < ihl + 20 {
        return None;
    }
    let tcp = &packet[ihl..];
    let ours = packet[9] == libc::IPPROTO_TCP as u8
        && packet[12..16] == sip.octets()
        && packet[16..20] == dip.octets()
        && is_syn(tcp, src.port(), dst.port());
    ours.then(|| packet[..ihl + 20].to_vec())
}

/// `tcp` (a TCP segment received on a raw IPv6 socket) if it is the SYN from `src` to `dst`:
/// behind the IPv6 header it came with.
fn syn_of_v6(tcp: &[u8], src: SocketAddr, dst: SocketAddr) -> Option<Vec<u8>> {
    let (IpAddr::V6(sip), IpAddr::V6(dip)) = (src.ip(), dst.ip()) else {
        panic!("IPv6 only: {src} -> {dst}");
    };
    // Both ends are on this host's loopback: only the ports tell connects apart.
    if !is_syn(tcp, src.port(), dst.port()) {
        return None;
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    let tcp = &tcp[..header_len.clamp(20, tcp.len())];
    // Version 6, no traffic class or flow label, payload length, next header TCP, hop limit.
    let mut quoted = vec![0x60, 0, 0, 0];
    quoted.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    quoted.extend_from_slice(&[libc::IPPROTO_TCP as u8, 64]);
    quoted.extend_from_slice(&sip.octets());
    quoted.extend_from_slice(&dip.octets());
    quoted.extend_from_slice(tcp);
    Some(quoted)
}

/// The Internet checksum (RFC 1071) of `bytes`, to store big-endian.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP destination unreachable (type 3) and the codes the tests send: host unreachable
/// (EHOSTUNREACH), port unreachable (ECONNREFUSED), administratively prohibited (EHOSTUNREACH).
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_HOST_UNREACH: u8 = 1;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_PKT_FILTERED: u8 = 13;

/// ICMPv6 destination unreachable (type 1) and its codes the tests send: administratively
/// prohibited (EACCES), address unreachable (EHOSTUNREACH), port unreachable (ECONNREFUSED).
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_ADM_PROHIBITED: u8 = 1;
pub const ICMPV6_ADDR_UNREACH: u8 = 3;
pub const ICMPV6_PORT_UNREACH: u8 = 4;

/// Sends to 127.0.0.1, as a router on the way would, an ICMP destination unreachable of `code`
/// quoting `quoted` (a packet's IPv4 header and at least 8 more bytes: [`Capture::syn`]).
/// tcp_v4_err ends a connect in SYN_SENT whose ports and sequence number it quotes.
pub fn send_icmp_unreachable(quoted: &[u8], code: u8) {
    // Type, code, checksum, 4 unused bytes, then the quote. The kernel builds the IPv4 header.
    let mut icmp = vec![ICMP_DEST_UNREACH, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    assert_eq!(raw.send_to(&icmp, &to.into()).unwrap(), icmp.len());
}

/// Sends to ::1 an ICMPv6 destination unreachable of `code` quoting `quoted` (an IPv6 header
/// and at least 8 more bytes: [`Capture::syn`]); tcp_v6_err ends a connect in SYN_SENT it
/// matches. The kernel computes an ICMPv6 raw socket's checksum (RFC 3542).
pub fn send_icmp6_unreachable(quoted: &[u8], code: u8) {
    let mut icmp = vec![ICMPV6_DEST_UNREACH, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let raw = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
    let to = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
    assert_eq!(raw.send_to(&icmp, &to.into()).unwrap(), icmp.len());
}

/// The errno a connect in SYN_SENT ends with on an ICMP (`v6`: ICMPv6) destination unreachable
/// of `code`: the kernel's icmp_err_convert and icmpv6_err_convert tables, for the codes above.
pub fn icmp_unreachable_errno(v6: bool, code: u8) -> i32 {
    match (v6, code) {
        (false, ICMP_HOST_UNREACH | ICMP_PKT_FILTERED) => libc::EHOSTUNREACH,
        (false, ICMP_PORT_UNREACH) => libc::ECONNREFUSED,
        (true, ICMPV6_ADM_PROHIBITED) => libc::EACCES,
        (true, ICMPV6_ADDR_UNREACH) => libc::EHOSTUNREACH,
        (true, ICMPV6_PORT_UNREACH) => libc::ECONNREFUSED,
        _ => panic!("no errno known for code {code} (v6: {v6})"),
    }
}

/// A connect from a new socket to `dst` (a [`FullListener`]: its SYN vanishes) ended by an
/// ICMP destination unreachable of `code` quoting its SYN, once the SYN has been retransmitted
/// `retransmits` times; returns its source and how it ended.
pub fn connect_ended_by_icmp(dst: SocketAddr, code: u8, retransmits: u32) -> (SocketAddr, Ended) {
    let v6 = dst.is_ipv6();
    let capture = Capture::tcp(v6);
    let (socket, src) = start_connect(dst, None);
    let syn = capture.syn(src, dst);
    drop(capture);
    wait_for_retransmits(&socket, retransmits);
    if v6 {
        send_icmp6_unreachable(&syn, code);
    } else {
        send_icmp_unreachable(&syn, code);
    }
    (src, wait_for_the_end(&socket, Duration::from_secs(5)))
}

/// bpf(2) commands, program and attach types (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_CGROUP_INET_EGRESS: u32 = 1;

/// `union bpf_attr`, as 32-bit words (every field used here is one or two of them); the
/// kernel accepts a larger attribute whose extra bytes are zero.
type BpfAttr = [u32; 32];

/// bpf(2) with `attr`: its (non-negative) result, or the error.
fn bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> std::io::Result<i32> {
    // SAFETY: the attribute is valid for its size; pointers in it point to live memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<BpfAttr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret as i32)
    }
}

/// Stores a user pointer in two words of an attribute (a `__aligned_u64`).
fn set_pointer(attr: &mut BpfAttr, at: usize, pointer: u64) {
    attr[at] = pointer as u32;
    attr[at + 1] = (pointer >> 32) as u32;
}

/// A cgroup v2 directory whose processes cannot send anything: a `BPF_PROG_TYPE_CGROUP_SKB`
/// program attached at `BPF_CGROUP_INET_EGRESS` drops every packet, inside this host (with
/// drop reason `BPF_CGROUP_EGRESS` since 5.18), as a local firewall would (systemd's
/// `IPAddressDeny=` is such a program). Their SYNs vanish: their connects time out. Dropping
/// it detaches the program and removes the cgroup (its processes must have exited).
pub struct EgressDrop {
    cgroup: Cgroup,
    dir_fd: OwnedFd,
    prog_fd: OwnedFd,
    // Dropped last: the directory is removed once the program is detached.
    _tree: CgroupTree,
}

impl EgressDrop {
    /// Makes the cgroup and attaches the program.
    pub fn new() -> EgressDrop {
        use std::os::unix::ffi::OsStrExt as _;
        let mut tree = CgroupTree::new(&format!("probe-egress-drop-{}", std::process::id()));
        let cgroup = tree.mkdir("denied");
        let path = std::ffi::CString::new(cgroup.dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: open(2) of a NUL-terminated path; the descriptor returned is ours.
        let dir_fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        assert!(
            dir_fd >= 0,
            "open {path:?}: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor, owned from here on.
        let dir_fd = unsafe { OwnedFd::from_raw_fd(dir_fd) };

        // Before 5.11 a program's memory counts against RLIMIT_MEMLOCK (64 KiB by default in
        // the VM): without lifting it, the load fails with EPERM there. Later kernels charge
        // the memory cgroup instead, and a container may forbid raising the hard limit: a
        // failure here is left to the load to report.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit(2) with a valid rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };

        // r0 = 0 (BPF_ALU64 | BPF_MOV | BPF_K); exit (BPF_JMP | BPF_EXIT): drop.
        let insns: [u64; 2] = [0xb7, 0x95];
        let license = c"GPL";
        let mut attr: BpfAttr = [0; 32];
        attr[0] = BPF_PROG_TYPE_CGROUP_SKB;
        attr[1] = insns.len() as u32;
        set_pointer(&mut attr, 2, insns.as_ptr() as u64);
        set_pointer(&mut attr, 4, license.as_ptr() as u64);
        // prog_name (at byte 48), then expected_attach_type (at byte 68).
        attr[12] = u32::from_ne_bytes(*b"drop");
        attr[17] = BPF_CGROUP_INET_EGRESS;
        let prog_fd = bpf(BPF_PROG_LOAD, &mut attr)
            .unwrap_or_else(|e| panic!("BPF_PROG_LOAD (cgroup_skb): {e}"));
        // SAFETY: a new descriptor, owned from here on.
        let prog_fd = unsafe { OwnedFd::from_raw_fd(prog_fd) };

        let mut attr: BpfAttr = [0; 32];
        attr[0] = dir_fd.as_raw_fd() as u32;
        attr[1] = prog_fd.as_raw_fd() as u32;
        attr[2] = BPF_CGROUP_INET_EGRESS;
        bpf(BPF_PROG_ATTACH, &mut attr)
            .unwrap_or_else(|e| panic!("BPF_PROG_ATTACH to {:?}: {e}", cgroup.dir));
        EgressDrop {
            cgroup,
            dir_fd,
            prog_fd,
            _tree: tree,
        }
    }

    /// The cgroup (`connect-once --cgroup DIR` moves itself into it).
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// The program's id.
    pub fn prog_id(&self) -> u32 {
        // bpf_prog_info starts with type and id.
        let mut info = [0u32; 2];
        let mut attr: BpfAttr = [0; 32];
        attr[0] = self.prog_fd.as_raw_fd() as u32;
        attr[1] = size_of::<[u32; 2]>() as u32;
        set_pointer(&mut attr, 2, info.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).unwrap();
        info[1]
    }

    /// The ids of the programs attached at the cgroup's egress.
    pub fn attached(&self) -> Vec<u32> {
        let mut ids = [0u32; 8];
        let mut attr: BpfAttr = [0; 32];
        attr[0] = self.dir_fd.as_raw_fd() as u32;
        attr[1] = BPF_CGROUP_INET_EGRESS;
        set_pointer(&mut attr, 4, ids.as_mut_ptr() as u64);
        attr[6] = ids.len() as u32;
        bpf(BPF_PROG_QUERY, &mut attr).unwrap();
        ids[..attr[6] as usize].to_vec()
    }
}

impl Default for EgressDrop {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EgressDrop {
    fn drop(&mut self) {
        let mut attr: BpfAttr = [0; 32];
        attr[0] = self.dir_fd.as_raw_fd() as u32;
        attr[1] = self.prog_fd.as_raw_fd() as u32;
        attr[2] = BPF_CGROUP_INET_EGRESS;
        if let Err(e) = bpf(BPF_PROG_DETACH, &mut attr) {
            eprintln!(
                "cannot detach the egress program of {:?}: {e}",
                self.cgroup.dir
            );
        }
        // The descriptors close, then the tree removes the directory.
    }
}

/// Whether a BPF program of id `id` is still loaded.
pub fn bpf_prog_loaded(id: u32) -> bool {
    let mut attr: BpfAttr = [0; 32];
    attr[0] = id;
    match bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) {
        Ok(fd) => {
            // SAFETY: a new descriptor, closed at once.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            true
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
        Err(e) => panic!("BPF_PROG_GET_FD_BY_ID {id}: {e}"),
    }
}

/// What `connect-once --syncnt N ADDR` printed: `<src> <dst> errno=<E|0> retrans=<N>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectEnded {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ended: Ended,
}

impl ConnectEnded {
    /// The line connect-once prints for a connect from `src` to `dst` that ended so.
    pub fn line(src: SocketAddr, dst: SocketAddr, ended: Ended) -> String {
        format!(
            "{src} {dst} errno={} retrans={}",
            ended.errno.unwrap_or(0),
            ended.retransmits
        )
    }

    /// Parses [`ConnectEnded::line`].
    pub fn parse(line: &str) -> Option<ConnectEnded> {
        let mut words = line.split_whitespace();
        let src = words.next()?.parse().ok()?;
        let dst = words.next()?.parse().ok()?;
        let errno: i32 = words.next()?.strip_prefix("errno=")?.parse().ok()?;
        let retransmits = words.next()?.strip_prefix("retrans=")?.parse().ok()?;
        if words.next().is_some() {
            return None;
        }
        Some(ConnectEnded {
            src,
            dst,
            ended: Ended {
                errno: (errno != 0).then_some(errno),
                retransmits,
            },
        })
    }
}
