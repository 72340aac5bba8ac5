//! What one local user can do to fill the tracer's maps, for the per-uid share tests (run as
//! nobody through `as-user`):
//!
//! - `hog --destinations N --port P`: connects once to each of N distinct loopback addresses
//!   (127.1.x.y) at port P, where nothing listens (each connect is refused at once), then exits.
//! - `hog --syn-sent N --to ADDR`: starts N non-blocking connects to ADDR (a listener whose accept
//!   queue is full, so they stay in SYN_SENT), prints `ready`, and holds them until stdin closes.

use std::{io::Read as _, net::SocketAddr};

use probe_tests::flag_value;
use socket2::{Domain, Socket, Type};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(n) = flag_value::<u32>(&args, "--destinations") {
        let port: u16 = flag_value(&args, "--port").expect("--port P");
        for i in 0..n {
            let [_, _, x, y] = (i + 1).to_be_bytes();
            let dst = SocketAddr::from(([127, 1, x, y], port));
            let _ = std::net::TcpStream::connect(dst);
        }
    } else if let Some(n) = flag_value::<u32>(&args, "--syn-sent") {
        let to: SocketAddr = flag_value(&args, "--to").expect("--to ADDR");
        let held: Vec<Socket> = (0..n)
            .map(|_| {
                let s = Socket::new(Domain::for_address(to), Type::STREAM, None).expect("socket");
                s.set_nonblocking(true).expect("nonblocking");
                let _ = s.connect(&to.into());
                s
            })
            .collect();
        println!("ready");
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        drop(held);
    } else {
        eprintln!("usage: hog --destinations N --port P | hog --syn-sent N --to ADDR");
        std::process::exit(2);
    }
}
