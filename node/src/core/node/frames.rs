//! Ethernet frames between members (PROTOCOL.md §4.5): from the TAP through
//! the virtual switch to members, and from members through the certificate
//! check and the switch to the TAP.

use std::collections::HashMap;
use std::net::IpAddr;

use super::network::Membership;
use super::{Node, Outbox};
use crate::core::address::Address;
use crate::core::netconf::{CERTIFICATE_LEN_BYTES, Certificate, NetworkConfig};
use crate::core::network_id::{Mac, NetworkId};
use crate::core::switch::{
    Inbound, MulticastGroup, Outbound, Switch, SwitchPolicy, eui64_link_local, groups_for_ips,
};
use crate::core::verb::Verb;

/// (Re)configures a network's switch from a new config: policy, bridges,
/// our addresses, and the directory's members as subscribers of the groups
/// their addresses resolve through.
pub(crate) fn configure_switch(
    m: &mut Membership,
    me: Address,
    now_ms: u64,
    config: &NetworkConfig,
) {
    let d = &config.data;
    let policy = SwitchPolicy {
        private: d.private,
        active_bridge: d.active_bridge,
        enable_broadcast: d.enable_broadcast,
        multicast_limit: d.multicast_limit,
    };
    let switch = m
        .switch
        .get_or_insert_with(|| Switch::new(config.network, me, policy));
    switch.set_policy(policy);
    let bridges: Vec<Address> = d.bridges.iter().filter_map(|b| b.parse().ok()).collect();
    switch.set_bridges(&bridges);
    let mut ours: Vec<IpAddr> = d.assigned.iter().map(|a| a.ip).collect();
    ours.push(IpAddr::V6(eui64_link_local(Mac::for_member(
        me,
        config.network,
    ))));
    switch.set_local_ips(&ours);
    for entry in &d.directory {
        let Ok(member) = entry.address.parse::<Address>() else {
            continue;
        };
        if member == me {
            continue;
        }
        // Listed by the controller in our own signed config: a member we
        // may address (frames from it still need its certificate).
        switch.set_member_valid(member, true);
        let mut ips = entry.ips.clone();
        ips.push(IpAddr::V6(eui64_link_local(Mac::for_member(
            member,
            config.network,
        ))));
        let mut groups = groups_for_ips(&ips);
        if d.enable_broadcast {
            groups.push(MulticastGroup::BROADCAST);
        }
        switch.replace_subscriptions(now_ms, member, &groups);
    }
}

/// A new session with `peer` may mean it restarted and lost the
/// certificates we sent it: ours go again with the next frame.
pub(crate) fn forget_credentials_sent(
    networks: &mut HashMap<NetworkId, Membership>,
    peer: Address,
) {
    for m in networks.values_mut() {
        m.credentials_sent.remove(&peer);
    }
}

impl Node {
    /// A frame read from the TAP of network `nwid`: switched to members.
    pub fn handle_tap_frame(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        let Some(m) = self.networks.get_mut(&nwid) else {
            return;
        };
        let Some(switch) = m.switch.as_mut() else {
            return;
        };
        let mut targets = std::mem::take(&mut self.frame_targets);
        targets.clear();
        match switch.outbound(now_ms, frame) {
            Outbound::Unicast(a) => targets.push(a),
            Outbound::Bridges(list) => targets.extend_from_slice(list),
            Outbound::Multicast { members, .. } => targets.extend_from_slice(members),
            Outbound::Drop(_) => {}
        }
        for &target in &targets {
            self.send_frame(now_ms, nwid, target, frame, out);
        }
        self.frame_targets = targets;
    }

    fn send_frame(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        to: Address,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        let Some(m) = self.networks.get_mut(&nwid) else {
            return;
        };
        let Some(config) = m.config.as_ref() else {
            return;
        };
        // Our certificate goes first, and again whenever it was refreshed.
        let cert_ts = config.certificate.timestamp_ms;
        if config.data.private && m.credentials_sent.get(&to) != Some(&cert_ts) {
            let mut payload = Vec::with_capacity(1 + CERTIFICATE_LEN_BYTES);
            payload.push(1);
            config.certificate.encode_into(&mut payload);
            m.credentials_sent.insert(to, cert_ts);
            self.send(now_ms, to, Verb::NetworkCredentials, &payload, out);
        }
        if let Some(peer) = self.peers.get_mut(&to) {
            peer.last_active_ms = Some(now_ms);
        }
        let mut payload = std::mem::take(&mut self.frame_buf);
        payload.clear();
        payload.extend_from_slice(&nwid.to_u64().to_be_bytes());
        payload.extend_from_slice(frame);
        self.send(now_ms, to, Verb::ExtFrame, &payload, out);
        self.frame_buf = payload;
    }

    /// EXT_FRAME from a member: certificate check, switch, TAP.
    pub(crate) fn handle_ext_frame(
        &mut self,
        now_ms: u64,
        src: Address,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        let Some(nwid) = payload
            .get(..8)
            .and_then(|b| NetworkId::from_u64(u64::from_be_bytes(b.try_into().expect("8"))).ok())
        else {
            self.counters.dropped_frames += 1;
            return;
        };
        let frame = &payload[8..];
        let Some(m) = self.networks.get_mut(&nwid) else {
            self.counters.dropped_frames += 1;
            return;
        };
        let (Some(config), Some(switch)) = (m.config.as_ref(), m.switch.as_mut()) else {
            self.counters.dropped_frames += 1;
            return;
        };
        if config.data.private {
            let valid = m
                .peer_certificates
                .get(&src)
                .is_some_and(|c| c.agrees_with(&config.certificate));
            if !valid {
                // No certificate, or one the controller stopped refreshing.
                self.counters.dropped_frames_unauthorized += 1;
                return;
            }
        }
        if let Some(peer) = self.peers.get_mut(&src) {
            peer.last_active_ms = Some(now_ms);
        }
        match switch.inbound(now_ms, src, frame) {
            Inbound::Deliver => out.push_frame(nwid, frame),
            Inbound::Drop(_) => self.counters.dropped_frames += 1,
        }
    }

    /// NETWORK_CREDENTIALS: a member's certificates of membership.
    pub(crate) fn handle_credentials(&mut self, src: Address, payload: &[u8]) {
        let Some((&count, mut rest)) = payload.split_first() else {
            self.counters.dropped_bad_payload += 1;
            return;
        };
        for _ in 0..count {
            let Ok((cert, used)) = Certificate::decode(rest) else {
                self.counters.dropped_bad_payload += 1;
                return;
            };
            rest = &rest[used..];
            let controller = cert.network.controller();
            let key = if controller == self.address {
                *self.identity.public_key()
            } else {
                match self.peers.get(&controller) {
                    Some(p) => *p.identity.public_key(),
                    None => continue,
                }
            };
            if cert.issued_to != src || !cert.verify(&key) {
                self.counters.dropped_bad_payload += 1;
                continue;
            }
            if let Some(m) = self.networks.get_mut(&cert.network) {
                let newer = m
                    .peer_certificates
                    .get(&src)
                    .is_none_or(|old| old.timestamp_ms <= cert.timestamp_ms);
                if newer {
                    m.peer_certificates.insert(src, cert);
                }
            }
        }
    }
}
