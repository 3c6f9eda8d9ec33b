//! UDP datagrams counted end to end: a Python listener that checks each
//! datagram arrives once, intact and in order, and senders of runs of them.

use std::time::Duration;

use crate::netns::{Lab, Node, wait_until};
use crate::python3;

/// Receives `count` datagrams of `size` bytes on a port (IPv4 or IPv6) and checks each:
/// argv = port, count, size. Prints "ready", then "got N bad M late L" once
/// `count` arrived or 3 s pass without one (bad: damaged or seen before;
/// late: behind one numbered higher).
pub const UDP_COUNTER: &str = r#"
import socket, sys
port, count, size = map(int, sys.argv[1:4])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: no loss here
s.bind(("", port))
print("ready", flush=True)
s.settimeout(30)
seen, bad, late, top = set(), 0, 0, -1
while len(seen) < count:
    try:
        data = s.recv(65536)
    except socket.timeout:
        break
    s.settimeout(3)
    i = int.from_bytes(data[:4], "big")
    want = i.to_bytes(4, "big") + bytes((i + j) % 251 for j in range(size - 4))
    if data != want or i in seen:
        bad += 1
    else:
        seen.add(i)
        late += i < top
        top = max(top, i)
print("got", len(seen), "bad", bad, "late", late, flush=True)
"#;

/// Sends `bursts` bursts of `per_burst` datagrams of `size` bytes (as
/// [`UDP_COUNTER`] checks them) from one connected socket (IPv4 ids
/// counting up; an IPv6 address may carry its `%device`), one plain
/// `send` each, 5 ms apart: argv = ip, port, bursts, per_burst, size.
pub const UDP_BURST_SENDER: &str = r#"
import socket, sys, time
ip, port, bursts, per_burst, size = sys.argv[1], *map(int, sys.argv[2:6])
family, _, _, _, to = socket.getaddrinfo(ip, port, 0, socket.SOCK_DGRAM)[0]
s = socket.socket(family, socket.SOCK_DGRAM)
s.connect(to)
for n in range(bursts):
    burst = [i.to_bytes(4, "big") + bytes((i + j) % 251 for j in range(size - 4))
             for i in range(n * per_burst, (n + 1) * per_burst)]
    for d in burst:
        s.send(d)
    time.sleep(0.005)
"#;

/// Datagrams sent from one host to a listener on another.
pub struct UdpRun<'a> {
    /// The sending host.
    pub from: &'a Node,
    /// The receiving host.
    pub to: &'a Node,
    /// The address the listener is reached at (IPv6 may carry `%device`).
    pub ip: &'a str,
    /// The port it listens on.
    pub port: u16,
    /// The sender: a Python script taking ip and port first.
    pub sender: &'a str,
    /// The sender's arguments after ip and port.
    pub sender_args: &'a [String],
    /// How many datagrams the listener waits for.
    pub count: usize,
    /// Bytes in each.
    pub size: usize,
}

impl UdpRun<'_> {
    /// Starts the listener, checks `from` reaches `to`, runs the sender,
    /// and returns what the listener printed last ("got N bad M late L").
    pub fn run(&self, lab: &Lab) -> String {
        let python = python3();
        let port = self.port.to_string();
        let listener = lab.spawn(
            self.to,
            &python,
            &[
                "-u",
                "-c",
                UDP_COUNTER,
                &port,
                &self.count.to_string(),
                &self.size.to_string(),
            ],
            &[],
        );
        assert!(
            wait_until(Duration::from_secs(10), || listener
                .stdout_text()
                .contains("ready")),
            "the listener on {} started",
            self.ip
        );
        assert!(
            lab.exec(self.from, "ping", &["-c", "1", "-W", "2", self.ip])
                .ok,
            "{} is reachable",
            self.ip
        );
        let mut args = vec!["-c", self.sender, self.ip, &port];
        args.extend(self.sender_args.iter().map(String::as_str));
        let sent = lab.exec(self.from, &python, &args);
        assert!(sent.ok, "the sender to {}: {sent:?}", self.ip);
        let done = wait_until(Duration::from_secs(20), || {
            listener.stdout_text().contains("got ")
        });
        let out = listener.stdout_text();
        assert!(done, "the listener on {} finished: {out}", self.ip);
        out.lines().last().unwrap_or_default().to_string()
    }
}

/// What [`UdpRun::run`] prints when `count` datagrams arrived once, intact
/// and in order.
pub fn all_arrived(count: usize) -> String {
    format!("got {count} bad 0 late 0")
}

/// The IPv6 link-local address the kernel gave `device` on `host` (empty
/// if none).
pub fn link_local(lab: &Lab, host: &Node, device: &str) -> String {
    let run = lab.exec(host, "ip", &["-j", "-6", "addr", "show", "dev", device]);
    let info: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
    info[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["scope"] == "link")
        .and_then(|a| a["local"].as_str())
        .unwrap_or_default()
        .to_string()
}
