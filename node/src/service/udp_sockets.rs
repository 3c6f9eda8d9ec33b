//! The node's long-lived UDP sockets: the primary port (IPv4 on all
//! interfaces, and IPv6 v6-only on the same port where the system has
//! IPv6) and the port the gateway maps. Non-blocking, for the engine's poll.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use tracing::{debug, warn};

use crate::core::local_socket::LocalSocket;

/// Why the sockets could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("UDP {addr}: {error}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub error: io::Error,
}

/// The primary and mapped sockets.
pub struct UdpSockets {
    /// Primary port, IPv4.
    pub v4: UdpSocket,
    /// Primary port, IPv6 (v6-only), where the system has IPv6.
    pub v6: Option<UdpSocket>,
    /// The socket the gateway maps, when port mapping is on.
    pub mapped: Option<UdpSocket>,
}

impl UdpSockets {
    /// Binds the primary port and, given one, a socket for the gateway to
    /// map (the preferred port, else any).
    pub fn bind(port: u16, mapped_port: Option<u16>) -> Result<Self, BindError> {
        let v4_addr = SocketAddr::from(([0, 0, 0, 0], port));
        let v4 = UdpSocket::bind(v4_addr).map_err(|error| BindError {
            addr: v4_addr,
            error,
        })?;
        let v6_addr = SocketAddr::from(([0u16; 8], port));
        let v6 = (|| -> io::Result<UdpSocket> {
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            // v6-only, so it can share the port with the IPv4 socket.
            s.set_only_v6(true)?;
            s.set_nonblocking(true)?;
            s.bind(&v6_addr.into())?;
            Ok(UdpSocket::from_std(s.into()))
        })();
        let v6 = match v6 {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "no IPv6 socket; IPv4 only");
                None
            }
        };
        let mapped = mapped_port.and_then(|p| {
            let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], p)))
                .or_else(|_| UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))));
            match s {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "no socket for port mapping");
                    None
                }
            }
        });
        Ok(Self { v4, v6, mapped })
    }

    /// Sends on the primary or mapped socket; false if `socket` is not one
    /// of these (punch and TCP relay sockets are sent elsewhere).
    pub fn send(&self, socket: LocalSocket, to: SocketAddr, bytes: &[u8]) -> bool {
        let udp = match (socket, to, &self.v6, &self.mapped) {
            (LocalSocket::Primary, SocketAddr::V6(_), Some(v6), _) => v6,
            (LocalSocket::Primary, _, _, _) => &self.v4,
            (LocalSocket::Mapped, SocketAddr::V4(_), _, Some(m)) => m,
            (LocalSocket::Mapped, _, _, _) => {
                debug!(%to, "no mapped socket for this address; datagram dropped");
                return true;
            }
            _ => return false,
        };
        if let Err(e) = udp.send_to(bytes, to) {
            debug!(%to, error = %e, "send failed");
        }
        true
    }
}
