//! `connect-bench --cycles N --port P [--refused] [--pace R]`: the benchmarks' workload. Listens
//! on 127.0.0.1:P and runs N cycles of socket + connect + accept + close (with RST); with
//! `--refused` nothing listens, and each cycle is socket + connect (refused) + close.
//!
//! Prints `cycles=N ns=T`, T being CLOCK_MONOTONIC nanoseconds for all cycles (under qemu's
//! `-icount shift=0` that is guest instructions). With `--pace R` it makes R connects per
//! second instead of going flat out, and also prints the p50 and p99 of connect() latency.
//! With `--threads T` (not with `--pace`) T threads share the N cycles, each with its own
//! listener on P + its index (the throughput benchmark); T is at most 64. With `--dns` each
//! cycle first asks a DNS server of its own on 127.0.0.1:53 for a name, whose answer (an A
//! record of 127.0.0.1, from port 53) it then connects to: a DNS answer per connect.

use std::{
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use probe_tests::flag_value;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cycles: u64 = flag_value(&args, "--cycles").unwrap_or(2000);
    let port: u16 = flag_value(&args, "--port").unwrap_or(8080);
    let pace = flag_value::<u64>(&args, "--pace")
        .map(|per_s| Duration::from_nanos(1_000_000_000 / per_s.max(1)));
    let refused = args.iter().any(|a| a == "--refused");
    let dns = args.iter().any(|a| a == "--dns").then(Dns::start);
    let threads: u16 = flag_value(&args, "--threads").unwrap_or(1).clamp(1, 64);
    if threads > 1 {
        assert!(pace.is_none(), "--pace goes with one thread");
        let start = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let n = cycles / u64::from(threads)
                    + u64::from(u64::from(i) < cycles % u64::from(threads));
                std::thread::spawn(move || run(n, port + i, refused, None, None))
            })
            .collect();
        workers
            .into_iter()
            .for_each(|w| drop(w.join().expect("a worker failed")));
        println!("cycles={cycles} ns={}", start.elapsed().as_nanos());
        return;
    }
    let start = Instant::now();
    let latencies = run(cycles, port, refused, pace, dns.as_ref());
    let elapsed = start.elapsed();
    print!("cycles={cycles} ns={}", elapsed.as_nanos());
    if pace.is_some() {
        let mut latencies = latencies;
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_nanos();
        print!(" p50={} p99={}", at(0.50), at(0.99));
    }
    println!();
}

/// Runs `cycles` cycles against 127.0.0.1:`port` (see the file's docs), paced if asked;
/// returns each connect()'s latency.
fn run(
    cycles: u64,
    port: u16,
    refused: bool,
    pace: Option<Duration>,
    dns: Option<&Dns>,
) -> Vec<Duration> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let listener = (!refused)
        .then(|| TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind port {port}: {e}")));

    let mut latencies = Vec::with_capacity(cycles as usize);
    let start = Instant::now();
    for i in 0..cycles {
        if let Some(interval) = pace {
            let due = start + interval * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if let Some(dns) = dns {
            dns.resolve();
        }
        let before = Instant::now();
        let connected = TcpStream::connect(addr);
        latencies.push(before.elapsed());
        let Some(listener) = &listener else {
            let e = connected.expect_err("nothing listens, yet the connect succeeded");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
            continue;
        };
        let client = connected.expect("connect");
        let (server, _) = listener.accept().expect("accept");
        // RST on close, so no TIME_WAIT sockets pile up and every cycle costs the same.
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        drop(server);
    }
    latencies
}

/// A DNS server on 127.0.0.1:53 answering every query with one answer, and a client of it.
struct Dns {
    client: std::net::UdpSocket,
    server: std::net::UdpSocket,
    answer: Vec<u8>,
}

impl Dns {
    fn start() -> Dns {
        let server = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect("127.0.0.1:53").unwrap();
        // `bench.test. A 127.0.0.1`, TTL 60.
        let mut packet = simple_dns::Packet::new_reply(1);
        let name = simple_dns::Name::new_unchecked("bench.test");
        packet.questions.push(simple_dns::Question::new(
            name.clone(),
            simple_dns::TYPE::A.into(),
            simple_dns::CLASS::IN.into(),
            false,
        ));
        packet.answers.push(simple_dns::ResourceRecord::new(
            name,
            simple_dns::CLASS::IN,
            60,
            simple_dns::rdata::RData::A(simple_dns::rdata::A {
                address: u32::from_be_bytes([127, 0, 0, 1]),
            }),
        ));
        let answer = packet.build_bytes_vec().unwrap();
        Dns {
            client,
            server,
            answer,
        }
    }

    /// One query and its answer, delivered to the client's socket from port 53.
    fn resolve(&self) {
        let mut buffer = [0u8; 512];
        self.client.send(b"q").unwrap();
        let (_, from) = self.server.recv_from(&mut buffer).unwrap();
        self.server.send_to(&self.answer, from).unwrap();
        let n = self.client.recv(&mut buffer).unwrap();
        assert_eq!(n, self.answer.len());
    }
}
