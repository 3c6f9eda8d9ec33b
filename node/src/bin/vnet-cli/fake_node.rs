//! Test support: a fake node that answers canned HTTP responses, and running
//! the CLI against it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

use crate::args::Cli;
use crate::failure::Failure;

/// A controller network id of the fake node.
pub const NWID: &str = "8056c2e21c000001";

/// The CLI's arguments parsed (the program name added).
pub fn cli(args: &[&str]) -> Cli {
    let mut all = vec!["vnet-cli"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).expect("arguments parse")
}

/// Runs the CLI with `args`: its result and stdout.
pub fn run_args(args: &[&str]) -> (Result<(), Failure>, String) {
    let mut out = Vec::new();
    let result = crate::run(cli(args), &mut out);
    (result, String::from_utf8(out).expect("utf-8 output"))
}

/// The stderr line of a failure.
pub fn line(result: Result<(), Failure>) -> String {
    match result {
        Err(Failure::Line(line)) => line,
        other => panic!("expected a failure line, got {other:?}"),
    }
}

/// A whole HTTP/1.1 response with a JSON body.
pub fn http_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The JSON body of a request the fake node received.
pub fn request_body(request: &str) -> Value {
    serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// A server on 127.0.0.1 that answers one canned response per connection,
/// in order, and reports each request's text.
pub fn fake_server(responses: Vec<String>) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for response in responses {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then as much body as Content-Length says.
            loop {
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(response.as_bytes());
            let _ = tx.send(String::from_utf8_lossy(&request).to_string());
        }
    });
    (port, rx)
}

/// A loopback port nothing listens on (most likely).
pub fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}
