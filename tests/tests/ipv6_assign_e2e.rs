//! IPv6 addresses as ZeroTier's `v6AssignMode` hands them out, end to end
//! in network namespaces: a controller turns on `rfc4193` and `6plane`, each
//! member's device gets the two addresses ZeroTier would give it (derived
//! from the network id and the member's address), members ping each other
//! on both and on any address of a member's 6PLANE /80 (neighbour
//! discovery answered by the asking node, as ZeroTier's NDP emulation), and
//! turning the modes off takes the addresses away again.

use std::time::Duration;

use serde_json::Value;
use vnet_node::core::Address;
use vnet_node::core::network_id::NetworkId;
use vnet_tests::daemon::{Started, network_of, start_root_controller_members};
use vnet_tests::netns::{Lab, Node, wait_until};

/// The IPv6 addresses (with prefix lengths) on `device` of `host`, link-local aside.
fn global_v6(lab: &Lab, host: &Node, device: &str) -> Vec<String> {
    let run = lab.exec(host, "ip", &["-j", "-6", "addr", "show", "dev", device]);
    let info: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    info[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
        .collect()
}

fn ping6(lab: &Lab, from: &Node, to: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        lab.exec(from, "ping", &["-6", "-n", "-c", "1", "-W", "1", to])
            .ok
    })
}

#[test]
fn rfc4193_and_6plane_addresses_are_zerotiers_and_carry_traffic() {
    let lab = Lab::new();
    let [root_host, ctl_host, a_host, b_host] = ["root", "ctl", "a", "b"].map(|n| lab.host(n));
    let Started {
        root: _root,
        ctl,
        members,
    } = start_root_controller_members(&lab, &root_host, &ctl_host, &[&a_host, &b_host]);
    let [a, b] = [&members[0], &members[1]];
    let (nwid, _) = network_of(&ctl, &[a, b], "six");
    let id: NetworkId = nwid.parse().expect("network id");

    let run = ctl.cli(&["network", "set", &nwid, "v6AssignMode=rfc4193,6plane"]);
    assert!(run.ok, "{run:?}");
    let shown = ctl.json(&["network", "show", &nwid]);
    assert_eq!(
        shown["v6AssignMode"],
        serde_json::json!({"zt": false, "rfc4193": true, "6plane": true}),
        "{shown}"
    );

    let mut derived = Vec::new();
    for (m, host) in [(&a, &a_host), (&b, &b_host)] {
        let addr: Address = m.address().parse().expect("address");
        let rfc = id.rfc4193_addr(addr).to_string();
        let six = id.sixplane_addr(addr).to_string();
        let device = m.network_line(&nwid)[7].clone();
        let want = [format!("{rfc}/88"), format!("{six}/40")];
        let mut have = Vec::new();
        let got = wait_until(Duration::from_secs(15), || {
            have = global_v6(&lab, host, &device);
            want.iter().all(|w| have.contains(w))
        });
        assert!(
            got,
            "{}: want {want:?} on {device}, have {have:?}",
            host.name()
        );
        // `get <nwid> ip6` lists them too, as zerotier-cli does.
        let listed = m.cli(&["get", &nwid, "ip6"]).stdout;
        assert!(listed.contains(&rfc) && listed.contains(&six), "{listed}");
        derived.push((rfc, six));
    }

    // Each member reaches the other on both addresses (neighbour discovery
    // over the virtual switch, then unicast).
    let (rfc_b, six_b) = &derived[1];
    assert!(
        ping6(&lab, &a_host, rfc_b),
        "a reaches b's RFC 4193 address"
    );
    assert!(ping6(&lab, &a_host, six_b), "a reaches b's 6PLANE address");
    let (rfc_a, _) = &derived[0];
    assert!(
        ping6(&lab, &b_host, rfc_a),
        "b reaches a's RFC 4193 address"
    );

    // b's whole /80 is b's: an address b holds on its loopback (as a
    // container behind it would) is reached, though b's kernel answers no
    // neighbour solicitation for it on the device: a's node answers for it.
    let mut inside: std::net::Ipv6Addr = six_b.parse().expect("6plane address");
    let mut octets = inside.octets();
    octets[15] = 0x42;
    inside = octets.into();
    let inside = inside.to_string();
    let run = lab.exec(
        &b_host,
        "ip",
        &["-6", "addr", "add", &format!("{inside}/128"), "dev", "lo"],
    );
    assert!(run.ok, "{run:?}");
    assert!(
        ping6(&lab, &a_host, &inside),
        "a reaches {inside} in b's 6PLANE /80 (NDP emulation)"
    );

    // Modes off: the derived addresses leave the devices.
    let run = ctl.cli(&["network", "set", &nwid, "v6AssignMode=none"]);
    assert!(run.ok, "{run:?}");
    let device = a.network_line(&nwid)[7].clone();
    let gone = wait_until(Duration::from_secs(15), || {
        global_v6(&lab, &a_host, &device).is_empty()
    });
    assert!(gone, "{:?}", global_v6(&lab, &a_host, &device));
}
