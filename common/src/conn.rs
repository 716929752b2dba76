//! [`Connection`]: the only type that reads and writes a TCP stream, and the
//! authenticated handshake that opens every session.
//!
//! Handlers see [`Message`] values and data chunks, never bytes on the socket.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use crate::auth::{self, ClusterKey};
use crate::error::{Error, Result};
use crate::proto::frame::{self, FrameKind};
use crate::proto::rpc::{Message, Peer, Response};
use crate::types::{ContentHash, NodeId, Nonce};
use crate::PROTOCOL_VERSION;

/// How long the handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One decoded frame.
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

/// A framed, authenticated TCP session.
#[derive(Debug)]
pub struct Connection {
    stream: BufWriter<TcpStream>,
    buf: BytesMut,
    peer_addr: SocketAddr,
    read_timeout: Option<Duration>,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Result<Connection> {
        stream.set_nodelay(true)?;
        let peer_addr = stream.peer_addr()?;
        Ok(Connection {
            stream: BufWriter::with_capacity(64 * 1024, stream),
            buf: BytesMut::with_capacity(256 * 1024),
            peer_addr,
            read_timeout: None,
        })
    }

    /// Whether the peer has closed an idle connection (checked without
    /// waiting), so a pooled connection is not used after its peer restarted.
    pub async fn is_closed(&self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::ZERO, self.stream.get_ref().peek(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            // Unexpected bytes on an idle connection: not usable either.
            Ok(Ok(_)) => true,
            Err(_) => false,
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
    /// `Protocol` for a malformed frame (the caller must drop the connection),
    /// `Unavailable` on a timeout or a stream cut inside a frame.
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
                        self.buf.reserve(frame::HEADER_LEN + len - self.buf.len());
                    } else {
                        self.buf.reserve(64 * 1024);
                    }
                }
            }
            let read = self.stream.get_mut().read_buf(&mut self.buf);
            let n = match self.read_timeout {
                Some(t) => tokio::time::timeout(t, read).await.map_err(|_| {
                    Error::Unavailable(format!("{} sent nothing for {}s", self.peer_addr, t.as_secs()))
                })??,
                None => read.await?,
            };
            if n == 0 {
                if self.buf.is_empty() {
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

    /// Queues a message (call [`Connection::flush`] to send it).
    pub async fn write_message(&mut self, m: &Message) -> Result<()> {
        let body = rmp_serde::to_vec(m).map_err(|e| Error::Internal(format!("encode: {e}")))?;
        if body.len() > frame::MAX_MESSAGE {
            return Err(Error::Internal(format!("message of {} bytes is too large", body.len())));
        }
        self.stream.write_all(&frame::header(FrameKind::Message, body.len())).await?;
        self.stream.write_all(&body).await?;
        Ok(())
    }

    /// Queues a chunk of file data (at most `CHUNK_SIZE` bytes).
    pub async fn write_data(&mut self, data: &[u8]) -> Result<()> {
        debug_assert!(data.len() <= frame::MAX_DATA);
        self.stream.write_all(&frame::header(FrameKind::Data, data.len())).await?;
        self.stream.write_all(data).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.stream.flush().await?;
        Ok(())
    }

    /// Writes and flushes one message.
    pub async fn send(&mut self, m: &Message) -> Result<()> {
        self.write_message(m).await?;
        self.flush().await
    }

    pub async fn send_response(&mut self, r: Response) -> Result<()> {
        self.send(&Message::Response(r)).await
    }

    /// Opens an authenticated session to a node.
    ///
    /// # Errors
    /// `Unavailable` if the node cannot be reached in time; `Auth` if either
    /// side does not share the key; `Protocol` on a version mismatch.
    pub async fn connect(addr: &str, key: &ClusterKey, peer: Peer, timeout: Duration) -> Result<(Connection, NodeId)> {
        let dial = async {
            let stream = TcpStream::connect(addr).await?;
            let mut conn = Connection::new(stream)?;
            let node = conn.client_handshake(key, peer).await?;
            Ok::<_, Error>((conn, node))
        };
        match tokio::time::timeout(timeout, dial).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(Error::Io(e))) => Err(Error::Unavailable(format!("cannot reach {addr}: {e}"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unavailable(format!("{addr} did not answer within {}s", timeout.as_secs()))),
        }
    }

    async fn client_handshake(&mut self, key: &ClusterKey, peer: Peer) -> Result<NodeId> {
        let mine = Nonce(auth::nonce());
        self.send(&Message::Hello { version: PROTOCOL_VERSION, nonce: mine, peer }).await?;
        let (theirs, proof) = match self.recv().await? {
            Message::Challenge { version, nonce, proof } if version == PROTOCOL_VERSION => (nonce, proof),
            Message::Challenge { version, .. } => {
                return Err(Error::Protocol(format!(
                    "{} speaks protocol version {version}, we speak {PROTOCOL_VERSION}",
                    self.peer_addr
                )))
            }
            Message::Response(Response::Error(w)) => return Err(Error::from_wire(w)),
            other => return Err(Error::Protocol(format!("expected a challenge, got {}", kind_of(&other)))),
        };
        if key.server_proof(&mine.0, &theirs.0) != proof.0 {
            return Err(Error::Auth(format!(
                "the node at {} does not have our cluster key (check --secret-file)",
                self.peer_addr
            )));
        }
        self.send(&Message::Proof { proof: Nonce(key.client_proof(&mine.0, &theirs.0)) }).await?;
        match self.recv().await? {
            Message::Welcome { node } => Ok(node),
            Message::Response(Response::Error(w)) => Err(Error::from_wire(w)),
            other => Err(Error::Protocol(format!("expected welcome, got {}", kind_of(&other)))),
        }
    }

    /// Runs the server side of the handshake on a fresh connection.
    ///
    /// # Errors
    /// `Auth` when the peer does not prove the key (it has been told so);
    /// `Protocol` on anything malformed.
    pub async fn accept(stream: TcpStream, key: &ClusterKey, me: NodeId) -> Result<(Connection, Peer)> {
        let mut conn = Connection::new(stream)?;
        conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let (theirs, peer) = match conn.recv().await? {
            Message::Hello { version, nonce, peer } if version == PROTOCOL_VERSION => (nonce, peer),
            Message::Hello { version, .. } => {
                let e = Error::Protocol(format!(
                    "protocol version {version} is not supported; this node speaks {PROTOCOL_VERSION}"
                ));
                let _ = conn.send_response(Response::error(&e)).await;
                return Err(e);
            }
            other => return Err(Error::Protocol(format!("expected hello, got {}", kind_of(&other)))),
        };
        let mine = Nonce(auth::nonce());
        let proof = Nonce(key.server_proof(&theirs.0, &mine.0));
        conn.send(&Message::Challenge { version: PROTOCOL_VERSION, nonce: mine, proof }).await?;
        match conn.recv().await? {
            Message::Proof { proof } if proof.0 == key.client_proof(&theirs.0, &mine.0) => {}
            Message::Proof { .. } => {
                let e = Error::Auth("wrong cluster key (check --secret-file)".into());
                let _ = conn.send_response(Response::error(&e)).await;
                return Err(e);
            }
            other => return Err(Error::Protocol(format!("expected proof, got {}", kind_of(&other)))),
        }
        conn.send(&Message::Welcome { node: me }).await?;
        conn.set_read_timeout(None);
        Ok((conn, peer))
    }
}

/// A short name of a message for error texts.
pub fn kind_of(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "hello",
        Message::Challenge { .. } => "challenge",
        Message::Proof { .. } => "proof",
        Message::Welcome { .. } => "welcome",
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
            Connection::accept(s, &server_key, NodeId(7)).await
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
            Connection::accept(s, &ClusterKey::from_bytes([1; 32]), NodeId(1)).await
        });
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let res = server.await.unwrap();
        assert!(matches!(res, Err(Error::Protocol(_))), "{res:?}");
    }
}
