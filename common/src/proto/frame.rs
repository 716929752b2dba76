//! The TCP frame codec, as pure functions over byte slices.
//!
//! A frame is `length (u32 BE) | kind (u8) | body`, where `length` counts the
//! body only. Kind 1 is a msgpack [`super::rpc::Message`]; kind 2 is raw file
//! data (at most [`crate::CHUNK_SIZE`] bytes). A length over the limit of its
//! kind is rejected from the 5-byte header, before anything is allocated.

use crate::CHUNK_SIZE;

pub const HEADER_LEN: usize = 5;
/// Largest message body (a listing batch, a pulled batch).
pub const MAX_MESSAGE: usize = 4 << 20;
/// Largest data body.
pub const MAX_DATA: usize = CHUNK_SIZE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Message = 1,
    Data = 2,
}

/// A frame that must not be read any further: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("{kind:?} frame of {len} bytes is over the limit of {limit}")]
    TooLarge { kind: FrameKind, len: usize, limit: usize },
}

/// Reads a frame header from the front of `buf`.
///
/// `Ok(None)` means more bytes are needed; `Ok(Some((kind, body_len)))` means
/// the body is `buf[HEADER_LEN..HEADER_LEN + body_len]` once that many bytes are there.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameKind, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let kind = match buf[4] {
        1 => FrameKind::Message,
        2 => FrameKind::Data,
        other => return Err(FrameError::UnknownKind(other)),
    };
    let limit = match kind {
        FrameKind::Message => MAX_MESSAGE,
        FrameKind::Data => MAX_DATA,
    };
    if len > limit {
        return Err(FrameError::TooLarge { kind, len, limit });
    }
    Ok(Some((kind, len)))
}

/// Decodes one whole frame from the front of `buf`: its kind, and the range
/// of its body within `buf`. `Ok(None)` = need more bytes.
pub fn decode(buf: &[u8]) -> Result<Option<(FrameKind, std::ops::Range<usize>)>, FrameError> {
    match parse_header(buf)? {
        Some((kind, len)) if buf.len() >= HEADER_LEN + len => Ok(Some((kind, HEADER_LEN..HEADER_LEN + len))),
        _ => Ok(None),
    }
}

/// The header for a body of `len` bytes.
pub fn header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let l = (len as u32).to_be_bytes();
    [l[0], l[1], l[2], l[3], kind as u8]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
        let mut v = header(kind, body.len()).to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_partial_frame_needs_more_bytes() {
        let f = frame(FrameKind::Data, b"hello");
        for cut in 0..f.len() {
            assert_eq!(decode(&f[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode(&f), Ok(Some((FrameKind::Data, 5..10))));
    }

    #[test]
    fn an_oversized_length_is_rejected_from_the_header_alone() {
        let mut h = header(FrameKind::Data, MAX_DATA + 1).to_vec();
        assert!(matches!(decode(&h), Err(FrameError::TooLarge { .. })));
        h = header(FrameKind::Message, u32::MAX as usize).to_vec();
        assert!(matches!(decode(&h), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn an_unknown_kind_is_rejected() {
        assert_eq!(decode(&[0, 0, 0, 1, 9, 0]), Err(FrameError::UnknownKind(9)));
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn encoded_frames_decode_back(body in proptest::collection::vec(any::<u8>(), 0..2048), data in any::<bool>()) {
            let kind = if data { FrameKind::Data } else { FrameKind::Message };
            let mut f = frame(kind, &body);
            f.extend_from_slice(b"trailing");
            let (k, range) = decode(&f).unwrap().unwrap();
            prop_assert_eq!(k, kind);
            prop_assert_eq!(&f[range], &body[..]);
        }
    }
}
