//! `connect-once [--cgroup DIR] ADDR`: connects to ADDR once (after moving itself into the
//! cgroup v2 directory DIR, if given) and prints `<src> <dst>` as it saw them. For tests that
//! need a connect from another process, user or cgroup.

use probe_tests::{connect, flag_value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(dir) = flag_value::<String>(&args, "--cgroup") {
        // Writing 0 moves the writing process.
        std::fs::write(format!("{dir}/cgroup.procs"), "0").expect("cannot join the cgroup");
    }
    let addr = args
        .last()
        .expect("usage: connect-once [--cgroup DIR] ADDR");
    let seen = connect(addr.parse().expect("not a socket address"), None).expect("connect");
    println!("{} {}", seen.src, seen.dst);
}
