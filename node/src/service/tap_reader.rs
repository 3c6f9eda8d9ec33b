//! Reads a TAP device frame by frame, joining a run of small UDP datagrams
//! of one flow, read one after another, into one USO super-frame
//! ([`JoinedRun`]): the run is then sealed once and crosses as one
//! OFFLOAD_FRAME, where each datagram alone would cost a seal, a datagram
//! on the wire (with its headers) and an open. A run stays within one
//! datagram on any path (`MAX_JOINED_READ_LEN_BYTES`), so it is never cut
//! into fragments. A frame read that does not join is kept and handed out
//! next, so nothing is reordered or lost.

use std::io;

use crate::core::constants::{
    MAX_JOINED_READ_LEN_BYTES, MAX_SUPER_FRAME_LEN_BYTES, VIRTIO_NET_HDR_LEN_BYTES,
};
use crate::core::offload::Offload;
use crate::core::udp_join::JoinedRun;
use crate::service::tap::TapDevice;

/// A frame handed out: its length in the room (`virtio_net_hdr`
/// included), and how many datagrams it carries joined (1: none joined).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRead {
    /// Bytes in the room.
    pub len: usize,
    /// Datagrams joined into it.
    pub datagrams: usize,
}

/// Reads frames of TAP devices that carry a `virtio_net_hdr`, joining runs.
pub struct TapReader {
    /// The frame read after the last run, when it did not join.
    next: Vec<u8>,
    /// Its length, while it waits to be handed out.
    ahead: Option<usize>,
}

impl Default for TapReader {
    fn default() -> Self {
        Self {
            next: vec![0; VIRTIO_NET_HDR_LEN_BYTES + MAX_SUPER_FRAME_LEN_BYTES],
            ahead: None,
        }
    }
}

impl TapReader {
    /// Whether a frame read ahead waits to be handed out (before the device
    /// is left: it belongs to the device last read).
    pub fn has_ahead(&self) -> bool {
        self.ahead.is_some()
    }

    /// Drops the frame read ahead (its device is gone).
    pub fn forget_ahead(&mut self) {
        self.ahead = None;
    }

    /// Puts the next frame of `tap` into `room` (the frame read ahead, or
    /// one read now; `virtio_net_hdr` in front), then, while `reads` stays
    /// under `max_reads`, reads on as long as the frames read join it. A
    /// device without the header is read frame by frame.
    pub fn read(
        &mut self,
        tap: &TapDevice,
        room: &mut [u8],
        reads: &mut usize,
        max_reads: usize,
    ) -> io::Result<FrameRead> {
        let mut len = match self.ahead.take() {
            Some(n) => {
                room[..n].copy_from_slice(&self.next[..n]);
                n
            }
            None => {
                *reads += 1;
                tap.read(room)?
            }
        };
        let header = VIRTIO_NET_HDR_LEN_BYTES;
        if !tap.virtio_header() || len <= header {
            return Ok(FrameRead { len, datagrams: 1 });
        }
        // The joined frame stays within one datagram on any path.
        let limit = room.len().min(header + MAX_JOINED_READ_LEN_BYTES);
        let Some(mut run) = start(&room[..len]).filter(|_| len < limit) else {
            return Ok(FrameRead { len, datagrams: 1 });
        };
        while *reads < max_reads {
            *reads += 1;
            // The end of what is there (WouldBlock), or an error the next
            // read reports again: either way the run ends here.
            let Ok(n) = tap.read(&mut self.next) else {
                break;
            };
            let payload = (n > header)
                .then(|| {
                    let (h, f) = self.next[..n].split_at(header);
                    let offload = Offload::from_virtio(h.try_into().ok()?, f).ok()?;
                    run.push(&room[header..len], limit - header, &offload, f)
                })
                .flatten();
            match payload {
                Some(p) => {
                    room[len..len + p.len()].copy_from_slice(p);
                    len += p.len();
                }
                _ => {
                    self.ahead = Some(n);
                    break;
                }
            }
        }
        run.finish_with_header(&mut room[..len]);
        Ok(FrameRead {
            len,
            datagrams: run.count(),
        })
    }
}

/// A run starting at `read` (header and frame), if the frame is a unicast
/// datagram others could join.
fn start(read: &[u8]) -> Option<JoinedRun> {
    let (header, frame) = read.split_at(VIRTIO_NET_HDR_LEN_BYTES);
    // Frames for several members are copied per member; only unicast joins.
    if frame.first().is_none_or(|b| b & 1 != 0) {
        return None;
    }
    let offload = Offload::from_virtio(header.try_into().ok()?, frame).ok()?;
    JoinedRun::start(&offload, frame)
}
