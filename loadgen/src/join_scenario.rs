//! The join scenario: every simulated node joins one network on a real
//! controller (pre-authorized through its API). Prints one line: time for
//! all to be configured, the largest config, the controller's idle CPU and
//! memory with them all online, ARP to a member never seen before (against
//! the round trip to the root), how many members one broadcast reaches, and
//! the subscriptions the root holds.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
use vnet_node::core::identity::Identity;
use vnet_node::core::network_id::{Mac, NetworkId};

use crate::local_api::LocalApi;
use crate::process_stats;
use crate::swarm::Swarm;

/// The controller under test.
pub struct Controller {
    nwid: NetworkId,
    pid: u32,
    api: LocalApi,
    identity: Identity,
}

impl Controller {
    /// From the command line's `--network`, `--controller-*` options.
    pub fn from_args(
        network: Option<&str>,
        pid: Option<u32>,
        home: Option<&Path>,
        port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let (Some(network), Some(pid), Some(home), Some(port)) = (network, pid, home, port) else {
            bail!(
                "the join scenario needs --network, --controller-pid, --controller-home and --controller-port"
            );
        };
        let nwid: NetworkId = network
            .parse()
            .map_err(|e| anyhow::anyhow!("--network {network}: {e}"))?;
        let path = home.join("identity.public");
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        let identity: Identity = text
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            nwid,
            pid,
            api: LocalApi::new(home, port)?,
            identity,
        })
    }
}

/// An Ethernet frame from `src`: an ARP request for `target`.
fn arp_request(src: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> anyhow::Result<Vec<u8>> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &src.0,
        &sender.octets(),
        &[0; 6],
        &target.octets(),
    )
    .map_err(|e| anyhow::anyhow!("ARP packet: {e}"))?;
    let b = PacketBuilder::ethernet2(src.0, Mac::BROADCAST.0).arp(arp);
    let mut out = Vec::with_capacity(b.size());
    b.write(&mut out).context("ARP frame")?;
    Ok(out)
}

/// An Ethernet broadcast from `src`: a UDP datagram carrying `tag`.
fn broadcast(src: Mac, sender: Ipv4Addr, tag: &[u8]) -> anyhow::Result<Vec<u8>> {
    let b = PacketBuilder::ethernet2(src.0, Mac::BROADCAST.0)
        .ipv4(sender.octets(), [255, 255, 255, 255], 64)
        .udp(5000, 5000);
    let mut out = Vec::with_capacity(b.size(tag.len()));
    b.write(&mut out, tag).context("broadcast frame")?;
    Ok(out)
}

/// Node `i`'s IPv4 address on the network, from its config.
fn ipv4_of(swarm: &Swarm, i: usize, nwid: NetworkId) -> anyhow::Result<Ipv4Addr> {
    swarm
        .node(i)
        .network_config(nwid)
        .and_then(|c| {
            c.data.assigned.iter().find_map(|a| match a.ip {
                std::net::IpAddr::V4(v4) => Some(v4),
                std::net::IpAddr::V6(_) => None,
            })
        })
        .with_context(|| {
            format!("node {i} has no IPv4 address on {nwid} (give the network a pool)")
        })
}

/// Runs the scenario on a swarm whose nodes are all online; prints its line.
pub fn run(
    swarm: &mut Swarm,
    controller: &Controller,
    root: &LocalApi,
    window_s: u64,
) -> anyhow::Result<()> {
    let nwid = controller.nwid;
    let n = swarm.len();
    // Members know the controller's identity and node 0's (the asker of the
    // ARP and broadcast below), node 0 everyone's.
    let all: Vec<Identity> = (0..n)
        .map(|i| swarm.node(i).identity().to_public())
        .collect();
    for i in 1..n {
        swarm.trust(i, &[controller.identity.clone(), all[0].clone()]);
    }
    let mut for_asker = all.clone();
    for_asker.push(controller.identity.clone());
    swarm.trust(0, &for_asker);
    let started = Instant::now();
    for i in 0..n {
        let addr = swarm.node(i).address();
        controller
            .api
            .post(
                &format!("/controller/network/{nwid}/member/{addr}"),
                &serde_json::json!({"authorized": true}),
            )
            .with_context(|| format!("authorizing {addr}"))?;
        if i % 256 == 0 {
            // Keep the swarm alive while the controller's API is busy.
            swarm.run_for(Duration::from_millis(1))?;
        }
    }
    let authorize_s = started.elapsed().as_secs_f64();
    eprintln!("{n} members authorized in {authorize_s:.1} s");

    let started = Instant::now();
    swarm.join_all(nwid);
    while swarm.configured(nwid) < n {
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "{} of {n} members configured after 600 s",
                swarm.configured(nwid)
            );
        }
        swarm.run_for(Duration::from_millis(200))?;
    }
    let join_s = started.elapsed().as_secs_f64();
    let config_bytes = (0..n)
        .filter_map(|i| swarm.node(i).network_config(nwid).map(|c| c.encode().len()))
        .max()
        .unwrap_or(0);
    eprintln!("{n} members configured in {join_s:.1} s; largest config {config_bytes} bytes");

    // The controller with every member online: refreshes and pulls only.
    swarm.run_for(Duration::from_secs(5))?;
    let cpu_before = process_stats::cpu_seconds(controller.pid)?;
    let window = Instant::now();
    swarm.run_for(Duration::from_secs(window_s))?;
    let cpu_s = process_stats::cpu_seconds(controller.pid)? - cpu_before;
    let controller_cpu_pct = 100.0 * cpu_s / window.elapsed().as_secs_f64();
    let controller_rss_kb = process_stats::rss_kb(controller.pid)?;

    // ARP for a member node 0 never talked to, and node 0's round trip to the root.
    let (asker, owner) = (0, n - 1);
    let root_addr = root_address(root)?;
    const PING_ID: u64 = 0x6c6f_6164_6765_6e31;
    swarm.ping(asker, root_addr, PING_ID);
    // Timed as the ARP below is (the same polling), not by the node's
    // millisecond clock.
    let pinged = Instant::now();
    let root_rtt_ms = loop {
        if swarm.echoes().contains(&(asker, root_addr, PING_ID)) {
            break pinged.elapsed().as_secs_f64() * 1_000.0;
        }
        if pinged.elapsed() > Duration::from_secs(5) {
            bail!("no answer from the root to a ping");
        }
        swarm.run_for(Duration::from_millis(1))?;
    };
    let ask_mac = Mac::for_member(swarm.node(asker).address(), nwid);
    let request = arp_request(
        ask_mac,
        ipv4_of(swarm, asker, nwid)?,
        ipv4_of(swarm, owner, nwid)?,
    )?;
    swarm.record_taps();
    let sent = Instant::now();
    swarm.tap_send(asker, nwid, &request);
    let arp_ms = loop {
        if swarm
            .taps()
            .iter()
            .any(|(i, f)| *i == owner && *f == request)
        {
            break sent.elapsed().as_secs_f64() * 1_000.0;
        }
        if sent.elapsed() > Duration::from_secs(5) {
            bail!("the ARP request did not reach its owner within 5 s");
        }
        swarm.run_for(Duration::from_millis(1))?;
    };
    let arp_receivers = swarm.taps().iter().filter(|(_, f)| *f == request).count();

    // One broadcast: how many members take it in (at most multicastLimit).
    let tag = b"vnet-loadgen broadcast";
    let frame = broadcast(ask_mac, ipv4_of(swarm, asker, nwid)?, tag)?;
    swarm.record_taps();
    swarm.tap_send(asker, nwid, &frame);
    swarm.run_for(Duration::from_secs(3))?;
    let broadcast_receivers = swarm.taps().iter().filter(|(_, f)| *f == frame).count();
    let subscriptions = root.table("multicastSubscriptions")?;

    println!(
        "members={n} authorize_s={authorize_s:.1} join_s={join_s:.1} config_bytes={config_bytes} \
         controller_cpu_pct={controller_cpu_pct:.2} controller_rss_kb={controller_rss_kb} \
         root_rtt_ms={root_rtt_ms:.1} arp_ms={arp_ms:.1} arp_receivers={arp_receivers} \
         broadcast_receivers={broadcast_receivers} root_multicast_subscriptions={subscriptions}"
    );
    Ok(())
}

/// The root's address (`GET /status`).
fn root_address(root: &LocalApi) -> anyhow::Result<vnet_node::core::address::Address> {
    let status = root.get("/status")?;
    status["address"]
        .as_str()
        .context("local API: no address")?
        .parse()
        .map_err(|e| anyhow::anyhow!("root address: {e}"))
}
