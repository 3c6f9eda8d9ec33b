//! The TAP device of a joined network: Ethernet frames in and out, one
//! frame per call; the engine polls it non-blocking.

use std::io;
use std::sync::Arc;

use tun_tap::{Iface, Mode};

use crate::core::network_id::NetworkId;

/// A TAP device.
#[derive(Clone)]
pub struct TapDevice {
    iface: Arc<Iface>,
}

impl TapDevice {
    /// Creates the TAP device named `name` (needs CAP_NET_ADMIN).
    pub fn create(name: &str) -> io::Result<Self> {
        let iface = Iface::without_packet_info(name, Mode::Tap)?;
        Ok(Self {
            iface: Arc::new(iface),
        })
    }

    /// The device name the kernel gave it.
    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// Reads one frame (blocks unless [`TapDevice::set_nonblocking`]).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.iface.recv(buf)
    }

    /// Writes one frame.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        self.iface.send(frame)
    }

    /// Makes reads and writes return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        self.iface.set_non_blocking()
    }
}

impl std::os::fd::AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.iface.as_raw_fd()
    }
}

/// The device name for a network: `vn` and the network id's last 10 hex
/// digits (interface names are at most 15 characters).
pub fn device_name(nwid: NetworkId) -> String {
    format!("vn{:010x}", nwid.to_u64() & 0xff_ffff_ffff)
}

/// Whether an interface name is one of vnet's TAP devices (`vn` + 10 hex digits).
pub fn is_vnet_device(name: &str) -> bool {
    name.len() == 12 && name.starts_with("vn") && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_devices_are_told_by_name() {
        assert!(is_vnet_device("vn0ccf88193a"));
        assert!(!is_vnet_device("vn0ccf88193"));
        assert!(!is_vnet_device("eth0"));
        assert!(!is_vnet_device("vnXccf88193a"));
    }
}
