//! The datagram decoder on raw bytes, as a node runs it on everything that
//! arrives on the multicast group. Without the key nothing gets past the
//! MAC, so every input must be refused (and none may panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scs_common::auth::ClusterKey;
use scs_common::proto::gossip;

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::from_bytes([7; 32]);
    if let Ok(env) = gossip::decode(&key, data) {
        panic!("a datagram without the key was accepted: {env:?}");
    }
});
