//! Upload at the leader: checks, holder choice, then the client's bytes go to
//! this node's disk and to every other holder at once (pipelined fan-out).
//!
//! Two phases: (1) every holder writes the blob to a temp file, checks the
//! hash, fsyncs and renames it into place, and says so; (2) once a majority
//! of the holders have the data, the entry, naming the holders that
//! answered, is committed on a majority of the cluster. Only then is the
//! client told the file is stored. A holder that fails is simply left out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use scs_common::conn::{Chunk, Connection};
use scs_common::name;
use scs_common::proto::rpc::{Message, Request, Response, UploadSpec};
use scs_common::{ContentHash, Entry, Error, Key, Kind, NodeId, Result};

use super::{
    commit_and_spread, majority_of, now_ns, pick_holders, still_leading, Batch, LeaderState, UploadMark, VersionGuard,
};
use crate::node::Node;
use crate::store::{check_ancestors, Lookup};
use crate::transfer::{drain, BlobSink};

/// Chunks queued per remote holder; a slower holder slows the upload down to
/// its pace rather than growing memory.
const HOLDER_QUEUE: usize = 8;
/// A holder that accepts no chunk for this long is dropped from the upload.
const HOLDER_STALL: Duration = Duration::from_secs(2);
/// How long a holder may take to fsync and answer after the last byte.
const HOLDER_FINISH: Duration = Duration::from_secs(120);
/// After a majority of holders answered, how long the others get to join in.
const STRAGGLER_GRACE: Duration = Duration::from_millis(1000);

enum Feed {
    Data(Bytes),
    End(ContentHash),
}

/// A remote holder receiving the stream.
struct Remote {
    id: NodeId,
    tx: Option<mpsc::Sender<Feed>>,
}

/// Checks that `name` may become a file: not a directory, no ancestor a file,
/// and free when `exclusive`.
pub fn check_file_target(node: &Node, name: &str, exclusive: bool) -> Result<()> {
    name::validate(name)?;
    match node.store.lookup(name)? {
        l if l.is_dir() => return Err(Error::IsDir(name.to_string())),
        Lookup::Live(_) if exclusive => return Err(Error::Exists(name.to_string())),
        _ => {}
    }
    check_ancestors(&node.store, name)
}

/// An upload that passed its checks: its version and its holders.
pub struct Prepared {
    state: Arc<LeaderState>,
    guard: VersionGuard,
    _mark: UploadMark,
    entry: Entry,
    holders: Vec<(NodeId, String)>,
    exclusive: bool,
    /// The exact size when the client knows it.
    size: Option<u64>,
}

/// Checks an upload and picks its holders; nothing is sent or written yet.
///
/// # Errors
/// `NotLeader`, `NoQuorum`, `BadName`, `IsDir`, `NotDir`, `Exists`, `NoSpace`.
pub fn prepare(node: &Node, spec: UploadSpec) -> Result<Prepared> {
    let state = node.writable()?;
    check_file_target(node, &spec.name, spec.exclusive)?;
    let key = Key::of_name(&spec.name);
    let holders = pick_holders(node, &key)?;
    let guard = state.allocate();
    let mark = state.mark_upload(key);
    let entry = Entry {
        name: spec.name,
        version: guard.version,
        kind: Kind::File,
        size: spec.size.unwrap_or(0),
        hash: ContentHash::default(),
        mode: spec.mode & 0o7777,
        mtime_ns: spec.mtime_ns,
        deleted: false,
        holders: Vec::new(),
    };
    Ok(Prepared { state, guard, _mark: mark, entry, holders, exclusive: spec.exclusive, size: spec.size })
}

/// Says `Ready`, receives the bytes, and stores them as planned. Returns
/// the committed entry.
///
/// # Errors
/// `Invalid` on a wrong byte count, `Corrupt` on a hash mismatch,
/// `Unavailable` when fewer than a majority of the holders could keep the
/// file or a majority of nodes commit it. Nothing is committed in the first
/// three cases.
pub async fn receive(node: &Arc<Node>, conn: &mut Connection, prepared: Prepared) -> Outcome {
    let mut broken = false;
    match run(node, conn, prepared, &mut broken).await {
        Ok(entry) => Outcome::Stored(entry),
        Err(e) if broken => Outcome::Broken(e),
        Err(e) => Outcome::Failed(e),
    }
}

/// How an upload ended, for the session that carried it.
pub enum Outcome {
    Stored(Entry),
    /// The client's stream was consumed: answer with the error.
    Failed(Error),
    /// The session broke: nothing can be answered.
    Broken(Error),
}

async fn run(node: &Arc<Node>, conn: &mut Connection, prepared: Prepared, broken: &mut bool) -> Result<Entry> {
    let Prepared { state, guard, _mark, mut entry, holders, exclusive, size } = prepared;
    let key = entry.key();
    log::debug!("node {}: upload {:?} ({size:?} bytes) {:?} to {:?}", node.me(), entry.name, entry.version, holders);

    let mut local = None;
    let mut remotes = Vec::new();
    let mut acks: JoinSet<(NodeId, Result<()>)> = JoinSet::new();
    for (id, addr) in holders {
        if id == node.me() {
            let (store, version) = (node.store.clone(), entry.version);
            local = Some(BlobSink::spawn(move || store.new_blob(&key, version, size)));
            continue;
        }
        let (tx, rx) = mpsc::channel(HOLDER_QUEUE);
        let (node2, e2, term) = (node.clone(), entry.clone(), state.term);
        acks.spawn(async move { (id, replicate_to(&node2, &addr, term, e2, size, rx).await) });
        remotes.push(Remote { id, tx: Some(tx) });
    }
    let planned = remotes.len() + usize::from(local.is_some());
    if let Err(e) = conn.send_response(Response::Ready).await {
        *broken = true;
        return Err(e);
    }

    // Stream: the client's chunks go to the local writer and every holder.
    let mut hasher = local.is_none().then(Sha256::new);
    let mut received = 0u64;
    let client_hash = loop {
        let chunk = match conn.recv_chunk().await {
            Ok(c) => c,
            Err(e) => {
                *broken = true;
                return Err(e);
            }
        };
        match chunk {
            Chunk::Data(b) => {
                received += b.len() as u64;
                if let Some(size) = size.filter(|&s| received > s) {
                    *broken = !drain(conn).await;
                    return Err(Error::Invalid(format!("more than the announced {size} bytes arrived")));
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&b);
                }
                if let Err(e) = still_leading(node, &state) {
                    *broken = !drain(conn).await;
                    return Err(e);
                }
                feed_all(&mut remotes, || Feed::Data(b.clone())).await;
                if let Some(sink) = local.as_mut() {
                    if let Err(e) = sink.write(b).await {
                        log::warn!("node {}: local write of {:?} failed: {e}", node.me(), entry.name);
                        local = None;
                    }
                }
            }
            Chunk::End(hash) => break hash,
        }
    };
    if let Some(size) = size.filter(|&s| received != s) {
        return Err(Error::Invalid(format!("{received} bytes arrived, {size} were announced")));
    }
    // The holders get the end first, so their fsyncs run alongside ours.
    feed_all(&mut remotes, || Feed::End(client_hash)).await;
    let mut durable = Vec::new();
    if let Some(sink) = local.take() {
        match sink.finish(Some(client_hash)).await {
            Ok(_) => durable.push(node.me()),
            Err(e @ Error::Corrupt(_)) => return Err(e),
            Err(e) => log::warn!("node {}: could not keep {:?}: {e}", node.me(), entry.name),
        }
    } else if let Some(h) = hasher {
        let ours = ContentHash(h.finalize().into());
        if ours != client_hash {
            return Err(Error::Corrupt(format!("received bytes hash to {ours:?}, the client sent {client_hash:?}")));
        }
    }
    let need = majority_of(planned);
    let mut failures = Vec::new();
    let mut grace_deadline = None;
    let mut pending: Vec<NodeId> = remotes.iter().map(|r| r.id).collect();
    while !acks.is_empty() {
        let next = match grace_deadline {
            Some(d) => match tokio::time::timeout_at(d, acks.join_next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => {
                // Give up as soon as the holders still alive cannot make a
                // majority any more (the dead ones would only time out).
                let view = node.view();
                let hopeful = pending.iter().filter(|id| view.members.get(id).is_some_and(|m| m.alive)).count();
                if durable.len() + hopeful < need {
                    break;
                }
                match tokio::time::timeout(
                    Duration::from_millis(200),
                    super::join_while_leading(node, &state, &mut acks),
                )
                .await
                {
                    Ok(next) => next?,
                    Err(_) => continue,
                }
            }
        };
        match next {
            None => break,
            Some(Ok((id, res))) => {
                pending.retain(|p| *p != id);
                match res {
                    Ok(()) => durable.push(id),
                    Err(e) => failures.push(format!("node {id}: {e}")),
                }
            }
            Some(Err(e)) => failures.push(e.to_string()),
        }
        if durable.len() >= need && grace_deadline.is_none() {
            grace_deadline = Some(tokio::time::Instant::now() + STRAGGLER_GRACE);
        }
    }
    super::detach(acks);
    if durable.len() < need {
        return Err(Error::Unavailable(format!(
            "the file reached only {} of {planned} holders ({})",
            durable.len(),
            failures.join("; ")
        )));
    }
    durable.sort();
    entry.hash = client_hash;
    entry.size = received;
    entry.holders = durable;

    // Phase 2: commit the entry, re-checking the name under the namespace lock.
    let ns = state.ns.lock().await;
    check_file_target(node, &entry.name, exclusive)?;
    // A change to the name committed while the bytes flowed (a chmod, a
    // rename onto it) has a newer version than ours, so our entry would be
    // stale on arrival: acknowledged but not what a reader gets. The client
    // sends it again instead, with a fresh version.
    // Our entry still goes out, stale as it is: every holder then throws
    // away the copy it wrote for it.
    let key = entry.key();
    if let Some(newer) = node.store.entry(&key)?.filter(|e| e.version > entry.version) {
        let mut batch = Batch::new(&state);
        batch.entries.push(entry.clone());
        commit_and_spread(node, &state, batch, ns).await?;
        return Err(Error::Unavailable(format!(
            "{:?} changed while it was being uploaded ({:?} after {:?}); try again",
            entry.name, newer.version, entry.version
        )));
    }
    let mut batch = Batch::new(&state);
    // A new name changes its directory's mtime; an overwrite does not.
    if node.store.lookup(&entry.name)? == Lookup::Absent {
        batch.touch_dir(&node.store, name::parent(&entry.name), now_ns())?;
    }
    batch.entries.insert(0, entry.clone());
    commit_and_spread(node, &state, batch, ns).await?;
    drop(guard);
    log::debug!("node {}: stored {:?} {:?} on {:?}", node.me(), entry.name, entry.version, entry.holders);
    Ok(entry)
}

/// Queues a message for a holder; a holder that stalls or failed is dropped.
/// Queues a message for every holder still in the upload. The holders share
/// one deadline, so several stalled holders cost one stall, not one each; a
/// holder that stalls or failed is dropped.
async fn feed_all(remotes: &mut [Remote], item: impl Fn() -> Feed) {
    let deadline = tokio::time::Instant::now() + HOLDER_STALL;
    for r in remotes.iter_mut() {
        let Some(tx) = r.tx.as_ref() else { continue };
        match tokio::time::timeout_at(deadline, tx.send(item())).await {
            Ok(Ok(())) => {}
            _ => {
                log::warn!("holder node {} stalled or failed; continuing without it", r.id);
                r.tx = None;
            }
        }
    }
}

/// Streams one blob to a remote holder and waits for it to be durable there.
async fn replicate_to(
    node: &Node,
    addr: &str,
    term: scs_common::Term,
    entry: Entry,
    size: Option<u64>,
    mut rx: mpsc::Receiver<Feed>,
) -> Result<()> {
    let mut conn = node.peers.get(addr).await?;
    // Every write is bounded: a holder that stops reading (frozen, cut off
    // without a reset) is dropped instead of holding the upload forever.
    let stalled = || Error::Unavailable(format!("holder {addr} stopped taking data"));
    let request = Message::Request(Request::Replicate { term, leader: node.me(), entry, size });
    // Sent at once, not with the first data: the holder gets its file
    // ready while the client's bytes are still on their way.
    let send = async {
        conn.write_message(&request).await?;
        conn.flush().await
    };
    tokio::time::timeout(HOLDER_STALL, send).await.map_err(|_| stalled())??;
    loop {
        match rx.recv().await {
            Some(Feed::Data(b)) => {
                tokio::time::timeout(HOLDER_STALL, conn.write_data(&b)).await.map_err(|_| stalled())??
            }
            Some(Feed::End(hash)) => {
                let end = async {
                    conn.write_message(&Message::End { hash }).await?;
                    conn.flush().await
                };
                tokio::time::timeout(HOLDER_STALL, end).await.map_err(|_| stalled())??;
                break;
            }
            // The upload was abandoned: dropping the connection makes the
            // holder throw its temp file away.
            None => return Err(Error::Unavailable("upload abandoned".into())),
        }
    }
    conn.set_read_timeout(Some(HOLDER_FINISH));
    match conn.recv_response().await? {
        Response::Done => {
            conn.set_read_timeout(Some(crate::peers::REQUEST_TIMEOUT));
            node.peers.put(addr, conn);
            Ok(())
        }
        other => Err(Error::Protocol(format!("unexpected answer to replicate: {other:?}"))),
    }
}
