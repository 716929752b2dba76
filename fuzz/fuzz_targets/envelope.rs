//! What lies behind a datagram's MAC: the bytes are sealed with the key (as
//! a cluster member, or a buggy one, would) and then opened, so the
//! envelope decoder and the replay guard see arbitrary input. An envelope
//! that opens must seal again to bytes that open to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scs_common::auth::ClusterKey;
use scs_common::proto::gossip::{self, ReplayGuard};
use scs_common::PROTOCOL_VERSION;

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::from_bytes([7; 32]);
    let mut sealed = gossip::MAGIC.to_vec();
    sealed.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    sealed.extend_from_slice(data);
    let mac = key.mac(&[b"gossip", &sealed]);
    sealed.extend_from_slice(&mac);
    let Ok(env) = gossip::decode(&key, &sealed) else { return };
    let again = gossip::encode(&key, &env);
    if again.len() <= gossip::MAX_DATAGRAM {
        assert_eq!(gossip::decode(&key, &again).as_ref(), Ok(&env), "the round trip changed the envelope");
    }
    // The replay guard's arithmetic on hostile timestamps and counters:
    // the same datagram is never admitted twice in a row.
    let mut guard = ReplayGuard::new(30_000);
    for now in [env.ts_ms, 0, u64::MAX, env.ts_ms.wrapping_add(29_999), env.incarnation] {
        let first = guard.admit(&env, now);
        assert!(!(first && guard.admit(&env, now)), "the same datagram was admitted twice at {now}");
    }
});
