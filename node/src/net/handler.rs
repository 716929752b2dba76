//! One session: read a request, dispatch it, answer; repeat until the peer
//! hangs up. Errors become error responses; a peer that breaks the protocol
//! is told why and disconnected. Nothing a peer sends can stop the node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use scs_common::conn::{Connection, Frame};
use scs_common::proto::gossip::{NodeInfo, Role};
use scs_common::proto::rpc::{
    Candidate, HolderAddr, Message, Moving, NodeStatus, Peer, Request, Response, StatusReport,
};
use scs_common::{name, namespace, Error, Ino, Inode, Key, Kind, MemberState, NodeId, Record, Result, Term, Version};

use crate::leader::{locks, members, meta, trash, upload};
use crate::metrics::METRICS;
use crate::net::limit::RateLimiter;
use crate::node::Node;
use crate::sync;
use crate::transfer::{self, BlobSink};

/// A session with no request for this long is closed.
/// Within a request, the peer may pause this long between frames.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Children and encoded bytes per `Listing` frame.
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
        conn.set_read_timeout(Some(node.cfg().limits.idle_timeout));
        let req = tokio::select! {
            _ = node.shutdown().cancelled() => return,
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
        let kind = request_name(&req);
        log::debug!("node {me}: {kind} from {peer:?}");
        let started = Instant::now();
        // A monitor asking for the status is not a client at work.
        let at_work = peer == Peer::Client && !matches!(kind, "status" | "keep-alive");
        let work = at_work.then(|| node.health().clients.begin());
        let res = handle(&node, &mut conn, peer, req).await;
        drop(work);
        METRICS.request(kind).since(started);
        let failure = match res {
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

/// The request's kind, as logs and [`crate::metrics`] name it.
pub fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Upload(_) => "upload",
        Request::Download { .. } => "download",
        Request::Read { .. } => "read",
        Request::ReadBlob { .. } => "read-blob",
        Request::Resolve { .. } => "resolve",
        Request::Lookup { .. } => "lookup",
        Request::GetAttr { .. } => "getattr",
        Request::ReadDir { .. } => "readdir",
        Request::Make { .. } => "make",
        Request::Link { .. } => "link",
        Request::Remove { .. } => "remove",
        Request::Rename { .. } => "rename",
        Request::SetAttr { .. } => "setattr",
        Request::SetXattr { .. } => "setxattr",
        Request::RemoveXattr { .. } => "removexattr",
        Request::ReserveInodes { .. } => "reserve-inodes",
        Request::TrashList => "trash-list",
        Request::TrashRestore { .. } => "trash-restore",
        Request::TrashPurge(_) => "trash-purge",
        Request::Versions { .. } => "versions",
        Request::RestoreVersion { .. } => "restore-version",
        Request::Status => "status",
        Request::ChangeMembers(_) => "change-members",
        Request::ReportCorrupt { .. } => "report-corrupt",
        Request::Digests => "digests",
        Request::BucketVersions { .. } => "bucket-versions",
        Request::RecordsFor { .. } => "records-for",
        Request::Offer { .. } => "offer",
        Request::Purge { .. } => "purge",
        Request::Replicate { .. } => "replicate",
        Request::Apply { .. } => "apply",
        Request::Holds { .. } => "holds",
        Request::Pull { .. } => "pull",
        Request::Lock { .. } => "lock",
        Request::Unlock { .. } => "unlock",
        Request::TestLock { .. } => "test-lock",
        Request::KeepAlive { .. } => "keep-alive",
        Request::Reclaim { .. } => "reclaim",
        Request::UploadMany(_) => "upload-many",
    }
}

async fn handle(node: &Arc<Node>, conn: &mut Connection, peer: Peer, req: Request) -> Result<(), Failure> {
    match req {
        Request::Upload(spec) => {
            let prepared = upload::prepare(node, spec).await?;
            match upload::receive(node, conn, prepared).await {
                upload::Outcome::Stored(changed) => reply(conn, Response::Changed(*changed)).await,
                upload::Outcome::Failed(e) => Err(Failure::Reply(e)),
                upload::Outcome::Broken(e) => Err(Failure::Close(e)),
            }
        }
        Request::UploadMany(specs) => match upload::receive_many(node, conn, specs).await {
            upload::Many::Each(results) => {
                let answers = results.into_iter().map(|r| r.map_or_else(|e| Response::error(&e), Response::Changed));
                reply(conn, Response::Many(answers.collect())).await
            }
            upload::Many::Failed(e) => Err(Failure::Reply(e)),
            upload::Many::Broken(e) => Err(Failure::Close(e)),
        },
        Request::Download { path, offset, len } => {
            node.readable()?;
            name::validate_dir(&path)?;
            let p = path.clone();
            let inode = node.blocking(move |s| namespace::resolve(s, &p, true)).await?;
            let inode = inode.ok_or_else(|| Error::NotFound(path.clone()))?;
            if inode.is_dir() {
                return Err(Error::IsDir(path).into());
            }
            send_content(node, conn, inode, offset, len).await
        }
        Request::Read { ino, offset, len } => {
            node.readable()?;
            let inode = node.blocking(move |s| s.inode(ino)).await?;
            let inode = inode.ok_or_else(|| Error::NotFound(format!("inode {ino}")))?;
            send_content(node, conn, inode, offset, len).await
        }
        Request::ReadBlob { ino, content, offset, len } => read_blob(node, conn, ino, content, offset, len).await,
        Request::Resolve { path, follow } => {
            node.readable()?;
            name::validate_dir(&path)?;
            let found = node.blocking(move |s| namespace::resolve(s, &path, follow)).await?;
            reply(conn, found.map_or(Response::Missing, Response::Attr)).await
        }
        Request::Lookup { parent, name } => {
            node.readable()?;
            name::validate_component(&name)?;
            let found = node
                .blocking(move |s| match s.dentry(parent, &name)? {
                    Some(d) => s.inode(d.child),
                    None => Ok(None),
                })
                .await?;
            reply(conn, found.map_or(Response::Missing, Response::Attr)).await
        }
        Request::GetAttr { ino } => {
            node.readable()?;
            let found = node.blocking(move |s| s.inode(ino)).await?;
            reply(conn, found.map_or(Response::Missing, Response::Attr)).await
        }
        Request::ReadDir { dir } => read_dir(node, conn, dir).await,
        Request::Make { parent, name, node: spec } => {
            let touched = meta::make(node, parent, &name, &spec).await?;
            reply(conn, Response::Changed(touched)).await
        }
        Request::Link { ino, parent, name } => {
            let touched = meta::link(node, ino, parent, &name).await?;
            reply(conn, Response::Changed(touched)).await
        }
        Request::Remove { parent, name, what } => {
            let touched = meta::remove(node, parent, &name, what).await?;
            reply(conn, Response::Changed(touched)).await
        }
        Request::Rename { parent, name, new_parent, new_name, mode } => {
            let touched = meta::rename(node, parent, &name, new_parent, &new_name, mode).await?;
            reply(conn, Response::Changed(touched)).await
        }
        Request::SetAttr { ino, set } => {
            let i = meta::set_attr(node, ino, &set).await?;
            reply(conn, Response::Attr(i)).await
        }
        Request::SetXattr { ino, name, value, mode } => {
            let i = meta::set_xattr(node, ino, &name, &value, mode).await?;
            reply(conn, Response::Attr(i)).await
        }
        Request::RemoveXattr { ino, name } => {
            let i = meta::remove_xattr(node, ino, &name).await?;
            reply(conn, Response::Attr(i)).await
        }
        Request::ReserveInodes { count } => {
            let (first, count) = meta::reserve(node, count).await?;
            reply(conn, Response::Inodes { first, count }).await
        }
        Request::TrashList => {
            let items = trash::list(node).await?;
            send_batches(conn, items, |items, more| Response::Trash { items, more }).await
        }
        Request::TrashRestore { ino, to } => {
            if let Some((_, n)) = &to {
                name::validate_component(n)?;
            }
            let r = trash::restore(node, ino, to).await?;
            reply(conn, Response::Restored { inode: r.inode, items: r.items, left: r.left }).await
        }
        Request::TrashPurge(what) => {
            let p = trash::purge(node, what).await?;
            reply(conn, Response::Purged { items: p.items, bytes: p.bytes }).await
        }
        Request::Versions { ino } => {
            let versions = trash::versions(node, ino).await?;
            reply(conn, Response::Kept(versions)).await
        }
        Request::RestoreVersion { ino, version } => {
            let i = trash::restore_version(node, ino, version).await?;
            reply(conn, Response::Attr(i)).await
        }
        Request::Status => reply(conn, Response::Status(status(node))).await,
        Request::ChangeMembers(change) => {
            members::change(node, change).await?;
            reply(conn, Response::Done).await
        }
        Request::ReportCorrupt { ino, content } => {
            let key = Key::of_ino(ino);
            if !node.blocking(move |s| s.check_blob(&key, content)).await? {
                node.blocking(move |s| s.quarantine(&key, content)).await?;
            }
            reply(conn, Response::Done).await
        }
        Request::Replicate { term, leader, ino, content, size } => {
            from_node(peer)?;
            replicate(node, conn, term, leader, (ino, content), size).await
        }
        Request::Apply { term, leader, records } => {
            from_node(peer)?;
            check_records(&records)?;
            node.admit(term, leader).await?;
            // Entries at or below the watermark are here already, or newer
            // ones, or were deleted and their tombstones purged since: one
            // that comes now is a late copy (an `Apply` held up in a socket
            // through a partition) and must not bring a deleted entry back.
            // Answered once durable here; into the index after that.
            let answered = node.commit_applied(term, leader, records).await?;
            let res = reply(conn, Response::Done).await;
            if let Err(e) = answered.index().await {
                log::warn!("node {}: a round answered for is not in the index yet: {e}", node.me());
            }
            res
        }
        Request::Pull { since, fence } => {
            let from = from_node(peer)?;
            sync::serve_pull(node, conn, from, since, fence).await.map_err(Failure::Close)
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
        Request::RecordsFor { keys } => {
            from_node(peer)?;
            // At most a message's worth: the asker asks again for the rest.
            let r = node.blocking(move |s| s.records_for(&keys)).await?;
            let r = crate::leader::split_by_size(r, crate::leader::RECORDS_BYTES).swap_remove(0);
            reply(conn, Response::Records(r)).await
        }
        // Checked, answered and ignored: offered records could bring back
        // what was deleted (see `repair::reconcile`). Nodes of this version
        // no longer send them; earlier ones go on with their comparison.
        Request::Offer { records } => {
            from_node(peer)?;
            check_records(&records)?;
            log::debug!("node {}: ignored {} offered entries", node.me(), records.len());
            reply(conn, Response::Done).await
        }
        Request::Holds { items } => {
            from_node(peer)?;
            let held = node
                .blocking(move |s| items.iter().map(|(ino, content)| s.holds(&Key::of_ino(*ino), *content)).collect())
                .await?;
            reply(conn, Response::Holding(held)).await
        }
        Request::Purge { term, leader, items } => {
            from_node(peer)?;
            node.admit(term, leader).await?;
            // Only tombstones at or below the watermark go: a late copy of
            // what one deleted is older still, so `Apply` drops it (above).
            // The rest stay until a later round, when it has pulled further.
            node.blocking(move |s| {
                let vouched = s.watermark()?;
                let items: Vec<_> = items.into_iter().filter(|(_, v)| *v <= vouched).collect();
                s.purge(&items)
            })
            .await?;
            reply(conn, Response::Done).await
        }
        Request::Lock { session, lock } => reply(conn, Response::Lock(locks::lock(node, session, lock)?)).await,
        Request::Unlock { session, ino, owner, start, end } => {
            reply(conn, Response::Lock(locks::unlock(node, session, ino, owner, start, end)?)).await
        }
        Request::TestLock { session, lock } => reply(conn, Response::Lock(locks::test(node, session, lock)?)).await,
        Request::KeepAlive { session } => reply(conn, Response::Lock(locks::keep_alive(node, session)?)).await,
        Request::Reclaim { session, locks: held } => {
            reply(conn, Response::Reclaimed(locks::reclaim(node, session, held)?)).await
        }
    }
}

/// Records from another node: a directory entry's name must be one valid
/// component (it only ever becomes part of an index key, never a path).
fn check_records(records: &[Record]) -> Result<()> {
    for r in records {
        match r {
            Record::Dentry(d) => {
                name::validate_component(&d.name)?;
            }
            Record::Members(m) => m.check()?,
            _ => {}
        }
    }
    Ok(())
}

/// Sends an answer. Inodes in it go as clients get them
/// ([`Inode::for_client`]); records for other nodes travel whole.
async fn reply(conn: &mut Connection, r: Response) -> Result<(), Failure> {
    conn.send_response(r.for_client()).await.map_err(Failure::Close)
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

/// Answers a read of `inode`'s content: the bytes when this node keeps
/// them, else the live holders to ask.
async fn send_content(
    node: &Arc<Node>,
    conn: &mut Connection,
    inode: Inode,
    offset: u64,
    len: Option<u64>,
) -> Result<(), Failure> {
    match inode.kind {
        Kind::File => {}
        Kind::Dir => return Err(Error::IsDir(format!("inode {}", inode.ino)).into()),
        k => return Err(Error::Invalid(format!("a {} has no content", k.as_str())).into()),
    }
    let len = clamp_range(inode.size, offset, len)?;
    if inode.is_inline() {
        return send_inline(node, conn, inode, offset, len).await;
    }
    if !inode.has_blob() {
        // Never written: empty, with nothing to fetch.
        conn.send_response(Response::Content { inode, offset, len: 0 }).await.map_err(Failure::Close)?;
        let hash = scs_common::ContentHash::of_empty();
        return conn.send(&Message::End { hash }).await.map_err(Failure::Close);
    }
    let (key, content, ino) = (inode.key(), inode.content, inode.ino);
    if node.blocking(move |s| s.holds(&key, content)).await? {
        let reader = node.blocking(move |s| s.read_blob(ino, content, offset, len)).await?;
        return match transfer::send_blob(conn, inode, reader, offset, len).await {
            Ok(()) => Ok(()),
            Err(e @ Error::Corrupt(_)) => {
                // Already told the client; move the bad copy aside.
                let _ = node.blocking(move |s| s.quarantine(&key, content)).await;
                log::error!("node {}: {e}", node.me());
                Ok(())
            }
            Err(e) => Err(Failure::Close(e)),
        };
    }
    // We do not keep it: point the client at the live holders.
    let view = node.view();
    let holders: Vec<HolderAddr> = inode
        .holders
        .iter()
        .filter_map(|id| {
            view.members.get(id).filter(|m| m.alive).map(|m| HolderAddr { id: *id, addr: m.info.addr.clone() })
        })
        .collect();
    if holders.is_empty() {
        return Err(Error::Unavailable(format!("no holder of inode {} is reachable right now", inode.ino)).into());
    }
    reply(conn, Response::Redirect { inode, holders }).await
}

/// Answers a read of a file whose content is in its record: checked
/// against its hash first, so a damaged record is an error here rather
/// than bad bytes at the client (which then asks again, of another node).
async fn send_inline(
    node: &Arc<Node>,
    conn: &mut Connection,
    inode: Inode,
    offset: u64,
    len: u64,
) -> Result<(), Failure> {
    if let Err(e) = inode.check_inline() {
        node.store().count_corrupt();
        log::error!("node {}: {e}", node.me());
        return Err(e.into());
    }
    // The bytes go as data; the inode keeps the empty mark clients get.
    let mut inode = inode;
    let data = inode.inline.replace(Default::default()).unwrap_or_default().0;
    let hash = inode.hash;
    let range = &data[offset as usize..(offset + len) as usize];
    conn.write_message(&Message::Response(Response::Content { inode, offset, len })).await.map_err(Failure::Close)?;
    if !range.is_empty() {
        conn.write_data(range).await.map_err(Failure::Close)?;
    }
    conn.write_message(&Message::End { hash }).await.map_err(Failure::Close)?;
    conn.flush().await.map_err(Failure::Close)
}

async fn read_blob(
    node: &Arc<Node>,
    conn: &mut Connection,
    ino: Ino,
    content: Version,
    offset: u64,
    len: Option<u64>,
) -> Result<(), Failure> {
    let key = Key::of_ino(ino);
    let inode = node
        .blocking(move |s| s.live_content(&key, content))
        .await?
        .ok_or_else(|| Error::NotFound(format!("blob of inode {ino} {content:?}")))?;
    let len = clamp_range(inode.size, offset, len)?;
    let reader = node.blocking(move |s| s.read_blob(ino, content, offset, len)).await?;
    match transfer::send_blob(conn, inode, reader, offset, len).await {
        Ok(()) => Ok(()),
        Err(Error::Corrupt(_)) => {
            let _ = node.blocking(move |s| s.quarantine(&key, content)).await;
            Ok(())
        }
        Err(e) => Err(Failure::Close(e)),
    }
}

/// The listing, read a page at a time on a blocking thread while the pages
/// before go out: a node holds a few pages of a big directory, not all of it.
async fn read_dir(node: &Arc<Node>, conn: &mut Connection, dir: Ino) -> Result<(), Failure> {
    node.readable()?;
    type Page = (Vec<scs_common::DirEntry>, Option<Version>);
    let (tx, mut pages) = tokio::sync::mpsc::channel::<Result<Page>>(2);
    let store = node.store().clone();
    let reader = tokio::task::spawn_blocking(move || {
        let read = match store.inode(dir) {
            Ok(None) => Err(Error::NotFound(format!("directory inode {dir}"))),
            Ok(Some(i)) if !i.is_dir() => Err(Error::NotDir(format!("inode {dir}"))),
            Ok(Some(_)) => store.read_dir_pages(dir, LIST_BATCH, |page, v| tx.blocking_send(Ok((page, v))).is_ok()),
            Err(e) => Err(e),
        };
        if let Err(e) = read {
            let _ = tx.blocking_send(Err(e));
        }
    });
    // A page goes once the next is known: the last says no more follow.
    let mut held: Option<Page> = None;
    let mut sent = false;
    loop {
        let next = match pages.recv().await {
            Some(Ok(page)) => Some(page),
            None => None,
            Some(Err(e)) if !sent && held.is_none() => return Err(e.into()),
            // Cut short: the client must not take what went out as whole.
            Some(Err(e)) => return Err(Failure::Close(e)),
        };
        if let Some((page, version)) = held.take() {
            let listing = |entries, more| Response::Listing { entries, more, version };
            for answer in frames(page, next.is_none(), listing) {
                conn.write_message(&Message::Response(answer.for_client())).await.map_err(Failure::Close)?;
                sent = true;
            }
        }
        match next {
            Some(page) => held = Some(page),
            None => break,
        }
    }
    let _ = reader.await;
    conn.flush().await.map_err(Failure::Close)
}

/// Sends `items` as a run of answers made by `frame` (a batch, and
/// whether another follows), at least one.
async fn send_batches<T: serde::Serialize + Clone>(
    conn: &mut Connection,
    items: Vec<T>,
    frame: impl Fn(Vec<T>, bool) -> Response,
) -> Result<(), Failure> {
    for answer in frames(items, true, frame) {
        conn.write_message(&Message::Response(answer.for_client())).await.map_err(Failure::Close)?;
    }
    conn.flush().await.map_err(Failure::Close)
}

/// `items` as answers made by `frame` (a batch, and whether another
/// follows), at least one; `last` when nothing follows these items.
/// Batches are cut by size as well as count: an inode may carry 256 KiB of
/// extended attributes.
fn frames<T: serde::Serialize + Clone>(
    items: Vec<T>,
    last: bool,
    frame: impl Fn(Vec<T>, bool) -> Response,
) -> Vec<Response> {
    let mut batches: Vec<Vec<T>> = crate::leader::split_by_size(items, LIST_BYTES)
        .into_iter()
        .flat_map(|b| b.chunks(LIST_BATCH).map(<[T]>::to_vec).collect::<Vec<_>>())
        .collect();
    if batches.is_empty() {
        batches.push(Vec::new());
    }
    let count = batches.len();
    batches.into_iter().enumerate().map(|(n, batch)| frame(batch, !last || n + 1 < count)).collect()
}

/// A holder receiving a blob from the leader: write, check, fsync, answer.
async fn replicate(
    node: &Arc<Node>,
    conn: &mut Connection,
    term: Term,
    leader: NodeId,
    (ino, content): (Ino, Version),
    size: Option<u64>,
) -> Result<(), Failure> {
    // The leader streams right behind the request: any refusal closes the
    // session, which the leader takes as this holder dropping out.
    node.admit(term, leader).await.map_err(Failure::Close)?;
    let (key, version) = (Key::of_ino(ino), content);
    if !node.blocking(move |s| s.has_room_for(ino)).await.map_err(Failure::Close)? {
        return Err(Failure::Close(Error::NoSpace(format!("node {} is at its max_files", node.me()))));
    }
    let store = node.store().clone();
    let mut sink = BlobSink::spawn(move || store.new_blob(ino, content, size));
    let (hash, _) = match transfer::receive_into(conn, &mut sink, size).await {
        Ok(received) => received,
        // The disk filled up: the rest of the stream is read and dropped so
        // that the leader hears why, and can tell the client the cluster is
        // full rather than out of reach.
        Err(e @ Error::NoSpace(_)) if transfer::drain(conn).await => return Err(Failure::Reply(e)),
        Err(e) => return Err(Failure::Close(e)),
    };
    sink.finish(Some(hash)).await.map_err(Failure::Reply)?;
    // A slow holder may finish after its entry was decided without it.
    node.blocking(move |s| s.settle_replicated(&key, version)).await?;
    reply(conn, Response::Done).await
}

/// Another node's line in the status, from what it last said of itself.
fn heard_status(id: NodeId, info: &NodeInfo, role: Option<Role>, alive: bool) -> NodeStatus {
    NodeStatus {
        id,
        addr: info.addr.clone(),
        alive,
        role,
        files: info.files,
        max_files: info.max_files,
        disk_free: info.disk_free,
        disk_total: info.disk_total,
        wanted: info.wanted,
        corrupt: info.corrupt,
        state: MemberState::Active,
        bytes: info.bytes,
        trash_bytes: info.trash_bytes,
    }
}

/// The cluster as this node sees it.
pub fn status(node: &Node) -> StatusReport {
    let view = node.view();
    let members = node.members();
    let mut nodes = Vec::new();
    for (&id, &state) in &members.nodes {
        if id == node.me() {
            let (disk_free, disk_total) = node.store().room();
            nodes.push(NodeStatus {
                id,
                addr: node.cfg().advertise.to_string(),
                alive: true,
                role: Some(view.role),
                files: node.store().files(),
                max_files: node.cfg().max_files,
                disk_free,
                disk_total,
                wanted: node.store().wanted_count(),
                corrupt: node.store().corrupt_count(),
                state,
                bytes: node.store().held_bytes(),
                trash_bytes: node.store().trash_bytes(),
            });
        } else {
            let heard = match view.members.get(&id) {
                Some(m) => heard_status(id, &m.info, m.role, m.alive),
                None => heard_status(id, &NodeInfo::default(), None, false),
            };
            nodes.push(NodeStatus { state, ..heard });
        }
    }
    let leader_info = view.leader.and_then(|l| view.members.get(&l)).map(|m| &m.info);
    let (quorum, under_replicated) = if view.is_leader() {
        (view.quorum, node.health().under_replicated.load(std::sync::atomic::Ordering::Relaxed))
    } else {
        (leader_info.is_some_and(|i| i.ready), leader_info.map(|i| i.under_replicated).unwrap_or(0))
    };
    StatusReport {
        node: node.me(),
        leader: view.leader,
        term: view.term,
        quorum,
        cluster_size: members.len() as u32,
        replicas: node.replica_target() as u32,
        nodes,
        under_replicated,
        candidates: (view.candidates.iter())
            .map(|(id, (info, cluster_size))| Candidate {
                node: heard_status(*id, info, None, true),
                cluster_size: *cluster_size,
            })
            .collect(),
        moving: if view.is_leader() { node.health().moving() } else { Moving::default() },
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
