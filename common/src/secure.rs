//! The secure channel under every TCP session: a Noise handshake keyed by
//! the cluster key (`Noise_NNpsk0_25519_AESGCM_SHA256`: fresh ephemeral keys
//! for forward secrecy, the pre-shared key for authentication of both
//! sides), then AES-GCM records. Nothing here is invented: `snow` does the
//! cryptography, ring does AES-GCM.
//!
//! On the wire, after a 6-byte clear preamble (`SCS\x01` + protocol version)
//! each way, everything is a record: `length (u16 BE) | bytes`. The two
//! handshake messages are records; so is each encrypted chunk of the frame
//! stream. A record of length 0 during the handshake is the responder saying
//! "your key is not ours"; it is only a hint for a clearer message (an
//! attacker could forge it, which gains nothing but a failed connection).

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::auth::ClusterKey;
use crate::error::{Error, Result};
use crate::proto::rpc::Peer;
use crate::types::NodeId;
use crate::PROTOCOL_VERSION;

pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// The clear preamble: magic and protocol version.
pub const PREAMBLE_LEN: usize = 6;
pub const MAGIC: &[u8; 4] = b"SCS\x01";
/// Largest Noise message, and the largest plaintext one can carry.
pub const MAX_RECORD: usize = 65535;
pub const TAG_LEN: usize = 16;
pub const MAX_PLAIN: usize = MAX_RECORD - TAG_LEN;

/// Set on both ends to skip encryption after the handshake (benchmarks only:
/// the handshake is still authenticated, the data is not protected).
pub const PLAINTEXT_ENV: &str = "SCS_PLAINTEXT_TRANSPORT";

/// The initiator's handshake payload (encrypted under the key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub peer: Peer,
    /// Asks to skip encryption after the handshake (see [`PLAINTEXT_ENV`]).
    pub plaintext: bool,
}

/// The responder's handshake payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub node: NodeId,
    pub plaintext: bool,
}

/// Whether this process was asked to allow a plaintext transport.
pub fn plaintext_allowed() -> bool {
    std::env::var_os(PLAINTEXT_ENV).is_some_and(|v| v == "1")
}

pub fn preamble() -> [u8; PREAMBLE_LEN] {
    let v = PROTOCOL_VERSION.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1]]
}

/// Checks the peer's preamble; the error names what it sent.
pub fn check_preamble(p: &[u8; PREAMBLE_LEN]) -> Result<()> {
    if &p[..4] != MAGIC {
        return Err(Error::Protocol("not an SCS peer (bad magic)".into()));
    }
    let version = u16::from_be_bytes([p[4], p[5]]);
    if version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "protocol version {version} is not supported; this side speaks {PROTOCOL_VERSION}"
        )));
    }
    Ok(())
}

fn builder(key: &ClusterKey) -> Result<snow::Builder<'_>> {
    let params = NOISE_PARAMS.parse().map_err(|e| Error::Internal(format!("noise params: {e:?}")))?;
    snow::Builder::new(params).psk(0, key.bytes()).map_err(|e| Error::Internal(format!("noise psk: {e}")))
}

pub fn initiator(key: &ClusterKey) -> Result<snow::HandshakeState> {
    builder(key)?.build_initiator().map_err(|e| Error::Internal(format!("noise: {e}")))
}

pub fn responder(key: &ClusterKey) -> Result<snow::HandshakeState> {
    builder(key)?.build_responder().map_err(|e| Error::Internal(format!("noise: {e}")))
}

/// Encrypts and decrypts the records of a session after the handshake.
#[derive(Debug)]
pub struct Cipher {
    /// `None` when both ends asked for a plaintext transport.
    state: Option<Box<snow::TransportState>>,
}

impl Cipher {
    pub fn new(state: snow::TransportState, plaintext: bool) -> Cipher {
        Cipher { state: (!plaintext).then(|| Box::new(state)) }
    }

    /// Appends one record carrying `plain` (at most [`MAX_PLAIN`] bytes) to `out`.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        debug_assert!(plain.len() <= MAX_PLAIN);
        let start = out.len();
        match self.state.as_mut() {
            Some(t) => {
                out.resize(start + 2 + plain.len() + TAG_LEN, 0);
                let n = t
                    .write_message(plain, &mut out[start + 2..])
                    .map_err(|e| Error::Internal(format!("encrypt: {e}")))?;
                out.truncate(start + 2 + n);
                out[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
            }
            None => {
                out.extend_from_slice(&(plain.len() as u16).to_be_bytes());
                out.extend_from_slice(plain);
            }
        }
        Ok(())
    }

    /// Decrypts one record body into `out`.
    ///
    /// # Errors
    /// `Protocol` if it does not authenticate (tampered, replayed, reordered).
    pub fn open(&mut self, record: &[u8], out: &mut BytesMut) -> Result<()> {
        match self.state.as_mut() {
            Some(t) => {
                let start = out.len();
                out.resize(start + record.len(), 0);
                match t.read_message(record, &mut out[start..]) {
                    Ok(n) => {
                        out.truncate(start + n);
                        Ok(())
                    }
                    Err(_) => {
                        out.truncate(start);
                        Err(Error::Protocol("a record failed authentication".into()))
                    }
                }
            }
            None => {
                out.extend_from_slice(record);
                Ok(())
            }
        }
    }
}

/// Splits the front record off `buf`: `Ok(None)` = need more bytes.
pub fn take_record(buf: &mut BytesMut) -> Option<BytesMut> {
    if buf.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    if buf.len() < 2 + len {
        return None;
    }
    let mut rec = buf.split_to(2 + len);
    let _ = rec.split_to(2);
    Some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(ki: &ClusterKey, kr: &ClusterKey) -> Result<(Cipher, Cipher)> {
        let mut i = initiator(ki)?;
        let mut r = responder(kr)?;
        let mut m = vec![0u8; MAX_RECORD];
        let mut p = vec![0u8; MAX_RECORD];
        let n = i.write_message(b"hello", &mut m).map_err(|e| Error::Internal(e.to_string()))?;
        r.read_message(&m[..n], &mut p).map_err(|_| Error::Auth("bad key".into()))?;
        let n = r.write_message(b"welcome", &mut m).map_err(|e| Error::Internal(e.to_string()))?;
        i.read_message(&m[..n], &mut p).map_err(|_| Error::Auth("bad key".into()))?;
        let ti = i.into_transport_mode().map_err(|e| Error::Internal(e.to_string()))?;
        let tr = r.into_transport_mode().map_err(|e| Error::Internal(e.to_string()))?;
        Ok((Cipher::new(ti, false), Cipher::new(tr, false)))
    }

    #[test]
    fn records_round_trip_and_tampering_is_caught() {
        let k = ClusterKey::from_bytes([3; 32]);
        let (mut a, mut b) = pair(&k, &k).unwrap();
        let mut wire = Vec::new();
        a.seal(b"first", &mut wire).unwrap();
        a.seal(&vec![9u8; MAX_PLAIN], &mut wire).unwrap();
        let mut buf = BytesMut::from(&wire[..]);
        let mut plain = BytesMut::new();
        while let Some(rec) = take_record(&mut buf) {
            b.open(&rec, &mut plain).unwrap();
        }
        assert_eq!(plain.len(), 5 + MAX_PLAIN);
        assert_eq!(&plain[..5], b"first");
        let mut wire = Vec::new();
        a.seal(b"secret", &mut wire).unwrap();
        assert!(!wire.windows(6).any(|w| w == b"secret"), "the record is not plaintext");
        wire[4] ^= 1;
        let mut buf = BytesMut::from(&wire[..]);
        let rec = take_record(&mut buf).unwrap();
        assert!(b.open(&rec, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn a_different_key_fails_the_handshake() {
        let r = pair(&ClusterKey::from_bytes([1; 32]), &ClusterKey::from_bytes([2; 32]));
        assert!(matches!(r, Err(Error::Auth(_))));
    }

    #[test]
    fn preambles_are_checked() {
        assert!(check_preamble(&preamble()).is_ok());
        let mut p = preamble();
        p[5] ^= 1;
        assert!(check_preamble(&p).unwrap_err().to_string().contains("version"));
        assert!(check_preamble(b"GET / ").is_err());
    }
}
