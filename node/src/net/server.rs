//! Accepts TCP connections, authenticates them, and hands each to the
//! handler. A bounded number of sessions run at once; a connection that
//! fails the handshake is closed and counted, and the node goes on.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use scs_common::conn::Connection;

use crate::net::handler;
use crate::node::Node;

/// Sessions served at once; more are refused at accept time.
pub const MAX_CONNECTIONS: usize = 512;

pub async fn run(node: Arc<Node>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let me = node.me();
    loop {
        let (stream, from) = tokio::select! {
            _ = node.shutdown.cancelled() => return,
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            log::warn!("node {me}: refusing {from}: {MAX_CONNECTIONS} sessions already open");
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match Connection::accept(stream, &node.key, me).await {
                Ok((conn, peer)) => {
                    log::debug!("node {me}: session from {from} ({peer:?})");
                    handler::serve(node, conn, peer).await;
                }
                Err(e) => log::info!("node {me}: refused a session from {from}: {e}"),
            }
        });
    }
}
