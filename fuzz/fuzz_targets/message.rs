//! The message decoder, as a node or client runs it on every message frame
//! (and on the handshake payloads once the key is proven). Anything that
//! decodes must encode again and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scs_common::proto::rpc::Message;
use scs_common::secure::{Hello, Welcome};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = rmp_serde::from_slice::<Message>(data) {
        let again = rmp_serde::to_vec(&m).expect("a decoded message encodes");
        let back = rmp_serde::from_slice::<Message>(&again).expect("a re-encoded message decodes");
        assert_eq!(back, m, "the round trip changed the message");
    }
    let _ = rmp_serde::from_slice::<Hello>(data);
    let _ = rmp_serde::from_slice::<Welcome>(data);
});
