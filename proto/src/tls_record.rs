//! Framing of datagrams sent over TCP (the relay used when UDP is blocked).
//!
//! Each datagram travels as one record that looks like a TLS 1.2
//! application-data record: content type `0x17`, version `0x03 0x03`, a
//! big-endian 16-bit length, then the datagram (ZeroTier's trick, so that
//! middleboxes letting TLS through let this through too). Nothing else is
//! TLS-like: there is no handshake, the datagrams are already encrypted.
//!
//! [`encode_record`] frames one datagram; [`RecordDecoder`] takes bytes as
//! they come off the stream and yields whole datagrams, in order. A framing
//! error is final: the stream has lost sync and the connection must be closed.
//!
//! Sans-IO: no sockets, no clock.

use crate::constants::{TLS_RECORD_CONTENT_TYPE, TLS_RECORD_VERSION};
pub use crate::constants::{TLS_RECORD_HEADER_LEN_BYTES, TLS_RECORD_MAX_PAYLOAD_BYTES};

/// Why a record cannot be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The content type byte is not application data.
    #[error("record content type {0:#04x} is not application data (0x17)")]
    ContentType(u8),
    /// The version bytes are not TLS 1.2.
    #[error("record version {0:#04x} {1:#04x} is not TLS 1.2 (0x03 0x03)")]
    Version(u8, u8),
    /// A record with nothing in it (no datagram is empty).
    #[error("empty record")]
    Empty,
    /// A record longer than [`TLS_RECORD_MAX_PAYLOAD_BYTES`].
    #[error("record of {0} bytes is longer than the {TLS_RECORD_MAX_PAYLOAD_BYTES}-byte limit")]
    TooLong(usize),
}

/// Appends `payload` framed as one record to `out`.
///
/// Refuses an empty payload and one longer than
/// [`TLS_RECORD_MAX_PAYLOAD_BYTES`] (TLS 1.2's ciphertext limit, far above
/// any path MTU: longer packets are fragmented before they get here);
/// `out` is then unchanged.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
    check_len(payload.len())?;
    out.reserve(TLS_RECORD_HEADER_LEN_BYTES + payload.len());
    out.push(TLS_RECORD_CONTENT_TYPE);
    out.extend_from_slice(&TLS_RECORD_VERSION);
    // check_len bounds the length well below u16::MAX.
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn check_len(len: usize) -> Result<(), RecordError> {
    match len {
        0 => Err(RecordError::Empty),
        n if n > TLS_RECORD_MAX_PAYLOAD_BYTES => Err(RecordError::TooLong(n)),
        _ => Ok(()),
    }
}

/// Turns a byte stream back into datagrams.
///
/// Feed it with [`push`](Self::push) (or, to read straight into its buffer,
/// [`spare`](Self::spare) then [`commit`](Self::commit)), then call
/// [`next_record`](Self::next_record) until it returns `None`. Payloads are
/// lent out of the internal buffer, so decoding allocates nothing once the
/// buffer has grown to fit the traffic (at most one record plus one read).
///
/// A header is checked as soon as its bytes are in, before the rest of the
/// record arrives, so garbage is caught at once. After an error every call to
/// `next_record` returns that error again.
#[derive(Debug, Default)]
pub struct RecordDecoder {
    /// Storage; bytes `start..end` are received and not yet decoded.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    error: Option<RecordError>,
}

impl RecordDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        self.spare(n)[..n].copy_from_slice(bytes);
        self.commit(n);
    }

    /// At least `min` writable bytes at the end of the buffer, for reading
    /// into directly; say how many were written with [`commit`](Self::commit).
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        self.compact();
        if self.buf.len() - self.end < min {
            self.buf.resize(self.end + min, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes written into [`spare`](Self::spare) as received.
    ///
    /// # Panics
    /// If `n` is more than `spare` handed out (a bug in the caller).
    pub fn commit(&mut self, n: usize) {
        assert!(
            n <= self.buf.len() - self.end,
            "committed more than the spare space"
        );
        self.end += n;
    }

    /// Bytes received and not yet returned as records.
    pub fn pending_len(&self) -> usize {
        self.end - self.start
    }

    /// Whether a framing error was seen (the connection must be closed).
    pub fn is_failed(&self) -> bool {
        self.error.is_some()
    }

    /// The next complete payload, `None` until more bytes are needed, or the
    /// framing error (for good: the connection must be closed).
    pub fn next_record(&mut self) -> Option<Result<&mut [u8], RecordError>> {
        if let Some(e) = self.error {
            return Some(Err(e));
        }
        let avail = &self.buf[self.start..self.end];
        if let Err(e) = check_header_prefix(avail) {
            self.error = Some(e);
            return Some(Err(e));
        }
        if avail.len() < TLS_RECORD_HEADER_LEN_BYTES {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([avail[3], avail[4]]));
        if let Err(e) = check_len(len) {
            self.error = Some(e);
            return Some(Err(e));
        }
        if avail.len() < TLS_RECORD_HEADER_LEN_BYTES + len {
            return None;
        }
        let payload = self.start + TLS_RECORD_HEADER_LEN_BYTES;
        self.start = payload + len;
        if self.start == self.end {
            // Nothing left over: the next bytes go to the front, no copy needed.
            self.start = 0;
            self.end = 0;
        }
        Some(Ok(&mut self.buf[payload..payload + len]))
    }

    /// Moves undecoded bytes to the front so the buffer does not grow.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// Checks the content type and version bytes among those already received.
fn check_header_prefix(avail: &[u8]) -> Result<(), RecordError> {
    if let Some(&t) = avail.first()
        && t != TLS_RECORD_CONTENT_TYPE
    {
        return Err(RecordError::ContentType(t));
    }
    let major = avail.get(1).copied();
    let minor = avail.get(2).copied();
    let bad_major = major.is_some_and(|b| b != TLS_RECORD_VERSION[0]);
    let bad_minor = minor.is_some_and(|b| b != TLS_RECORD_VERSION[1]);
    if bad_major || bad_minor {
        return Err(RecordError::Version(
            major.unwrap_or(0),
            minor.unwrap_or(TLS_RECORD_VERSION[1]),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn decode_all(d: &mut RecordDecoder) -> Result<Vec<Vec<u8>>, RecordError> {
        let mut out = Vec::new();
        while let Some(r) = d.next_record() {
            out.push(r?.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn encodes_header() {
        let mut out = vec![0xaa];
        encode_record(&[1, 2, 3], &mut out).unwrap();
        assert_eq!(out, [0xaa, 0x17, 0x03, 0x03, 0x00, 0x03, 1, 2, 3]);
    }

    #[test]
    fn encoder_refuses_empty_and_too_long() {
        let mut out = vec![7];
        assert_eq!(encode_record(&[], &mut out), Err(RecordError::Empty));
        let big = vec![0u8; TLS_RECORD_MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            encode_record(&big, &mut out),
            Err(RecordError::TooLong(TLS_RECORD_MAX_PAYLOAD_BYTES + 1))
        );
        assert_eq!(out, [7]);
        let max = vec![9u8; TLS_RECORD_MAX_PAYLOAD_BYTES];
        encode_record(&max, &mut out).unwrap();
        assert_eq!(
            out.len(),
            1 + TLS_RECORD_HEADER_LEN_BYTES + TLS_RECORD_MAX_PAYLOAD_BYTES
        );
    }

    #[test]
    fn decodes_byte_by_byte() {
        let mut wire = Vec::new();
        encode_record(b"hello", &mut wire).unwrap();
        encode_record(&[0u8; 1], &mut wire).unwrap();
        let max = vec![0x5a; TLS_RECORD_MAX_PAYLOAD_BYTES];
        encode_record(&max, &mut wire).unwrap();
        let mut d = RecordDecoder::new();
        let mut got = Vec::new();
        for b in &wire {
            d.push(&[*b]);
            got.extend(decode_all(&mut d).unwrap());
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![0], max]);
        assert_eq!(d.pending_len(), 0);
    }

    #[test]
    fn payload_is_mutable_in_place() {
        let mut wire = Vec::new();
        encode_record(&[1, 2], &mut wire).unwrap();
        let mut d = RecordDecoder::new();
        d.push(&wire);
        let p = d.next_record().unwrap().unwrap();
        p[0] = 42;
        assert_eq!(p, [42, 2]);
        assert!(d.next_record().is_none());
    }

    #[test]
    fn spare_and_commit() {
        let mut wire = Vec::new();
        encode_record(b"abc", &mut wire).unwrap();
        encode_record(b"de", &mut wire).unwrap();
        let mut d = RecordDecoder::new();
        // The first record (8 bytes) and one byte of the second.
        let n = 9;
        d.spare(n)[..n].copy_from_slice(&wire[..n]);
        d.commit(n);
        assert_eq!(decode_all(&mut d).unwrap(), vec![b"abc".to_vec()]);
        let rest = &wire[n..];
        d.spare(64)[..rest.len()].copy_from_slice(rest);
        d.commit(rest.len());
        assert_eq!(decode_all(&mut d).unwrap(), vec![b"de".to_vec()]);
    }

    #[test]
    fn bad_content_type_is_caught_on_first_byte() {
        let mut d = RecordDecoder::new();
        d.push(&[0x16]);
        assert_eq!(d.next_record(), Some(Err(RecordError::ContentType(0x16))));
        // Final: more bytes do not help.
        let mut wire = Vec::new();
        encode_record(b"x", &mut wire).unwrap();
        d.push(&wire);
        assert_eq!(d.next_record(), Some(Err(RecordError::ContentType(0x16))));
        assert!(d.is_failed());
    }

    #[test]
    fn bad_version() {
        let mut d = RecordDecoder::new();
        d.push(&[0x17, 0x03]);
        assert!(d.next_record().is_none());
        d.push(&[0x01]);
        assert_eq!(d.next_record(), Some(Err(RecordError::Version(3, 1))));
        let mut d = RecordDecoder::new();
        d.push(&[0x17, 0x02]);
        assert_eq!(d.next_record(), Some(Err(RecordError::Version(2, 3))));
    }

    #[test]
    fn bad_length() {
        let mut d = RecordDecoder::new();
        d.push(&[0x17, 3, 3, 0, 0]);
        assert_eq!(d.next_record(), Some(Err(RecordError::Empty)));
        let mut d = RecordDecoder::new();
        let too_long = (TLS_RECORD_MAX_PAYLOAD_BYTES + 1) as u16;
        d.push(&[0x17, 3, 3]);
        d.push(&too_long.to_be_bytes());
        assert_eq!(
            d.next_record(),
            Some(Err(RecordError::TooLong(usize::from(too_long))))
        );
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            RecordError::ContentType(0x16).to_string(),
            "record content type 0x16 is not application data (0x17)"
        );
        assert_eq!(
            RecordError::TooLong(20000).to_string(),
            "record of 20000 bytes is longer than the 18432-byte limit"
        );
    }

    /// Feeds `wire` in chunks whose sizes cycle through `chunks`.
    fn feed(wire: &[u8], chunks: &[usize]) -> Result<Vec<Vec<u8>>, RecordError> {
        let mut d = RecordDecoder::new();
        let mut got = Vec::new();
        let mut rest = wire;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks[i % chunks.len()].min(rest.len());
            i += 1;
            d.push(&rest[..n]);
            rest = &rest[n..];
            got.extend(decode_all(&mut d)?);
        }
        Ok(got)
    }

    proptest! {
        #[test]
        fn roundtrip_in_any_chunks(
            payloads in vec(vec(any::<u8>(), 1..3000), 0..20),
            big in proptest::option::of(Just(())),
            chunks in vec(1usize..5000, 1..10),
        ) {
            let mut payloads = payloads;
            if big.is_some() {
                payloads.push(vec![0xee; TLS_RECORD_MAX_PAYLOAD_BYTES]);
            }
            let mut wire = Vec::new();
            for p in &payloads {
                encode_record(p, &mut wire).unwrap();
            }
            prop_assert_eq!(feed(&wire, &chunks).unwrap(), payloads);
        }

        #[test]
        fn garbage_never_panics(
            garbage in vec(any::<u8>(), 0..2000),
            chunks in vec(1usize..300, 1..10),
        ) {
            let _ = feed(&garbage, &chunks);
        }

        #[test]
        fn garbage_after_good_records(
            payloads in vec(vec(any::<u8>(), 1..200), 1..5),
            garbage in vec(any::<u8>(), 1..200),
            chunks in vec(1usize..300, 1..10),
        ) {
            let mut wire = Vec::new();
            for p in &payloads {
                encode_record(p, &mut wire).unwrap();
            }
            let good = wire.len();
            wire.extend_from_slice(&garbage);
            // Whatever follows, the good records come out first, intact.
            let mut d = RecordDecoder::new();
            d.push(&wire[..good]);
            prop_assert_eq!(decode_all(&mut d).unwrap(), payloads);
            let _ = feed(&wire, &chunks);
        }
    }
}
