//! Delays in a lab without `sch_netem`: every UDP datagram a host sends from
//! a port goes through an NFQUEUE whose verdicts a thread of the test hands
//! out late (plain netfilter, no extra kernel module).

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{Lab, Node};

/// Delays every UDP datagram a host sends from a port: an iptables rule in
/// its namespace sends them to an NFQUEUE, and a thread of this test, bound
/// to that queue inside the namespace, accepts each one `delay` after it
/// came. With `--queue-bypass`, packets pass undelayed if the thread is gone.
pub struct Delay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The queue number (queues are per namespace).
const QUEUE: u16 = 7;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_ACCEPT: u32 = 1;

impl Delay {
    /// Delays by `delay` what `host` sends from UDP `port`, until dropped.
    pub fn udp_out(lab: &Lab, host: &Node, port: &str, delay: Duration) -> Delay {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns_path = format!("/run/netns/{}", host.ns());
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let fd = match nfqueue_open(&ns_path) {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                nfqueue_delay_loop(fd, delay, &stop);
                unsafe { libc::close(fd) };
            })
        };
        ready_rx
            .recv()
            .expect("delay thread")
            .unwrap_or_else(|e| panic!("NFQUEUE delay in {}: {e}", host.name()));
        let queue = QUEUE.to_string();
        let run = lab.exec(
            host,
            "iptables",
            &[
                "-w",
                "-I",
                "OUTPUT",
                "-p",
                "udp",
                "--sport",
                port,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
                "--queue-bypass",
            ],
        );
        assert!(run.ok, "iptables NFQUEUE rule: {run:?}");
        Delay {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One netlink message: header, nfgenmsg (family, version 0, queue id), attributes.
fn nfq_message(kind: u16, flags: u16, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m.extend_from_slice(&[family, 0]);
    m.extend_from_slice(&QUEUE.to_be_bytes());
    for (t, data) in attrs {
        let len = 4 + data.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
    m
}

fn nl_send(fd: i32, msg: &[u8]) -> Result<(), String> {
    let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(format!("send: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Sends a request with NLM_F_ACK and checks the kernel's answer.
fn nl_request(fd: i32, msg: &[u8]) -> Result<(), String> {
    nl_send(fd, msg)?;
    let mut buf = [0u8; 4096];
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        return Err(format!("recv ack: {}", std::io::Error::last_os_error()));
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    let error = i32::from_ne_bytes(buf[16..20].try_into().unwrap());
    if kind != libc::NLMSG_ERROR as u16 || error != 0 {
        return Err(format!(
            "netlink answered type {kind} error {}",
            std::io::Error::from_raw_os_error(-error)
        ));
    }
    Ok(())
}

/// Enters the namespace at `ns_path` (this thread only), opens a netfilter
/// netlink socket and binds it to [`QUEUE`], copying only metadata.
fn nfqueue_open(ns_path: &str) -> Result<i32, String> {
    let ns = fs::File::open(ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
    use std::os::fd::AsRawFd as _;
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    let bound = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if bound != 0 {
        return Err(format!("bind: {}", std::io::Error::last_os_error()));
    }
    let ack = libc::NLM_F_ACK as u16;
    // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
    let cmd = [NFQNL_CFG_CMD_BIND, 0, 0, libc::AF_INET as u8];
    nl_request(
        fd,
        &nfq_message(
            NFQNL_MSG_CONFIG,
            ack,
            libc::AF_UNSPEC as u8,
            &[(NFQA_CFG_CMD, &cmd)],
        ),
    )?;
    // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; }
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    nl_request(
        fd,
        &nfq_message(
            NFQNL_MSG_CONFIG,
            ack,
            libc::AF_UNSPEC as u8,
            &[(NFQA_CFG_PARAMS, &params)],
        ),
    )?;
    Ok(fd)
}

/// Collects queued packets' ids and accepts each `delay` after it came,
/// until `stop`; then accepts whatever still waits.
fn nfqueue_delay_loop(fd: i32, delay: Duration, stop: &AtomicBool) {
    let mut waiting: std::collections::VecDeque<(Instant, u32)> = Default::default();
    let mut buf = vec![0u8; 65536];
    let verdict = |id: u32| {
        // struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id; }
        let mut hdr = NF_ACCEPT.to_be_bytes().to_vec();
        hdr.extend_from_slice(&id.to_be_bytes());
        let _ = nl_send(
            fd,
            &nfq_message(
                NFQNL_MSG_VERDICT,
                0,
                libc::AF_UNSPEC as u8,
                &[(NFQA_VERDICT_HDR, &hdr)],
            ),
        );
    };
    loop {
        let now = Instant::now();
        while waiting.front().is_some_and(|(due, _)| *due <= now) {
            let (_, id) = waiting.pop_front().expect("front");
            verdict(id);
        }
        if stop.load(Ordering::Relaxed) {
            for (_, id) in waiting.drain(..) {
                verdict(id);
            }
            return;
        }
        let wait_ms = waiting.front().map_or(50, |(due, _)| {
            due.saturating_duration_since(now).as_millis().clamp(1, 50) as i32
        });
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pfd, 1, wait_ms) } <= 0 {
            continue;
        }
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let came = Instant::now();
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= 20 {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap()) as usize;
            if len < 20 || len > msgs.len() {
                break;
            }
            let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                let mut attrs = &msgs[20..len];
                while attrs.len() >= 4 {
                    let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                    let atype = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                    if alen < 4 || alen > attrs.len() {
                        break;
                    }
                    if atype == NFQA_PACKET_HDR && alen >= 8 {
                        let id = u32::from_be_bytes(attrs[4..8].try_into().unwrap());
                        waiting.push_back((came + delay, id));
                    }
                    attrs = &attrs[alen.next_multiple_of(4).min(attrs.len())..];
                }
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}
