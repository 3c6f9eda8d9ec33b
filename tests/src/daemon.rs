//! vnet daemons in lab namespaces: start, restart, drive with vnet-cli.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::netns::{Lab, Node, Proc, wait_until};
use crate::{Run, binary, run_in};

/// The port every daemon uses in its own namespace.
pub const PORT: &str = "9993";

/// A vnet daemon (`vnet-node`, `vnet-controller` or `vnet-planet serve`) in a lab host.
pub struct Daemon<'a> {
    /// The lab.
    pub lab: &'a Lab,
    /// The host it runs in.
    pub host: &'a Node,
    /// Its home directory.
    pub home: PathBuf,
    program: &'static str,
    proc: Option<Proc>,
}

impl<'a> Daemon<'a> {
    /// Starts `program` in `host`. A root (`vnet-planet`) runs as `nobody`: it
    /// needs no privileges.
    pub fn start(lab: &'a Lab, host: &'a Node, program: &'static str) -> Self {
        let home = lab.home(host);
        let mut d = Self {
            lab,
            host,
            home,
            program,
            proc: None,
        };
        d.restart();
        d
    }

    /// Stops it cleanly (if running) and starts it again.
    pub fn restart(&mut self) {
        if let Some(p) = self.proc.take() {
            assert!(p.stop().success(), "clean stop");
        }
        let bin = binary(self.program);
        let home = self.home.to_str().expect("UTF-8 home").to_string();
        // VNET_LOG sets the daemons' log filter (default info), for debugging a test.
        let level = std::env::var("VNET_LOG").unwrap_or_else(|_| "info".to_string());
        let env = [("RUST_LOG", level.as_str())];
        self.proc = Some(if self.program == "vnet-planet" {
            // The lab's directory is private (0700): let nobody through to its home.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(self.lab.dir(), fs::Permissions::from_mode(0o711))
                .expect("chmod lab dir");
            let chown = std::process::Command::new("chown")
                .args(["-R", "nobody", &home])
                .status()
                .expect("chown");
            assert!(chown.success());
            let args = [
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                bin.to_str().expect("UTF-8 path"),
                "serve",
                "-d",
                &home,
                "-p",
                PORT,
            ];
            self.lab.spawn(self.host, "setpriv", &args, &env)
        } else {
            self.lab
                .spawn(self.host, &bin, &["-d", &home, "-p", PORT], &env)
        });
    }

    /// The running process.
    pub fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("daemon started")
    }

    /// Forgets the process (after the test killed it).
    pub fn forget_proc(&mut self) {
        self.proc = None;
    }

    /// Runs vnet-cli against this daemon.
    pub fn cli(&self, args: &[&str]) -> Run {
        let home = self.home.to_str().expect("UTF-8 home");
        let mut all = vec!["-D", home];
        all.extend_from_slice(args);
        self.lab.exec(self.host, binary("vnet-cli"), &all)
    }

    /// Runs `vnet-cli -j` and parses the JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let run = self.cli(&all);
        assert!(run.ok, "vnet-cli {args:?}: {run:?}");
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    }

    /// Its 10-digit address.
    pub fn address(&self) -> String {
        fs::read_to_string(self.home.join("identity.public")).expect("identity.public")[..10]
            .to_string()
    }

    /// Waits until `info` says ONLINE.
    pub fn wait_online(&self) {
        let online = wait_until(Duration::from_secs(15), || {
            self.cli(&["info"]).stdout.contains("ONLINE")
        });
        assert!(
            online,
            "{} not ONLINE; log:\n{}",
            self.host.name(),
            self.proc().stderr_text()
        );
    }

    /// The `route` field of a peer in `GET /peer`.
    pub fn route_to(&self, addr: &str) -> String {
        let peers = self.json(&["listpeers"]);
        peers
            .as_array()
            .and_then(|a| a.iter().find(|p| p["address"] == addr))
            .map(|p| p["route"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    /// The MTU (UDP payload bytes) of the preferred path to peer `addr`, as
    /// path MTU discovery left it; None without a preferred path.
    pub fn path_mtu_to(&self, addr: &str) -> Option<u64> {
        let peers = self.json(&["listpeers"]);
        let peer = peers.as_array()?.iter().find(|p| p["address"] == addr)?;
        let paths = peer["paths"].as_array()?;
        let path = paths.iter().find(|p| p["preferred"] == true)?;
        path["mtu"].as_u64()
    }

    /// The `listnetworks` line of `nwid`, split into fields.
    pub fn network_line(&self, nwid: &str) -> Vec<String> {
        self.cli(&["listnetworks"])
            .stdout
            .lines()
            .find(|l| l.contains(nwid))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The status column of `nwid` in `listnetworks`.
    pub fn status(&self, nwid: &str) -> String {
        self.network_line(nwid).get(5).cloned().unwrap_or_default()
    }
}

/// Makes a planet whose one root is `root` (identity generated in its home)
/// and copies it into every home given.
pub fn make_planet(lab: &Lab, root: &Node, homes: &[PathBuf]) {
    make_planet_with_roots(lab, &[root], homes);
}

/// Makes a planet whose roots are `roots` (identities generated in their
/// homes; the first one signs) and copies it into every root's home and every
/// home given.
pub fn make_planet_with_roots(lab: &Lab, roots: &[&Node], homes: &[PathBuf]) {
    let mut entries = Vec::new();
    for root in roots {
        let home = lab.home(*root);
        fs::create_dir_all(&home).expect("root home");
        let run = run_in(
            &home,
            "vnet-idtool",
            &["generate", "identity.secret", "identity.public"],
        );
        assert!(run.ok, "{run:?}");
        let public = fs::read_to_string(home.join("identity.public")).expect("identity.public");
        entries.push(serde_json::json!({
            "identity": public.trim(),
            "stableEndpoints": [format!("{}/{PORT}", root.ip())],
        }));
    }
    let first_home = lab.home(roots[0]);
    let run = run_in(
        &first_home,
        "vnet-planet",
        &["initplanet", "identity.public"],
    );
    assert!(run.ok, "{run:?}");
    let mut json: Value = serde_json::from_str(&run.stdout).expect("planet JSON");
    json["roots"] = Value::Array(entries);
    fs::write(first_home.join("planet.json"), json.to_string()).expect("write planet.json");
    let run = run_in(
        &first_home,
        "vnet-planet",
        &["mkworld", "planet.json", "-o", "planet"],
    );
    assert!(run.ok, "{run:?}");
    let mut all: Vec<PathBuf> = roots.iter().skip(1).map(|r| lab.home(*r)).collect();
    all.extend(homes.iter().cloned());
    for home in all {
        fs::create_dir_all(&home).expect("home dir");
        fs::copy(first_home.join("planet"), home.join("planet")).expect("copy planet");
    }
}

/// The usual lab's daemons: a root, a controller and members, all online.
/// Keep `root` bound (`root: _root`), not `..`: a daemon dropped is stopped.
pub struct Started<'a> {
    /// `vnet-planet` on the root host.
    pub root: Daemon<'a>,
    /// `vnet-controller` on the controller host.
    pub ctl: Daemon<'a>,
    /// `vnet-node` on each member host, in order.
    pub members: Vec<Daemon<'a>>,
}

/// Starts the usual lab: one planet with `root` as its root, a root
/// daemon there, a controller on `ctl` and a member on each of `members`;
/// returns once every daemon is online.
pub fn start_root_controller_members<'a>(
    lab: &'a Lab,
    root: &'a Node,
    ctl: &'a Node,
    members: &[&'a Node],
) -> Started<'a> {
    let mut homes = vec![lab.home(ctl)];
    homes.extend(members.iter().map(|h| lab.home(*h)));
    make_planet(lab, root, &homes);
    let started = Started {
        root: Daemon::start(lab, root, "vnet-planet"),
        ctl: Daemon::start(lab, ctl, "vnet-controller"),
        members: members
            .iter()
            .map(|h| Daemon::start(lab, h, "vnet-node"))
            .collect(),
    };
    started.ctl.wait_online();
    for d in &started.members {
        d.wait_online();
    }
    started
}

/// Creates a private network named `name` on the controller `ctl` (pool
/// 10.147.17.10-250, route 10.147.17.0/24), authorizes every member and has
/// it join; waits until each is OK and returns the network id and each
/// member's assigned IPv4 address.
pub fn network_of(ctl: &Daemon, members: &[&Daemon], name: &str) -> (String, Vec<String>) {
    let run = ctl.cli(&[
        "network",
        "create",
        "--name",
        name,
        "--pool",
        "10.147.17.10-10.147.17.250",
        "--route",
        "10.147.17.0/24",
    ]);
    assert!(run.ok, "{run:?}");
    let nwid = run
        .stdout
        .split_whitespace()
        .nth(3)
        .expect("network id")
        .to_string();
    for m in members {
        let run = ctl.cli(&["member", "authorize", &nwid, &m.address()]);
        assert!(run.ok, "{run:?}");
        let run = m.cli(&["join", &nwid]);
        assert!(run.ok, "{run:?}");
    }
    let mut ips = Vec::new();
    for m in members {
        let ok = wait_until(Duration::from_secs(20), || m.status(&nwid) == "OK");
        assert!(
            ok,
            "{} not OK: {:?}\n{}",
            m.host.name(),
            m.network_line(&nwid),
            m.proc().stderr_text()
        );
        let line = m.network_line(&nwid);
        let ip = line[8].split('/').next().expect("assigned IP").to_string();
        // zerotier-cli's habit: `get <nwid> ip4` prints the address alone.
        let got = m.cli(&["get", &nwid, "ip4"]);
        assert_eq!(got.stdout.trim(), ip, "{got:?}");
        ips.push(ip);
    }
    (nwid, ips)
}

/// `vnet-cli -j ping <to> -c 1` until a reply comes back by `route` through
/// `root`, up to `limit`; returns the last reply seen (the matching one, or
/// the last other one) and whether it matched.
pub fn ping_until_via(from: &Daemon, to: &str, root: &str, limit: Duration) -> (bool, Value) {
    let mut last = Value::Null;
    let ok = wait_until(limit, || {
        let run = from.cli(&["-j", "ping", to, "-c", "1"]);
        last = serde_json::from_str(&run.stdout).unwrap_or_else(
            |_| serde_json::json!({"error": run.stderr.trim(), "stdout": run.stdout.trim()}),
        );
        run.ok && last["route"] == "RELAY" && last["root"] == root
    });
    (ok, last)
}

/// The `relayed` counter of a daemon.
pub fn relayed(d: &Daemon) -> u64 {
    d.json(&["info"])["counters"]["relayed"]
        .as_u64()
        .expect("counters.relayed")
}

/// One sample of a `/metrics` scrape: its labels and value.
#[derive(Debug, Clone)]
pub struct MetricSample {
    /// The metric's name as scraped (`vnet_received_total`).
    pub name: String,
    /// Its labels.
    pub labels: std::collections::HashMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Daemon<'_> {
    /// Scrapes `GET /metrics` with curl (token in `X-ZT1-Auth`, as
    /// Prometheus is set up for ZeroTier) and parses it with a Prometheus
    /// text parser.
    pub fn metrics(&self) -> Vec<MetricSample> {
        let token =
            fs::read_to_string(self.home.join("authtoken.secret")).expect("authtoken.secret");
        let port = fs::read_to_string(self.home.join("vnet.port")).unwrap_or_else(|_| PORT.into());
        let url = format!("http://127.0.0.1:{}/metrics", port.trim());
        let header = format!("X-ZT1-Auth: {}", token.trim());
        let run = self
            .lab
            .exec(self.host, "curl", &["-sS", "--fail", "-H", &header, &url]);
        assert!(run.ok, "curl {url}: {run:?}");
        let scrape = prometheus_parse::Scrape::parse(run.stdout.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("{url} is no Prometheus text ({e}):\n{}", run.stdout));
        scrape
            .samples
            .into_iter()
            .filter_map(|s| {
                let value = match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => return None,
                };
                Some(MetricSample {
                    name: s.metric,
                    labels: (*s.labels).clone(),
                    value,
                })
            })
            .collect()
    }

    /// The value of `name` with `labels` in a `/metrics` scrape.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics()
            .into_iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}
