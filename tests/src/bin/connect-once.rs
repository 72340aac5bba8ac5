//! `connect-once [--cgroup DIR] [--print-ids] (ADDR | --self-listen)`: connects to ADDR once
//! (after moving itself into the cgroup v2 directory DIR, if given) and prints `<src> <dst>` as
//! it saw them. For tests that need a connect from another process, user, cgroup or namespace.
//!
//! `--syncnt N` (with ADDR) sets TCP_SYNCNT to N, follows the connect to its end, failed or
//! not, and prints `<src> <dst> errno=<E, 0 if it came up> retrans=<SYN retransmissions>`.
//!
//! `--self-listen` connects to a listener of its own on 127.0.0.1 instead (in whatever network
//! namespace it runs in; ADDR is then left out). `--print-ids` appends
//! ` pid=<getpid> tid=<gettid> pidns=<inode> netns=<inode>` to the line: its ids as its own
//! namespaces see them, and the inode numbers of its pid and network namespaces.

use std::{
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use probe_tests::{TaskIds, connect, faults};

const USAGE: &str =
    "usage: connect-once [--cgroup DIR] [--print-ids] [--syncnt N] (ADDR | --self-listen)";

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut cgroup, mut print_ids, mut self_listen, mut addr) = (None, false, false, None);
    let mut syncnt = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cgroup" => cgroup = Some(args.next().expect(USAGE)),
            "--print-ids" => print_ids = true,
            "--syncnt" => syncnt = Some(args.next().and_then(|n| n.parse().ok()).expect(USAGE)),
            "--self-listen" => self_listen = true,
            _ if addr.is_none() && !arg.starts_with("--") => {
                let parsed: SocketAddr = arg
                    .parse()
                    .unwrap_or_else(|e| panic!("not a socket address: {arg:?}: {e}"));
                addr = Some(parsed);
            }
            _ => panic!("{USAGE}"),
        }
    }
    if let Some(dir) = cgroup {
        // Writing 0 moves the writing process.
        std::fs::write(format!("{dir}/cgroup.procs"), "0").expect("cannot join the cgroup");
    }
    if let (Some(n), Some(dst)) = (syncnt, addr) {
        let (socket, src) = faults::start_connect(dst, Some(n));
        let ended = faults::wait_for_the_end(&socket, Duration::from_secs(120));
        println!("{}", faults::ConnectEnded::line(src, dst, ended));
        return;
    }
    // Kept open until the connect is done (the kernel completes it from the backlog).
    let own = self_listen.then(|| TcpListener::bind("127.0.0.1:0").expect("cannot listen"));
    let dst = match (&own, addr) {
        (Some(listener), None) => listener.local_addr().unwrap(),
        (None, Some(addr)) => addr,
        _ => panic!("{USAGE}"),
    };
    let seen = connect(dst, None).expect("connect");
    let ids = if print_ids {
        TaskIds::current().suffix()
    } else {
        String::new()
    };
    println!("{} {}{ids}", seen.src, seen.dst);
}
