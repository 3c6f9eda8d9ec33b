//! The short-lived UDP sockets of birthday hole punches: opened on the
//! core's first send by one, registered with the engine's poll, closed when
//! the core no longer counts them live. Only the engine thread touches them.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use tracing::debug;

/// The punch sockets by the core's id.
#[derive(Default)]
pub struct PunchSockets {
    sockets: HashMap<u32, (UdpSocket, Token)>,
    by_token: HashMap<Token, u32>,
    /// Ids only grow: one at or below this was opened before and is not
    /// reopened (a late send by a closed id is dropped).
    highest_opened: Option<u32>,
}

impl PunchSockets {
    /// Sends by socket `id`, opening it on first use and registering it
    /// under the token `token()` gives.
    pub fn send(
        &mut self,
        registry: &Registry,
        token: impl FnOnce() -> Token,
        id: u32,
        to: SocketAddr,
        bytes: &[u8],
    ) {
        if !self.sockets.contains_key(&id) {
            if self.highest_opened.is_some_and(|h| id <= h) {
                return;
            }
            match open(registry, token(), to) {
                Ok((socket, token)) => {
                    self.highest_opened = Some(id);
                    self.by_token.insert(token, id);
                    self.sockets.insert(id, (socket, token));
                }
                Err(e) => {
                    debug!(id, error = %e, "cannot open punch socket");
                    return;
                }
            }
        }
        if let Some((socket, _)) = self.sockets.get(&id)
            && let Err(e) = socket.send_to(bytes, to)
        {
            debug!(id, %to, error = %e, "punch send failed");
        }
    }

    /// The id of the socket registered under `token`.
    pub fn id_of(&self, token: Token) -> Option<u32> {
        self.by_token.get(&token).copied()
    }

    /// Reads one datagram from socket `id` (`WouldBlock` when none is queued).
    pub fn recv_from(&self, id: u32, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self.sockets.get(&id) {
            Some((socket, _)) => socket.recv_from(buf),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Closes every socket not in `live`; returns the ids closed.
    pub fn retain(&mut self, registry: &Registry, live: &HashSet<u32>) -> Vec<u32> {
        let closed: Vec<u32> = self
            .sockets
            .keys()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in &closed {
            if let Some((mut socket, token)) = self.sockets.remove(id) {
                let _ = registry.deregister(&mut socket);
                self.by_token.remove(&token);
            }
        }
        closed
    }

    /// Number of open sockets.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

fn open(registry: &Registry, token: Token, to: SocketAddr) -> io::Result<(UdpSocket, Token)> {
    let bind: SocketAddr = if to.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let mut socket = UdpSocket::bind(bind)?;
    super::udp_sockets::forbid_ip_fragmentation(&socket, to.is_ipv6());
    registry.register(&mut socket, token, Interest::READABLE)?;
    Ok((socket, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;

    #[test]
    fn sockets_open_on_first_send_deliver_and_close_for_good() {
        let mut poll = Poll::new().unwrap();
        let mut sockets = PunchSockets::default();
        let mut next = 100;
        let mut token = || {
            next += 1;
            Token(next)
        };
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        sockets.send(poll.registry(), &mut token, 1, peer_addr, b"one");
        sockets.send(poll.registry(), &mut token, 2, peer_addr, b"two");
        assert_eq!(sockets.len(), 2);
        let mut buf = [0u8; 64];
        let (_, from1) = peer.recv_from(&mut buf).unwrap();
        let (_, from2) = peer.recv_from(&mut buf).unwrap();
        assert_ne!(from1.port(), from2.port(), "one socket per id");
        peer.send_to(b"back", from1).unwrap();
        let mut events = Events::with_capacity(8);
        let mut got = Vec::new();
        for _ in 0..20 {
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            for e in events.iter() {
                let id = sockets.id_of(e.token()).expect("a punch token");
                while let Ok((len, _)) = sockets.recv_from(id, &mut buf) {
                    got.push((id, buf[..len].to_vec()));
                }
            }
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"back");
        let closed = sockets.retain(poll.registry(), &HashSet::from([got[0].0]));
        assert_eq!(closed.len(), 1);
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets.id_of(Token(100 + closed[0] as usize)), None);
        // A closed id is not reopened by a late send.
        sockets.send(poll.registry(), &mut token, closed[0], peer_addr, b"late");
        assert_eq!(sockets.len(), 1);
    }
}
