//! Ethernet frames between members (PROTOCOL.md §4.5): from the TAP through
//! the virtual switch and the certificate check to members, and from members
//! through the certificate check and the switch to the TAP.
//!
//! On a private network no frame goes to, or is taken from, a member whose
//! latest verified certificate does not agree with ours. A frame for a
//! member whose fresh certificate we lack waits (the newest few per member,
//! at most `FRAME_AWAITING_CREDENTIALS_MS`) while our certificate goes to it:
//! a member that stores a new certificate from a peer answers with its own.

use super::membership::CertificateGrants;
use super::{Node, Outbox};
use crate::address::Address;
use crate::constants::{
    ETHERNET_HEADER_LEN_BYTES, FRAME_AWAITING_CREDENTIALS_MS, FRAME_HEADROOM_BYTES,
    MAX_FRAMES_AWAITING_CREDENTIALS_PER_MEMBER, MAX_MEMBERS_AWAITING_CREDENTIALS,
    OFFLOAD_FRAME_HEADROOM_BYTES, PACKET_HEADER_LEN_BYTES, VIRTIO_NET_HDR_LEN_BYTES,
};
use crate::maybe_ms::MaybeMs;
use crate::network_id::NetworkId;
use crate::network_message::{FrameMessage, OffloadFrameMessage};
use crate::offload::Offload;
use crate::rules::CarbonCopy;
use crate::switch::{DropReason, Inbound, Outbound};
use crate::verb::Verb;
use crate::wire::write_verb;

impl Node {
    /// A frame read from the TAP of network `nwid`: switched to members.
    /// Copies it into `out` and goes on as [`Node::handle_tap_read`].
    pub fn handle_tap_frame(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        out.frame_room(frame.len(), false).copy_from_slice(frame);
        self.handle_tap_read(now_ms, nwid, frame.len(), false, out);
    }

    /// `len` bytes read from the TAP of network `nwid` into
    /// [`Outbox::frame_room`]: a frame, behind its `virtio_net_hdr` when
    /// `virtio_header` (a TAP opened with `IFF_VNET_HDR`, whose frames may
    /// be super-frames with partial checksums). Switched to members. A frame
    /// for one member with a session becomes its packet where it lies
    /// (headers written into the headroom, sealed in place); otherwise it is
    /// copied for each.
    pub fn handle_tap_read(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        len: usize,
        virtio_header: bool,
        out: &mut Outbox,
    ) {
        let Some((start, read_at)) = out.take_frame(len) else {
            return;
        };
        let frame_at = start + OFFLOAD_FRAME_HEADROOM_BYTES;
        let offload = if virtio_header {
            let parsed = out.bytes()[read_at..]
                .split_first_chunk::<VIRTIO_NET_HDR_LEN_BYTES>()
                .map(|(header, frame)| Offload::from_virtio(header, frame));
            match parsed {
                Some(Ok(offload)) => offload,
                _ => {
                    self.counters.dropped_tap_offloads += 1;
                    out.buffer_mut().truncate(start);
                    return;
                }
            }
        } else {
            Offload::NONE
        };
        let segments = offload.segment_lengths(&out.bytes()[frame_at..]);
        // A super-frame the size rules tell apart is cut first, and each
        // segment judged on its own.
        let split = self
            .networks
            .get(&nwid)
            .and_then(|m| m.switch.as_ref())
            .is_some_and(|s| s.size_rules_split(segments));
        if split {
            let frame = out.bytes()[frame_at..].to_vec();
            out.buffer_mut().truncate(start);
            self.counters.super_frames_split_by_rules += 1;
            for segment in cut_in_software(offload, &frame) {
                self.handle_tap_frame(now_ms, nwid, &segment, out);
            }
            return;
        }
        let mut targets = std::mem::take(&mut self.frame_targets);
        targets.clear();
        // A multicast group whose recipients to ask the roots about, and
        // whether none is known (the frame then waits for the answer).
        let mut gather = None;
        let mut answered = false;
        // A copy a TEE or WATCH rule asks for.
        let mut tee = None;
        if let Some(m) = self.networks.get_mut(&nwid)
            && let Some(switch) = m.switch.as_mut()
        {
            let limit = switch.policy().multicast_limit as usize;
            let grants = CertificateGrants {
                ours: m.config.as_ref().map(|c| &c.certificate),
                peers: &m.peer_certificates,
            };
            let frame = &out.bytes()[frame_at..];
            match switch.outbound_segmented(now_ms, frame, segments, &grants) {
                Outbound::Answer(reply) => {
                    let mut frame = std::mem::take(&mut self.frame_copy);
                    frame.clear();
                    frame.extend_from_slice(reply);
                    self.frame_copy = frame;
                    answered = true;
                }
                Outbound::Unicast(a) => targets.push(a),
                Outbound::Bridges(list) => targets.extend_from_slice(list),
                Outbound::Multicast { group, members } => {
                    targets.extend_from_slice(members);
                    if members.len() < limit {
                        gather = Some((group, false));
                    }
                }
                Outbound::Unresolved(group) if group.is_announced_kind() => {
                    gather = Some((group, true));
                }
                // No root can name a listener (MLD reports, mDNS...): dropped
                // at once, not held and asked about.
                Outbound::Unresolved(_) => switch.count_drop(DropReason::NoRecipients),
                Outbound::Drop(_) => {}
            }
            tee = switch.take_copy().filter(|c| !targets.contains(&c.to));
            if tee.is_some() {
                switch.count_copy();
            }
        }
        if answered {
            out.buffer_mut().truncate(start);
            let reply = std::mem::take(&mut self.frame_copy);
            out.push_frame(nwid, Offload::NONE, &reply);
            self.frame_copy = reply;
            self.frame_targets = targets;
            return;
        }
        // (A gather for more recipients goes after the frame, which may lie
        // in the outbox to be sealed where it is.)
        if let Some((group, true)) = gather {
            let mut frame = std::mem::take(&mut self.frame_copy);
            frame.clear();
            frame.extend_from_slice(&out.bytes()[frame_at..]);
            out.buffer_mut().truncate(start);
            self.hold_for_gather(now_ms, nwid, group, offload, &frame, out);
            self.frame_copy = frame;
            self.frame_targets = targets;
            return;
        }
        let in_place = match targets[..] {
            [to] if tee.is_none() && self.frame_goes_in_place(now_ms, nwid, to) => {
                if self.peers.get(&to).is_some_and(|p| p.takes_whole(offload)) {
                    Some((to, Verb::OffloadFrame, start))
                } else if offload.is_none() {
                    Some((to, Verb::ExtFrame, frame_at - FRAME_HEADROOM_BYTES))
                } else {
                    // A peer that cannot take offloads: completed in software.
                    None
                }
            }
            _ => None,
        };
        match in_place {
            Some((to, verb, packet_at)) => {
                if let Some(peer) = self.peers.get_mut(&to) {
                    peer.last_active_ms = MaybeMs::at(now_ms);
                }
                let packet = &mut out.buffer_mut()[packet_at..];
                write_verb(packet, verb);
                let body = &mut packet[PACKET_HEADER_LEN_BYTES + 1..];
                match verb {
                    Verb::OffloadFrame => OffloadFrameMessage::encode_header(nwid, offload, body),
                    _ => FrameMessage::encode_header(nwid, body),
                }
                if offload.segmentation.is_some() {
                    self.counters.super_frames_sent += 1;
                }
                self.seal_and_queue(now_ms, to, None, None, verb, packet_at, out);
            }
            None => {
                let mut frame = std::mem::take(&mut self.frame_copy);
                frame.clear();
                frame.extend_from_slice(&out.bytes()[frame_at..]);
                out.buffer_mut().truncate(start);
                for &target in &targets {
                    self.send_frame(now_ms, nwid, target, offload, &frame, out);
                }
                if let Some(copy) = tee {
                    self.send_copy(now_ms, nwid, copy, offload, &frame, out);
                }
                self.frame_copy = frame;
            }
        }
        self.frame_targets = targets;
        if let Some((group, false)) = gather {
            // Fewer recipients known than the limit: ask for more now and then.
            self.gather(now_ms, nwid, group, false, out);
        }
    }

    /// Whether a frame for `to` goes straight out as one packet: it may be
    /// sent (certificates agree), no certificate has to go first, and a
    /// session is up. Otherwise [`Node::send_frame`] decides.
    fn frame_goes_in_place(&self, now_ms: u64, nwid: NetworkId, to: Address) -> bool {
        let Some(m) = self.networks.get(&nwid) else {
            return false;
        };
        let (Some(config), Some(switch)) = (m.config.as_ref(), m.switch.as_ref()) else {
            return false;
        };
        to != self.address
            && switch.certificate_admits(&config.certificate, m.peer_certificates.get(&to))
            && !m.credentials_due(to, false, now_ms)
            && self
                .peers
                .get(&to)
                .is_some_and(|p| p.sessions.is_established())
    }

    pub(crate) fn send_frame(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        to: Address,
        offload: Offload,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        let Some(m) = self.networks.get_mut(&nwid) else {
            return;
        };
        let (Some(config), Some(switch)) = (m.config.as_ref(), m.switch.as_mut()) else {
            return;
        };
        if !switch.certificate_admits(&config.certificate, m.peer_certificates.get(&to)) {
            if m.revocations.is_revoked(to) {
                // Revoked by the controller: never sent anything.
                switch.count_unsent();
                self.counters.dropped_frames_to_unauthorized += 1;
                return;
            }
            // Listed, but no fresh certificate of it: hold the frame (the
            // newest few per member) and send ours, which a member answers
            // with its own.
            let peers = m.awaiting_credentials.len();
            let dropped = match m.awaiting_credentials.get_mut(&to) {
                Some((_, held)) => {
                    let full = held.len() >= MAX_FRAMES_AWAITING_CREDENTIALS_PER_MEMBER;
                    if full {
                        held.remove(0);
                    }
                    held.push((offload, frame.to_vec()));
                    full
                }
                None if peers < MAX_MEMBERS_AWAITING_CREDENTIALS => {
                    m.awaiting_credentials
                        .insert(to, (now_ms, vec![(offload, frame.to_vec())]));
                    false
                }
                None => true,
            };
            if dropped {
                switch.count_unsent();
                self.counters.dropped_frames_to_unauthorized += 1;
            }
            self.push_credentials(now_ms, nwid, to, true, out);
            return;
        }
        self.push_credentials(now_ms, nwid, to, false, out);
        if let Some(peer) = self.peers.get_mut(&to) {
            peer.last_active_ms = MaybeMs::at(now_ms);
        }
        let mut payload = std::mem::take(&mut self.frame_buf);
        if self.peers.get(&to).is_some_and(|p| p.takes_whole(offload)) {
            payload.clear();
            OffloadFrameMessage {
                network: nwid,
                offload,
                frame,
            }
            .encode(&mut payload);
            if offload.segmentation.is_some() {
                self.counters.super_frames_sent += 1;
            }
            self.send(now_ms, to, Verb::OffloadFrame, &payload, out);
        } else if offload.is_none() {
            payload.clear();
            FrameMessage {
                network: nwid,
                frame,
            }
            .encode(&mut payload);
            self.send(now_ms, to, Verb::ExtFrame, &payload, out);
        } else {
            // A peer that cannot take offloads (or has not said yet): the
            // frames the kernel would have made, one EXT_FRAME each.
            let mut segments = std::mem::take(&mut self.frame_segments);
            segments.clear();
            let mut ends = Vec::new();
            let mut scratch = std::mem::take(&mut payload);
            let completed = offload.complete(frame, &mut scratch, |f| {
                segments.extend_from_slice(f);
                ends.push(segments.len());
            });
            match completed {
                Err(_) => self.counters.dropped_tap_offloads += 1,
                Ok(_) if offload.segmentation.is_some() => self.counters.super_frames_cut += 1,
                Ok(_) => {}
            }
            let mut begin = 0;
            for end in ends {
                payload.clear();
                FrameMessage {
                    network: nwid,
                    frame: &segments[begin..end],
                }
                .encode(&mut payload);
                self.send(now_ms, to, Verb::ExtFrame, &payload, out);
                begin = end;
            }
            self.frame_segments = segments;
            let _ = scratch;
        }
        self.frame_buf = payload;
    }

    /// Frames held for a certificate that did not come in time are dropped
    /// and counted (call from the timer).
    pub(crate) fn expire_awaiting_credentials(&mut self, now_ms: u64) {
        for m in self.networks.values_mut() {
            let mut gone = 0u64;
            m.awaiting_credentials.retain(|_, (since, held)| {
                let keep = now_ms.saturating_sub(*since) < FRAME_AWAITING_CREDENTIALS_MS;
                if !keep {
                    gone += held.len() as u64;
                }
                keep
            });
            if let Some(switch) = m.switch.as_mut() {
                for _ in 0..gone {
                    switch.count_unsent();
                }
            }
            self.counters.dropped_frames_to_unauthorized += gone;
            if let Some(config) = m.config.as_ref() {
                // Certificates that no longer agree with ours admit nothing.
                m.peer_certificates
                    .retain(|_, c| c.agrees_with(&config.certificate));
            }
            m.credential_checks
                .retain(|_, (start, _)| now_ms.saturating_sub(*start) < 1_000);
        }
    }

    /// EXT_FRAME from a member: certificate check, switch, TAP.
    pub(crate) fn handle_ext_frame(
        &mut self,
        now_ms: u64,
        src: Address,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        match FrameMessage::decode(payload) {
            Ok(m) => self.deliver_frame(now_ms, src, m.network, Offload::NONE, m.frame, out),
            Err(_) => self.counters.dropped_frames += 1,
        }
    }

    /// OFFLOAD_FRAME from a member: as EXT_FRAME, its offloads going with
    /// the frame to the TAP (or completed in software there).
    pub(crate) fn handle_offload_frame(
        &mut self,
        now_ms: u64,
        src: Address,
        payload: &[u8],
        out: &mut Outbox,
    ) {
        match OffloadFrameMessage::decode(payload) {
            Ok(m) => self.deliver_frame(now_ms, src, m.network, m.offload, m.frame, out),
            Err(_) => {
                self.counters.dropped_frames += 1;
                self.counters.dropped_bad_offloads += 1;
            }
        }
    }

    /// A member's frame: certificate check, switch, TAP.
    fn deliver_frame(
        &mut self,
        now_ms: u64,
        src: Address,
        nwid: NetworkId,
        offload: Offload,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        let Some(m) = self.networks.get_mut(&nwid) else {
            self.counters.dropped_frames += 1;
            return;
        };
        let (Some(config), Some(switch)) = (m.config.as_ref(), m.switch.as_mut()) else {
            self.counters.dropped_frames += 1;
            return;
        };
        let theirs = m.peer_certificates.get(&src);
        let segments = offload.segment_lengths(frame);
        if switch.size_rules_split(segments) {
            self.counters.super_frames_split_by_rules += 1;
            for segment in cut_in_software(offload, frame) {
                self.deliver_frame(now_ms, src, nwid, Offload::NONE, &segment, out);
            }
            return;
        }
        let verdict =
            switch.receive_segmented(now_ms, src, &config.certificate, theirs, frame, segments);
        // A WATCH rule's copy from the receiving side.
        let watch = switch.take_copy().filter(|c| c.to != src);
        if watch.is_some() {
            switch.count_copy();
        }
        if verdict != Inbound::Drop(DropReason::NotAuthorized)
            && let Some(peer) = self.peers.get_mut(&src)
        {
            // A member's traffic keeps its paths probed, delivered or not.
            peer.last_active_ms = MaybeMs::at(now_ms);
        }
        match verdict {
            Inbound::Deliver => {
                if offload.segmentation.is_some() {
                    self.counters.super_frames_received += 1;
                }
                out.push_frame(nwid, offload, frame);
            }
            Inbound::Drop(DropReason::NotAuthorized) => {
                // No certificate, one the controller stopped refreshing, or
                // one revoked.
                self.counters.dropped_frames_unauthorized += 1;
                if !m.revocations.is_revoked(src) {
                    // Its certificate (or ours, at its end) may just have been lost.
                    self.push_credentials(now_ms, nwid, src, true, out);
                }
            }
            Inbound::Drop(_) => self.counters.dropped_frames += 1,
        }
        if let Some(copy) = watch {
            self.send_copy(now_ms, nwid, copy, offload, frame, out);
        }
    }

    /// Sends the copy a TEE or WATCH rule asked for: the first `length`
    /// bytes of the payload (a super-frame goes whole: its segments are
    /// made by the receiver).
    fn send_copy(
        &mut self,
        now_ms: u64,
        nwid: NetworkId,
        copy: CarbonCopy,
        offload: Offload,
        frame: &[u8],
        out: &mut Outbox,
    ) {
        let len = if offload.is_none() {
            frame.len().min(ETHERNET_HEADER_LEN_BYTES + copy.length)
        } else {
            frame.len()
        };
        self.send_frame(now_ms, nwid, copy.to, offload, &frame[..len], out);
    }
}

/// The ordinary frames a super-frame stands for, each with complete
/// checksums, as the kernel's TSO or USO would cut it (none if its offloads
/// do not fit it, which [`Offload::segment_lengths`] has already ruled out).
fn cut_in_software(offload: Offload, frame: &[u8]) -> Vec<Vec<u8>> {
    let mut segments = Vec::new();
    let mut scratch = Vec::new();
    let _ = offload.complete(frame, &mut scratch, |segment| {
        segments.push(segment.to_vec())
    });
    segments
}
