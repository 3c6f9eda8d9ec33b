//! Member names in DNS (Tailscale's MagicDNS, zeronsd's job for ZeroTier):
//! the controller answers `<member name>.<domain>` and `<address>.<domain>`
//! with the member's addresses, for each of its networks that has a DNS
//! domain, on UDP port 53 of those of the network's `dns.servers` that
//! are its own addresses on the network (the controller joins its network
//! and lists itself as a server). Messages are read and written by
//! hickory-proto. A name outside every domain served gets REFUSED, so a
//! resolver that asks us first (the resolv.conf fallback) asks its next
//! server; a name inside a domain that no member has gets NXDOMAIN.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};

use crate::controller::Controller;
use crate::controller_lock::lock;

/// Port the responder listens on.
pub const DNS_PORT: u16 = 53;
/// TTL of the answers, in seconds (members' addresses change rarely).
pub const ANSWER_TTL_S: u32 = 60;
/// How often the addresses to listen on are looked at again.
const REBIND_INTERVAL: Duration = Duration::from_secs(2);
/// Largest query read (queries over UDP are at most 512 bytes without EDNS).
const MAX_QUERY_BYTES: usize = 1_232;

/// A member's name as a DNS label: lowercase, spaces and underscores as
/// hyphens, other characters dropped, at most 63 bytes; none if nothing is left.
pub fn label_of(name: &str) -> Option<String> {
    let label: String = name
        .trim()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            ' ' | '_' => Some('-'),
            _ => None,
        })
        .take(63)
        .collect();
    let label = label.trim_matches('-').to_string();
    (!label.is_empty()).then_some(label)
}

/// What a name asks for: outside every domain, or a label in one.
pub enum Lookup {
    /// No domain served here holds the name.
    Refused,
    /// In a served domain: the addresses of the member it names (empty: none).
    Found(Vec<IpAddr>),
}

/// The answer to the DNS message `query`, with `lookup` resolving a
/// lowercase name without its trailing dot; none for what is not a query.
pub fn answer(query: &[u8], lookup: impl Fn(&str) -> Lookup) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.message_type() != MessageType::Query {
        return None;
    }
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(false)
        .set_authoritative(true);
    let [question] = q.queries() else {
        r.set_response_code(ResponseCode::FormErr);
        return r.to_vec().ok();
    };
    r.add_query(question.clone());
    if q.op_code() != OpCode::Query {
        r.set_response_code(ResponseCode::NotImp);
        return r.to_vec().ok();
    }
    let asked = question.name().to_lowercase().to_ascii();
    let asked = asked.trim_end_matches('.');
    match lookup(asked) {
        Lookup::Refused => {
            r.set_response_code(ResponseCode::Refused);
        }
        Lookup::Found(ips) if ips.is_empty() => {
            r.set_response_code(ResponseCode::NXDomain);
        }
        Lookup::Found(ips) => {
            let name = question.name().clone();
            let wanted = question.query_type();
            for ip in ips {
                let rdata = match (ip, wanted) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
                    _ => continue,
                };
                r.add_answer(Record::from_rdata(name.clone(), ANSWER_TTL_S, rdata));
            }
            // No record of the type asked: NOERROR with no answer (NODATA).
        }
    }
    r.to_vec().ok()
}

/// Resolves `name` against the controller's networks with a DNS domain.
pub fn lookup(c: &Controller, name: &str) -> Lookup {
    for nwid in c.network_ids() {
        let Some(network) = c.network(nwid) else {
            continue;
        };
        let Some(dns) = &network.dns else { continue };
        let Some(label) = name
            .strip_suffix(dns.domain.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
        else {
            continue;
        };
        return Lookup::Found(c.member_addresses_by_label(nwid, label));
    }
    Lookup::Refused
}

/// The addresses the responder should listen on: each network's DNS
/// servers that are this controller's own addresses on that network.
fn wanted(c: &Controller) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for nwid in c.network_ids() {
        let Some(dns) = c.network(nwid).and_then(|n| n.dns.clone()) else {
            continue;
        };
        let ours = c.member_addresses(nwid, c.address());
        out.extend(dns.servers.iter().filter(|s| ours.contains(s)).copied());
    }
    out.sort();
    out.dedup();
    out
}

/// Starts the thread that keeps a responder on each wanted address; it
/// ends when the controller is dropped.
pub fn spawn(shared: &Arc<Mutex<Controller>>) -> std::io::Result<()> {
    let weak = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name("vnet-ctl-dns".into())
        .spawn(move || manage(&weak))?;
    Ok(())
}

fn manage(shared: &Weak<Mutex<Controller>>) {
    let mut serving: HashMap<IpAddr, Arc<AtomicBool>> = HashMap::new();
    loop {
        let Some(strong) = shared.upgrade() else {
            break;
        };
        let want = wanted(&lock(&strong));
        drop(strong);
        serving.retain(|ip, stop| {
            let keep = want.contains(ip);
            if !keep {
                stop.store(true, Ordering::Relaxed);
                tracing::info!(%ip, "member-name DNS stopped");
            }
            keep
        });
        for ip in want {
            if serving.contains_key(&ip) {
                continue;
            }
            // Fails until the address is on our device: tried again soon.
            let Ok(socket) = UdpSocket::bind(SocketAddr::new(ip, DNS_PORT)) else {
                continue;
            };
            let _ = socket.set_read_timeout(Some(REBIND_INTERVAL));
            let stop = Arc::new(AtomicBool::new(false));
            let (weak, flag) = (shared.clone(), stop.clone());
            let spawned = std::thread::Builder::new()
                .name("vnet-ctl-dns-udp".into())
                .spawn(move || respond(&socket, &weak, &flag));
            if spawned.is_ok() {
                tracing::info!(%ip, port = DNS_PORT, "member-name DNS listening");
                serving.insert(ip, stop);
            }
        }
        std::thread::sleep(REBIND_INTERVAL);
    }
    for stop in serving.values() {
        stop.store(true, Ordering::Relaxed);
    }
}

fn respond(socket: &UdpSocket, shared: &Weak<Mutex<Controller>>, stop: &AtomicBool) {
    let mut buf = [0u8; MAX_QUERY_BYTES];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let reply = answer(&buf[..len], |name| lookup(&lock(&shared), name));
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn ask(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(77).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        m.to_vec().unwrap()
    }

    fn table(name: &str) -> Lookup {
        match name {
            "m2.vnet.lan" => Lookup::Found(vec![
                "10.0.0.2".parse().unwrap(),
                "fd00::2".parse().unwrap(),
            ]),
            n if n.ends_with(".vnet.lan") => Lookup::Found(Vec::new()),
            _ => Lookup::Refused,
        }
    }

    #[test]
    fn names_in_the_domain_are_answered_others_refused() {
        let reply = Message::from_vec(&answer(&ask("M2.vnet.lan.", RecordType::A), table).unwrap())
            .unwrap();
        assert_eq!(reply.id(), 77);
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        assert!(reply.authoritative());
        let ips: Vec<String> = reply
            .answers()
            .iter()
            .map(|r| r.data().to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.2"]);
        let reply =
            Message::from_vec(&answer(&ask("m2.vnet.lan.", RecordType::AAAA), table).unwrap())
                .unwrap();
        let ips: Vec<String> = reply
            .answers()
            .iter()
            .map(|r| r.data().to_string())
            .collect();
        assert_eq!(ips, ["fd00::2"]);
        let reply =
            Message::from_vec(&answer(&ask("nobody.vnet.lan.", RecordType::A), table).unwrap())
                .unwrap();
        assert_eq!(reply.response_code(), ResponseCode::NXDomain);
        let reply = Message::from_vec(&answer(&ask("example.com.", RecordType::A), table).unwrap())
            .unwrap();
        assert_eq!(reply.response_code(), ResponseCode::Refused);
        assert!(answer(b"\\x00junk", table).is_none());
    }

    #[test]
    fn member_names_become_labels() {
        assert_eq!(
            label_of("Build Server_2").as_deref(),
            Some("build-server-2")
        );
        assert_eq!(label_of(" laptop! ").as_deref(), Some("laptop"));
        assert_eq!(label_of("---").as_deref(), None);
        assert_eq!(label_of("").as_deref(), None);
    }
}
