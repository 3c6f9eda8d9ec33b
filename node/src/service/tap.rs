//! The TAP device of a joined network: Ethernet frames in and out, one
//! frame per call; the engine polls it non-blocking.
//!
//! Opened with `IFF_VNET_HDR` and offloads on (`TUNSETOFFLOAD`: checksum,
//! TSO for IPv4 and IPv6, and USO where the kernel has it, 6.2 on), the
//! kernel hands over TCP and UDP super-frames of up to 64 KiB with partial
//! checksums, each behind a `virtio_net_hdr`, and takes them back the same
//! way; that is what lets one read or write carry many
//! segments. tun-tap cannot set these flags, hence this small module of
//! ioctls.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use crate::core::constants::VIRTIO_NET_HDR_LEN_BYTES;
use crate::core::network_id::NetworkId;

/// Offloads asked of the kernel: partial checksums, TSO over IPv4 and IPv6.
const TAP_OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
/// UDP segmentation (USO) over IPv4 and IPv6, asked for first.
const TAP_OFFLOADS_USO: libc::c_uint = libc::TUN_F_USO4 | libc::TUN_F_USO6;

/// A TAP device.
#[derive(Clone)]
pub struct TapDevice {
    file: Arc<File>,
    name: String,
    /// Each frame has a `virtio_net_hdr` in front (`IFF_VNET_HDR`).
    offloads: bool,
    /// The kernel takes and hands over UDP super-frames.
    uso: bool,
}

impl TapDevice {
    /// Creates the TAP device named `name` (needs CAP_NET_ADMIN), with
    /// offloads when `offloads` and the kernel has them.
    pub fn create(name: &str, offloads: bool) -> io::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TAP name {name:?} must be 1 to 15 bytes"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | if offloads { libc::IFF_VNET_HDR } else { 0 };
        // SAFETY: ifreq is plain data; zeroed is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: a valid fd and a valid ifreq for TUNSETIFF.
        check(unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &request) })?;
        // SAFETY: the kernel wrote a NUL-terminated name into ifr_name.
        let kernel_name = unsafe { std::ffi::CStr::from_ptr(request.ifr_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let mut device = Self {
            file: Arc::new(file),
            name: kernel_name,
            offloads: false,
            uso: false,
        };
        if offloads {
            let header_len = VIRTIO_NET_HDR_LEN_BYTES as libc::c_int;
            // SAFETY: a valid fd; TUNSETVNETHDRSZ reads an int through the pointer.
            check(unsafe { libc::ioctl(device.fd(), libc::TUNSETVNETHDRSZ, &header_len) })?;
            // The header is there from now on, whatever offloads the kernel takes.
            device.offloads = true;
            let set = |flags: libc::c_uint| {
                // SAFETY: a valid fd; TUNSETOFFLOAD takes its flags by value.
                check(unsafe {
                    libc::ioctl(device.fd(), libc::TUNSETOFFLOAD, libc::c_ulong::from(flags))
                })
            };
            if set(TAP_OFFLOADS | TAP_OFFLOADS_USO).is_ok() {
                device.uso = true;
            } else if let Err(e) = set(TAP_OFFLOADS) {
                // The virtio_net_hdr stays, all zero: frames come whole.
                tracing::warn!(device = name, error = %e, "TAP offloads refused; frames one by one")
            }
        }
        Ok(device)
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The device name the kernel gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether each frame read or written has a `virtio_net_hdr` in front
    /// (opened with offloads).
    pub fn virtio_header(&self) -> bool {
        self.offloads
    }

    /// Whether the kernel takes UDP super-frames (USO) on this device.
    pub fn uso(&self) -> bool {
        self.uso
    }

    /// Reads one frame, behind its `virtio_net_hdr` when
    /// [`TapDevice::virtio_header`] (blocks unless [`TapDevice::set_nonblocking`]).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.file).read(buf)
    }

    /// Writes one frame, behind its `virtio_net_hdr` when
    /// [`TapDevice::virtio_header`].
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        (&*self.file).write(frame)
    }

    /// Makes reads and writes return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        // SAFETY: a valid fd; F_GETFL/F_SETFL with plain flags.
        let flags = unsafe { libc::fcntl(self.fd(), libc::F_GETFL) };
        check(flags)?;
        // SAFETY: as above.
        check(unsafe { libc::fcntl(self.fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
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

    #[test]
    fn names_too_long_for_the_kernel_are_refused() {
        let err = TapDevice::create("a-name-far-too-long", true)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
