//! Helpers for whole-system tests of probe-user: starting and stopping it ([`ProbeUser`]),
//! making real connects and recording what the client saw, and parsing probe-user's output.
//!
//! The tests run as root, one at a time. `cargo xtask test` runs them inside its VM on each
//! kernel of the matrix with each backend and, on a host without kprobes, natively too (in a
//! fresh network namespace, with the tracepoint backend and with plain probe-user).

use std::{
    io::{BufRead as _, BufReader, Read as _},
    mem::size_of,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Child, ChildStderr, Command, ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub mod dns;
pub mod faults;
pub mod netns;
pub mod otlp;

use probe_common::Backend;
use socket2::{Domain, Socket, Type};

/// The value after `flag` in `args` (`--cycles 2000`), parsed; for the helper binaries.
pub fn flag_value<T: std::str::FromStr>(args: &[String], flag: &str) -> Option<T> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1)?.parse().ok()
}

/// The probe-user binary under test (`$PROBE_USER`, else `probe-user` on `$PATH`).
pub fn probe_user() -> PathBuf {
    std::env::var_os("PROBE_USER")
        .map(PathBuf::from)
        .unwrap_or_else(|| "probe-user".into())
}

/// probe-user's names for its attach backends (`--attach <name>`, and in its banner).
pub const KPROBE: &str = Backend::Kprobe.name();
pub const FENTRY: &str = Backend::Fentry.name();
pub const TRACEPOINT: &str = Backend::Tracepoint.name();

/// The backend under test: `$PROBE_ATTACH` (passed to probe-user as `--attach`), else
/// [`auto_backend`].
pub fn backend() -> String {
    std::env::var("PROBE_ATTACH").unwrap_or_else(|_| auto_backend().into())
}

/// What `--attach auto` picks on the test kernels: fentry on the VM's Debian kernels (which
/// have BPF trampolines, and kprobes) except arm64's before 6.4 (kprobe: see
/// [`kernel_has_fentry`]), the tracepoint on this project's machines (which have neither).
pub fn auto_backend() -> &'static str {
    if !kernel_has_kprobes() {
        TRACEPOINT
    } else if kernel_has_fentry() {
        FENTRY
    } else {
        KPROBE
    }
}

/// Whether a test kernel that has kprobes can also attach fentry/fexit programs to kernel
/// functions. arm64 has BPF trampolines since Linux 6.0, but attaching one to a kernel function
/// needs ftrace direct calls, which arm64 has since 6.4: Debian's arm64 5.10 and 6.1 refuse
/// (ENOTSUPP), 6.12 attaches. x86_64 has both since 5.5.
pub fn kernel_has_fentry() -> bool {
    !cfg!(target_arch = "aarch64") || kernel_release() >= (6, 4)
}

/// Whether probe-user loads its eBPF object with BPF atomics here: the kernel's version has
/// them (5.12 on x86_64, 5.18 on arm64, as probe-user judges it).
pub fn kernel_has_atomics() -> bool {
    kernel_release()
        >= if cfg!(target_arch = "aarch64") {
            (5, 18)
        } else {
            (5, 12)
        }
}

/// The running kernel's (major, minor) version, from `/proc/sys/kernel/osrelease`.
pub fn kernel_release() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// Whether the running kernel can create kprobes (its perf `kprobe` PMU exists).
pub fn kernel_has_kprobes() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// One JSON object per line of `stdout` (`--format json`, or `--count --format json`).
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Runs probe-user with `args` and checks it exits with `code` after printing exactly
/// `expected` (one line) on stderr and nothing on stdout.
pub fn assert_one_line_error(args: &[&str], code: i32, expected: &str) {
    let out = run_probe_user(args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    assert_eq!(out.stderr, format!("{expected}\n"), "{args:?}");
    assert_eq!(out.stdout, "", "{args:?}");
}

/// Whether the backend under test uses kprobes (listed in `/sys/kernel/debug/kprobes/list`).
pub fn uses_kprobes() -> bool {
    backend() == KPROBE
}

/// Whether the backend under test reports connect calls that fail inside the kernel (the
/// tracepoint backend sees only calls that send a SYN).
pub fn reports_failed_calls() -> bool {
    backend() != TRACEPOINT
}

/// `--attach <backend>` if `$PROBE_ATTACH` is set, else nothing (probe-user's default, auto).
pub fn attach_args() -> Vec<String> {
    match std::env::var("PROBE_ATTACH") {
        Ok(backend) => vec!["--attach".into(), backend],
        Err(_) => Vec::new(),
    }
}

/// A probe-user command with the backend under test.
pub fn probe_user_command() -> Command {
    let mut cmd = Command::new(probe_user());
    cmd.args(attach_args());
    cmd
}

/// What probe-user printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running probe-user process (the CLI under test), its output piped here.
pub struct ProbeUser {
    child: Child,
    stderr: BufReader<ChildStderr>,
    preamble: String,
    banner: String,
    stdout_reader: Option<std::thread::JoinHandle<String>>,
}

impl ProbeUser {
    /// Starts probe-user with `args` and waits until it reports that tracing has started.
    pub fn start(args: &[&str]) -> ProbeUser {
        Self::start_with(probe_user_command().args(args))
    }

    /// Starts a prepared probe-user command (stdout and stderr are piped here).
    pub fn start_with(cmd: &mut Command) -> ProbeUser {
        Self::start_until(cmd, "Tracing TCP connects")
    }

    /// Starts a prepared command (stdout and stderr piped here) and waits for a stderr line
    /// starting with `banner`, which says tracing has started.
    pub fn start_until(cmd: &mut Command, banner: &str) -> ProbeUser {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start probe-user");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        // Debug logging (RUST_LOG) may come first; the banner says tracing has started.
        let mut before = String::new();
        let banner = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!(
                    "{:?} did not start: {before:?} (exit {:?})",
                    cmd.get_program(),
                    child.wait()
                );
            }
            if line.starts_with(banner) {
                break line;
            }
            before.push_str(&line);
        };
        ProbeUser {
            child,
            stderr,
            preamble: before,
            banner,
            stdout_reader: None,
        }
    }

    /// Reads stdout in the background from now on, so that a lot of output never blocks
    /// probe-user on a full pipe (which would fill its ring buffer).
    pub fn read_stdout_in_background(&mut self) {
        let mut out = self.child.stdout.take().expect("stdout already taken");
        self.stdout_reader = Some(std::thread::spawn(move || {
            let mut stdout = String::new();
            out.read_to_string(&mut stdout).unwrap();
            stdout
        }));
    }

    /// probe-user's (peak, current) resident set size (`VmHWM`, `VmRSS`), in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {status}"))
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// What probe-user printed on stderr before the banner (debug logs, backends it could not
    /// use).
    pub fn preamble(&self) -> &str {
        &self.preamble
    }

    /// The stderr line saying tracing has started (`Tracing TCP connects (...)`).
    pub fn banner(&self) -> &str {
        &self.banner
    }

    /// The process id of probe-user.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child process, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` and collects everything probe-user printed.
    pub fn stop_with(self, signal: i32) -> Finished {
        // Events are drained every 50 ms; give the last connects time to reach the ring buffer.
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.wait()
    }

    /// Stops probe-user with SIGINT, as Ctrl-C would.
    pub fn stop(self) -> Finished {
        self.stop_with(libc::SIGINT)
    }

    /// Waits for probe-user to exit by itself.
    pub fn wait(mut self) -> Finished {
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).unwrap();
        } else if let Some(reader) = self.stdout_reader.take() {
            stdout = reader.join().unwrap();
        }
        let mut stderr = String::new();
        self.stderr.read_to_string(&mut stderr).unwrap();
        let status = self.child.wait().unwrap();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

/// A test that panics with probe-user still running does not leave it tracing (and holding its
/// ring buffer and maps) through the tests that follow.
impl Drop for ProbeUser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs probe-user as `cmd` while `f` runs, its stdout read in the background (JSON lines are
/// long: a few hundred of them fill a pipe), then stops it (SIGINT); returns its output,
/// checked to be a success, and what `f` returned.
pub fn run_while<R>(cmd: &mut Command, f: impl FnOnce() -> R) -> (Finished, R) {
    let mut tracer = ProbeUser::start_with(cmd);
    tracer.read_stdout_in_background();
    let made = f();
    let out = tracer.stop();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    (out, made)
}

/// [`run_while`] with the backend under test, `args` and `--pid <this process>` (natively, the
/// host's other processes connect too).
pub fn run_here<R>(args: &[&str], f: impl FnOnce() -> R) -> (Finished, R) {
    let pid = std::process::id().to_string();
    let mut cmd = probe_user_command();
    cmd.args(args).args(["--pid", &pid]);
    run_while(&mut cmd, f)
}

/// Runs probe-user to completion with `args` (for argument errors).
pub fn run_probe_user(args: &[&str]) -> Finished {
    let out = Command::new(probe_user())
        .args(args)
        .output()
        .expect("cannot run probe-user");
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// One connect as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeenConnect {
    /// `getsockname` after connect, with IPv4-mapped addresses unmapped.
    pub src: SocketAddr,
    /// `getpeername` after connect, unmapped likewise.
    pub dst: SocketAddr,
    /// Whether the kernel ran `tcp_v6_connect` (an IPv6 destination that is not IPv4-mapped).
    pub v6: bool,
}

/// The connect a JSON line reports, comparable with what the client saw ([`SeenConnect`]).
pub fn seen_of(line: &serde_json::Value) -> SeenConnect {
    let endpoint = |addr: &str, port: &str| -> SocketAddr {
        let ip = line[addr]
            .as_str()
            .unwrap_or_else(|| panic!("no {addr}: {line}"));
        let port = line[port]
            .as_u64()
            .unwrap_or_else(|| panic!("no {port}: {line}"));
        unmapped(SocketAddr::new(ip.parse().unwrap(), port as u16))
    };
    SeenConnect {
        src: endpoint("saddr", "sport"),
        dst: endpoint("daddr", "dport"),
        v6: line["function"] == "tcp_v6_connect",
    }
}

/// The one line of `lines` reporting `seen` (same source and destination).
pub fn line_reporting<'a>(
    lines: &'a [serde_json::Value],
    seen: &SeenConnect,
) -> &'a serde_json::Value {
    let found: Vec<&serde_json::Value> = lines.iter().filter(|l| seen_of(l) == *seen).collect();
    assert_eq!(found.len(), 1, "lines reporting {seen:?}: {lines:#?}");
    found[0]
}

/// Wall-clock seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Connects to `dst` (optionally from `bind`), returning what the client saw. The connection
/// is closed before returning.
pub fn connect(dst: SocketAddr, bind: Option<SocketAddr>) -> std::io::Result<SeenConnect> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    if let Some(bind) = bind {
        socket.set_reuse_address(true)?;
        socket.bind(&bind.into())?;
    }
    socket.connect(&dst.into())?;
    let src = socket.local_addr()?.as_socket().unwrap();
    let peer = socket.peer_addr()?.as_socket().unwrap();
    Ok(SeenConnect {
        src: unmapped(src),
        dst: unmapped(peer),
        v6: is_v6_connect(dst),
    })
}

/// Whether connecting to `dst` goes through tcp_v6_connect only.
fn is_v6_connect(dst: SocketAddr) -> bool {
    matches!(dst.ip(), IpAddr::V6(ip) if ip.to_ipv4_mapped().is_none())
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
pub fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// A listener that accepts (and closes) connections in the background.
pub fn listener(addr: &str) -> SocketAddr {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    local
}

/// One line of `--format stap` output, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StapLine {
    pub unix_s: u64,
    pub v6: bool,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl StapLine {
    /// Parses `<secs>: tcp_v4_connect src=<addr> dst=<addr>` strictly, panicking otherwise.
    pub fn parse(line: &str) -> StapLine {
        Self::try_parse(line).unwrap_or_else(|| panic!("not a stap line: {line:?}"))
    }

    fn try_parse(line: &str) -> Option<StapLine> {
        let (secs, rest) = line.split_once(": ")?;
        let mut parts = rest.split(' ');
        let v6 = match parts.next()? {
            "tcp_v4_connect" => false,
            "tcp_v6_connect" => true,
            _ => return None,
        };
        let src = parts.next()?.strip_prefix("src=")?.parse().ok()?;
        let dst = parts.next()?.strip_prefix("dst=")?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(StapLine {
            unix_s: secs.parse().ok()?,
            v6,
            src,
            dst,
        })
    }

    /// The connect this line reports, comparable with [`SeenConnect`].
    pub fn connect(&self) -> SeenConnect {
        SeenConnect {
            src: self.src,
            dst: self.dst,
            v6: self.v6,
        }
    }
}

/// The counts in probe-user's closing summary line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub printed: u64,
    pub dropped: u64,
    pub missed: u64,
    pub malformed: u64,
}

impl Summary {
    /// Every event accounted for: printed or counted as lost.
    pub fn accounted(&self) -> u64 {
        self.printed + self.dropped + self.missed + self.malformed
    }
}

/// Parses `probe-user: N events printed, D dropped, M missed, X malformed` from `stderr`.
pub fn summary(stderr: &str) -> Summary {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("probe-user: ") && l.contains(" events printed"))
        .unwrap_or_else(|| panic!("no summary in stderr: {stderr:?}"));
    let numbers: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    let [printed, dropped, missed, malformed] = numbers[..] else {
        panic!("unexpected summary {line:?}");
    };
    Summary {
        printed,
        dropped,
        missed,
        malformed,
    }
}

/// The kprobes currently registered that mention tcp connect functions (none can exist where
/// the kernel has no kprobes).
pub fn connect_kprobes() -> Vec<String> {
    let list = match std::fs::read_to_string("/sys/kernel/debug/kprobes/list") {
        Ok(list) => list,
        Err(_) if !kernel_has_kprobes() => {
            return Vec::new();
        }
        Err(e) => panic!("debugfs must be mounted at /sys/kernel/debug: {e}"),
    };
    list.lines()
        .filter(|l| l.contains("tcp_v4_connect") || l.contains("tcp_v6_connect"))
        .map(str::to_string)
        .collect()
}

/// How many entries of [`connect_kprobes`] one tracer (default mode) adds: an entry and a
/// return probe on each connect function with the kprobe backend, none with the others.
pub fn kprobes_per_tracer() -> usize {
    if uses_kprobes() { 4 } else { 0 }
}

/// `getsockopt(TCP_INFO)`.
pub fn tcp_info(socket: &Socket) -> libc::tcp_info {
    // SAFETY: tcp_info is plain data, all zeroes valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid out-pointer and its length.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(ret, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info
}

/// A listener on 127.0.0.1 whose accept queue is full (before tracing starts): connects to it
/// stay in SYN_SENT until the client gives up, closes them, or an ICMP error ends them. See
/// [`faults::FullListener`], for IPv6 too.
pub struct SynDropping;

impl SynDropping {
    /// Listens on 127.0.0.1 and fills the accept queue.
    pub fn start() -> faults::FullListener {
        faults::FullListener::on(Ipv4Addr::LOCALHOST.into())
    }
}

/// A non-blocking IPv4 connect to `addr`, left in progress.
pub fn connect_in_progress(addr: SocketAddr) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    let e = s.connect(&addr.into()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINPROGRESS), "{e}");
    s
}

/// A socket bound to 127.0.0.1:`port` with SO_REUSEADDR (`port` 0: any), so that two of them
/// can share a source port (their connects to one destination then collide: EADDRNOTAVAIL).
pub fn bound_reusing_address(port: u16) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    s
}

/// What `connect-once` printed: the connect as it saw it and, with `--print-ids`, who made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectOnce {
    pub seen: SeenConnect,
    /// Its ids, as its own namespaces see them (`--print-ids`).
    pub ids: Option<TaskIds>,
}

/// A task's ids as it sees them itself: `getpid()`, `gettid()`, and the inode numbers of its
/// pid and network namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskIds {
    pub pid: u32,
    pub tid: u32,
    pub pidns: u64,
    pub netns: u64,
}

impl TaskIds {
    /// The calling thread's ids.
    pub fn current() -> TaskIds {
        // SAFETY: gettid(2) has no arguments and cannot fail (the libc wrapper is newer than
        // some C libraries).
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        TaskIds {
            pid: std::process::id(),
            tid,
            pidns: ns_inode("pid"),
            netns: ns_inode("net"),
        }
    }

    /// ` pid=<pid> tid=<tid> pidns=<inode> netns=<inode>`, as `connect-once --print-ids`
    /// appends it to its line.
    pub fn suffix(&self) -> String {
        format!(
            " pid={} tid={} pidns={} netns={}",
            self.pid, self.tid, self.pidns, self.netns
        )
    }

    /// Parses the words of [`TaskIds::suffix`].
    fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Option<TaskIds> {
        let mut ids = [None; 4];
        for word in words {
            let (key, value) = word.split_once('=')?;
            let at = ["pid", "tid", "pidns", "netns"]
                .iter()
                .position(|k| *k == key)?;
            ids[at] = Some(value.parse::<u64>().ok()?);
        }
        let [pid, tid, pidns, netns] = ids;
        Some(TaskIds {
            pid: pid?.try_into().ok()?,
            tid: tid?.try_into().ok()?,
            pidns: pidns?,
            netns: netns?,
        })
    }
}

/// The inode number of the calling process's namespace of `kind` (`pid`, `net`), from
/// `readlink /proc/self/ns/<kind>` (`net:[4026531840]`).
pub fn ns_inode(kind: &str) -> u64 {
    let link = std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap_or_else(|e| panic!("readlink /proc/self/ns/{kind}: {e}"));
    let link = link.to_string_lossy();
    link.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(":["))
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inode| inode.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/self/ns/{kind} link {link:?}"))
}

/// Runs a prepared `connect-once` command (possibly behind `unshare`, `as-user` or `sh -c`)
/// and parses its one line: `<src> <dst>`, then with `--print-ids` its [`TaskIds`].
pub fn run_connect_once(cmd: &mut Command) -> ConnectOnce {
    let out = cmd.output().expect("cannot run connect-once");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    parse_connect_once(&text).unwrap_or_else(|| panic!("{cmd:?} printed {text:?}"))
}

/// Parses `connect-once`'s line (see [`run_connect_once`]).
pub fn parse_connect_once(line: &str) -> Option<ConnectOnce> {
    let mut words = line.split_whitespace();
    let src: SocketAddr = words.next()?.parse().ok()?;
    let dst: SocketAddr = words.next()?.parse().ok()?;
    let rest: Vec<&str> = words.collect();
    let ids = if rest.is_empty() {
        None
    } else {
        Some(TaskIds::parse(rest.into_iter())?)
    };
    Some(ConnectOnce {
        seen: SeenConnect {
            src: unmapped(src),
            dst: unmapped(dst),
            v6: is_v6_connect(dst),
        },
        ids,
    })
}

/// Runs `connect-once` (another process) with `prefix` before it (`["as-user", "--",
/// "connect-once"]`; empty: connect-once itself) and `extra` arguments, connecting to `dst`,
/// and returns what it saw.
pub fn connect_from(prefix: &[&str], extra: &[&str], dst: SocketAddr) -> SeenConnect {
    connect_once_from(prefix, extra, dst).seen
}

/// [`connect_from`], returning everything connect-once printed.
pub fn connect_once_from(prefix: &[&str], extra: &[&str], dst: SocketAddr) -> ConnectOnce {
    let (program, args) = prefix.split_first().unwrap_or((&"connect-once", &[]));
    run_connect_once(
        Command::new(program)
            .args(args)
            .args(extra)
            .arg(dst.to_string()),
    )
}

/// Where the cgroup2 filesystem is mounted: the first cgroup2 mount of `/proc/self/mounts`,
/// else a fresh mount at `/tmp/cgroup2` (the test VM mounts none). Call it before starting
/// probe-user, which looks for the mount once, when it starts.
pub fn cgroup2_mount() -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    if let Some(fields) = mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
    {
        return fields[1].to_string();
    }
    std::fs::create_dir_all("/tmp/cgroup2").unwrap();
    let status = Command::new("mount")
        .args(["-t", "cgroup2", "none", "/tmp/cgroup2"])
        .status()
        .unwrap();
    assert!(status.success(), "cannot mount cgroup2");
    "/tmp/cgroup2".into()
}

/// A cgroup v2 directory for this test process, under [`cgroup2_mount`] (the caller removes
/// it).
pub fn test_cgroup() -> String {
    let dir = format!("{}/probe-test-{}", cgroup2_mount(), std::process::id());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tree of cgroup v2 directories made for one test, under a root directory of its own below
/// [`cgroup2_mount`]; every directory it made is removed when it is dropped, deepest first
/// (the processes moved into them must have exited by then).
pub struct CgroupTree {
    mount: PathBuf,
    root: Cgroup,
    /// What [`CgroupTree::mkdir`] created, parents before children.
    made: Vec<PathBuf>,
}

/// One cgroup v2 directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Where it is (below the cgroup2 mount).
    pub dir: PathBuf,
    /// Its path below the cgroup2 mount, as probe-user reports it (`/a/b`).
    pub path: String,
    /// Its cgroup id: the directory's inode number.
    pub id: u64,
}

impl Cgroup {
    /// The directory as a string, for arguments (`--cgroup DIR`).
    pub fn dir(&self) -> &str {
        self.dir.to_str().expect("a UTF-8 cgroup path")
    }
}

impl CgroupTree {
    /// Makes the root directory `name` (unique to the test: say, with the pid in it) right
    /// below the cgroup2 mount.
    pub fn new(name: &str) -> CgroupTree {
        assert!(!name.contains('/'), "{name:?}");
        let mount = PathBuf::from(cgroup2_mount());
        let mut tree = CgroupTree {
            root: Cgroup {
                dir: mount.clone(),
                path: "/".into(),
                id: 0,
            },
            mount,
            made: Vec::new(),
        };
        tree.root = tree.mkdir_below(&tree.mount.clone(), name);
        tree
    }

    /// The tree's root directory.
    pub fn root(&self) -> &Cgroup {
        &self.root
    }

    /// Makes `relative` (`a/b/c`) below the root, with whatever parents it lacks.
    pub fn mkdir(&mut self, relative: &str) -> Cgroup {
        let root = self.root.dir.clone();
        self.mkdir_below(&root, relative)
    }

    fn mkdir_below(&mut self, base: &std::path::Path, relative: &str) -> Cgroup {
        let mut dir = base.to_path_buf();
        for component in relative.split('/').filter(|c| !c.is_empty()) {
            dir.push(component);
            match std::fs::create_dir(&dir) {
                Ok(()) => self.made.push(dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("mkdir {dir:?}: {e}"),
            }
        }
        self.cgroup(&dir)
    }

    /// Removes `cgroup` (made by [`CgroupTree::mkdir`], with no children), waiting for a
    /// process that just exited to leave it.
    pub fn remove(&mut self, cgroup: &Cgroup) {
        remove_cgroup(&cgroup.dir).unwrap_or_else(|e| panic!("rmdir {:?}: {e}", cgroup.dir));
        self.made.retain(|dir| *dir != cgroup.dir);
    }

    /// The cgroup at `dir` (below the mount).
    fn cgroup(&self, dir: &std::path::Path) -> Cgroup {
        use std::os::unix::fs::MetadataExt as _;
        let below = dir.strip_prefix(&self.mount).expect("below the mount");
        Cgroup {
            dir: dir.to_path_buf(),
            path: format!("/{}", below.to_str().unwrap()),
            id: std::fs::metadata(dir).unwrap().ino(),
        }
    }
}

/// Removes the cgroup directory `dir`: a process that just exited may still count as a member
/// for a moment (EBUSY).
fn remove_cgroup(dir: &std::path::Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        // Children were made after their parents.
        for dir in self.made.iter().rev() {
            if let Err(e) = remove_cgroup(dir) {
                eprintln!("cannot remove cgroup {dir:?}: {e}");
            }
        }
    }
}

/// probe-user's event ring buffer, held open from outside it (`pidfd_getfd`), so that what
/// lands in it after probe-user's last drain (and exit) can still be seen.
pub struct RingWitness {
    fd: std::os::fd::OwnedFd,
}

impl RingWitness {
    /// The `BPF_MAP_TYPE_RINGBUF` map among the descriptors of process `pid` (probe-user has
    /// one).
    pub fn of(pid: u32) -> RingWitness {
        use std::os::fd::FromRawFd as _;
        const BPF_MAP_TYPE_RINGBUF: &str = "27";
        let fd = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .unwrap()
            .filter_map(Result::ok)
            .find_map(|entry| {
                let info = std::fs::read_to_string(entry.path()).ok()?;
                let ring = info.lines().any(|l| {
                    l.strip_prefix("map_type:").map(str::trim) == Some(BPF_MAP_TYPE_RINGBUF)
                });
                ring.then(|| entry.file_name().to_str()?.parse::<i32>().ok())
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no ring buffer among the descriptors of {pid}"));
        // SAFETY: plain syscalls; a descriptor returned is new and ours.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
            assert!(
                pidfd >= 0,
                "pidfd_open: {}",
                std::io::Error::last_os_error()
            );
            let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
            let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
            assert!(
                copy >= 0,
                "pidfd_getfd: {}",
                std::io::Error::last_os_error()
            );
            RingWitness {
                fd: std::os::fd::OwnedFd::from_raw_fd(copy as i32),
            }
        }
    }

    /// Bytes written to the ring and not consumed by its reader: the producer position (the
    /// page after the consumer's, read-only) minus the consumer position (the first page).
    pub fn unread_bytes(&self) -> u64 {
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let position = |offset: usize| -> u64 {
            // SAFETY: a shared read-only mapping of one page of a ring buffer's positions,
            // unmapped before returning; the kernel maps the first two pages as u64 positions.
            unsafe {
                let at = libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    self.fd.as_raw_fd(),
                    offset as libc::off_t,
                );
                assert_ne!(at, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
                let value = std::ptr::read_volatile(at.cast::<u64>());
                libc::munmap(at, page);
                value
            }
        };
        let consumer = position(0);
        let producer = position(page);
        producer - consumer
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a test whose answer depends on the kernel but not on the backend runs here: once
/// per kernel, with the tracepoint backend (every kernel of the matrix has it), and natively.
/// Says so when it does not.
pub fn once_per_kernel() -> bool {
    let runs = std::env::var_os("PROBE_IN_VM").is_none() || backend() == Backend::Tracepoint.name();
    if !runs {
        eprintln!(
            "skipped with {}: run once per kernel, with the tracepoint",
            backend()
        );
    }
    runs
}

/// The samples of metric `name` in an OpenMetrics `body`: (labels, value). Label values must
/// hold no escaped quote.
pub fn metric_samples(
    body: &str,
    name: &str,
) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if let Some(value) = rest.strip_prefix(' ') {
                return Some((Default::default(), value.parse().unwrap()));
            }
            let mut rest = rest.strip_prefix('{')?;
            let mut labels = std::collections::BTreeMap::new();
            loop {
                if let Some(value) = rest.strip_prefix("} ") {
                    let value = value.parse().unwrap_or_else(|e| panic!("{value:?}: {e}"));
                    return Some((labels, value));
                }
                rest = rest.strip_prefix(',').unwrap_or(rest);
                let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{rest:?}"));
                let (value, after) = after.split_once('"').unwrap();
                labels.insert(key.to_string(), value.to_string());
                rest = after;
            }
        })
        .collect()
}

/// The one sample of metric `name` without labels in `body`.
pub fn metric_value(body: &str, name: &str) -> f64 {
    let found = metric_samples(body, name);
    match found[..] {
        [(ref labels, value)] if labels.is_empty() => value,
        _ => panic!("not one unlabelled {name} in {body}"),
    }
}

/// The address in probe-user's `probe-user: serving metrics on http://ADDR/metrics` line (or
/// `https://` with TLS; before its banner).
pub fn serving_addr(tracer: &ProbeUser) -> SocketAddr {
    let preamble = tracer.preamble();
    preamble
        .lines()
        .filter_map(|l| l.strip_prefix("probe-user: serving metrics on "))
        .find_map(|l| {
            l.strip_prefix("http://")
                .or_else(|| l.strip_prefix("https://"))
        })
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no serving line before the banner: {preamble:?}"))
}

/// The body of `GET /metrics` from `addr` (status 200 checked).
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::Write as _;
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = http_response(&response);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    body
}

/// An HTTP/1.1 response's head and body, the body de-chunked if it was sent chunked (the
/// metrics endpoint streams its expositions).
pub fn http_response(response: &str) -> (&str, String) {
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked\r\n")
    {
        return (head, body.to_string());
    }
    let mut whole = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return (head, whole);
        }
        whole.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}
