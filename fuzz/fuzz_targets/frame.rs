//! The frame codec over a stream of bytes, consumed as `Connection` does:
//! whole frames off the front until one is incomplete or refused. Every
//! frame found must lie inside the buffer and within its kind's limit, and
//! a message body goes on to the message decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scs_common::proto::frame::{self, FrameKind, HEADER_LEN, MAX_DATA, MAX_MESSAGE};
use scs_common::proto::rpc::Message;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    loop {
        let header = frame::parse_header(buf);
        match frame::decode(buf) {
            Ok(Some((kind, range))) => {
                assert_eq!(range.start, HEADER_LEN);
                assert!(range.end <= buf.len(), "frame runs past the buffer");
                let limit = if kind == FrameKind::Message { MAX_MESSAGE } else { MAX_DATA };
                assert!(range.len() <= limit, "frame over its limit accepted");
                assert_eq!(header, Ok(Some((kind, range.len()))), "header and frame disagree");
                if kind == FrameKind::Message {
                    let _ = rmp_serde::from_slice::<Message>(&buf[range.clone()]);
                }
                buf = &buf[range.end..];
            }
            Ok(None) => {
                // Incomplete: either the header is short, or the body is.
                match header {
                    Ok(None) => assert!(buf.len() < HEADER_LEN),
                    Ok(Some((_, len))) => assert!(buf.len() < HEADER_LEN + len),
                    Err(e) => panic!("decode wants more bytes but the header was refused: {e}"),
                }
                return;
            }
            Err(e) => {
                assert_eq!(header, Err(e));
                return;
            }
        }
    }
});
