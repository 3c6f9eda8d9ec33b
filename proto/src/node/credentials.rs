//! NETWORK_CREDENTIALS (PROTOCOL.md §4.5, §4.7): members' certificates of
//! membership passed between members, the controller's certificate
//! refreshes (a fresh certificate alone, not a whole re-signed config), and
//! its revocations, which cut a deauthorized member off at once.

use super::{Node, Outbox};
use crate::address::Address;
use crate::constants::{
    CERTIFICATE_MAX_DELTA_MS, CREDENTIAL_CHECKS_PER_PEER_PER_SECOND, MAX_CREDENTIAL_BUDGETS,
    MAX_CREDENTIAL_CHECKS_PER_PACKET, MAX_REVOCATIONS_PER_NETWORK, MAX_REVOCATIONS_PER_PUSH,
};
use crate::hash_state::HashMap;
use crate::netconf::{Certificate, Credentials, Revocation};
use crate::network_id::NetworkId;
use crate::verb::Verb;

impl Node {
    /// The controller's clock (ms): the wall clock the driver gave at start
    /// plus the node's time since, the clock configs are stamped with.
    fn controller_clock_ms(&self, now_ms: u64) -> u64 {
        self.clock_epoch_ms + now_ms
    }

    /// Sends our certificate of `nwid` to `to` when
    /// [`super::membership::Membership::credentials_due`] says so.
    pub(crate) fn push_credentials(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        to: Address,
        asking: bool,
        out: &mut Outbox,
    ) {
        let Some(m) = self.networks.get_mut(&nwid) else {
            return;
        };
        if !m.credentials_due(to, asking, now_ms) {
            return;
        }
        let Some(config) = m.config.as_ref() else {
            return;
        };
        let ts = config.certificate.timestamp_ms;
        let payload = Credentials {
            certificates: vec![config.certificate.clone()],
            revocations: Vec::new(),
        }
        .encode();
        m.credentials_sent.insert(to, (ts, now_ms));
        self.send(now_ms, to, Verb::NetworkCredentials, &payload, out);
    }

    /// NETWORK_CREDENTIALS. Certificates: from the network's controller,
    /// our own refreshed one; from a member, its own. Everything cheap is
    /// checked before a signature: a member's certificate is the sender's,
    /// for a network we are configured on that exchanges certificates
    /// (private, or public with tags or capabilities in its rules), not revoked, agrees with
    /// ours and is newer than the one we hold. At most
    /// `MAX_CREDENTIAL_CHECKS_PER_PACKET` signatures per packet and
    /// `CREDENTIAL_CHECKS_PER_PEER_PER_SECOND` per peer and network are
    /// checked; the rest are dropped and counted. Revocations are taken from
    /// the network's controller only.
    pub(crate) fn handle_credentials(
        &mut self,
        now_ms: u64,
        src: Address,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        let Ok(credentials) = Credentials::decode(payload) else {
            self.counters.dropped_bad_payload += 1;
            return;
        };
        let mut checked = 0usize;
        let mut stored: Vec<NetworkId> = Vec::new();
        let mut answer: Vec<NetworkId> = Vec::new();
        for cert in credentials.certificates {
            if cert.issued_to == self.address && src == cert.network.controller() {
                self.install_refreshed_certificate(now_ms, cert);
                continue;
            }
            if cert.issued_to != src {
                self.counters.dropped_bad_payload += 1;
                continue;
            }
            let Some(m) = self.networks.get_mut(&cert.network) else {
                self.counters.dropped_credentials_irrelevant += 1;
                continue;
            };
            let Some(config) = m
                .config
                .as_ref()
                .filter(|c| c.data.exchanges_certificates())
            else {
                self.counters.dropped_credentials_irrelevant += 1;
                continue;
            };
            if m.revocations.refuses(src, cert.timestamp_ms) {
                self.counters.dropped_credentials_revoked += 1;
                continue;
            }
            if !cert.agrees_with(&config.certificate) {
                // Stale (or from a controller clock far off ours): admits nothing.
                self.counters.dropped_credentials_irrelevant += 1;
                continue;
            }
            if m.peer_certificates
                .get(&src)
                .is_some_and(|old| old.timestamp_ms >= cert.timestamp_ms)
            {
                // Held already: the sender sends its own again when it
                // lacks ours (our push was lost), so it gets ours again.
                if m.credentials_answer_due(src, now_ms) {
                    answer.push(cert.network);
                }
                continue;
            }
            let Some(key) = self.controller_key(cert.network) else {
                // Unknown controller: nothing to check against.
                continue;
            };
            let m = self.networks.get_mut(&cert.network).expect("checked");
            if checked >= MAX_CREDENTIAL_CHECKS_PER_PACKET
                || !take_credential_check(&mut m.credential_checks, now_ms, src)
            {
                self.counters.dropped_credentials_rate_limited += 1;
                continue;
            }
            checked += 1;
            self.counters.credential_signatures_checked += 1;
            if !cert.verify(&key) {
                self.counters.dropped_bad_payload += 1;
                continue;
            }
            // Newer than any revocation of it: re-authorized.
            m.revocations.remove(src);
            stored.push(cert.network);
            m.peer_certificates.insert(src, cert);
        }
        let mut revocation_checks = 0usize;
        for revocation in credentials.revocations {
            if src != revocation.network.controller() {
                self.counters.dropped_bad_payload += 1;
                continue;
            }
            let Some(m) = self.networks.get(&revocation.network) else {
                continue;
            };
            if m.revocations
                .threshold(revocation.member)
                .is_some_and(|t| t >= revocation.threshold_ms)
            {
                continue;
            }
            if revocation_checks >= MAX_REVOCATIONS_PER_PUSH {
                self.counters.dropped_credentials_rate_limited += 1;
                continue;
            }
            revocation_checks += 1;
            let Some(key) = self.controller_key(revocation.network) else {
                continue;
            };
            self.counters.credential_signatures_checked += 1;
            if !revocation.verify(&key) {
                self.counters.dropped_bad_payload += 1;
                continue;
            }
            self.apply_revocation(&revocation);
        }
        for nwid in answer {
            if let Some(m) = self.networks.get_mut(&nwid) {
                // Sent anew (credentials_due would see ours as sent already).
                m.credentials_sent.remove(&src);
            }
            self.push_credentials(now_ms, nwid, src, true, out);
        }
        for nwid in stored {
            // A member that had none of ours (or an old one) may be waiting
            // for it to send to us; and frames we held for it may go now.
            self.push_credentials(now_ms, nwid, src, true, out);
            let held = self
                .networks
                .get_mut(&nwid)
                .and_then(|m| m.awaiting_credentials.remove(&src));
            for (offload, frame) in held.map(|(_, frames)| frames).unwrap_or_default() {
                self.send_frame(now_ms, nwid, src, offload, &frame, out);
            }
        }
    }

    /// The public key of `nwid`'s controller, if we know it.
    fn controller_key(&self, nwid: NetworkId) -> Option<crate::c25519::PublicKey> {
        let controller = nwid.controller();
        if controller == self.address {
            Some(*self.identity.public_key())
        } else {
            self.peers
                .get(&controller)
                .map(|p| *p.identity.public_key())
        }
    }

    /// Our own certificate, refreshed by the controller: it replaces the
    /// config's if it verifies and is newer.
    fn install_refreshed_certificate(&mut self, now_ms: u64, cert: Certificate) {
        let Some(key) = self.controller_key(cert.network) else {
            return;
        };
        let Some(m) = self.networks.get_mut(&cert.network) else {
            self.counters.dropped_credentials_irrelevant += 1;
            return;
        };
        let Some(config) = m.config.as_mut() else {
            self.counters.dropped_credentials_irrelevant += 1;
            return;
        };
        if config.certificate.timestamp_ms >= cert.timestamp_ms {
            return;
        }
        self.counters.credential_signatures_checked += 1;
        if !cert.verify(&key) {
            self.counters.dropped_bad_payload += 1;
            return;
        }
        config.certificate = cert;
        m.received_ms = Some(now_ms);
        self.counters.certificates_refreshed += 1;
        m.expire_revocations();
    }

    /// A verified revocation: the member's certificates up to the threshold
    /// are void, its subscriptions and learned MACs go, and frames held for
    /// it are dropped.
    fn apply_revocation(&mut self, revocation: &Revocation) {
        let Some(m) = self.networks.get_mut(&revocation.network) else {
            return;
        };
        let member = revocation.member;
        m.revocations.insert(member, revocation.threshold_ms);
        match m.peer_certificates.get(&member) {
            Some(c) if revocation.voids(c) => {
                m.peer_certificates.remove(&member);
            }
            // We hold a certificate issued after it (a member whose grants
            // changed, or authorized again): only older ones are refused.
            Some(_) => {
                self.counters.revocations_applied += 1;
                return;
            }
            None => {}
        }
        let held = m
            .awaiting_credentials
            .remove(&member)
            .map_or(0, |(_, f)| f.len());
        if let Some(switch) = m.switch.as_mut() {
            switch.forget_member(member);
            for _ in 0..held {
                switch.count_unsent();
            }
        }
        self.counters.revocations_applied += 1;
    }

    /// The controller's answer to [`super::Event::CertificatesDue`]: for
    /// each member it still admits, a fresh certificate (one signature) with
    /// the network's revocations still in force, instead of a whole config;
    /// a member it no longer admits is asked about (and so refused and
    /// revoked).
    pub fn refresh_certificates(
        &mut self,
        now_ms: u64,
        decisions: &[((NetworkId, Address), bool)],
        out: &mut Outbox,
    ) {
        let clock = self.controller_clock_ms(now_ms);
        let mut in_force: Option<(NetworkId, Vec<Revocation>)> = None;
        for &((nwid, member), admitted) in decisions {
            let Some((issued, grants)) = self
                .controller
                .members
                .get(&(nwid, member))
                .map(|r| (r.certified_ms, r.grants.clone()))
            else {
                continue;
            };
            if !admitted {
                self.config_changed(nwid, member);
                continue;
            }
            // Never older than what the member holds (the driver's clock
            // stamped its config and may run a little ahead of ours).
            let ts = clock.max(issued + 1);
            let cert = Certificate::issue_with_grants(&self.key_pair, nwid, member, ts, grants);
            if let Some(r) = self.controller.members.get_mut(&(nwid, member)) {
                r.certified_ms = ts;
            }
            // Decisions come sorted by network: its revocations are looked
            // up once per network, not once per member.
            if in_force.as_ref().is_none_or(|(n, _)| *n != nwid) {
                in_force = Some((nwid, self.controller.revocations_in_force(nwid, clock)));
            }
            let revocations = in_force
                .as_ref()
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            let payload = Credentials {
                certificates: vec![cert],
                revocations,
            }
            .encode();
            self.counters.certificates_issued += 1;
            self.send(now_ms, member, Verb::NetworkCredentials, &payload, out);
        }
    }

    /// Controller side: `member` of `nwid`, admitted before, is refused now.
    /// Its certificates so far are revoked, and every member that asked
    /// lately is told at once (and again with each refresh while it matters).
    pub(crate) fn revoke_member(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        member: Address,
        certified_ms: u64,
        out: &mut Outbox,
    ) {
        let clock = self.controller_clock_ms(now_ms);
        self.issue_revocation(now_ms, nwid, member, clock.max(certified_ms), out);
    }

    /// Controller side: revokes `member`'s certificates of `nwid` issued at
    /// or before `threshold_ms`, and tells every member that asked lately.
    pub(crate) fn issue_revocation(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        member: Address,
        threshold_ms: u64,
        out: &mut Outbox,
    ) {
        let clock = self.controller_clock_ms(now_ms);
        let revocation = Revocation::issue(&self.key_pair, nwid, member, threshold_ms);
        self.controller
            .remember_revocation(revocation.clone(), clock);
        if self.networks.contains_key(&nwid) {
            // We are a member of our own network too.
            self.apply_revocation(&revocation);
        }
        let payload = Credentials {
            certificates: Vec::new(),
            revocations: vec![revocation],
        }
        .encode();
        let mut told: Vec<Address> = self
            .controller
            .members
            .keys()
            .filter(|(n, a)| *n == nwid && *a != member)
            .map(|(_, a)| *a)
            .collect();
        told.sort();
        for to in told {
            self.send(now_ms, to, Verb::NetworkCredentials, &payload, out);
        }
    }
}

impl super::network::ControllerState {
    /// Keeps `revocation` to repeat with certificate refreshes (the newest
    /// `MAX_REVOCATIONS_PER_NETWORK` per network, while in force).
    fn remember_revocation(&mut self, revocation: Revocation, clock_ms: u64) {
        let list = self.revocations.entry(revocation.network).or_default();
        list.retain(|r| r.member != revocation.member && in_force(r, clock_ms));
        if list.len() >= MAX_REVOCATIONS_PER_NETWORK {
            list.remove(0);
        }
        list.push(revocation);
    }

    /// The newest `MAX_REVOCATIONS_PER_PUSH` revocations of `nwid` still in force.
    fn revocations_in_force(&mut self, nwid: NetworkId, clock_ms: u64) -> Vec<Revocation> {
        let Some(list) = self.revocations.get_mut(&nwid) else {
            return Vec::new();
        };
        list.retain(|r| in_force(r, clock_ms));
        let out = list
            .iter()
            .rev()
            .take(MAX_REVOCATIONS_PER_PUSH)
            .cloned()
            .collect();
        if list.is_empty() {
            self.revocations.remove(&nwid);
        }
        out
    }
}

/// Whether a certificate the revocation voids could still agree with one
/// issued now.
fn in_force(r: &Revocation, clock_ms: u64) -> bool {
    r.threshold_ms + CERTIFICATE_MAX_DELTA_MS >= clock_ms
}

/// Takes one signature check from `src`'s budget for this second; false if
/// it is spent (or the table of budgets is full of peers active this second).
fn take_credential_check(
    budgets: &mut HashMap<Address, (u64, u32)>,
    now_ms: u64,
    src: Address,
) -> bool {
    if !budgets.contains_key(&src) && budgets.len() >= MAX_CREDENTIAL_BUDGETS {
        budgets.retain(|_, (start, _)| now_ms.saturating_sub(*start) < 1_000);
        if budgets.len() >= MAX_CREDENTIAL_BUDGETS {
            return false;
        }
    }
    let (start, used) = budgets.entry(src).or_insert((now_ms, 0));
    if now_ms.saturating_sub(*start) >= 1_000 {
        *start = now_ms;
        *used = 0;
    }
    if *used >= CREDENTIAL_CHECKS_PER_PEER_PER_SECOND {
        return false;
    }
    *used += 1;
    true
}
