//! Managed routes end to end: a gateway member into a LAN whose hosts run no
//! vnet, the member's allow* settings (`vnet-cli set/get`), and an exit node
//! (a default route through a member) that goes away leaving the routing
//! table exactly as it was.

use std::time::Duration;

use vnet_tests::daemon::{Daemon, make_planet};
use vnet_tests::netns::{Lab, NatKind, Node, wait_for, wait_until};

/// The gateway member's fixed address on the virtual network.
const GATEWAY_IP: &str = "10.147.17.10";

/// Creates a network on `ctl` with `routes` (`--route` arguments), gives the
/// gateway `GATEWAY_IP`, authorizes both and has them join; returns the id
/// and the remote member's address on the network.
fn network(ctl: &Daemon, gateway: &Daemon, remote: &Daemon, routes: &[String]) -> (String, String) {
    let mut args = vec![
        "network",
        "create",
        "--name",
        "lan",
        "--pool",
        "10.147.17.100-10.147.17.200",
        "--route",
        "10.147.17.0/24",
    ];
    for r in routes {
        args.push("--route");
        args.push(r);
    }
    let run = ctl.cli(&args);
    assert!(run.ok, "{run:?}");
    let nwid = run
        .stdout
        .split_whitespace()
        .nth(3)
        .expect("network id")
        .to_string();
    let ip_setting = format!("ipAssignments={GATEWAY_IP}");
    let run = ctl.cli(&["member", "set", &nwid, &gateway.address(), &ip_setting]);
    assert!(run.ok, "{run:?}");
    for m in [gateway, remote] {
        let run = ctl.cli(&["member", "authorize", &nwid, &m.address()]);
        assert!(run.ok, "{run:?}");
        let run = m.cli(&["join", &nwid]);
        assert!(run.ok, "{run:?}");
    }
    for m in [gateway, remote] {
        assert!(
            wait_until(Duration::from_secs(15), || m.status(&nwid) == "OK"),
            "{}: {:?}",
            m.host.name(),
            m.network_line(&nwid)
        );
    }
    let ip = remote.network_line(&nwid)[8]
        .split('/')
        .next()
        .expect("remote IP")
        .to_string();
    (nwid, ip)
}

/// `ip -4 route` in `at`, one route per line, sorted.
fn routes(lab: &Lab, at: &Node) -> Vec<String> {
    let run = lab.exec(at, "ip", &["-4", "route", "show", "table", "main"]);
    assert!(run.ok, "{run:?}");
    let mut lines: Vec<String> = run.stdout.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The route targets (`ip/prefix`) in the member's config of `nwid`
/// (`GET /network`'s `routes`, whatever its allow* settings install).
fn config_routes(d: &Daemon, nwid: &str) -> Vec<String> {
    let nets = d.json(&["listnetworks"]);
    nets.as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == nwid))
        .and_then(|n| n["routes"].as_array())
        .map(|r| {
            r.iter()
                .filter_map(|r| r["target"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `found` for `hold`: fails at once if it ever finds something (an
/// absence is asserted over a while, after the state that should cause it is
/// known to be in, not once after a fixed sleep).
fn assert_never(hold: Duration, what: &str, found: impl FnMut() -> Option<String>) {
    if let Some(seen) = wait_for(hold, found) {
        panic!("{what}: found {seen:?}");
    }
}

fn pings(lab: &Lab, from: &Node, to: &str) -> bool {
    lab.exec(from, "ping", &["-c", "1", "-W", "1", to]).ok
}

/// The gateway forwards from the virtual network into its LAN, masquerading.
fn make_gateway(lab: &Lab, gateway: &Node) {
    let run = lab.exec(gateway, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    assert!(run.ok, "{run:?}");
    let run = lab.exec(
        gateway,
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "10.147.17.0/24",
            "-o",
            gateway.iface(),
            "-j",
            "MASQUERADE",
        ],
    );
    assert!(run.ok, "{run:?}");
}

#[test]
fn a_gateway_member_routes_a_remote_member_into_its_lan_and_allow_managed_turns_it_off() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let lan = lab.nat_router("lan", NatKind::Easy);
    let gw_host = lab.host_behind("gw", &lan);
    let lan_host = lab.host_behind("printer", &lan);
    let remote_host = lab.host("remote");
    make_planet(
        &lab,
        &root_host,
        &[
            lab.home(&ctl_host),
            lab.home(&gw_host),
            lab.home(&remote_host),
        ],
    );
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let gw = Daemon::start(&lab, &gw_host, "vnet-node");
    let mut remote = Daemon::start(&lab, &remote_host, "vnet-node");
    for d in [&ctl, &gw, &remote] {
        d.wait_online();
    }
    let lan_net = format!("{}/24", lan.lan_ip().to_string().replace(".0.1", ".0.0"));
    let (nwid, _) = network(&ctl, &gw, &remote, &[format!("{lan_net},{GATEWAY_IP}")]);
    let printer = lan_host.ip().to_string();

    // The gateway forwards nothing yet, and says so.
    let run = gw.cli(&["listnetworks"]);
    assert!(
        run.stderr.contains("warning") && run.stderr.contains(&lan_net),
        "a gateway with forwarding off is warned: {run:?}"
    );
    make_gateway(&lab, &gw_host);
    let run = gw.cli(&["listnetworks"]);
    assert!(!run.stderr.contains("warning"), "{run:?}");

    // The remote member has the managed route, through the gateway.
    let want = format!("{lan_net} via {GATEWAY_IP} dev ");
    assert!(
        wait_until(Duration::from_secs(10), || routes(&lab, &remote_host)
            .iter()
            .any(|r| r.starts_with(&want))),
        "route on the remote member: {:?}",
        routes(&lab, &remote_host)
    );
    // A member never installs a route via itself.
    assert!(
        !routes(&lab, &gw_host)
            .iter()
            .any(|r| r.contains(&format!("via {GATEWAY_IP}"))),
        "{:?}",
        routes(&lab, &gw_host)
    );
    assert!(
        wait_until(Duration::from_secs(10), || pings(
            &lab,
            &remote_host,
            &printer
        )),
        "the remote member reaches the LAN host {printer} through the gateway"
    );

    // allowManaged=0: no managed route, no managed address; at once.
    let run = remote.cli(&["set", &nwid, "allowManaged=0"]);
    // The network's JSON after the change, as zerotier-cli prints it.
    let set: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!(set["allowManaged"], false, "{run:?}");
    let run = remote.cli(&["get", &nwid, "allowManaged"]);
    assert_eq!(run.stdout.trim(), "false", "{run:?}");
    assert!(
        wait_until(Duration::from_secs(5), || !routes(&lab, &remote_host)
            .iter()
            .any(|r| r.starts_with(&want) || r.contains("10.147.17.0/24"))),
        "{:?}",
        routes(&lab, &remote_host)
    );
    assert!(!pings(&lab, &remote_host, &printer));
    // ...and it survives a restart: once the config is back (the route in
    // it), the route stays out of the table.
    remote.restart();
    remote.wait_online();
    let run = remote.cli(&["get", &nwid, "allowManaged"]);
    assert_eq!(run.stdout.trim(), "false", "{run:?}");
    assert!(
        wait_until(Duration::from_secs(15), || config_routes(&remote, &nwid)
            .contains(&lan_net)),
        "the config with the route is back after the restart: {:?}",
        config_routes(&remote, &nwid)
    );
    assert_never(
        Duration::from_secs(3),
        "allowManaged=0 after a restart",
        || {
            routes(&lab, &remote_host)
                .into_iter()
                .find(|r| r.starts_with(&want))
        },
    );
    // Back on.
    let run = remote.cli(&["set", &nwid, "allowManaged=1"]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(10), || pings(
            &lab,
            &remote_host,
            &printer
        )),
        "reachable again with allowManaged=1"
    );
    // The controller drops the route: it goes from the member's table; back, it comes back.
    let with_lan = format!("{lan_net},{GATEWAY_IP}");
    let run = ctl.cli(&["network", "set", &nwid, "--route", "10.147.17.0/24"]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(10), || !routes(&lab, &remote_host)
            .iter()
            .any(|r| r.starts_with(&want))),
        "route removed with the config: {:?}",
        routes(&lab, &remote_host)
    );
    let run = ctl.cli(&[
        "network",
        "set",
        &nwid,
        "--route",
        "10.147.17.0/24",
        "--route",
        &with_lan,
    ]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(10), || routes(&lab, &remote_host)
            .iter()
            .any(|r| r.starts_with(&want))),
        "route back with the config: {:?}",
        routes(&lab, &remote_host)
    );
    // Leaving takes the routes away.
    let run = remote.cli(&["leave", &nwid]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(5), || !routes(&lab, &remote_host)
            .iter()
            .any(|r| r.starts_with(&want))),
        "{:?}",
        routes(&lab, &remote_host)
    );
}

#[test]
fn an_exit_node_carries_default_traffic_only_with_allow_default_and_leaves_routes_as_they_were() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    // "The internet" sits behind the exit node: reachable from the remote
    // member only through it.
    let site = lab.nat_router("site", NatKind::Easy);
    let gw_host = lab.host_behind("exit", &site);
    let internet_host = lab.host_behind("inet", &site);
    let remote_host = lab.host("remote");
    make_planet(
        &lab,
        &root_host,
        &[
            lab.home(&ctl_host),
            lab.home(&gw_host),
            lab.home(&remote_host),
        ],
    );
    let root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let gw = Daemon::start(&lab, &gw_host, "vnet-node");
    let remote = Daemon::start(&lab, &remote_host, "vnet-node");
    for d in [&ctl, &gw, &remote] {
        d.wait_online();
    }
    make_gateway(&lab, &gw_host);
    let (nwid, _) = network(&ctl, &gw, &remote, &[format!("0.0.0.0/0,{GATEWAY_IP}")]);
    let internet = internet_host.ip().to_string();
    // Joined, default route not allowed: once the config (with the default
    // route) is in and the network's own route installed, nothing goes via the
    // exit node, and stays so.
    assert!(
        wait_until(Duration::from_secs(10), || {
            config_routes(&remote, &nwid)
                .iter()
                .any(|r| r == "0.0.0.0/0")
                && routes(&lab, &remote_host)
                    .iter()
                    .any(|r| r.starts_with("10.147.17.0/24 "))
        }),
        "config and network route in: {:?} {:?}",
        config_routes(&remote, &nwid),
        routes(&lab, &remote_host)
    );
    assert_never(
        Duration::from_secs(2),
        "no default route without allowDefault",
        || {
            routes(&lab, &remote_host)
                .into_iter()
                .find(|r| r.contains(&format!("via {GATEWAY_IP}")))
        },
    );
    let before = routes(&lab, &remote_host);
    assert!(!pings(&lab, &remote_host, &internet));

    let run = remote.cli(&["set", &nwid, "allowDefault=1"]);
    let set: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!(set["allowDefault"], true, "{run:?}");
    assert_eq!(
        remote.cli(&["get", &nwid, "allowDefault"]).stdout.trim(),
        "true"
    );
    assert!(
        wait_until(Duration::from_secs(10), || pings(
            &lab,
            &remote_host,
            &internet
        )),
        "the remote member reaches {internet} through the exit node; routes {:?}",
        routes(&lab, &remote_host)
    );
    let with_default = routes(&lab, &remote_host);
    for half in ["0.0.0.0/1 via 10.147.17.10", "128.0.0.0/1 via 10.147.17.10"] {
        assert!(
            with_default.iter().any(|r| r.starts_with(half)),
            "{half}: {with_default:?}"
        );
    }
    // The tunnel's own traffic stays on the physical network: the root is
    // pinned to its route, and the virtual network still works.
    let root_ip = root_host.ip().to_string();
    assert!(
        with_default
            .iter()
            .any(|r| r.starts_with(&format!("{root_ip} ")) && !r.contains("10.147.17")),
        "root pinned: {with_default:?}"
    );
    assert!(remote.cli(&["ping", &root.address(), "-c", "1"]).ok);
    assert!(pings(&lab, &remote_host, GATEWAY_IP));

    let run = remote.cli(&["set", &nwid, "allowDefault=0"]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(5), || routes(&lab, &remote_host)
            == before),
        "routes exactly as before:\nbefore {before:?}\nnow    {:?}",
        routes(&lab, &remote_host)
    );
    assert!(!pings(&lab, &remote_host, &internet));
}

/// Headscale's route approval: the gateway member advertises its LAN
/// (`vnet-cli set <nwid> advertiseRoutes=...`), the controller lists it as
/// pending and nothing is routed; once the admin approves it (`vnet-cli
/// member routes <nwid> <gw> approve ...`) it is a managed route via the
/// gateway and the remote member reaches the LAN; withdrawn, it goes.
#[test]
fn an_advertised_route_is_pending_until_approved_then_carries_traffic() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let lan = lab.nat_router("lan", NatKind::Easy);
    let gw_host = lab.host_behind("gw", &lan);
    let lan_host = lab.host_behind("printer", &lan);
    let remote_host = lab.host("remote");
    make_planet(
        &lab,
        &root_host,
        &[
            lab.home(&ctl_host),
            lab.home(&gw_host),
            lab.home(&remote_host),
        ],
    );
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let gw = Daemon::start(&lab, &gw_host, "vnet-node");
    let remote = Daemon::start(&lab, &remote_host, "vnet-node");
    for d in [&ctl, &gw, &remote] {
        d.wait_online();
    }
    let lan_net = format!("{}/24", lan.lan_ip().to_string().replace(".0.1", ".0.0"));
    let (nwid, _) = network(&ctl, &gw, &remote, &[]);
    make_gateway(&lab, &gw_host);
    let printer = lan_host.ip().to_string();

    let setting = format!("advertiseRoutes={lan_net}");
    let run = gw.cli(&["set", &nwid, &setting]);
    assert!(run.ok, "{run:?}");
    let member = |what: &str| format!("200 member routes {nwid} {} {lan_net} {what}", gw.address());
    let listed = || ctl.cli(&["member", "routes", &nwid, &gw.address()]).stdout;
    assert!(
        wait_until(Duration::from_secs(10), || listed()
            .contains(&member("PENDING"))),
        "the controller lists the advertised route as pending: {}",
        listed()
    );
    // Pending: no member is told to route through the gateway.
    assert_never(Duration::from_secs(3), "a route before approval", || {
        config_routes(&remote, &nwid)
            .into_iter()
            .find(|r| *r == lan_net)
    });
    assert!(!pings(&lab, &remote_host, &printer));

    let run = ctl.cli(&[
        "member",
        "routes",
        &nwid,
        &gw.address(),
        "approve",
        &lan_net,
    ]);
    assert!(run.stdout.contains(&member("APPROVED")), "{run:?}");
    let want = format!("{lan_net} via {GATEWAY_IP} dev ");
    assert!(
        wait_until(Duration::from_secs(10), || routes(&lab, &remote_host)
            .iter()
            .any(|r| r.starts_with(&want))),
        "approved route on the remote member: {:?}",
        routes(&lab, &remote_host)
    );
    assert!(
        wait_until(Duration::from_secs(10), || pings(
            &lab,
            &remote_host,
            &printer
        )),
        "the remote member reaches {printer} through the approved gateway"
    );

    // The gateway stops advertising it: the route leaves every member.
    let run = gw.cli(&["set", &nwid, "advertiseRoutes="]);
    assert!(run.ok, "{run:?}");
    assert!(
        wait_until(Duration::from_secs(10), || !routes(&lab, &remote_host)
            .iter()
            .any(|r| r.starts_with(&want))),
        "{:?}",
        routes(&lab, &remote_host)
    );
    assert!(
        listed().contains(&format!("{lan_net} APPROVED (not advertised)")),
        "{}",
        listed()
    );
}

/// Headscale's exit-node approval: a member offers itself as exit node
/// (`advertiseDefault=1`: it advertises 0.0.0.0/0 and ::/0), both wait as
/// pending and a member that allows default routes gets none; approved, the
/// default route goes via the exit node and reaches "the internet" behind
/// it; approval withdrawn, the routes are exactly as before.
#[test]
fn an_exit_node_offer_is_pending_until_approved_then_carries_default_traffic() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let site = lab.nat_router("site", NatKind::Easy);
    let gw_host = lab.host_behind("exit", &site);
    let internet_host = lab.host_behind("inet", &site);
    let remote_host = lab.host("remote");
    make_planet(
        &lab,
        &root_host,
        &[
            lab.home(&ctl_host),
            lab.home(&gw_host),
            lab.home(&remote_host),
        ],
    );
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let gw = Daemon::start(&lab, &gw_host, "vnet-node");
    let remote = Daemon::start(&lab, &remote_host, "vnet-node");
    for d in [&ctl, &gw, &remote] {
        d.wait_online();
    }
    make_gateway(&lab, &gw_host);
    let (nwid, _) = network(&ctl, &gw, &remote, &[]);
    let internet = internet_host.ip().to_string();
    let run = remote.cli(&["set", &nwid, "allowDefault=1"]);
    assert!(run.ok, "{run:?}");

    let run = gw.cli(&["set", &nwid, "advertiseDefault=1"]);
    assert!(run.ok, "{run:?}");
    let listed = || ctl.cli(&["member", "routes", &nwid, &gw.address()]).stdout;
    let line = |route: &str, what: &str| {
        format!("200 member routes {nwid} {} {route} {what}", gw.address())
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let l = listed();
            l.contains(&line("0.0.0.0/0", "PENDING")) && l.contains(&line("::/0", "PENDING"))
        }),
        "the exit-node offer is pending: {}",
        listed()
    );
    assert_never(
        Duration::from_secs(3),
        "a default route before approval",
        || {
            routes(&lab, &remote_host)
                .into_iter()
                .find(|r| r.contains(&format!("via {GATEWAY_IP}")))
        },
    );
    let before = routes(&lab, &remote_host);
    assert!(!pings(&lab, &remote_host, &internet));

    let run = ctl.cli(&["member", "routes", &nwid, &gw.address(), "approve", "all"]);
    assert!(
        run.stdout.contains(&line("0.0.0.0/0", "APPROVED")),
        "{run:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || pings(
            &lab,
            &remote_host,
            &internet
        )),
        "the remote member reaches {internet} through the approved exit node; routes {:?}",
        routes(&lab, &remote_host)
    );
    let with_default = routes(&lab, &remote_host);
    for half in ["0.0.0.0/1 via 10.147.17.10", "128.0.0.0/1 via 10.147.17.10"] {
        assert!(
            with_default.iter().any(|r| r.starts_with(half)),
            "{half}: {with_default:?}"
        );
    }

    let run = ctl.cli(&["member", "routes", &nwid, &gw.address(), "unapprove", "all"]);
    assert!(
        run.stdout.contains(&line("0.0.0.0/0", "PENDING")),
        "{run:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || routes(&lab, &remote_host)
            == before),
        "routes exactly as before:\nbefore {before:?}\nnow    {:?}",
        routes(&lab, &remote_host)
    );
    assert!(!pings(&lab, &remote_host, &internet));
}
