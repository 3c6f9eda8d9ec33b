//! The short-lived UDP sockets of birthday hole punches: opened on the
//! core's first send by one, read by one thread with poll(2), closed when
//! the core no longer counts them live.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::debug;

/// The punch sockets by the core's id.
#[derive(Default)]
pub struct PunchSockets {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sockets: HashMap<u32, Arc<UdpSocket>>,
    /// Ids only grow: one at or below this was opened before and is not
    /// reopened (a late send by a closed id is dropped).
    highest_opened: Option<u32>,
}

impl PunchSockets {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends by socket `id`, opening it on first use.
    pub fn send(&self, id: u32, to: SocketAddr, bytes: &[u8]) {
        let socket = {
            let mut inner = self.lock();
            match inner.sockets.get(&id) {
                Some(s) => s.clone(),
                None if inner.highest_opened.is_none_or(|h| id > h) => {
                    let bind: SocketAddr = if to.is_ipv4() {
                        SocketAddr::from(([0, 0, 0, 0], 0))
                    } else {
                        SocketAddr::from(([0u16; 8], 0))
                    };
                    let socket = match UdpSocket::bind(bind).and_then(|s| {
                        s.set_nonblocking(true)?;
                        Ok(s)
                    }) {
                        Ok(s) => Arc::new(s),
                        Err(e) => {
                            debug!(id, error = %e, "cannot open punch socket");
                            return;
                        }
                    };
                    inner.highest_opened = Some(id);
                    inner.sockets.insert(id, socket.clone());
                    socket
                }
                None => return,
            }
        };
        if let Err(e) = socket.send_to(bytes, to) {
            debug!(id, %to, error = %e, "punch send failed");
        }
    }

    /// Closes every socket not in `live`; returns the ids closed.
    pub fn retain(&self, live: &HashSet<u32>) -> Vec<u32> {
        let mut inner = self.lock();
        let closed: Vec<u32> = inner
            .sockets
            .keys()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in &closed {
            inner.sockets.remove(id);
        }
        closed
    }

    /// Number of open sockets.
    pub fn len(&self) -> usize {
        self.lock().sockets.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits up to `timeout` for datagrams on any socket and calls
    /// `deliver(id, from, bytes)` for each one read.
    pub fn poll_once(
        &self,
        timeout: Duration,
        buf: &mut [u8],
        mut deliver: impl FnMut(u32, SocketAddr, &mut [u8]),
    ) {
        let sockets: Vec<(u32, Arc<UdpSocket>)> = self
            .lock()
            .sockets
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        if sockets.is_empty() {
            std::thread::sleep(timeout);
            return;
        }
        let mut fds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|(_, s)| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd for its length, and the
        // sockets it names stay open (we hold Arcs) until poll returns.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout.as_millis() as libc::c_int,
            )
        };
        if n <= 0 {
            return;
        }
        for (fd, (id, socket)) in fds.iter().zip(&sockets) {
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            // Drain what is queued on this socket.
            while let Ok((len, from)) = socket.recv_from(buf) {
                deliver(*id, from, &mut buf[..len]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_open_on_first_send_deliver_and_close_for_good() {
        let sockets = PunchSockets::default();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        sockets.send(1, peer_addr, b"one");
        sockets.send(2, peer_addr, b"two");
        assert_eq!(sockets.len(), 2);
        let mut buf = [0u8; 64];
        let (_, from1) = peer.recv_from(&mut buf).unwrap();
        let (_, from2) = peer.recv_from(&mut buf).unwrap();
        assert_ne!(from1.port(), from2.port(), "one socket per id");
        peer.send_to(b"back", from1).unwrap();
        let mut got = Vec::new();
        for _ in 0..20 {
            sockets.poll_once(Duration::from_millis(50), &mut buf, |id, _, b| {
                got.push((id, b.to_vec()))
            });
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"back");
        let closed = sockets.retain(&HashSet::from([got[0].0]));
        assert_eq!(closed.len(), 1);
        assert_eq!(sockets.len(), 1);
        // A closed id is not reopened by a late send.
        sockets.send(closed[0], peer_addr, b"late");
        assert_eq!(sockets.len(), 1);
    }
}
