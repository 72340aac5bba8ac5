//! `connector --count N --ports P,...`: listens on 127.0.0.1 and [::1] at each port and connects
//! to each N times, printing every connect it made to stderr. Traffic for `cargo xtask run`.

use probe_tests::{connect, flag_value, listener};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: u32 = flag_value(&args, "--count").unwrap_or(1);
    let ports: Vec<u16> = flag_value::<String>(&args, "--ports")
        .map(|v| v.split(',').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_else(|| vec![8080]);
    for port in ports {
        for host in ["127.0.0.1", "[::1]"] {
            let addr = listener(&format!("{host}:{port}"));
            for _ in 0..count {
                match connect(addr, None) {
                    Ok(seen) => eprintln!("connector: {} -> {}", seen.src, seen.dst),
                    Err(e) => eprintln!("connector: {addr}: {e}"),
                }
            }
        }
    }
}
