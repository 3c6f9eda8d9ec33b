//! The local API beyond loopback (ZeroTier's `allowManagementFrom`), in
//! network namespaces: a controller whose local.conf allows one client
//! network answers a UI host there (any Host header, as a UI in another
//! container names it; the token still required) and refuses every other
//! host with 403; a node without the setting is not reachable at all.

use std::fs;

use vnet_tests::daemon::{Daemon, PORT, make_planet};
use vnet_tests::netns::{Lab, Node};

/// `curl` from `from` to `to`'s API: the HTTP status (0: no connection).
fn status(lab: &Lab, from: &Node, to: &Node, token: Option<&str>) -> u16 {
    let url = format!("http://{}:{PORT}/controller", to.ip());
    let auth = token.map(|t| format!("X-ZT1-Auth: {t}"));
    let mut args = vec![
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "3",
    ];
    args.extend(["-H", "Host: zerotier:9993"]);
    if let Some(a) = &auth {
        args.extend(["-H", a]);
    }
    args.push(&url);
    let run = lab.exec(from, "curl", &args);
    run.stdout.trim().parse().unwrap_or(0)
}

#[test]
fn the_api_answers_allowed_client_networks_with_the_token_and_no_one_else() {
    let lab = Lab::new();
    let root_host = lab.host("root");
    let ctl_host = lab.host("ctl");
    let node_host = lab.host("node");
    let ui_host = lab.host("ui");
    let other_host = lab.host("other");
    make_planet(
        &lab,
        &root_host,
        &[lab.home(&ctl_host), lab.home(&node_host)],
    );
    let conf = format!(
        r#"{{"settings": {{"allowManagementFrom": ["{}/32"]}}}}"#,
        ui_host.ip()
    );
    fs::write(lab.home(&ctl_host).join("local.conf"), conf).expect("local.conf");
    let _root = Daemon::start(&lab, &root_host, "vnet-planet");
    let ctl = Daemon::start(&lab, &ctl_host, "vnet-controller");
    let node = Daemon::start(&lab, &node_host, "vnet-node");
    ctl.wait_online();
    node.wait_online();
    let token = fs::read_to_string(lab.home(&ctl_host).join("authtoken.secret")).expect("token");

    assert_eq!(
        status(&lab, &ui_host, &ctl_host, Some(&token)),
        200,
        "the allowed UI host"
    );
    assert_eq!(
        status(&lab, &ui_host, &ctl_host, None),
        401,
        "the token is always required"
    );
    assert_eq!(status(&lab, &ui_host, &ctl_host, Some("wrong")), 401);
    assert_eq!(
        status(&lab, &other_host, &ctl_host, Some(&token)),
        403,
        "a host outside allowManagementFrom"
    );
    // On the host itself, the CLI works as ever (loopback).
    let run = ctl.cli(&["info"]);
    assert!(run.ok, "{run:?}");
    // Without the setting the API listens on loopback only.
    let node_token =
        fs::read_to_string(lab.home(&node_host).join("authtoken.secret")).expect("token");
    assert_eq!(status(&lab, &ui_host, &node_host, Some(&node_token)), 0);
}
