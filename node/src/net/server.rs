//! Accepts TCP connections, authenticates them, and hands each to the
//! handler, within limits that keep one misbehaving peer from shutting
//! everyone else out:
//!
//! - a handshake must finish within its timeout as a whole (a slow-loris
//!   peer is cut off after it), and at most `max_handshakes` run at once
//!   (little memory each: nothing much is buffered before the key is
//!   proven); when they are all taken, a new connection ends the oldest
//!   handshake still running, so a flood of silent connections cannot lock
//!   real peers out: theirs finish in a round trip, the flood's never do;
//! - authenticated sessions are counted apart for nodes and clients, so
//!   clients can never take the slots replication and failover need;
//! - the clients of one address are held to a request rate
//!   ([`crate::net::limit`]).
//!
//! Every bound is a config key ([`scs_common::config::Limits`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use scs_common::conn::Connection;
use scs_common::proto::rpc::{Peer, Response};
use scs_common::Error;

use crate::net::handler;
use crate::net::limit::RateLimiter;
use crate::node::Node;

pub async fn run(node: Arc<Node>, listener: TcpListener) {
    let limits = node.cfg().limits.clone();
    let max_handshakes = limits.max_handshakes;
    let handshakes = Arc::new(Semaphore::new(max_handshakes));
    let rate = Arc::new(RateLimiter::new(limits.client_requests_per_sec));
    // Handshakes by age; a token is cancelled when its handshake ends, or
    // to end it.
    let mut running: VecDeque<CancellationToken> = VecDeque::new();
    let clients = Arc::new(Semaphore::new(limits.max_client_sessions));
    let nodes = Arc::new(Semaphore::new(limits.max_node_sessions));
    let me = node.me();
    let mut evicted = 0u64;
    loop {
        let (stream, from) = tokio::select! {
            _ = node.shutdown().cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    log::warn!("node {me}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        running.retain(|t| !t.is_cancelled());
        let handshake = match handshakes.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(oldest) = running.pop_front() {
                    oldest.cancel();
                }
                evicted += 1;
                if evicted.is_power_of_two() {
                    log::warn!(
                        "node {me}: {max_handshakes} handshakes in progress; ended the oldest for {from} \
                         ({evicted} so far)"
                    );
                }
                // The ended task gives its slot back as soon as it runs.
                let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
                permit
            }
        };
        let token = CancellationToken::new();
        running.push_back(token.clone());
        let (node, clients, nodes, rate) = (node.clone(), clients.clone(), nodes.clone(), rate.clone());
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let accepted = tokio::select! {
                r = Connection::accept(stream, node.key(), me, handshake_timeout) => r,
                _ = token.cancelled() => return,
            };
            token.cancel();
            drop(handshake);
            let (mut conn, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    log::info!("node {me}: refused a session from {from}: {e}");
                    return;
                }
            };
            let pool = match peer {
                Peer::Node(_) => nodes,
                Peer::Client => clients,
            };
            let Ok(_session) = pool.try_acquire_owned() else {
                let e = Error::Unavailable(format!("node {me} has too many open sessions; try again"));
                let _ = conn.send_response(Response::error(&e)).await;
                log::warn!("node {me}: refusing {from} ({peer:?}): too many sessions");
                return;
            };
            log::debug!("node {me}: session from {from} ({peer:?})");
            let rate = match peer {
                Peer::Node(_) => None,
                Peer::Client => Some(rate),
            };
            handler::serve(node, conn, peer, rate).await;
        });
    }
}
