//! The workload of `cargo xtask bench scale`: a node's worth of workloads, each a cgroup
//! connecting to a set of ports.
//!
//! - `fleet connect DIR N OPEN CLOSED [--remove]`: makes cgroups `DIR/c0` .. `DIR/c<N-1>`
//!   (`DIR` below the cgroup2 mount, created if missing), and from each (moving itself in)
//!   connects once to each of OPEN ports it listens on itself (established) and CLOSED ports
//!   nobody listens on (refused), all on 127.0.0.1; with `--remove`, removes each cgroup once
//!   its connects are made. Prints `made N` (the connects made).
//! - `fleet scrape ADDR`: scrapes `http://ADDR/metrics` and prints its time in ms, bytes,
//!   sample lines, the sum of `tcpconn_connects_total` and the values of the unlabelled
//!   counters and gauges the bench reads (`tcpconn_series`, overflow and retired).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Instant,
};

const USAGE: &str =
    "usage: fleet connect DIR N OPEN CLOSED [--remove] | fleet scrape ADDR (see the source)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("connect") if args.len() >= 5 => {
            let number = |i: usize| -> usize { args[i].parse().expect(USAGE) };
            connect(
                &args[1],
                number(2),
                number(3),
                number(4),
                args.get(5).is_some_and(|a| a == "--remove"),
            );
        }
        Some("scrape") if args.len() == 2 => scrape(args[1].parse().expect(USAGE)),
        _ => panic!("{USAGE}"),
    }
}

fn connect(dir: &str, cgroups: usize, open: usize, closed: usize, remove: bool) {
    std::fs::create_dir_all(dir).expect("cannot make the cgroup directory");
    // Listeners that accept and drop whatever arrives, so no backlog fills.
    let listeners: Vec<SocketAddr> = (0..open)
        .map(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    drop(stream);
                }
            });
            addr
        })
        .collect();
    // Ports bound and released: nobody listens there (refused).
    let refused: Vec<SocketAddr> = (0..closed)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], probe_tests::free_port())))
        .collect();
    let parent_procs = format!("{dir}/cgroup.procs");
    let mut made = 0;
    for i in 0..cgroups {
        let cgroup = format!("{dir}/c{i}");
        match std::fs::create_dir(&cgroup) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                panic!("mkdir {cgroup}: {e}")
            }
            _ => {}
        }
        // Writing 0 moves the writing thread's process: every thread of this one.
        std::fs::write(format!("{cgroup}/cgroup.procs"), "0").expect("cannot join the cgroup");
        for &dst in listeners.iter().chain(&refused) {
            let _ = TcpStream::connect(dst);
            made += 1;
        }
        std::fs::write(&parent_procs, "0").expect("cannot leave the cgroup");
        if remove {
            std::fs::remove_dir(&cgroup).unwrap_or_else(|e| panic!("rmdir {cgroup}: {e}"));
        }
    }
    println!("made {made}");
}

fn scrape(addr: SocketAddr) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let text = String::from_utf8_lossy(&response);
    let (_, body) = probe_tests::http_response(&text);
    let mut samples = 0;
    let mut connects = 0.0;
    let mut named = Vec::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        samples += 1;
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if name.starts_with("tcpconn_connects_total{") {
            connects += value;
        }
        if !name.contains('{') {
            named.push(format!("{}={value}", name.trim_start_matches("tcpconn_")));
        }
    }
    println!(
        "scrape ms={ms:.1} bytes={} samples={samples} connects={connects} {}",
        body.len(),
        named.join(" ")
    );
}
