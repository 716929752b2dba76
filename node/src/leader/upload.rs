//! Upload at the leader: checks, holder choice, then the client's bytes go to
//! this node's disk and to every other holder at once (pipelined fan-out).
//!
//! Two phases: (1) every holder writes the blob to a temp file, checks the
//! hash, fsyncs and renames it into place, and says so; (2) once a majority
//! of the holders have the data, the entry, naming the holders that
//! answered, is committed on a majority of the cluster. Only then is the
//! client told the file is stored. A holder that fails is simply left out.
//!
//! A file of at most [`INLINE_MAX`] bytes skips the first phase: its bytes
//! are checked here and go into its inode record, so one index commit on a
//! majority stores it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use scs_common::conn::{Chunk, Connection};
use scs_common::inode::{NewNode, INLINE_MAX, XATTR_SIZE_MAX, XATTR_TOTAL_MAX};
use scs_common::proto::rpc::{Message, Request, Response, Target, UploadSpec, UPLOAD_MANY_MAX};
use scs_common::{name, namespace, Changed, ContentHash, Error, Ino, Inode, Key, Kind, NodeId, Result, Version};

use super::{
    commit_and_spread, majority_of, meta, now_ns, still_leading, Batch, LeaderState, UploadMark, VersionGuard,
};
use crate::node::Node;
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

/// Where an upload's content goes, as decided when it starts.
enum Plan {
    /// Into an existing file (by path or by inode).
    Into(Ino),
    /// A new file made by the leader for a path, with this inode number.
    NewAtPath(Ino),
    /// A new file with the number the client reserved.
    New { parent: Ino, name: String, ino: Ino },
}

impl Plan {
    fn ino(&self) -> Ino {
        match self {
            Plan::Into(i) | Plan::NewAtPath(i) | Plan::New { ino: i, .. } => *i,
        }
    }
}

/// An upload that passed its checks: its content version and its holders.
pub struct Prepared {
    state: Arc<LeaderState>,
    guard: VersionGuard,
    _mark: UploadMark,
    spec: UploadSpec,
    plan: Plan,
    holders: Vec<(NodeId, String)>,
    /// The content goes into the inode record (at most [`INLINE_MAX`] bytes).
    inline: bool,
}

/// Checks an upload, decides which inode gets the content, and picks its
/// holders; nothing is sent or written yet.
///
/// # Errors
/// `NotLeader`, `NoQuorum`, `BadName`, `NotFound`, `IsDir`, `NotDir`,
/// `Exists`, `Invalid` (an inode number never handed out), `NoSpace`.
pub async fn prepare(node: &Arc<Node>, spec: UploadSpec) -> Result<Prepared> {
    let state = node.writable()?;
    let plan = match &spec.target {
        Target::Path(path) => {
            name::validate(path)?;
            match namespace::resolve(&**node.store(), path, false) {
                Ok(Some(i)) if i.kind == Kind::File => {
                    if spec.exclusive {
                        return Err(Error::Exists(path.clone()));
                    }
                    Plan::Into(i.ino)
                }
                Ok(Some(i)) if i.is_dir() => return Err(Error::IsDir(path.clone())),
                // Missing (or another kind, which it replaces): a new file,
                // and any missing directory on the way, made at the commit.
                Ok(_) | Err(Error::NotFound(_)) => {
                    check_new_file(&spec)?;
                    check_dirs_on_the_way(node, path)?;
                    Plan::NewAtPath(new_ino(node, &state).await?)
                }
                Err(e) => return Err(e),
            }
        }
        Target::Ino(ino) => match node.store().inode(*ino)?.filter(|i| !i.is_trashed()) {
            Some(i) if i.kind == Kind::File => Plan::Into(i.ino),
            Some(i) if i.is_dir() => return Err(Error::IsDir(format!("inode {ino}"))),
            Some(i) => return Err(Error::Invalid(format!("a {} has no content", i.kind.as_str()))),
            None => return Err(Error::NotFound(format!("inode {ino}"))),
        },
        Target::New { parent, name, ino } => {
            name::validate_component(name)?;
            if !meta::was_reserved(node, *ino)? {
                return Err(Error::Invalid(format!("inode {ino} was never reserved")));
            }
            not_removed(node.store().inode_record(*ino)?.as_ref(), name)?;
            match node.store().inode(*parent)? {
                Some(p) if p.is_dir() => {}
                Some(_) => return Err(Error::NotDir(format!("inode {parent}"))),
                None => return Err(Error::NotFound(format!("directory inode {parent}"))),
            }
            if let Some(d) = node.store().dentry(*parent, name)?.filter(|d| d.child != *ino) {
                if spec.exclusive {
                    return Err(Error::Exists(d.name));
                }
                if d.kind == Kind::Dir {
                    return Err(Error::IsDir(d.name));
                }
            }
            check_new_file(&spec)?;
            Plan::New { parent: *parent, name: name.clone(), ino: *ino }
        }
    };
    // An empty file has no blob: only its inode is committed, at the cost
    // of a metadata change rather than a blob on every holder, and it takes
    // no node's room. A small one keeps its bytes in its inode record.
    let inline = spec.size.is_some_and(|s| s > 0 && s <= INLINE_MAX) && inline_allowed(node);
    let holders = if spec.size == Some(0) || inline {
        Vec::new()
    } else {
        super::trash::holders_making_room(node, plan.ino(), spec.size).await?
    };
    let guard = state.allocate();
    let mark = state.mark_upload(Key::of_ino(plan.ino()));
    Ok(Prepared { state, guard, _mark: mark, spec, plan, holders, inline })
}

/// Whether a small file may keep its content in its record. Such a file is
/// kept by every node, so not while any member counts its files against a
/// `max_files`: placement could not keep it off a full one.
fn inline_allowed(node: &Node) -> bool {
    if node.cfg().max_files.is_some() {
        return false;
    }
    let view = node.view();
    node.members()
        .ids()
        .into_iter()
        .filter(|id| *id != node.me())
        .all(|id| view.members.get(&id).is_some_and(|m| m.info.max_files.is_none()))
}

/// What a new file brings along, checked before any byte is taken: a
/// refusal at the commit would leave the bytes on every holder.
fn check_new_file(spec: &UploadSpec) -> Result<()> {
    let mut probe = Inode::new(Ino::NONE, Kind::File, spec.mode, spec.uid, spec.gid, spec.mtime_ns);
    probe.xattrs = spec.xattrs.clone();
    check_xattrs(&probe)
}

/// Checks that every directory on the way to a new file at `path` that
/// exists already is a directory (or a symlink to one), so that making the
/// missing ones at the commit cannot fail on them.
fn check_dirs_on_the_way(node: &Node, path: &str) -> Result<()> {
    let dirs: Vec<&str> = path.split('/').collect();
    let mut at = Ino::ROOT;
    for (i, dir) in dirs.iter().take(dirs.len() - 1).enumerate() {
        let Some(d) = node.store().dentry(at, dir)? else { return Ok(()) };
        at = match d.kind {
            Kind::Dir => d.child,
            Kind::Symlink => {
                let so_far = dirs[..=i].join("/");
                match namespace::resolve(&**node.store(), &so_far, true)? {
                    Some(t) if t.is_dir() => t.ino,
                    Some(_) => return Err(Error::NotDir(so_far)),
                    None => return Err(Error::NotFound(so_far)),
                }
            }
            _ => return Err(Error::NotDir(dirs[..=i].join("/"))),
        };
    }
    Ok(())
}

/// One inode number for a file the leader makes.
async fn new_ino(node: &Arc<Node>, state: &Arc<LeaderState>) -> Result<Ino> {
    for _ in 0..5 {
        super::ensure_inos(node, state, 1).await?;
        let _ns = state.ns.lock().await;
        if let Some(ino) = state.take_inos(1) {
            return Ok(ino);
        }
    }
    Err(Error::Unavailable("inode numbers were taken faster than reserved; try again".into()))
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
        Ok(entry) => Outcome::Stored(Box::new(entry)),
        Err(e) if broken => Outcome::Broken(e),
        Err(e) => Outcome::Failed(e),
    }
}

/// How an upload ended, for the session that carried it.
pub enum Outcome {
    /// The file's inode as committed, and the steps of the directories
    /// whose entries it changed (a new file's).
    Stored(Box<Changed>),
    /// The client's stream was consumed: answer with the error.
    Failed(Error),
    /// The session broke: nothing can be answered.
    Broken(Error),
}

async fn run(node: &Arc<Node>, conn: &mut Connection, prepared: Prepared, broken: &mut bool) -> Result<Changed> {
    let Prepared { state, guard, _mark, spec, plan, holders, inline } = prepared;
    let (ino, content, size) = (plan.ino(), guard.version, spec.size);
    let what = log_name(&spec);
    log::debug!("node {}: upload {what:?} ({size:?} bytes) {content:?} to {holders:?}", node.me());

    let mut local = None;
    let mut remotes = Vec::new();
    let mut acks: JoinSet<(NodeId, Result<()>)> = JoinSet::new();
    for (id, addr) in holders {
        if id == node.me() {
            let store = node.store().clone();
            local = Some(BlobSink::spawn(move || store.new_blob(ino, content, size)));
            continue;
        }
        let (tx, rx) = mpsc::channel(HOLDER_QUEUE);
        let (node2, term) = (node.clone(), state.term);
        acks.spawn(async move { (id, replicate_to(&node2, &addr, term, (ino, content), size, rx).await) });
        remotes.push(Remote { id, tx: Some(tx) });
    }
    let planned = remotes.len() + usize::from(local.is_some());
    let mut dropouts = Dropouts::default();
    if let Err(e) = conn.send_response(Response::Ready).await {
        *broken = true;
        return Err(e);
    }

    // Stream: the client's chunks go to the local writer and every holder,
    // or, inline, here (the announced size bounds them).
    let mut hasher = local.is_none().then(Sha256::new);
    let mut kept = inline.then(Vec::new);
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
                if let Some(k) = kept.as_mut() {
                    k.extend_from_slice(&b);
                }
                if let Err(e) = still_leading(node, &state) {
                    *broken = !drain(conn).await;
                    return Err(e);
                }
                feed_all(&mut remotes, || Feed::Data(b.clone())).await;
                if let Some(sink) = local.as_mut() {
                    if let Err(e) = sink.write(b).await {
                        log::warn!("node {}: local write of {what:?} failed: {e}", node.me());
                        dropouts.add(format!("node {}", node.me()), &e);
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
            Err(e) => {
                log::warn!("node {}: could not keep {what:?}: {e}", node.me());
                dropouts.add(format!("node {}", node.me()), &e);
            }
        }
    } else if let Some(h) = hasher {
        let ours = ContentHash(h.finalize().into());
        if ours != client_hash {
            return Err(Error::Corrupt(format!("received bytes hash to {ours:?}, the client sent {client_hash:?}")));
        }
    }
    let need = if planned == 0 { 0 } else { majority_of(planned) };
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
                    Err(e) => dropouts.add(format!("node {id}"), &e),
                }
            }
            Some(Err(e)) => dropouts.why.push(e.to_string()),
        }
        if durable.len() >= need && grace_deadline.is_none() {
            grace_deadline = Some(tokio::time::Instant::now() + STRAGGLER_GRACE);
        }
    }
    super::detach(acks);
    if durable.len() < need {
        let why = format!("the file reached only {} of {planned} holders ({})", durable.len(), dropouts.why.join("; "));
        // Holders out of room alone kept it off a majority: the cluster
        // is full for this file, not out of reach.
        if planned.saturating_sub(dropouts.out_of_room) < need {
            return Err(Error::NoSpace(why));
        }
        return Err(Error::Unavailable(why));
    }
    durable.sort();
    // Phase 2: commit the content into its inode, checking the target again
    // under the namespace lock.
    let content = if planned == 0 && kept.is_none() { Version::ZERO } else { content };
    let new = content_inode(ino, &spec, (content, received, client_hash), durable, kept);
    if let (Plan::NewAtPath(_), Target::Path(path)) = (&plan, &spec.target) {
        // Numbers for the directories it may make on the way.
        super::ensure_inos(node, &state, path.split('/').count() as u64).await?;
    }
    // With the trash on, a number for the earlier version an overwrite keeps.
    let (ns, keep) = super::meta::lock_with_inos(node, &state, u64::from(node.cfg().keeps_versions())).await?;
    let store = node.store().clone();
    let mut tx = plan_changes(node, &store);
    let stored = match &plan {
        Plan::NewAtPath(_) => {
            let Target::Path(path) = &spec.target else { return Err(Error::Internal("no path".into())) };
            check_xattrs(&new)?;
            let (parent, base) = dirs_for(node, &state, &mut tx, path, &spec).await?;
            namespace::create_file(&mut tx, parent, base, new, spec.exclusive)?
        }
        _ => place(&store, &mut tx, &plan, &spec, new, keep)?,
    };
    let mut batch = Batch::new(&state);
    for r in tx.records() {
        batch.push(r);
    }
    let stored = batch.records.iter().find_map(|r| r.as_inode().filter(|i| i.ino == stored.ino).cloned());
    let stored = stored.ok_or_else(|| Error::Internal("the upload committed no inode".into()))?;
    // Read under the namespace lock, before the batch is in the index.
    let dirs = namespace::dir_steps(&*store, &batch.records)?;
    commit_and_spread(node, &state, batch, ns).await?;
    drop(guard);
    log::debug!("node {}: stored {what:?} {content:?} on {:?} as inode {ino}", node.me(), stored.holders);
    Ok(Changed { inodes: vec![stored], dirs })
}

/// The holders that dropped out of an upload: why, and how many for want
/// of room.
#[derive(Default)]
struct Dropouts {
    why: Vec<String>,
    out_of_room: usize,
}

impl Dropouts {
    fn add(&mut self, who: String, e: &Error) {
        self.out_of_room += usize::from(matches!(e, Error::NoSpace(_)));
        self.why.push(format!("{who}: {e}"));
    }
}

/// The file a committed upload leaves: `spec`'s attributes, and the
/// content (its version, size and hash) on `holders` or `inline`.
fn content_inode(
    ino: Ino,
    spec: &UploadSpec,
    (content, size, hash): (Version, u64, ContentHash),
    holders: Vec<NodeId>,
    inline: Option<Vec<u8>>,
) -> Inode {
    let mut new = Inode::new(ino, Kind::File, spec.mode, spec.uid, spec.gid, spec.mtime_ns);
    (new.atime_ns, new.xattrs) = (spec.atime_ns, spec.xattrs.clone());
    (new.content, new.size, new.hash, new.holders) = (content, size, hash, holders);
    new.inline = inline.map(scs_common::inode::Bytes);
    new
}

/// A change of the namespace as this node's settings shape it.
fn plan_changes<'s>(node: &Node, store: &'s crate::store::Store) -> namespace::Plan<'s, crate::store::Store> {
    namespace::Plan::new(store, now_ns())
        .with_trash(node.cfg().trash.is_some())
        .with_max_versions(node.cfg().max_versions)
}

/// Puts `new` (see [`content_inode`]) into the file an upload by inode or
/// into an existing file planned for, checking the target again.
fn place(
    store: &crate::store::Store,
    tx: &mut namespace::Plan<'_, crate::store::Store>,
    plan: &Plan,
    spec: &UploadSpec,
    new: Inode,
    keep: Option<Ino>,
) -> Result<Inode> {
    match plan {
        Plan::Into(ino) => match &spec.target {
            Target::Path(path) => match namespace::resolve(store, path, false)? {
                Some(i) if i.ino == *ino => namespace::put_content(tx, *ino, &new, keep),
                _ => Err(changed(&log_name(spec))),
            },
            _ => namespace::put_content(tx, *ino, &new, keep),
        },
        Plan::New { parent, name, ino } => {
            // Checked again as `prepare` did: the file may have been stored
            // (by its client's write-back record) and removed while this
            // upload's bytes were on their way.
            let record = store.inode_record(*ino)?;
            not_removed(record.as_ref(), name)?;
            match record {
                // An earlier attempt stored it (its answer was lost), or its
                // client's write-back record did while it streamed; it may
                // have been renamed since: the content goes into it.
                Some(_) => namespace::put_content(tx, *ino, &new, keep),
                None => {
                    check_xattrs(&new)?;
                    namespace::create_file(tx, *parent, name, new, spec.exclusive)
                }
            }
        }
        Plan::NewAtPath(_) => Err(Error::Internal("a new file at a path is placed with its directories".into())),
    }
}

/// A new file's inode made and removed since (elsewhere; in the trash or
/// gone) must not come back: not by a late copy of its first upload (a
/// journal replayed after a power cut), nor by a stream that outlived it.
fn not_removed(record: Option<&Inode>, name: &str) -> Result<()> {
    match record {
        Some(i) if i.deleted || i.is_trashed() => {
            Err(Error::NotFound(format!("{name}: its inode {} was removed", i.ino)))
        }
        _ => Ok(()),
    }
}

/// How an [`receive_many`] ended, for the session that carried it.
pub enum Many {
    /// Each file's answer, in order: its inode, and the steps of the
    /// directories the change that committed it made (of the whole batch).
    Each(Vec<Result<Changed>>),
    /// Nothing was stored: answer with the error.
    Failed(Error),
    /// The session broke, or its stream cannot be followed: hang up.
    Broken(Error),
}

/// Stores several small files sent in one exchange (`UploadMany`). Each is
/// checked as an upload of its own; their bytes come after one `Ready`;
/// those whose bytes arrived whole and match their hash are committed
/// together, as one change. A file refused (at its checks, its bytes or
/// the commit) does not stop the others.
pub async fn receive_many(node: &Arc<Node>, conn: &mut Connection, specs: Vec<UploadSpec>) -> Many {
    if let Err(e) = check_many(&specs) {
        return Many::Failed(e);
    }
    // Not leading (or no quorum): refused as a whole, before any byte.
    if let Err(e) = node.writable() {
        return Many::Failed(e);
    }
    if !inline_allowed(node) {
        return Many::Failed(Error::Invalid("small files go one at a time here (a member counts max_files)".into()));
    }
    let sizes: Vec<u64> = specs.iter().map(|s| s.size.unwrap_or(0)).collect();
    let mut prepared = Vec::with_capacity(specs.len());
    for spec in specs {
        prepared.push(prepare(node, spec).await);
    }
    if let Err(e) = conn.send_response(Response::Ready).await {
        return Many::Broken(e);
    }
    let mut arrived = Vec::with_capacity(prepared.len());
    for (p, size) in prepared.into_iter().zip(sizes) {
        let (bytes, hash) = match receive_small(conn, size).await {
            Ok(got) => got,
            Err(e) => return Many::Broken(e),
        };
        let at = arrived.len();
        arrived.push(p.and_then(|prepared| {
            if bytes.len() as u64 != size {
                return Err(Error::Invalid(format!("{} bytes arrived, {size} were announced", bytes.len())));
            }
            let ours = ContentHash(Sha256::digest(&bytes).into());
            if ours != hash {
                return Err(Error::Corrupt(format!("received bytes hash to {ours:?}, the client sent {hash:?}")));
            }
            if size > 0 && !prepared.inline {
                // Placement changed since the checks above.
                return Err(Error::Unavailable("this file must go up alone; try again".into()));
            }
            Ok(Arrived { at, prepared, bytes, hash })
        }));
    }
    Many::Each(commit_many(node, arrived).await)
}

/// The checks of an `UploadMany` as a whole.
fn check_many(specs: &[UploadSpec]) -> Result<()> {
    if specs.is_empty() || specs.len() > UPLOAD_MANY_MAX {
        return Err(Error::Invalid(format!("an upload of many takes 1 to {UPLOAD_MANY_MAX} files")));
    }
    let mut inos = std::collections::HashSet::new();
    for spec in specs {
        if spec.size.is_none_or(|s| s > INLINE_MAX) {
            return Err(Error::Invalid(format!("an upload of many takes files of up to {INLINE_MAX} bytes")));
        }
        let ino = match &spec.target {
            Target::Ino(ino) | Target::New { ino, .. } => *ino,
            Target::Path(_) => return Err(Error::Invalid("an upload of many takes files by inode".into())),
        };
        if !inos.insert(ino) {
            return Err(Error::Invalid(format!("inode {ino} is twice in one upload")));
        }
    }
    Ok(())
}

/// One small file's bytes and hash, at most `size` bytes (a stream that
/// sends more cannot be followed).
async fn receive_small(conn: &mut Connection, size: u64) -> Result<(Vec<u8>, ContentHash)> {
    let mut bytes = Vec::with_capacity(size as usize);
    loop {
        match conn.recv_chunk().await? {
            Chunk::Data(b) => {
                if (bytes.len() + b.len()) as u64 > size {
                    return Err(Error::Invalid(format!("more than the announced {size} bytes arrived")));
                }
                bytes.extend_from_slice(&b);
            }
            Chunk::End(hash) => return Ok((bytes, hash)),
        }
    }
}

/// A file of an upload of many whose bytes arrived whole: the `at`th.
struct Arrived {
    at: usize,
    prepared: Prepared,
    bytes: Vec<u8>,
    hash: ContentHash,
}

/// Commits the files of an upload of many in one change, under one hold
/// of the namespace lock. A file its target refuses (changed meanwhile) is
/// left out and the change planned again without it.
async fn commit_many(node: &Arc<Node>, arrived: Vec<Result<Arrived>>) -> Vec<Result<Changed>> {
    let mut results: Vec<Option<Result<Changed>>> = Vec::with_capacity(arrived.len());
    let mut items = Vec::new();
    for a in arrived {
        match a {
            Ok(item) => {
                results.push(None);
                items.push(item);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    if let Some(state) = items.first().map(|a| a.prepared.state.clone()) {
        let outcome = commit_items(node, &state, &items).await;
        for (i, res) in outcome {
            results[i] = Some(res);
        }
    }
    drop(items);
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Internal("a file of the batch had no answer".into()))))
        .collect()
}

async fn commit_items(node: &Arc<Node>, state: &Arc<LeaderState>, items: &[Arrived]) -> Vec<(usize, Result<Changed>)> {
    let fail_all = |e: Error| items.iter().map(|a| (a.at, Err(e.clone()))).collect::<Vec<_>>();
    if let Err(e) = still_leading(node, state) {
        return fail_all(e);
    }
    let keeps = node.cfg().keeps_versions();
    let (ns, first_keep) =
        match super::meta::lock_with_inos(node, state, if keeps { items.len() as u64 } else { 0 }).await {
            Ok(got) => got,
            Err(e) => return fail_all(e),
        };
    let store = node.store().clone();
    let mut out = Vec::new();
    let mut left: Vec<usize> = (0..items.len()).collect();
    loop {
        let mut tx = plan_changes(node, &store);
        let mut placed = Vec::new();
        let mut refused = None;
        for &k in &left {
            let Arrived { prepared: p, bytes, hash, .. } = &items[k];
            let content = if p.inline { p.guard.version } else { Version::ZERO };
            let inline = p.inline.then(|| bytes.clone());
            let new = content_inode(p.plan.ino(), &p.spec, (content, bytes.len() as u64, *hash), Vec::new(), inline);
            let keep = first_keep.map(|f| Ino(f.0 + k as u64));
            match place(&store, &mut tx, &p.plan, &p.spec, new, keep) {
                Ok(i) => placed.push((k, i.ino)),
                Err(e) => {
                    refused = Some((k, e));
                    break;
                }
            }
        }
        if let Some((k, e)) = refused {
            // What the plan did for it is thrown away with the plan.
            out.push((items[k].at, Err(e)));
            left.retain(|&x| x != k);
            if left.is_empty() {
                return out;
            }
            continue;
        }
        let mut batch = Batch::new(state);
        for r in tx.records() {
            batch.push(r);
        }
        let stored: Vec<(usize, Option<Inode>)> = placed
            .iter()
            .map(|&(k, ino)| {
                (k, batch.records.iter().rev().find_map(|r| r.as_inode().filter(|i| i.ino == ino).cloned()))
            })
            .collect();
        // Read under the namespace lock, before the batch is in the index.
        let dirs = match namespace::dir_steps(&*store, &batch.records) {
            Ok(dirs) => dirs,
            Err(e) => return fail_all(e),
        };
        match commit_and_spread(node, state, batch, ns).await {
            Ok(()) => {
                for (k, inode) in stored {
                    let p = &items[k].prepared;
                    log::debug!(
                        "node {}: stored {:?} (one of many) as inode {}",
                        node.me(),
                        log_name(&p.spec),
                        p.plan.ino()
                    );
                    let changed = inode.map(|i| Changed { inodes: vec![i], dirs: dirs.clone() });
                    out.push((
                        items[k].at,
                        changed.ok_or_else(|| Error::Internal("the upload committed no inode".into())),
                    ));
                }
            }
            Err(e) => out.extend(left.iter().map(|&k| (items[k].at, Err(e.clone())))),
        }
        return out;
    }
}

/// The directory a path upload goes into, made with its missing ancestors
/// (as mkdir -p, owned by the uploader), and the file's name in it.
async fn dirs_for<'p>(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    tx: &mut namespace::Plan<'_, crate::store::Store>,
    path: &'p str,
    spec: &UploadSpec,
) -> Result<(Ino, &'p str)> {
    let mut at = Ino::ROOT;
    for dir in path.split('/').take(path.split('/').count() - 1) {
        at = match tx.dentry(at, dir)? {
            Some(d) if d.kind == Kind::Dir => d.child,
            Some(d) if d.kind == Kind::Symlink => {
                let so_far = &path[..path.find(dir).unwrap_or(0) + dir.len()];
                match namespace::resolve(&**node.store(), so_far, true)? {
                    Some(i) if i.is_dir() => i.ino,
                    _ => return Err(Error::NotDir(so_far.to_string())),
                }
            }
            Some(_) => return Err(Error::NotDir(dir.to_string())),
            None => {
                // The lock is held: numbers reserved before it was taken may be gone.
                let ino = state
                    .take_inos(1)
                    .ok_or_else(|| Error::Unavailable("no inode number at hand for a directory; try again".into()))?;
                let dir_node = NewNode {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: spec.uid,
                    gid: spec.gid,
                    rdev: 0,
                    target: String::new(),
                };
                namespace::make(tx, at, dir, &dir_node, ino)?.ino
            }
        };
    }
    Ok((at, name::base(path)))
}

/// Checks the extended attributes a new file brings along.
fn check_xattrs(i: &Inode) -> Result<()> {
    for (k, v) in &i.xattrs {
        namespace::check_xattr_name(k)?;
        if v.0.len() > XATTR_SIZE_MAX {
            return Err(Error::TooBig(format!("attribute {k} is over {XATTR_SIZE_MAX} bytes")));
        }
    }
    if i.xattr_bytes() > XATTR_TOTAL_MAX {
        return Err(Error::NoSpace(format!("an inode keeps at most {XATTR_TOTAL_MAX} bytes of attributes")));
    }
    Ok(())
}

/// The target of an upload changed under it (renamed or replaced): the
/// client sends it again, and it goes to what is there now.
fn changed(what: &str) -> Error {
    Error::Unavailable(format!("{what} changed while it was being uploaded; try again"))
}

/// What the logs call an upload's target: its path or name when it has one
/// (the fault suite matches uploads and acknowledgements by it).
fn log_name(spec: &UploadSpec) -> String {
    match &spec.target {
        Target::Path(p) => p.clone(),
        Target::Ino(i) => format!("inode {i}"),
        Target::New { name, .. } => name.clone(),
    }
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
    (ino, content): (Ino, Version),
    size: Option<u64>,
    mut rx: mpsc::Receiver<Feed>,
) -> Result<()> {
    let mut conn = node.peers().get(addr).await?;
    // Every write is bounded: a holder that stops reading (frozen, cut off
    // without a reset) is dropped instead of holding the upload forever.
    let stalled = || Error::Unavailable(format!("holder {addr} stopped taking data"));
    let request = Message::Request(Request::Replicate { term, leader: node.me(), ino, content, size });
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
            node.peers().put(addr, conn);
            Ok(())
        }
        other => Err(Error::Protocol(format!("unexpected answer to replicate: {other:?}"))),
    }
}
