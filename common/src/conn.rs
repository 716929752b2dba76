//! [`Connection`]: the only type that reads and writes a TCP stream, and the
//! authenticated, encrypted handshake that opens every session (see
//! [`crate::secure`]).
//!
//! Handlers see [`Message`] values and data chunks, never bytes on the
//! socket. Underneath, the frame stream is cut into AES-GCM records.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::ClusterKey;
use crate::error::{Error, Result};
use crate::proto::frame::{self, FrameKind};
use crate::proto::rpc::{Message, Peer, Response};
use crate::secure::{self, Cipher, Hello, Welcome, MAX_PLAIN, MAX_RECORD, PREAMBLE_LEN};
use crate::types::{ContentHash, NodeId};

/// How long the handshake may take before the connection is dropped, by
/// default (a node's `handshake_timeout_ms`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Sealed bytes gathered before they are written to the socket.
const OUT_BATCH: usize = 256 * 1024;

/// One decoded frame. A message is much bigger than a data frame's handle,
/// but a frame lives only between the socket and its handler, one at a time.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Frame {
    Message(Message),
    Data(Bytes),
}

/// What comes next in a data stream.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    End(ContentHash),
}

/// A framed, authenticated, encrypted TCP session.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    cipher: Cipher,
    /// Record bytes received and not yet opened.
    raw: BytesMut,
    /// The opened frame stream.
    buf: BytesMut,
    /// Plaintext waiting to fill a record.
    out_plain: Vec<u8>,
    /// Sealed records waiting to be written.
    out: Vec<u8>,
    peer_addr: SocketAddr,
    read_timeout: Option<Duration>,
}

impl Connection {
    fn new(stream: TcpStream, cipher: Cipher) -> Result<Connection> {
        let peer_addr = stream.peer_addr()?;
        Ok(Connection {
            stream,
            cipher,
            raw: BytesMut::with_capacity(256 * 1024),
            buf: BytesMut::with_capacity(256 * 1024),
            out_plain: Vec::with_capacity(MAX_PLAIN),
            out: Vec::with_capacity(OUT_BATCH + MAX_RECORD + 2),
            peer_addr,
            read_timeout: None,
        })
    }

    /// Whether the peer has closed an idle connection, so a pooled
    /// connection is not used after its peer restarted. Answers at once: a
    /// peek on the non-blocking socket (a zero timeout would wait for the
    /// next tick of the timer, up to a millisecond per request).
    pub fn is_closed(&self) -> bool {
        if !self.buf.is_empty() || !self.raw.is_empty() {
            return true;
        }
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(&self.stream).peek(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            // Closed, failed, or unexpected bytes on an idle connection.
            _ => true,
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Every later read fails with `Unavailable` after waiting this long.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.read_timeout = t;
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    ///
    /// # Errors
    /// `Protocol` for a malformed frame or a record that fails
    /// authentication (the caller must drop the connection), `Unavailable`
    /// on a timeout or a stream cut inside a frame.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            match frame::decode(&self.buf) {
                Err(e) => return Err(Error::Protocol(e.to_string())),
                Ok(Some((kind, range))) => {
                    let end = range.end;
                    self.buf.advance(range.start);
                    let body = self.buf.split_to(end - range.start).freeze();
                    return match kind {
                        FrameKind::Data => Ok(Some(Frame::Data(body))),
                        FrameKind::Message => rmp_serde::from_slice(&body)
                            .map(|m| Some(Frame::Message(m)))
                            .map_err(|e| Error::Protocol(format!("undecodable message: {e}"))),
                    };
                }
                Ok(None) => {
                    // Make room for the whole frame when its header says how big it is.
                    if let Ok(Some((_, len))) = frame::parse_header(&self.buf) {
                        self.buf.reserve((frame::HEADER_LEN + len).saturating_sub(self.buf.len()));
                    }
                }
            }
            // Open every complete record we have before reading more.
            let mut opened = false;
            while let Some(rec) = secure::take_record(&mut self.raw) {
                self.cipher.open(&rec, &mut self.buf)?;
                opened = true;
            }
            if opened {
                continue;
            }
            self.raw.reserve(256 * 1024);
            let read = self.stream.read_buf(&mut self.raw);
            let n = match self.read_timeout {
                Some(t) => tokio::time::timeout(t, read).await.map_err(|_| {
                    Error::Unavailable(format!("{} sent nothing for {}s", self.peer_addr, t.as_secs()))
                })??,
                None => read.await?,
            };
            if n == 0 {
                if self.buf.is_empty() && self.raw.is_empty() {
                    return Ok(None);
                }
                return Err(Error::Unavailable(format!(
                    "{} closed the connection in the middle of a frame",
                    self.peer_addr
                )));
            }
        }
    }

    /// The next message; data or the end of the stream is an error here.
    pub async fn recv(&mut self) -> Result<Message> {
        match self.read_frame().await? {
            Some(Frame::Message(m)) => Ok(m),
            Some(Frame::Data(_)) => Err(Error::Protocol("unexpected data frame".into())),
            None => Err(Error::Unavailable(format!("{} closed the connection", self.peer_addr))),
        }
    }

    /// The next response; an error response becomes `Err`.
    pub async fn recv_response(&mut self) -> Result<Response> {
        match self.recv().await? {
            Message::Response(Response::Error(w)) => Err(Error::from_wire(w)),
            Message::Response(r) => Ok(r),
            other => Err(Error::Protocol(format!("expected a response, got {}", kind_of(&other)))),
        }
    }

    /// The next piece of a data stream: bytes, or its end. An error response
    /// in the middle of a stream becomes `Err`.
    pub async fn recv_chunk(&mut self) -> Result<Chunk> {
        match self.read_frame().await? {
            Some(Frame::Data(d)) => Ok(Chunk::Data(d)),
            Some(Frame::Message(Message::End { hash })) => Ok(Chunk::End(hash)),
            Some(Frame::Message(Message::Response(Response::Error(w)))) => Err(Error::from_wire(w)),
            Some(Frame::Message(other)) => Err(Error::Protocol(format!("expected data, got {}", kind_of(&other)))),
            None => {
                Err(Error::Unavailable(format!("{} closed the connection in the middle of a transfer", self.peer_addr)))
            }
        }
    }

    /// Queues plaintext: sealed into records as they fill, written to the
    /// socket in batches.
    async fn write_plain(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let room = MAX_PLAIN - self.out_plain.len();
            let take = room.min(data.len());
            self.out_plain.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.out_plain.len() == MAX_PLAIN {
                self.seal_pending()?;
                if self.out.len() >= OUT_BATCH {
                    self.write_out().await?;
                }
            }
        }
        Ok(())
    }

    fn seal_pending(&mut self) -> Result<()> {
        if !self.out_plain.is_empty() {
            self.cipher.seal(&self.out_plain, &mut self.out)?;
            self.out_plain.clear();
        }
        Ok(())
    }

    async fn write_out(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Queues a message (call [`Connection::flush`] to send it).
    pub async fn write_message(&mut self, m: &Message) -> Result<()> {
        let body = rmp_serde::to_vec(m).map_err(|e| Error::Internal(format!("encode: {e}")))?;
        if body.len() > frame::MAX_MESSAGE {
            return Err(Error::Internal(format!("message of {} bytes is too large", body.len())));
        }
        self.write_plain(&frame::header(FrameKind::Message, body.len())).await?;
        self.write_plain(&body).await
    }

    /// Queues a chunk of file data (at most `CHUNK_SIZE` bytes).
    pub async fn write_data(&mut self, data: &[u8]) -> Result<()> {
        debug_assert!(data.len() <= frame::MAX_DATA);
        self.write_plain(&frame::header(FrameKind::Data, data.len())).await?;
        self.write_plain(data).await
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.seal_pending()?;
        self.write_out().await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends `bytes` as they are through the secure channel, as if they were
    /// frames: for tests of how a peer copes with malformed frames.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_plain(bytes).await?;
        self.flush().await
    }

    /// Writes and flushes one message.
    pub async fn send(&mut self, m: &Message) -> Result<()> {
        self.write_message(m).await?;
        self.flush().await
    }

    pub async fn send_response(&mut self, r: Response) -> Result<()> {
        self.send(&Message::Response(r)).await
    }

    /// Opens an authenticated, encrypted session to a node.
    ///
    /// # Errors
    /// `Unavailable` if the node cannot be reached in time; `Auth` if either
    /// side does not share the key; `Protocol` on a version mismatch.
    pub async fn connect(addr: &str, key: &ClusterKey, peer: Peer, timeout: Duration) -> Result<(Connection, NodeId)> {
        let dial = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            client_handshake(stream, key, peer).await
        };
        match tokio::time::timeout(timeout, dial).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(Error::Io(e))) => Err(Error::Unavailable(format!("cannot reach {addr}: {e}"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unavailable(format!("{addr} did not answer within {}s", timeout.as_secs()))),
        }
    }

    /// Runs the server side of the handshake on a fresh connection, within
    /// `limit` (see [`HANDSHAKE_TIMEOUT`]).
    ///
    /// # Errors
    /// `Auth` when the peer does not have the key (it has been told so);
    /// `Protocol` on anything malformed; `Unavailable` on a timeout.
    pub async fn accept(
        stream: TcpStream,
        key: &ClusterKey,
        me: NodeId,
        limit: Duration,
    ) -> Result<(Connection, Peer)> {
        stream.set_nodelay(true)?;
        let peer_addr = stream.peer_addr()?;
        match tokio::time::timeout(limit, server_handshake(stream, key, me)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(format!("{peer_addr} did not finish the handshake in time"))),
        }
    }
}

/// The longest handshake record: the two Noise messages carry a key, a tag
/// and a few bytes of hello. A peer announcing more is refused before
/// anything is buffered, so a half-sent handshake costs a node little.
pub const MAX_HANDSHAKE_RECORD: usize = 1024;

/// Reads one handshake record.
async fn read_record(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_HANDSHAKE_RECORD {
        return Err(Error::Protocol(format!("a handshake record of {len} bytes (at most {MAX_HANDSHAKE_RECORD})")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_record(stream: &mut TcpStream, body: &[u8]) -> Result<()> {
    let mut rec = Vec::with_capacity(2 + body.len());
    rec.extend_from_slice(&(body.len() as u16).to_be_bytes());
    rec.extend_from_slice(body);
    stream.write_all(&rec).await?;
    Ok(())
}

fn noise_err(e: snow::Error) -> Error {
    Error::Internal(format!("noise: {e}"))
}

async fn client_handshake(mut stream: TcpStream, key: &ClusterKey, peer: Peer) -> Result<(Connection, NodeId)> {
    let addr = stream.peer_addr()?;
    stream.write_all(&secure::preamble()).await?;
    let mut theirs = [0u8; PREAMBLE_LEN];
    stream.read_exact(&mut theirs).await?;
    secure::check_preamble(&theirs).map_err(|e| Error::Protocol(format!("{addr}: {e}")))?;
    let mut hs = secure::initiator(key)?;
    let hello = Hello { peer, plaintext: secure::plaintext_allowed() };
    let payload = rmp_serde::to_vec(&hello).map_err(|e| Error::Internal(e.to_string()))?;
    let mut msg = vec![0u8; MAX_HANDSHAKE_RECORD];
    let n = hs.write_message(&payload, &mut msg).map_err(noise_err)?;
    write_record(&mut stream, &msg[..n]).await?;
    let reply = read_record(&mut stream).await?;
    if reply.is_empty() {
        return Err(Error::Auth(format!("the node at {addr} refused our cluster key (check --secret-file)")));
    }
    let mut plain = vec![0u8; MAX_HANDSHAKE_RECORD];
    let n = hs
        .read_message(&reply, &mut plain)
        .map_err(|_| Error::Auth(format!("the node at {addr} does not have our cluster key (check --secret-file)")))?;
    let welcome: Welcome =
        rmp_serde::from_slice(&plain[..n]).map_err(|e| Error::Protocol(format!("bad welcome from {addr}: {e}")))?;
    let transport = hs.into_transport_mode().map_err(noise_err)?;
    let plaintext = welcome.plaintext && hello.plaintext;
    Ok((Connection::new(stream, Cipher::new(transport, plaintext))?, welcome.node))
}

async fn server_handshake(mut stream: TcpStream, key: &ClusterKey, me: NodeId) -> Result<(Connection, Peer)> {
    let mut theirs = [0u8; PREAMBLE_LEN];
    stream.read_exact(&mut theirs).await?;
    if &theirs[..4] != secure::MAGIC {
        return Err(Error::Protocol("not an SCS client (bad magic)".into()));
    }
    // Our preamble goes back even on a version mismatch, so the peer can say which.
    stream.write_all(&secure::preamble()).await?;
    secure::check_preamble(&theirs)?;
    let mut hs = secure::responder(key)?;
    let first = read_record(&mut stream).await?;
    let mut plain = vec![0u8; MAX_HANDSHAKE_RECORD];
    let n = match hs.read_message(&first, &mut plain) {
        Ok(n) => n,
        Err(_) => {
            let _ = write_record(&mut stream, &[]).await;
            return Err(Error::Auth("wrong cluster key".into()));
        }
    };
    let hello: Hello = rmp_serde::from_slice(&plain[..n]).map_err(|e| Error::Protocol(format!("bad hello: {e}")))?;
    let plaintext = hello.plaintext && secure::plaintext_allowed();
    let payload = rmp_serde::to_vec(&Welcome { node: me, plaintext }).map_err(|e| Error::Internal(e.to_string()))?;
    let mut msg = vec![0u8; MAX_HANDSHAKE_RECORD];
    let n = hs.write_message(&payload, &mut msg).map_err(noise_err)?;
    write_record(&mut stream, &msg[..n]).await?;
    let transport = hs.into_transport_mode().map_err(noise_err)?;
    Ok((Connection::new(stream, Cipher::new(transport, plaintext))?, hello.peer))
}

/// A short name of a message for error texts.
pub fn kind_of(m: &Message) -> &'static str {
    match m {
        Message::Request(_) => "a request",
        Message::Response(_) => "a response",
        Message::End { .. } => "end of data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rpc::Request;
    use tokio::net::TcpListener;

    async fn pair(
        server_key: ClusterKey,
        client_key: ClusterKey,
    ) -> (Result<(Connection, Peer)>, Result<(Connection, NodeId)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            Connection::accept(s, &server_key, NodeId(7), HANDSHAKE_TIMEOUT).await
        });
        let client = Connection::connect(&addr, &client_key, Peer::Client, Duration::from_secs(5)).await;
        (server.await.unwrap(), client)
    }

    #[tokio::test]
    async fn a_shared_key_opens_a_session_that_carries_messages_and_data() {
        let k = ClusterKey::from_bytes([1; 32]);
        let (server, client) = pair(k.clone(), k).await;
        let (mut s, peer) = server.unwrap();
        let (mut c, node) = client.unwrap();
        assert_eq!((peer, node), (Peer::Client, NodeId(7)));
        c.write_message(&Message::Request(Request::Status)).await.unwrap();
        c.write_data(&vec![42u8; 300_000]).await.unwrap();
        c.write_message(&Message::End { hash: ContentHash([1; 32]) }).await.unwrap();
        c.flush().await.unwrap();
        assert!(matches!(s.recv().await.unwrap(), Message::Request(Request::Status)));
        match s.recv_chunk().await.unwrap() {
            Chunk::Data(d) => assert_eq!(d.len(), 300_000),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.recv_chunk().await.unwrap(), Chunk::End(_)));
        drop(c);
        assert!(s.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_client_with_the_wrong_key_is_told_so() {
        let (server, client) = pair(ClusterKey::from_bytes([1; 32]), ClusterKey::from_bytes([2; 32])).await;
        // The client notices first: the server's proof does not check out.
        assert!(matches!(client, Err(Error::Auth(_))), "{client:?}");
        assert!(server.is_err());
    }

    #[tokio::test]
    async fn garbage_instead_of_a_hello_is_a_protocol_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            Connection::accept(s, &ClusterKey::from_bytes([1; 32]), NodeId(1), HANDSHAKE_TIMEOUT).await
        });
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let res = server.await.unwrap();
        assert!(matches!(res, Err(Error::Protocol(_))), "{res:?}");
    }
}
