//! A forged-HELLO flood against a real root (`vnet-planet`) in network
//! namespaces: HELLOs whose MACs are right for keys the attacker made up,
//! claiming addresses those keys do not hash to, sent with raw sockets from
//! spoofed sources (100.64.0.0/10, routed back to the flooding host so the
//! root's reverse-path filter lets them in).
//!
//! What must hold: the root runs at most its identity-check budget of
//! memory-hard hashes (not one per forged HELLO), a legitimate new node comes
//! ONLINE during the flood, and 100,000 packets from distinct sources leave
//! the root answering. The figures (root CPU per 1,000 forged HELLOs, time to
//! ONLINE, RSS after 100,000 spoofed packets) are printed, not asserted:
//! `bench/hello_flood.sh` runs this test against two builds side by side.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vnet_node::core::address::Address;
use vnet_node::core::armor::armor;
use vnet_node::core::c25519::KeyPair;
use vnet_node::core::identity::Identity;
use vnet_node::core::verb::Verb;
use vnet_node::core::wire::PacketHeader;
use vnet_tests::daemon::{Daemon, PORT, make_planet};
use vnet_tests::netns::{Lab, in_netns, wait_until};

/// Forged HELLOs per second in the first phase (the figure).
const FLOOD_RATE_PER_SECOND: u64 = 200;
/// Distinct source addresses of the first phase.
const FLOOD_SOURCES: u32 = 1_000;
/// How long the first phase lasts at least.
const FLOOD_MIN: Duration = Duration::from_secs(15);
/// How long the new node may take to come ONLINE during the flood.
const ONLINE_LIMIT: Duration = Duration::from_secs(30);
/// Packets of the second phase, each from its own source address.
const SPOOFED_PACKETS: u32 = 100_000;

/// The first spoofed source, 100.64.0.1.
const SPOOF_BASE: u32 = u32::from_be_bytes([100, 64, 0, 1]);

/// A HELLO for `to` claiming `claimed` with the made-up key `pair`, MAC'd
/// with the key that pair agrees with the root (so only the memory-hard
/// check can tell it is forged).
fn forged_hello(claimed: Address, pair: &KeyPair, to: &Identity, counter: u64) -> Vec<u8> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let mut p = vec![0u8; 35];
    p.push(Verb::Hello as u8);
    p.extend_from_slice(&[1, 0, 1, 0, 0]); // protocol 1, software 0.1.0
    p.extend_from_slice(&now_ms.to_be_bytes());
    p.extend_from_slice(&claimed.to_bytes());
    p.push(0); // identity type 0
    p.extend_from_slice(pair.public().as_bytes());
    p.push(0); // no secret
    let mut ephemeral = [0u8; 32];
    ephemeral[..8].copy_from_slice(&counter.to_be_bytes());
    ephemeral[31] = 0x42;
    p.extend_from_slice(&ephemeral);
    p.push(0); // no "sent to" endpoint
    p.extend_from_slice(&[0u8; 16]); // planet id and timestamp
    p.push(0); // no moons
    PacketHeader {
        counter,
        dest: to.address(),
        src: claimed,
        hops: 0,
        key_slot: 0,
        clear: true,
        aes_gcm: false,
        more_fragments: false,
    }
    .encode_into(&mut p);
    let shared = pair.agree(to.public_key()).expect("made-up key agrees");
    let key = shared.packet_key();
    armor(&key, &mut p, false);
    p
}

/// A raw IPv4 socket that sends UDP datagrams from any source address.
struct SpoofSocket {
    fd: std::os::fd::OwnedFd,
}

impl SpoofSocket {
    fn open() -> Self {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Self { fd }
    }

    /// Sends `payload` as UDP from `src`:40000 to `dst`:`port` (the kernel
    /// fills in the IP checksum; the UDP checksum is left 0, as IPv4 allows).
    fn send(&self, src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) {
        let total = 20 + 8 + payload.len();
        let mut d = Vec::with_capacity(total);
        d.extend_from_slice(&[0x45, 0]);
        d.extend_from_slice(&(total as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0, 0x40, 0, 64, libc::IPPROTO_UDP as u8, 0, 0]);
        d.extend_from_slice(&src.octets());
        d.extend_from_slice(&dst.octets());
        d.extend_from_slice(&40000u16.to_be_bytes());
        d.extend_from_slice(&port.to_be_bytes());
        d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(payload);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: d and addr outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                d.as_ptr().cast(),
                d.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(
            sent,
            d.len() as isize,
            "raw send from {src}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A counter of the root's `GET /status`, 0 where this build has none.
fn counter(info: &Value, name: &str) -> u64 {
    info["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn a_forged_hello_flood_costs_the_root_little_and_a_new_node_still_comes_online() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let flood_host = lab.host("flood");
    let new_host = lab.host("new");
    make_planet(&lab, &root_host, &[lab.home(&new_host)]);
    let spoofed = format!("100.64.0.0/10 via {}", flood_host.ip());
    let args: Vec<&str> = ["route", "add"]
        .into_iter()
        .chain(spoofed.split(' '))
        .collect();
    let run = lab.exec(&root_host, "ip", &args);
    assert!(run.ok, "route to the spoofed sources: {run:?}");
    let root = Daemon::start(&lab, &root_host, "vnet-planet");
    let root_identity: Identity = fs::read_to_string(lab.home(&root_host).join("identity.public"))
        .expect("root identity.public")
        .trim()
        .parse()
        .expect("root identity");
    let root_ip = root_host.ip();
    let port: u16 = PORT.parse().expect("port");
    assert!(
        wait_until(Duration::from_secs(10), || root.cli(&["info"]).ok),
        "root API up"
    );
    let root_pid = root.proc().pid();
    let idle_rss = rss_kib(root_pid);

    // Phase 1: 200 forged HELLOs a second from 1,000 sources; a new node
    // starts 2 s in and must come ONLINE while the flood goes on.
    let before = root.json(&["info"]);
    let cpu_before = cpu_seconds(root_pid);
    let flood_ns = flood_host.ns().to_string();
    let root_for_flood = root_identity.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_flood = stop.clone();
    let flood = std::thread::spawn(move || {
        in_netns(&flood_ns, move || {
            let socket = SpoofSocket::open();
            let start = Instant::now();
            let mut sent = 0u64;
            while !stop_flood.load(std::sync::atomic::Ordering::Relaxed) {
                let due = start.elapsed().as_millis() as u64 * FLOOD_RATE_PER_SECOND / 1000;
                while sent < due {
                    let pair = KeyPair::generate(&mut os_rng());
                    let claimed = Address::from_u64(0x10_0000_0000 + sent).expect("address");
                    let hello = forged_hello(claimed, &pair, &root_for_flood, sent + 1);
                    let src = Ipv4Addr::from(SPOOF_BASE + (sent % u64::from(FLOOD_SOURCES)) as u32);
                    socket.send(src, root_ip, port, &hello);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (sent, start.elapsed())
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    let new = Daemon::start(&lab, &new_host, "vnet-node");
    let started = Instant::now();
    let online = wait_until(ONLINE_LIMIT, || {
        let run = new.cli(&["info"]);
        run.ok && run.stdout.contains("ONLINE")
    });
    let online_after = started.elapsed();
    let flood_start_wait = FLOOD_MIN.saturating_sub(online_after + Duration::from_secs(2));
    std::thread::sleep(flood_start_wait);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (forged, flood_time) = flood.join().expect("flood thread");
    let cpu_flood = cpu_seconds(root_pid) - cpu_before;
    let after = root.json(&["info"]);
    let checks = counter(&after, "identityChecks") - counter(&before, "identityChecks");
    eprintln!(
        "FIGURES forged_hellos={forged} in {:.1} s, root_cpu_s_per_1000_forged={:.3}, \
         new_node_online_s={:.2} (online: {online}), identity_checks={checks}",
        flood_time.as_secs_f64(),
        cpu_flood * 1000.0 / forged as f64,
        online_after.as_secs_f64(),
    );
    // Phase 2: 100,000 packets, each from its own source address, as fast
    // as they go; then the root still answers the member and its memory is
    // what its bounded tables allow.
    let flood_ns = flood_host.ns().to_string();
    let root_for_flood = root_identity.clone();
    let sent = in_netns(&flood_ns, move || {
        let socket = SpoofSocket::open();
        let pairs: Vec<KeyPair> = (0..64).map(|_| KeyPair::generate(&mut os_rng())).collect();
        for i in 0..SPOOFED_PACKETS {
            let claimed = Address::from_u64(0x20_0000_0000 + u64::from(i)).expect("address");
            let hello = forged_hello(claimed, &pairs[i as usize % 64], &root_for_flood, 1);
            socket.send(Ipv4Addr::from(SPOOF_BASE + i), root_ip, port, &hello);
            if i % 1000 == 999 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        SPOOFED_PACKETS
    });
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(root_pid);
    let after = root.json(&["info"]);
    eprintln!(
        "FIGURES spoofed_packets={sent} root_rss_kib_idle={idle_rss} root_rss_kib_after={rss} \
         received={}",
        counter(&after, "received")
    );
    // Figures first (for both builds bench/hello_flood.sh compares), then
    // what must hold.
    assert!(
        online,
        "the new node did not come ONLINE within {ONLINE_LIMIT:?} of a forged-HELLO flood:\n{}",
        new.proc().stderr_text()
    );
    // The budget (20/s, burst 20), not one hash per forged HELLO.
    let most = (flood_time.as_secs() + 2) * 20 + 1;
    assert!(
        checks <= most && checks * 5 < forged,
        "{checks} identity checks for {forged} forged HELLOs in {flood_time:?} (budget {most})"
    );
    assert!(
        counter(&after, "droppedIdentityBudget") + counter(&after, "droppedIdentityFailed") > 0,
        "the flood was not even seen: {after}"
    );

    let run = new.cli(&["ping", &root.address(), "-c", "3", "-i", "0.2"]);
    assert!(
        run.ok && run.stdout.contains("seq="),
        "the root no longer answers its member after the flood: {run:?}"
    );
}

/// The operating system's random source.
fn os_rng() -> vnet_node::core::rng::UnwrapErr<getrandom::SysRng> {
    vnet_node::core::rng::UnwrapErr(getrandom::SysRng)
}
