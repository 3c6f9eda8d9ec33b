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
