//! One session: read a request, dispatch it, answer; repeat until the peer
//! hangs up. Errors become error responses; a peer that breaks the protocol
//! is told why and disconnected. Nothing a peer sends can stop the node.

use std::sync::Arc;
use std::time::Duration;

use scs_common::conn::{Connection, Frame};
use scs_common::name;
use scs_common::proto::rpc::{HolderAddr, Message, NodeStatus, Peer, Request, Response, StatusReport};
use scs_common::{Entry, Error, Key, Kind, NodeId, Result, Term, Version};

use crate::leader::{meta, upload};
use crate::net::limit::RateLimiter;
use crate::node::Node;
use crate::store::Lookup;
use crate::sync;
use crate::transfer::{self, BlobSink};

/// A session with no request for this long is closed.
/// Within a request, the peer may pause this long between frames.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Entries and encoded bytes per `Listing` frame.
const LIST_BATCH: usize = 1000;
const LIST_BYTES: usize = 2 << 20;

/// What to do with the session after a failed request.
enum Failure {
    /// Answer with the error; the session stays usable.
    Reply(Error),
    /// Answer if possible, then hang up.
    Close(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Reply(e)
    }
}

pub async fn serve(node: Arc<Node>, mut conn: Connection, peer: Peer, rate: Option<Arc<RateLimiter>>) {
    let me = node.me();
    loop {
        conn.set_read_timeout(Some(node.cfg.limits.idle_timeout));
        let req = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            frame = conn.read_frame() => match frame {
                Ok(None) => return,
                Ok(Some(Frame::Message(Message::Request(r)))) => r,
                Ok(Some(_)) => {
                    let e = Error::Protocol("expected a request".into());
                    let _ = conn.send_response(Response::error(&e)).await;
                    return;
                }
                Err(e) => {
                    log::debug!("node {me}: closing session from {}: {e}", conn.peer_addr());
                    if matches!(e, Error::Protocol(_)) {
                        let _ = conn.send_response(Response::error(&e)).await;
                    }
                    return;
                }
            },
        };
        if let Some(rate) = &rate {
            rate.admit(conn.peer_addr().ip()).await;
        }
        conn.set_read_timeout(Some(TRANSFER_TIMEOUT));
        log::debug!("node {me}: {} from {peer:?}", request_name(&req));
        let failure = match handle(&node, &mut conn, peer, req).await {
            Ok(()) => continue,
            Err(f) => f,
        };
        let keep = match failure {
            Failure::Reply(e) => conn.send_response(Response::error(&e)).await.is_ok(),
            Failure::Close(e) => {
                log::debug!("node {me}: closing session from {}: {e}", conn.peer_addr());
                let _ = conn.send_response(Response::error(&e)).await;
                false
            }
        };
        if !keep {
            return;
        }
    }
}

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Upload(_) => "upload",
        Request::Download { .. } => "download",
        Request::ReadBlob { .. } => "read-blob",
        Request::Stat { .. } => "stat",
        Request::List { .. } => "list",
        Request::Mkdir { .. } => "mkdir",
        Request::Delete { .. } => "delete",
        Request::Rename { .. } => "rename",
        Request::SetAttr { .. } => "setattr",
        Request::Status => "status",
        Request::ReportCorrupt { .. } => "report-corrupt",
        Request::Digests => "digests",
        Request::BucketVersions { .. } => "bucket-versions",
        Request::EntriesFor { .. } => "entries-for",
        Request::Offer { .. } => "offer",
        Request::Purge { .. } => "purge",
        Request::Replicate { .. } => "replicate",
        Request::Apply { .. } => "apply",
        Request::Pull { .. } => "pull",
    }
}

async fn handle(node: &Arc<Node>, conn: &mut Connection, peer: Peer, req: Request) -> Result<(), Failure> {
    match req {
        Request::Upload(spec) => {
            let prepared = upload::prepare(node, spec)?;
            match upload::receive(node, conn, prepared).await {
                upload::Outcome::Stored(entry) => reply(conn, Response::Stored(entry)).await,
                upload::Outcome::Failed(e) => Err(Failure::Reply(e)),
                upload::Outcome::Broken(e) => Err(Failure::Close(e)),
            }
        }
        Request::Download { name, offset, len } => download(node, conn, &name, offset, len).await,
        Request::ReadBlob { key, version, offset, len } => read_blob(node, conn, key, version, offset, len).await,
        Request::Stat { name } => {
            node.readable()?;
            name::validate_dir(&name)?;
            let r = match node.blocking(move |s| s.lookup(&name)).await? {
                Lookup::Absent => Response::Missing,
                l => Response::Stored(l.entry().ok_or_else(|| Error::Internal("lost entry".into()))?),
            };
            reply(conn, r).await
        }
        Request::List { dir } => list(node, conn, dir).await,
        Request::Mkdir { name, mode, mtime_ns, parents } => {
            let e = meta::mkdir(node, &name, mode, mtime_ns, parents).await?;
            reply(conn, Response::Stored(e)).await
        }
        Request::Delete { name, expect } => {
            meta::delete(node, &name, expect).await?;
            reply(conn, Response::Done).await
        }
        Request::Rename { from, to, replace } => {
            meta::rename(node, &from, &to, replace).await?;
            reply(conn, Response::Done).await
        }
        Request::SetAttr { name, mode, mtime_ns } => {
            let e = meta::setattr(node, &name, mode, mtime_ns).await?;
            reply(conn, Response::Stored(e)).await
        }
        Request::Status => reply(conn, Response::Status(status(node))).await,
        Request::ReportCorrupt { key, version } => {
            if !node.blocking(move |s| s.check_blob(&key, version)).await? {
                node.blocking(move |s| s.quarantine(&key, version)).await?;
            }
            reply(conn, Response::Done).await
        }
        Request::Replicate { term, leader, entry, size } => {
            from_node(peer)?;
            replicate(node, conn, term, leader, entry, size).await
        }
        Request::Apply { term, leader, entries } => {
            from_node(peer)?;
            for e in &entries {
                name::validate(&e.name)?;
            }
            node.admit(term, leader).await?;
            node.commit(term, leader, entries, Vec::new()).await?;
            reply(conn, Response::Done).await
        }
        Request::Pull { since, fence } => {
            from_node(peer)?;
            sync::serve_pull(node, conn, since, fence).await.map_err(Failure::Close)
        }
        Request::Digests => {
            from_node(peer)?;
            let d = node.blocking(|s| s.digests()).await?;
            reply(conn, Response::Digests(d.0)).await
        }
        Request::BucketVersions { bucket } => {
            from_node(peer)?;
            let v = node.blocking(move |s| s.bucket(bucket)).await?;
            reply(conn, Response::Versions(v)).await
        }
        Request::EntriesFor { keys } => {
            from_node(peer)?;
            let e = node.blocking(move |s| s.entries_for(&keys)).await?;
            reply(conn, Response::Entries(e)).await
        }
        Request::Offer { entries } => {
            from_node(peer)?;
            for e in &entries {
                name::validate(&e.name)?;
            }
            node.blocking(move |s| s.apply(&entries, &[])).await?;
            reply(conn, Response::Done).await
        }
        Request::Purge { term, leader, items } => {
            from_node(peer)?;
            node.admit(term, leader).await?;
            node.blocking(move |s| s.purge(&items)).await?;
            reply(conn, Response::Done).await
        }
    }
}

async fn reply(conn: &mut Connection, r: Response) -> Result<(), Failure> {
    conn.send_response(r).await.map_err(Failure::Close)
}

fn from_node(peer: Peer) -> Result<NodeId> {
    match peer {
        Peer::Node(id) => Ok(id),
        Peer::Client => Err(Error::Invalid("only nodes may send this request".into())),
    }
}

/// The byte range `[offset, offset + len)` of a file of `size` bytes.
fn clamp_range(size: u64, offset: u64, len: Option<u64>) -> Result<u64> {
    if offset > size {
        return Err(Error::Invalid(format!("offset {offset} is past the end of the file ({size} bytes)")));
    }
    Ok(len.unwrap_or(u64::MAX).min(size - offset))
}

async fn download(
    node: &Arc<Node>,
    conn: &mut Connection,
    name: &str,
    offset: u64,
    len: Option<u64>,
) -> Result<(), Failure> {
    node.readable()?;
    name::validate(name)?;
    let owned = name.to_string();
    let entry = match node.blocking(move |s| s.lookup(&owned)).await? {
        Lookup::Live(e) if e.kind == Kind::File => e,
        Lookup::Absent => return Err(Error::NotFound(name.to_string()).into()),
        _ => return Err(Error::IsDir(name.to_string()).into()),
    };
    let len = clamp_range(entry.size, offset, len)?;
    let (key, version) = (entry.key(), entry.version);
    if node.blocking(move |s| s.holds(&key, version)).await? {
        let reader = node.blocking(move |s| s.read_blob(&key, version, offset, len)).await?;
        return match transfer::send_blob(conn, entry, reader, offset, len).await {
            Ok(()) => Ok(()),
            Err(e @ Error::Corrupt(_)) => {
                // Already told the client; move the bad copy aside.
                let _ = node.blocking(move |s| s.quarantine(&key, version)).await;
                log::error!("node {}: {e}", node.me());
                Ok(())
            }
            Err(e) => Err(Failure::Close(e)),
        };
    }
    // We do not keep it: point the client at the live holders.
    let view = node.view();
    let holders: Vec<HolderAddr> = entry
        .holders
        .iter()
        .filter_map(|id| {
            view.members.get(id).filter(|m| m.alive).map(|m| HolderAddr { id: *id, addr: m.info.addr.clone() })
        })
        .collect();
    if holders.is_empty() {
        return Err(Error::Unavailable(format!("no holder of {name} is reachable right now")).into());
    }
    reply(conn, Response::Redirect { entry, holders }).await
}

async fn read_blob(
    node: &Arc<Node>,
    conn: &mut Connection,
    key: Key,
    version: Version,
    offset: u64,
    len: Option<u64>,
) -> Result<(), Failure> {
    let entry = node
        .blocking(move |s| s.entry(&key))
        .await?
        .filter(|e| e.version == version && e.has_blob())
        .ok_or_else(|| Error::NotFound(format!("blob {key:?} {version:?}")))?;
    let len = clamp_range(entry.size, offset, len)?;
    let reader = node.blocking(move |s| s.read_blob(&key, version, offset, len)).await?;
    match transfer::send_blob(conn, entry, reader, offset, len).await {
        Ok(()) => Ok(()),
        Err(Error::Corrupt(_)) => {
            let _ = node.blocking(move |s| s.quarantine(&key, version)).await;
            Ok(())
        }
        Err(e) => Err(Failure::Close(e)),
    }
}

async fn list(node: &Arc<Node>, conn: &mut Connection, dir: String) -> Result<(), Failure> {
    node.readable()?;
    name::validate_dir(&dir)?;
    let d = dir.clone();
    let entries = node
        .blocking(move |s| match s.lookup(&d)? {
            Lookup::Absent => Err(Error::NotFound(d.clone())),
            Lookup::Live(e) if e.kind == Kind::File => Err(Error::NotDir(d.clone())),
            _ => s.list(&d),
        })
        .await?;
    // Batches are cut by size as well as count: names may be 4 KiB long.
    let mut batches = crate::leader::split_by_size(entries, LIST_BYTES)
        .into_iter()
        .flat_map(|b| b.chunks(LIST_BATCH).map(<[Entry]>::to_vec).collect::<Vec<_>>())
        .peekable();
    if batches.peek().is_none() {
        return reply(conn, Response::Listing { entries: Vec::new(), more: false }).await;
    }
    while let Some(batch) = batches.next() {
        let more = batches.peek().is_some();
        conn.write_message(&Message::Response(Response::Listing { entries: batch, more }))
            .await
            .map_err(Failure::Close)?;
    }
    conn.flush().await.map_err(Failure::Close)
}

/// A holder receiving a blob from the leader: write, check, fsync, answer.
async fn replicate(
    node: &Arc<Node>,
    conn: &mut Connection,
    term: Term,
    leader: NodeId,
    entry: Entry,
    size: Option<u64>,
) -> Result<(), Failure> {
    // The leader streams right behind the request: any refusal closes the
    // session, which the leader takes as this holder dropping out.
    node.admit(term, leader).await.map_err(Failure::Close)?;
    name::validate(&entry.name).map_err(Failure::Close)?;
    let key = entry.key();
    let version = entry.version;
    if !node.blocking(move |s| s.has_room_for(&key)).await.map_err(Failure::Close)? {
        return Err(Failure::Close(Error::NoSpace(format!("node {} is at its max_files", node.me()))));
    }
    let store = node.store.clone();
    let mut sink = BlobSink::spawn(move || store.new_blob(&key, version, size));
    let (hash, _) = transfer::receive_into(conn, &mut sink, size).await.map_err(Failure::Close)?;
    sink.finish(Some(hash)).await.map_err(Failure::Reply)?;
    // A slow holder may finish after its entry was decided without it.
    node.blocking(move |s| s.settle_replicated(&key, version)).await?;
    reply(conn, Response::Done).await
}

/// The cluster as this node sees it.
pub fn status(node: &Node) -> StatusReport {
    let view = node.view();
    let mut nodes = Vec::new();
    for id in (1..=node.cfg.cluster_size).map(NodeId) {
        if id == node.me() {
            let (disk_free, disk_total) = node.store.disk_space();
            nodes.push(NodeStatus {
                id,
                addr: node.cfg.advertise.to_string(),
                alive: true,
                role: Some(view.role),
                files: node.store.files(),
                max_files: node.cfg.max_files,
                disk_free,
                disk_total,
                wanted: node.store.wanted_count(),
                corrupt: node.store.corrupt_count(),
            });
        } else {
            let m = view.members.get(&id);
            nodes.push(NodeStatus {
                id,
                addr: m.map(|m| m.info.addr.clone()).unwrap_or_default(),
                alive: m.is_some_and(|m| m.alive),
                role: m.and_then(|m| m.role),
                files: m.map(|m| m.info.files).unwrap_or(0),
                max_files: m.map(|m| m.info.max_files).unwrap_or(None),
                disk_free: m.map(|m| m.info.disk_free).unwrap_or(0),
                disk_total: m.map(|m| m.info.disk_total).unwrap_or(0),
                wanted: m.map(|m| m.info.wanted).unwrap_or(0),
                corrupt: m.map(|m| m.info.corrupt).unwrap_or(0),
            });
        }
    }
    let leader_info = view.leader.and_then(|l| view.members.get(&l)).map(|m| &m.info);
    let (quorum, under_replicated) = if view.is_leader() {
        (view.quorum, node.health.under_replicated.load(std::sync::atomic::Ordering::Relaxed))
    } else {
        (leader_info.is_some_and(|i| i.ready), leader_info.map(|i| i.under_replicated).unwrap_or(0))
    };
    StatusReport {
        node: node.me(),
        leader: view.leader,
        term: view.term,
        quorum,
        cluster_size: node.cfg.cluster_size,
        replicas: node.cfg.replicas,
        nodes,
        under_replicated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clamped_to_the_file_and_past_the_end_is_an_error() {
        assert_eq!(clamp_range(10, 0, None).unwrap(), 10);
        assert_eq!(clamp_range(10, 4, Some(100)).unwrap(), 6);
        assert_eq!(clamp_range(10, 10, None).unwrap(), 0);
        assert!(matches!(clamp_range(10, 11, None), Err(Error::Invalid(_))));
    }
}
