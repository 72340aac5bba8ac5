//! `connect-bench --cycles N --port P`: the overhead benchmark's workload. Listens on
//! 127.0.0.1:P and runs N cycles of socket + connect + accept + close (with RST), then prints
//! `cycles=N ns=T`, T being CLOCK_MONOTONIC nanoseconds for all cycles (under qemu's
//! `-icount shift=0` that is guest instructions).

use std::{
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let cycles = value("--cycles").unwrap_or(2000);
    let port = value("--port").unwrap_or(8080) as u16;
    let listener =
        TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind port {port}: {e}"));
    let addr = listener.local_addr().unwrap();

    let start = Instant::now();
    for _ in 0..cycles {
        let client = TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        // RST on close, so no TIME_WAIT sockets pile up and every cycle costs the same.
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        drop(server);
    }
    let elapsed = start.elapsed();
    println!("cycles={cycles} ns={}", elapsed.as_nanos());
}
