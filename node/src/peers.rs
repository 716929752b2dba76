//! Authenticated connections to other nodes, pooled per address so that
//! replication does not pay a handshake per file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use scs_common::auth::ClusterKey;
use scs_common::conn::Connection;
use scs_common::proto::rpc::{Message, Peer, Request, Response};
use scs_common::{Error, NodeId, Result};

/// Connect timeout to a peer; a dead node must not stall a write for long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer may take to answer a metadata request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per peer.
const POOL_PER_PEER: usize = 8;

#[derive(Debug)]
pub struct Peers {
    key: ClusterKey,
    me: NodeId,
    pool: Mutex<HashMap<String, Vec<Connection>>>,
}

impl Peers {
    pub fn new(key: ClusterKey, me: NodeId) -> Peers {
        Peers { key, me, pool: Mutex::new(HashMap::new()) }
    }

    /// A pooled connection to `addr`, or a new one.
    pub async fn get(&self, addr: &str) -> Result<Connection> {
        loop {
            let Some(c) = self.lock().get_mut(addr).and_then(Vec::pop) else {
                break;
            };
            if !c.is_closed() {
                return Ok(c);
            }
        }
        self.dial(addr).await
    }

    /// A new connection, bypassing the pool.
    pub async fn dial(&self, addr: &str) -> Result<Connection> {
        let (mut conn, _) = Connection::connect(addr, &self.key, Peer::Node(self.me), CONNECT_TIMEOUT).await?;
        conn.set_read_timeout(Some(REQUEST_TIMEOUT));
        Ok(conn)
    }

    /// Returns a connection that finished its exchange cleanly.
    pub fn put(&self, addr: &str, conn: Connection) {
        let mut pool = self.lock();
        let list = pool.entry(addr.to_string()).or_default();
        if list.len() < POOL_PER_PEER {
            list.push(conn);
        }
    }

    /// Drops every pooled connection to `addr` (the peer restarted or died).
    pub fn forget(&self, addr: &str) {
        self.lock().remove(addr);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Connection>>> {
        // A panic elsewhere while holding the lock leaves a usable map.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One request, one response, on a pooled connection; retried once on a
    /// fresh connection if the pooled one turns out to be dead. Only for
    /// idempotent requests.
    pub async fn call(&self, addr: &str, req: &Request) -> Result<Response> {
        let mut conn = self.get(addr).await?;
        let answer = match exchange(&mut conn, req).await {
            Ok(answer) => answer,
            Err(e) => {
                // The session broke (perhaps a pooled one whose peer restarted):
                // once more on a fresh connection.
                log::debug!("retrying {addr} on a fresh connection after: {e}");
                self.forget(addr);
                conn = self.dial(addr).await?;
                exchange(&mut conn, req).await?
            }
        };
        // A whole answer, error or not, leaves the session clean for reuse.
        self.put(addr, conn);
        answer
    }
}

/// One request and its answer. The outer error is the session failing;
/// the inner one is an error answer from the peer.
async fn exchange(conn: &mut Connection, req: &Request) -> Result<Result<Response>> {
    conn.send(&Message::Request(req.clone())).await?;
    match conn.recv().await? {
        Message::Response(Response::Error(w)) => Ok(Err(Error::from_wire(w))),
        Message::Response(r) => Ok(Ok(r)),
        other => Err(Error::Protocol(format!("expected a response, got {}", scs_common::conn::kind_of(&other)))),
    }
}
