//! Kernel link settings over netlink (rtnetlink, not `ip`): a TAP device's
//! MAC, MTU, state and addresses.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec, new_connection};

use crate::core::network_id::Mac;

/// Why a netlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("netlink: {0}")]
    Connect(std::io::Error),
    /// The kernel refused a request.
    #[error("netlink {what} on {device}: {error}")]
    Request {
        /// What was asked.
        what: &'static str,
        /// The device.
        device: String,
        /// The kernel's answer.
        error: rtnetlink::Error,
    },
    /// No such device.
    #[error("no network device named {0}")]
    NoDevice(String),
}

/// What a TAP device should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// Device name.
    pub device: String,
    /// Its MAC (the member MAC on the network).
    pub mac: Mac,
    /// Its MTU.
    pub mtu: u32,
    /// Addresses with prefix lengths it must carry (and no others).
    pub addresses: Vec<(IpAddr, u8)>,
}

/// Moves the calling thread into the network namespace open as `ns`.
fn enter_netns(ns: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace file descriptor changes only the
    // calling thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A netlink connection, driven on the current tokio runtime.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink connection (spawns its driver task).
    pub fn connect() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Opens a netlink connection inside the network namespace at
    /// `netns` (a file such as `/run/netns/<name>`): the socket is made on
    /// a blocking thread that enters the namespace and comes back out.
    pub async fn connect_in(netns: std::path::PathBuf) -> Result<Self, NetlinkError> {
        let made = tokio::task::spawn_blocking(move || {
            let home = std::fs::File::open("/proc/thread-self/ns/net")?;
            let target = std::fs::File::open(&netns)?;
            enter_netns(&target)?;
            // The runtime is entered here: the socket registers with it.
            let made = new_connection();
            enter_netns(&home)?;
            made
        })
        .await
        .map_err(|e| NetlinkError::Connect(std::io::Error::other(e)))?;
        let (connection, handle, _) = made.map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Moves `device` into the network namespace open as `netns`.
    pub async fn move_to_netns(
        &self,
        device: &str,
        netns: &std::fs::File,
    ) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        let index = self.index(device).await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(netns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(|error| NetlinkError::Request {
                what: "move to netns",
                device: device.to_string(),
                error,
            })
    }

    /// The connection's handle, for requests this module does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Every link: index and name.
    pub async fn links(&self) -> Result<Vec<(u32, String)>, NetlinkError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(|e| NetlinkError::Request {
            what: "dump links",
            device: "*".into(),
            error: e,
        })? {
            for a in &link.attributes {
                if let rtnetlink::packet_route::link::LinkAttribute::IfName(name) = a {
                    out.push((link.header.index, name.clone()));
                }
            }
        }
        Ok(out)
    }

    async fn index(&self, device: &str) -> Result<u32, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(device.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(NetlinkError::NoDevice(device.to_string())),
            Err(_) => Err(NetlinkError::NoDevice(device.to_string())),
        }
    }

    /// Brings the device to `settings`: MAC, MTU, up, and its managed
    /// addresses: those of `settings` added, those of `managed_before` no
    /// longer wanted removed. Addresses someone else put there (a DHCP lease
    /// on a bridged network, an address added by hand) stay.
    pub async fn apply(
        &self,
        settings: &LinkSettings,
        managed_before: &[(IpAddr, u8)],
    ) -> Result<(), NetlinkError> {
        let device = settings.device.clone();
        let index = self.index(&device).await?;
        let req = |what, error| NetlinkError::Request {
            what,
            device: device.clone(),
            error,
        };
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(settings.mac.0.to_vec())
                    .mtu(settings.mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| req("set link", e))?;
        // Current addresses on the device.
        let mut current = Vec::new();
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| req("get addresses", e))?
        {
            let prefix = msg.header.prefix_len;
            for attr in &msg.attributes {
                if let rtnetlink::packet_route::address::AddressAttribute::Address(ip) = attr {
                    current.push((msg.clone(), *ip, prefix));
                }
            }
        }
        for (msg, ip, prefix) in &current {
            let stale = managed_before.contains(&(*ip, *prefix))
                && !settings.addresses.contains(&(*ip, *prefix));
            if stale {
                self.handle
                    .address()
                    .del(msg.clone())
                    .execute()
                    .await
                    .map_err(|e| req("delete address", e))?;
            }
        }
        for (ip, prefix) in &settings.addresses {
            if !current.iter().any(|(_, i, p)| i == ip && p == prefix) {
                self.handle
                    .address()
                    .add(index, *ip, *prefix)
                    .execute()
                    .await
                    .map_err(|e| req("add address", e))?;
            }
        }
        Ok(())
    }
}
