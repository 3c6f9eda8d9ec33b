//! udp-probe: a tiny UDP reflector for the network-namespace lab's own tests.
//!
//! ```text
//! udp-probe serve PORT            answer every datagram with the sender's address as this
//!                                 host saw it ("ip:port"); logs each one to stderr
//! udp-probe ask LOCALPORT DEST... from ONE socket bound to 0.0.0.0:LOCALPORT (0 = any), ask
//!                                 each DEST ("ip:port") in turn; print "DEST SEEN" per line;
//!                                 exit 1 if some DEST never answered within 5 s
//! ```
//!
//! Behind a NAT, `SEEN` is the mapping the NAT made for that destination: the same port for
//! every destination behind a port-preserving NAT, a new one per destination behind a
//! symmetric one.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const ASK_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") if args.len() == 2 => serve(&args[1]),
        Some("ask") if args.len() >= 3 => ask(&args[1], &args[2..]),
        _ => Err("usage: udp-probe serve PORT | udp-probe ask LOCALPORT DEST...".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn port(s: &str) -> Result<u16, String> {
    s.parse().map_err(|_| format!("bad port {s:?}"))
}

fn serve(port_arg: &str) -> Result<(), String> {
    let sock = UdpSocket::bind(("0.0.0.0", port(port_arg)?)).map_err(|e| format!("bind: {e}"))?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    eprintln!("udp-probe listening on {local}");
    let mut buf = [0u8; 1500];
    loop {
        let (_, peer) = sock.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
        eprintln!("from {peer}");
        sock.send_to(peer.to_string().as_bytes(), peer)
            .map_err(|e| format!("send to {peer}: {e}"))?;
    }
}

fn ask(local_port: &str, dests: &[String]) -> Result<(), String> {
    let dests: Vec<SocketAddr> = dests
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|_| format!("bad address {d:?} (want ip:port)"))
        })
        .collect::<Result<_, _>>()?;
    let sock = UdpSocket::bind(("0.0.0.0", port(local_port)?)).map_err(|e| format!("bind: {e}"))?;
    eprintln!(
        "udp-probe asking from {}",
        sock.local_addr().map_err(|e| e.to_string())?
    );
    sock.set_read_timeout(Some(RETRY_EVERY / 4))
        .map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    let mut buf = [0u8; 1500];
    for dest in dests {
        let deadline = Instant::now() + ASK_TIMEOUT;
        let mut seen = None;
        'tries: while Instant::now() < deadline {
            // A send can fail while a path is cut (e.g. no route yet): retry until the deadline.
            if let Err(e) = sock.send_to(b"who am i?", dest) {
                eprintln!("send to {dest}: {e}");
            }
            let retry_at = Instant::now() + RETRY_EVERY;
            while Instant::now() < retry_at {
                match sock.recv_from(&mut buf) {
                    // Late answers from an earlier destination are skipped.
                    Ok((n, from)) if from == dest => {
                        seen = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                        break 'tries;
                    }
                    Ok(_) => {}
                    // Timeouts end the wait; anything else (an ICMP error reported on the
                    // socket) is not worth spinning on.
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => std::thread::sleep(RETRY_EVERY / 10),
                }
            }
        }
        match seen {
            Some(seen) => println!("{dest} {seen}"),
            None => missing.push(dest.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("no answer from {}", missing.join(", ")))
    }
}
