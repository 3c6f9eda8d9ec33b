//! A network-namespace lab for end-to-end tests. Needs root.
//!
//! A [`Lab`] is a small private internet, the same shapes as `shared/lab/netlab.sh`:
//!
//! - an underlay namespace with a bridge on `198.51.100.0/24` (TEST-NET-2): the "internet";
//! - [`Lab::host`]: a public host, one veth into the underlay, `198.51.100.N/24`;
//! - [`Lab::nat_router`]: a router whose WAN is on the underlay and whose LAN is a bridge with
//!   `10.R.0.1/24`; MASQUERADE ([`NatKind::Easy`], port-preserving) or MASQUERADE
//!   `--random-fully` ([`NatKind::Hard`], a new port per destination); unsolicited packets to
//!   the router from the underlay are dropped, as by a home router;
//! - [`Lab::host_behind`]: a host on a router's LAN, `10.R.0.K/24`, default route via the router.
//!
//! Every namespace and interface name starts with a prefix unique to the Lab (`vtPPPCC`: the
//! test process's PID mod 1000 and a counter), so tests run in parallel. Nothing is created in
//! the root namespace and no route leads out of the lab: public hosts and routers have no
//! default route, hosts behind a router have theirs via the router. Dropping the Lab, also
//! while a test panics, ends its processes, deletes its namespaces and any link left with its
//! prefix. A Lab left behind by a test process that was killed is removed by the next
//! [`Lab::new`] (owners are recorded in `/run/vnet-tests/`).
//!
//! ```no_run
//! use std::time::Duration;
//! use vnet_tests::netns::{Lab, NatKind, wait_until};
//!
//! let lab = Lab::new();
//! let root = lab.host("root");
//! let nat = lab.nat_router("nat", NatKind::Hard);
//! let leaf = lab.host_behind("leaf", &nat);
//! let home = lab.home(&root);
//! let daemon = lab.spawn(&root, vnet_tests::binary("vnet-node"), &["-d", home.to_str().unwrap()], &[]);
//! assert!(lab.ping(&leaf, root.ip()));
//! assert!(wait_until(Duration::from_secs(5), || daemon.stderr_text().contains("listening")));
//! ```

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::Run;

mod cleanup;
mod commands;
mod process;

use cleanup::*;
use commands::*;
pub use process::Proc;
use process::*;

/// The underlay network every public host and router WAN is on (TEST-NET-2, /24).
pub const UNDERLAY_NET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
/// Prefix length of [`UNDERLAY_NET`] and of every router LAN.
pub const PREFIX_LEN: u8 = 24;
/// How long [`Proc::stop`] and the Lab's cleanup wait after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long [`Lab::exec`] lets a command run before it kills it and panics.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Where each live Lab records its owner (`PID STARTTIME`), for reaping labs of killed tests.
const STATE_DIR: &str = "/run/vnet-tests";
/// Prefixes per process: two base-36 digits.
const PREFIXES_PER_PROCESS: u32 = 36 * 36;
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// How a NAT router maps its LAN hosts' flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// MASQUERADE: keeps the source port when it is free and uses one mapping for every
    /// destination (endpoint-independent): hole punching works.
    Easy,
    /// MASQUERADE `--random-fully`: a new random port for every destination (symmetric).
    Hard,
}

/// Something that lives in one of the Lab's namespaces: a [`Node`] or a [`Router`].
pub trait Netns {
    /// The namespace's name (for `ip netns exec`).
    fn netns(&self) -> &str;
    /// The name given to the Lab, for log file names and messages.
    fn label(&self) -> &str;
}

/// A host: public (on the underlay) or behind a [`Router`].
#[derive(Clone, Debug)]
pub struct Node {
    name: String,
    ns: String,
    iface: String,
    ip: Ipv4Addr,
    public_ip: Ipv4Addr,
    router: Option<String>,
    /// Where packets from the underlay enter for this host: its own namespace, or its router's.
    edge_ns: String,
    edge_iface: String,
}

impl Node {
    /// The name given to [`Lab::host`] / [`Lab::host_behind`].
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }
    /// Its one network interface (besides `lo`).
    pub fn iface(&self) -> &str {
        &self.iface
    }
    /// Its own address: on the underlay for a public host, on the LAN for a host behind a NAT.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// The address the underlay sees its packets come from: its own, or its router's WAN.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }
    /// Whether it sits behind a NAT router.
    pub fn is_natted(&self) -> bool {
        self.router.is_some()
    }
    /// The name of the router it sits behind, if any.
    pub fn router(&self) -> Option<&str> {
        self.router.as_deref()
    }
}

impl Netns for Node {
    fn netns(&self) -> &str {
        &self.ns
    }
    fn label(&self) -> &str {
        &self.name
    }
}

/// A NAT router: WAN on the underlay, a LAN bridge with a private /24.
#[derive(Clone, Debug)]
pub struct Router {
    name: String,
    ns: String,
    kind: NatKind,
    wan_iface: String,
    wan_ip: Ipv4Addr,
    lan_bridge: String,
    lan_ip: Ipv4Addr,
}

impl Router {
    /// The name given to [`Lab::nat_router`].
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }
    /// Easy or Hard.
    pub fn kind(&self) -> NatKind {
        self.kind
    }
    /// Its WAN interface (on the underlay).
    pub fn wan_iface(&self) -> &str {
        &self.wan_iface
    }
    /// Its WAN address: what the underlay sees as the source of its LAN hosts' packets.
    pub fn wan_ip(&self) -> Ipv4Addr {
        self.wan_ip
    }
    /// Its LAN bridge.
    pub fn lan_bridge(&self) -> &str {
        &self.lan_bridge
    }
    /// Its LAN address `10.R.0.1`: the gateway of the hosts behind it.
    pub fn lan_ip(&self) -> Ipv4Addr {
        self.lan_ip
    }
}

impl Netns for Router {
    fn netns(&self) -> &str {
        &self.ns
    }
    fn label(&self) -> &str {
        &self.name
    }
}

/// The lab: namespaces, links, NAT rules and processes, all removed on drop.
pub struct Lab {
    prefix: String,
    underlay: String,
    bridge: String,
    /// `None` once kept (after a panic) or removed.
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    state_file: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// In creation order, the underlay first.
    namespaces: Vec<String>,
    names: Vec<String>,
    next_if: u32,
    next_public: u32,
    next_lan: u32,
    lan_hosts: HashMap<String, u32>,
    procs: Vec<Arc<Mutex<ProcInner>>>,
    next_file: u32,
}

impl Lab {
    /// A new lab with an empty underlay.
    ///
    /// Panics with an explanation when not run as root or when network namespaces cannot be
    /// made here. First removes what labs of killed test processes left behind.
    pub fn new() -> Lab {
        check_privileges();
        reap_stale_labs();
        fs::create_dir_all(STATE_DIR)
            .unwrap_or_else(|e| panic!("netns lab: cannot create {STATE_DIR}: {e}"));
        let pid = std::process::id();
        let start = process_start(pid).expect("own /proc/self/stat");
        let existing = list_netns();
        let mut claimed = None;
        for _ in 0..PREFIXES_PER_PROCESS {
            let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed) % PREFIXES_PER_PROCESS;
            let prefix = format!("vt{:03}{}", pid % 1000, base36_2(n));
            let state_file = Path::new(STATE_DIR).join(&prefix);
            // The state file is the lock: another process with the same PID mod 1000 skips it.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&state_file)
            {
                Ok(mut f) => {
                    if existing.iter().any(|ns| ns.starts_with(&prefix)) {
                        // Left over by something we do not know about: do not touch, skip.
                        let _ = fs::remove_file(&state_file);
                        continue;
                    }
                    writeln!(f, "{pid} {start}").expect("write lab state file");
                    claimed = Some((prefix, state_file));
                    break;
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("netns lab: cannot create {}: {e}", state_file.display()),
            }
        }
        let (prefix, state_file) = claimed.expect("netns lab: no free lab prefix");
        let dir = tempfile::Builder::new()
            .prefix(&format!("vnet-lab-{prefix}-"))
            .tempdir()
            .expect("netns lab: temp dir");
        let lab = Lab {
            underlay: format!("{prefix}-net"),
            bridge: format!("{prefix}br"),
            dir_path: dir.path().to_path_buf(),
            dir: Some(dir),
            state_file,
            inner: Mutex::new(Inner {
                next_if: 1,
                next_public: 1,
                next_lan: 1,
                ..Inner::default()
            }),
            prefix,
        };
        lab.add_ns(&lab.underlay.clone());
        ip(&format!(
            "-n {} link add {} type bridge stp_state 0 forward_delay 0",
            lab.underlay, lab.bridge
        ));
        ip(&format!("-n {} link set {} up", lab.underlay, lab.bridge));
        // Bridged frames must not go through the underlay's (empty) iptables.
        sysctl(&lab.underlay, "net/bridge/bridge-nf-call-iptables", "0");
        lab
    }

    /// The prefix of every namespace and interface this Lab makes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The underlay namespace (the bridge's), e.g. for a packet capture.
    pub fn underlay_ns(&self) -> &str {
        &self.underlay
    }

    /// Every namespace made so far, the underlay first.
    pub fn namespaces(&self) -> Vec<String> {
        self.inner().namespaces.clone()
    }

    /// The per-lab temp dir: process logs, homes. Kept (and its path printed) if a test panics.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// A fresh directory `<dir>/<label>.home` for a daemon's files (created if missing).
    pub fn home(&self, at: &impl Netns) -> PathBuf {
        let dir = self.dir_path.join(format!("{}.home", at.label()));
        fs::create_dir_all(&dir).expect("create home dir");
        dir
    }

    /// A public host on the underlay: `198.51.100.N/24`, no default route.
    pub fn host(&self, name: &str) -> Node {
        let (ns, i, ip_addr) = {
            let mut inner = self.inner();
            let ns = self.claim_name(&mut inner, name);
            let i = take(&mut inner.next_if);
            let ip_addr = self.take_public(&mut inner);
            (ns, i, ip_addr)
        };
        self.add_ns(&ns);
        let iface = format!("{}h{i}", self.prefix);
        self.plug(&ns, &iface, i);
        ip(&format!(
            "-n {ns} addr add {ip_addr}/{PREFIX_LEN} dev {iface}"
        ));
        ip(&format!("-n {ns} link set {iface} up"));
        Node {
            name: name.to_string(),
            edge_ns: ns.clone(),
            edge_iface: iface.clone(),
            ns,
            iface,
            ip: ip_addr,
            public_ip: ip_addr,
            router: None,
        }
    }

    /// A NAT router: WAN `198.51.100.N/24` on the underlay, LAN bridge `10.R.0.1/24`,
    /// ip_forward on, MASQUERADE (Easy) or MASQUERADE --random-fully (Hard) out of the WAN,
    /// and new or invalid packets to the router itself from the WAN dropped. No default route.
    pub fn nat_router(&self, name: &str, kind: NatKind) -> Router {
        let (ns, i, wan_ip, r) = {
            let mut inner = self.inner();
            let ns = self.claim_name(&mut inner, name);
            let i = take(&mut inner.next_if);
            let wan_ip = self.take_public(&mut inner);
            let r = take(&mut inner.next_lan);
            assert!(r <= 250, "netns lab: too many routers");
            inner.lan_hosts.insert(ns.clone(), 2);
            (ns, i, wan_ip, r)
        };
        self.add_ns(&ns);
        sysctl(&ns, "net/ipv4/ip_forward", "1");
        sysctl(&ns, "net/bridge/bridge-nf-call-iptables", "0");
        let wan = format!("{}w{i}", self.prefix);
        self.plug(&ns, &wan, i);
        ip(&format!("-n {ns} addr add {wan_ip}/{PREFIX_LEN} dev {wan}"));
        ip(&format!("-n {ns} link set {wan} up"));
        let lan = format!("{}l{i}", self.prefix);
        let lan_ip = Ipv4Addr::new(10, r as u8, 0, 1);
        ip(&format!("-n {ns} link add {lan} type bridge"));
        ip(&format!("-n {ns} addr add {lan_ip}/{PREFIX_LEN} dev {lan}"));
        ip(&format!("-n {ns} link set {lan} up"));
        // Like a home router: drop unsolicited packets to the router itself. Besides realism
        // this keeps hole punching possible: an accepted unsolicited packet would leave a
        // conntrack entry that collides with the later outbound mapping and makes MASQUERADE
        // pick another port (see shared/lab/netlab.sh).
        iptables(
            &ns,
            &format!("-A INPUT -i {wan} -m conntrack --ctstate NEW,INVALID -j DROP"),
        );
        let random = if kind == NatKind::Hard {
            " --random-fully"
        } else {
            ""
        };
        iptables(
            &ns,
            &format!("-t nat -A POSTROUTING -o {wan} -j MASQUERADE{random}"),
        );
        Router {
            name: name.to_string(),
            ns,
            kind,
            wan_iface: wan,
            wan_ip,
            lan_bridge: lan,
            lan_ip,
        }
    }

    /// A [`NatKind::Easy`] router ([`Lab::nat_router`]) that is also a port-mapping gateway:
    /// miniupnpd (nftables backend) answers UPnP IGD (SSDP + SOAP on port 5000) if `upnp` and
    /// NAT-PMP (port 5351) if `natpmp`, on the LAN only. Returns the router and miniupnpd's
    /// [`Proc`] (ended by PID like any other), once it listens.
    ///
    /// miniupnpd adds its DNAT rules to `table inet filter`, chain `prerouting_miniupnpd`
    /// (list it with `nft list chain inet filter prerouting_miniupnpd` in the router), and its
    /// accept rules to chain `miniupnpd` (the forward path is open anyway: the iptables of
    /// [`Lab::nat_router`] filter only INPUT). miniupnpd 2.3.1 refuses a private WAN address, so
    /// the config declares the placeholder `ext_ip=100.128.0.1` (reported to clients, never a
    /// destination); packets to the router's real WAN address on a mapped port are forwarded,
    /// as the DNAT rules match only interface, protocol and port.
    pub fn upnp_router(&self, name: &str, upnp: bool, natpmp: bool) -> (Router, Proc) {
        assert!(
            upnp || natpmp,
            "netns lab: upnp_router with neither UPnP nor NAT-PMP"
        );
        let router = self.nat_router(name, NatKind::Easy);
        let ns = router.ns.clone();
        // SSDP is multicast: do not let IGMP snooping on the LAN bridge decide its delivery.
        ip(&format!(
            "-n {ns} link set {} type bridge mcast_snooping 0",
            router.lan_bridge
        ));
        // The chains miniupnpd-nftables expects (Debian's nft_init.sh is broken). A separate
        // `inet` table: iptables-nft's tables are family `ip`, so both coexist.
        let ruleset = r#"table inet filter {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
"#;
        let nft_file = self.dir_path.join(format!("{name}.router.nft"));
        fs::write(&nft_file, ruleset).expect("write router.nft");
        must(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "nft",
                "-f",
                &nft_file.to_string_lossy(),
            ],
        );
        let [a, b, c, _] = router.lan_ip.octets();
        let yes_no = |on: bool| if on { "yes" } else { "no" };
        let conf = format!(
            "ext_ifname={wan}\n\
             # placeholder: 2.3.1 refuses private WAN IPs; only reported, never a destination\n\
             ext_ip=100.128.0.1\n\
             listening_ip={lan}\n\
             http_port=5000\n\
             enable_upnp={upnp}\n\
             enable_natpmp={natpmp}\n\
             secure_mode=yes\n\
             system_uptime=yes\n\
             notify_interval=60\n\
             clean_ruleset_interval=600\n\
             upnp_table_name=filter\n\
             upnp_nat_table_name=filter\n\
             upnp_forward_chain=miniupnpd\n\
             upnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             uuid=3e1f0a8c-7b2d-4c55-9a0e-5e7a11c0ffee\n\
             allow 1024-65535 {a}.{b}.{c}.0/{PREFIX_LEN} 1024-65535\n\
             deny 0-65535 0.0.0.0/0 0-65535\n",
            wan = router.wan_iface,
            lan = router.lan_bridge,
            upnp = yes_no(upnp),
            natpmp = yes_no(natpmp),
        );
        let conf_file = self.dir_path.join(format!("{name}.miniupnpd.conf"));
        fs::write(&conf_file, conf).expect("write miniupnpd.conf");
        // A private pid file: the default one in /run is shared by every namespace.
        let pid_file = self.dir_path.join(format!("{name}.miniupnpd.pid"));
        let program = if Path::new("/usr/sbin/miniupnpd").is_file() {
            PathBuf::from("/usr/sbin/miniupnpd")
        } else {
            PathBuf::from("miniupnpd")
        };
        let daemon = self.spawn(
            &router,
            program,
            &[
                "-d",
                "-f",
                &conf_file.to_string_lossy(),
                "-P",
                &pid_file.to_string_lossy(),
            ],
            &[],
        );
        let listening = |proto: &str, port: u16| {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "ss",
                    "-Hln",
                    proto,
                    &format!("sport = :{port}"),
                ],
            )
            .is_ok_and(|out| !out.trim().is_empty())
        };
        let up = wait_until(Duration::from_secs(10), || {
            (!upnp || listening("-t", 5000)) && (!natpmp || listening("-u", 5351))
        });
        assert!(
            up,
            "netns lab: miniupnpd in {name} is not listening (running: {}); stderr:\n{}",
            daemon.is_running(),
            daemon.stderr_text()
        );
        (router, daemon)
    }

    /// A host on `router`'s LAN: `10.R.0.K/24`, default route via the router.
    pub fn host_behind(&self, name: &str, router: &Router) -> Node {
        let (ns, i, k) = {
            let mut inner = self.inner();
            let ns = self.claim_name(&mut inner, name);
            let i = take(&mut inner.next_if);
            let k = take(
                inner
                    .lan_hosts
                    .get_mut(&router.ns)
                    .expect("router of this lab"),
            );
            assert!(k <= 254, "netns lab: LAN of {} is full", router.name);
            (ns, i, k)
        };
        self.add_ns(&ns);
        let iface = format!("{}h{i}", self.prefix);
        let port = format!("{}v{i}", self.prefix);
        ip(&format!(
            "-n {ns} link add {iface} type veth peer name {port} netns {}",
            router.ns
        ));
        ip(&format!(
            "-n {} link set {port} master {} up",
            router.ns, router.lan_bridge
        ));
        let [a, b, c, _] = router.lan_ip.octets();
        let ip_addr = Ipv4Addr::new(a, b, c, k as u8);
        ip(&format!(
            "-n {ns} addr add {ip_addr}/{PREFIX_LEN} dev {iface}"
        ));
        ip(&format!("-n {ns} link set {iface} up"));
        ip(&format!("-n {ns} route add default via {}", router.lan_ip));
        Node {
            name: name.to_string(),
            ns,
            iface,
            ip: ip_addr,
            public_ip: router.wan_ip,
            router: Some(router.name.clone()),
            edge_ns: router.ns.clone(),
            edge_iface: router.wan_iface.clone(),
        }
    }

    /// A host on a LAN that lives inside `on`'s namespace: one veth whose peer is a port of the
    /// bridge `bridge` there (made by the caller), address `ip/PREFIX_LEN`, no route beyond its
    /// subnet and no link to the underlay (e.g. a LAN bridged to a vnet TAP). Removed with the
    /// Lab like any other host.
    pub fn host_on_bridge(&self, name: &str, on: &Node, bridge: &str, ip_addr: Ipv4Addr) -> Node {
        let (ns, i) = {
            let mut inner = self.inner();
            let ns = self.claim_name(&mut inner, name);
            let i = take(&mut inner.next_if);
            (ns, i)
        };
        self.add_ns(&ns);
        let iface = format!("{}h{i}", self.prefix);
        let port = format!("{}v{i}", self.prefix);
        // Universally administered MACs (bit 1 of the first octet clear): a
        // random veth MAC can look like a member MAC of the network (about
        // one chance in 64), and a bridge member may not send from those.
        let i_low = i & 0xff;
        ip(&format!(
            "-n {ns} link add {iface} address 00:16:3e:5a:{i_low:02x}:01 type veth \
             peer name {port} address 00:16:3e:5a:{i_low:02x}:02 netns {}",
            on.ns
        ));
        ip(&format!("-n {} link set {port} master {bridge} up", on.ns));
        ip(&format!(
            "-n {ns} addr add {ip_addr}/{PREFIX_LEN} dev {iface}"
        ));
        ip(&format!("-n {ns} link set {iface} up"));
        Node {
            name: name.to_string(),
            edge_ns: ns.clone(),
            edge_iface: iface.clone(),
            ns,
            iface,
            ip: ip_addr,
            public_ip: ip_addr,
            router: None,
        }
    }

    /// Drops, from now on, every packet from `from`'s public address arriving at `to`'s public
    /// address (at `to`'s WAN edge: its own interface, or its router's WAN, so it affects every
    /// host behind that router). Silent loss: the sender's sends still succeed. Idempotent.
    pub fn block(&self, from: &Node, to: &Node) {
        let rule = self.block_rule(from, to);
        if !iptables_check(&to.edge_ns, &rule) {
            iptables(&to.edge_ns, &with_op("-I", &rule));
        }
    }

    /// Undoes [`Lab::block`]; a no-op if not blocked.
    pub fn unblock(&self, from: &Node, to: &Node) {
        let rule = self.block_rule(from, to);
        while iptables_check(&to.edge_ns, &rule) {
            iptables(&to.edge_ns, &with_op("-D", &rule));
        }
    }

    /// Cuts the path between `a`'s and `b`'s public addresses, both ways ([`Lab::block`]).
    pub fn cut(&self, a: &Node, b: &Node) {
        self.block(a, b);
        self.block(b, a);
    }

    /// Makes `router` a firewall that forwards no UDP at all (TCP still passes,
    /// NATed): what a node meets on some corporate or hotel networks.
    pub fn block_udp(&self, router: &Router) {
        iptables(&router.ns, "-I FORWARD -p udp -j DROP");
    }

    /// Restores a path cut with [`Lab::cut`].
    pub fn restore(&self, a: &Node, b: &Node) {
        self.unblock(a, b);
        self.unblock(b, a);
    }

    /// Runs `program` inside `at`'s namespace in the background, stdin from /dev/null, stdout
    /// and stderr into files in the lab's dir. The process ends when the [`Proc`] or the Lab is
    /// dropped.
    pub fn spawn(
        &self,
        at: &impl Netns,
        program: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let program = program.as_ref();
        let (out, err) = self.log_files(at.label(), program);
        let child = netns_command(at.netns(), program, args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("create stdout log"))
            .stderr(File::create(&err).expect("create stderr log"))
            .spawn()
            .unwrap_or_else(|e| panic!("netns lab: cannot start `ip netns exec`: {e}"));
        let proc = Arc::new(Mutex::new(ProcInner {
            child,
            label: format!("{} in {}", program.display(), at.label()),
            stdout: out,
            stderr: err,
            status: None,
        }));
        self.inner().procs.push(proc.clone());
        Proc { inner: proc }
    }

    /// Runs a command inside `at`'s namespace to completion (at most [`EXEC_TIMEOUT`]).
    pub fn exec(&self, at: &impl Netns, cmd: impl AsRef<Path>, args: &[&str]) -> Run {
        self.exec_timeout(at, cmd, args, EXEC_TIMEOUT)
    }

    /// [`Lab::exec`] with another time limit: past it the command is killed and this panics.
    pub fn exec_timeout(
        &self,
        at: &impl Netns,
        cmd: impl AsRef<Path>,
        args: &[&str],
        timeout: Duration,
    ) -> Run {
        let cmd = cmd.as_ref();
        let (out, err) = self.log_files(at.label(), cmd);
        let mut child = netns_command(at.netns(), cmd, args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("create stdout file"))
            .stderr(File::create(&err).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("netns lab: cannot start `ip netns exec`: {e}"));
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait().expect("wait for command") {
                Some(status) => break Some(status),
                None if Instant::now() >= deadline => break None,
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let read = |p: &Path| {
            let text = String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
            let _ = fs::remove_file(p);
            text
        };
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "netns lab: `{} {}` in {} still running after {timeout:?}; stdout:\n{}\nstderr:\n{}",
                cmd.display(),
                args.join(" "),
                at.label(),
                read(&out),
                read(&err)
            );
        };
        Run {
            ok: status.success(),
            code: status.code(),
            stdout: read(&out),
            stderr: read(&err),
        }
    }

    /// Whether one ping from `from` to `to` gets an answer within 1 s.
    pub fn ping(&self, from: &impl Netns, to: Ipv4Addr) -> bool {
        self.exec(from, "ping", &["-n", "-c", "1", "-W", "1", &to.to_string()])
            .ok
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claim_name(&self, inner: &mut Inner, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() <= 24
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "netns lab: name {name:?} must be 1-24 of [A-Za-z0-9_-]"
        );
        assert!(
            !inner.names.iter().any(|n| n == name),
            "netns lab: name {name:?} used twice"
        );
        inner.names.push(name.to_string());
        format!("{}-{name}", self.prefix)
    }

    fn take_public(&self, inner: &mut Inner) -> Ipv4Addr {
        let n = take(&mut inner.next_public);
        assert!(n <= 254, "netns lab: underlay is full");
        let [a, b, c, _] = UNDERLAY_NET.octets();
        Ipv4Addr::new(a, b, c, n as u8)
    }

    /// Creates namespace `ns` (recorded first, so that a failure is still cleaned up).
    fn add_ns(&self, ns: &str) {
        self.inner().namespaces.push(ns.to_string());
        if let Err(e) = run("ip", &["netns", "add", ns]) {
            panic!(
                "netns lab: cannot create network namespace {ns}: {e}\n\
                 (the end-to-end network tests need root with CAP_SYS_ADMIN and CAP_NET_ADMIN, \
                 and a kernel with network namespaces)"
            );
        }
        ip(&format!("-n {ns} link set lo up"));
    }

    /// A veth `iface` in `ns` whose peer `<prefix>u<i>` is a port of the underlay bridge.
    /// Narrows the link between public host `host` and the underlay to
    /// `mtu` bytes both ways (its interface and its bridge port), as a
    /// tunnel on the way would.
    pub fn set_link_mtu(&self, host: &Node, mtu: u32) {
        let i = host
            .edge_iface
            .strip_prefix(&format!("{}h", self.prefix))
            .expect("a public host's link");
        let port = format!("{}u{i}", self.prefix);
        ip(&format!(
            "-n {} link set {} mtu {mtu}",
            host.edge_ns, host.edge_iface
        ));
        ip(&format!("-n {} link set {port} mtu {mtu}", self.underlay));
    }

    fn plug(&self, ns: &str, iface: &str, i: u32) {
        let port = format!("{}u{i}", self.prefix);
        ip(&format!(
            "-n {ns} link add {iface} type veth peer name {port} netns {}",
            self.underlay
        ));
        ip(&format!(
            "-n {} link set {port} master {} up",
            self.underlay, self.bridge
        ));
    }

    /// The rule as `-t raw CHAIN MATCH...` (see [`with_op`]).
    fn block_rule(&self, from: &Node, to: &Node) -> String {
        assert_ne!(
            from.public_ip, to.public_ip,
            "netns lab: {} and {} share a public address; nothing to cut between them",
            from.name, to.name
        );
        // raw PREROUTING: before conntrack and NAT, so no state is made for the lost packets.
        format!(
            "-t raw PREROUTING -i {} -s {} -d {} -m comment --comment {}-cut -j DROP",
            to.edge_iface, from.public_ip, to.public_ip, self.prefix
        )
    }

    fn log_files(&self, label: &str, program: &Path) -> (PathBuf, PathBuf) {
        let n = take(&mut self.inner().next_file);
        let stem = program
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cmd".to_string());
        let base = self.dir_path.join(format!("{label}.{stem}.{n}"));
        (base.with_extension("out"), base.with_extension("err"))
    }

    /// After a panic: what the processes said, so the test log shows why.
    fn report(&self, procs: &[Arc<Mutex<ProcInner>>]) {
        let mut text = format!(
            "netns lab {}: the test panicked; logs kept in {}\n",
            self.prefix,
            self.dir_path.display()
        );
        for p in procs {
            let p = p.lock().unwrap_or_else(|e| e.into_inner());
            let stderr =
                String::from_utf8_lossy(&fs::read(&p.stderr).unwrap_or_default()).into_owned();
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            text.push_str(&format!(
                "--- {} (pid {}, {}), last {} lines of stderr:\n",
                p.label,
                p.child.id(),
                p.status.map_or("running".to_string(), |s| s.to_string()),
                tail.len()
            ));
            for line in tail {
                text.push_str(line);
                text.push('\n');
            }
        }
        eprint!("{text}");
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let (procs, namespaces) = {
            let mut inner = self.inner();
            (
                std::mem::take(&mut inner.procs),
                std::mem::take(&mut inner.namespaces),
            )
        };
        stop_all(&procs, STOP_GRACE);
        if panicking {
            self.report(&procs);
        }
        // Anything else still running in our namespaces was started from them (forked).
        kill_all_in(&namespaces, Duration::from_secs(1));
        for ns in namespaces.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let links = remove_root_links(&self.prefix);
        let left: Vec<String> = list_netns()
            .into_iter()
            .filter(|ns| namespaces.contains(ns))
            .collect();
        if left.is_empty() {
            let _ = fs::remove_file(&self.state_file);
        }
        if let Some(dir) = self.dir.take() {
            if panicking {
                let _ = dir.keep();
            } else {
                let _ = dir.close();
            }
        }
        let problem = match (left.is_empty(), links.is_empty()) {
            (true, true) => return,
            (false, _) => format!("namespaces {left:?} could not be deleted"),
            (true, false) => format!("links {links:?} were left in the root namespace (removed)"),
        };
        if panicking {
            eprintln!("netns lab {}: {problem}", self.prefix);
        } else {
            panic!("netns lab {}: {problem}", self.prefix);
        }
    }
}

/// Polls `cond` every 100 ms until it holds (true) or `timeout` has passed (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || cond().then_some(())).is_some()
}

/// Polls `f` every 100 ms until it gives a value, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn take(counter: &mut u32) -> u32 {
    let n = *counter;
    *counter += 1;
    n
}

fn base36_2(n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let n = n % PREFIXES_PER_PROCESS;
    [DIGITS[(n / 36) as usize], DIGITS[(n % 36) as usize]]
        .iter()
        .map(|&b| b as char)
        .collect()
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it
/// makes stay in that namespace.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on an open namespace file; affects this thread only.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in namespace")
}
