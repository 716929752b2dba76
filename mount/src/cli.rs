//! `scs`: the SCS client as a command line. Exit 0 on success, 1 on an error
//! (one line on stderr, `scs: ...`), 2 on bad usage.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use scs_common::inode::{NewNode, Removal};
use scs_common::name;
use scs_common::proto::gossip::Role;
use scs_common::proto::rpc::{MemberChange, Moving, StatusReport, Target, UploadSpec};
use scs_common::{Error, Inode, Kind, MemberState, NodeId, Result};

use out::say;

use crate::client::{self, own_gid, own_uid, Client, ClientOptions, Sink};

mod out;
mod trash;
mod versions;
use crate::client_config::{self, ClientFile, Given};

/// Files larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_MIN: u64 = 4 << 20;
/// How often `scs node drain` asks the leader how far the drain is.
const DRAIN_POLL: Duration = Duration::from_secs(1);
/// How often `scs node drain` prints a line when stderr is not a terminal.
const DRAIN_LINE_EVERY: Duration = Duration::from_secs(5);
/// The leader counts what is left to move every 2 s. A count made before a
/// drain was committed (or by a leader that just took over) says "nothing
/// left" for nothing counted yet, so "nothing left" is believed only from
/// reports this long after the commit or the last change of leader.
const MOVING_COUNT_LAG: Duration = Duration::from_secs(5);

const CONFIG_HELP: &str = "\
Where the cluster is: by default the client listens for the nodes' heartbeats
on the multicast group. Where there is no multicast (cloud networks, VPNs),
name one or more nodes with --node; the client asks them for the other
members and follows the leader from then on.

Defaults for --node, --group, --iface and --secret-file can be kept in
$XDG_CONFIG_HOME/scs/client.toml (else ~/.config/scs/client.toml), e.g.
  nodes = [\"10.0.0.1:7781\", \"10.0.0.2:7781\"]
  secret_file = \"/etc/scs/cluster.key\"
(also group = \"G\", iface = \"I\"). Flags override the file; --group or
--iface on the command line listen on the group even when the file names nodes.";

/// The SCS command line client.
#[derive(Parser, Debug)]
#[command(
    name = "scs",
    version,
    about = "Simple Cloud Storage: upload, download and manage files in an SCS cluster",
    after_help = CONFIG_HELP
)]
pub struct Args {
    /// Multicast group the cluster's heartbeats are on [default: 239.255.77.77:7777]
    #[arg(long, global = true, value_name = "G")]
    group: Option<String>,
    /// IPv4 address of the interface to listen for heartbeats on [default: 127.0.0.1]
    #[arg(long, global = true, value_name = "I")]
    iface: Option<String>,
    /// Ask this node (HOST:PORT) where the leader is instead of listening
    /// for heartbeats; repeat it, or give a comma-separated list, to name
    /// several (the other members are learned from them)
    #[arg(long, global = true, value_name = "HOST:PORT", value_delimiter = ',')]
    node: Vec<String>,
    /// The cluster key [default: secret_file in client.toml, else
    /// /etc/scs/cluster.key as root, else ~/.config/scs/cluster.key]
    #[arg(long, global = true, value_name = "F")]
    secret_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload a local file (REMOTE defaults to its file name; a REMOTE ending in / is a directory), or
    /// stdin with - (REMOTE then names the file)
    Upload { local: PathBuf, remote: Option<String> },
    /// Download a file (to LOCAL, a directory, or - for stdout)
    Download {
        remote: String,
        local: Option<String>,
        /// An earlier version of it (see scs versions)
        #[arg(long, value_name = "V")]
        version: Option<u32>,
    },
    /// Delete a file or an empty directory (it stays in the trash for
    /// trash_hours: see scs trash)
    #[command(visible_alias = "rm")]
    Delete { remote: String },
    /// List a directory (the root by default)
    #[command(visible_alias = "view-directory")]
    Ls {
        prefix: Option<String>,
        /// Print a JSON list of {name, size, mtime, kind}
        #[arg(long)]
        json: bool,
    },
    /// Make a directory
    Mkdir {
        name: String,
        /// Make missing parent directories too, and do not fail if it exists
        #[arg(short, long)]
        parents: bool,
    },
    /// Move or rename a file or directory (replacing a file at TO)
    Mv { from: String, to: String },
    /// Make LINK a new name of the file TARGET (a hard link), or with -s a symlink whose target is TARGET
    Ln {
        target: String,
        link: String,
        /// Make a symbolic link: TARGET is stored as it is given
        #[arg(short, long)]
        symbolic: bool,
    },
    /// Members, leader, term, quorum and files per node
    Status {
        /// Print one JSON object
        #[arg(long)]
        json: bool,
        /// For monitoring: print one line and exit 0 when healthy, 1 when
        /// degraded (a member down, files below their replica target, copies
        /// being repaired), 2 with no quorum or no answer
        #[arg(long, conflicts_with = "json")]
        check: bool,
    },
    /// The earlier versions of a file that overwrites left in the trash:
    /// when each was replaced, its mtime and size (1 is the oldest kept)
    Versions {
        path: String,
        /// Print a JSON list of {version, size, mtime, mtime_ns, replaced, replaced_ns, ino}, the oldest first
        #[arg(long)]
        json: bool,
    },
    /// Make an earlier version of a file its content again (the content it
    /// replaces is kept as a version in its turn)
    Restore {
        path: String,
        /// The version to bring back (see scs versions)
        #[arg(long, value_name = "V")]
        version: u32,
    },
    /// What was removed: list it, restore it, or purge it for good
    Trash {
        #[command(subcommand)]
        cmd: trash::TrashCommand,
    },
    /// Change the members, one node at a time: add, drain, remove
    Node {
        #[command(subcommand)]
        change: NodeCommand,
    },
}

/// `scs node ...`: each is one change of the membership, committed by the leader.
#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Make a candidate a member (a node started with the cluster key and an
    /// unused id: `scs status` lists it as a candidate)
    Add {
        /// The node's id (a positive integer)
        #[arg(value_name = "ID", value_parser = node_id)]
        id: NodeId,
    },
    /// Give a member no new copies and make its copies again on the others,
    /// then wait until none is left to move
    ///
    /// Progress is shown until the node holds nothing the others lack; then
    /// `scs node remove ID` takes it out. Ctrl-C (or --timeout) only stops
    /// the waiting: the drain goes on in the cluster, and `scs status` shows
    /// what is left to move.
    Drain {
        /// The node's id (a positive integer)
        #[arg(value_name = "ID", value_parser = node_id)]
        id: NodeId,
        /// Stop waiting after SECS and exit 1 (the drain goes on) [default: wait until done]
        #[arg(long, value_name = "SECS", conflicts_with = "no_wait")]
        timeout: Option<u64>,
        /// Return once the drain is committed, without waiting for the copies
        #[arg(long)]
        no_wait: bool,
    },
    /// Take a member out (refused while it holds copies the others lack: drain it first)
    Remove {
        /// Remove it even so, for a machine lost for good: its copies are made again from the others
        #[arg(long)]
        force: bool,
        /// The node's id (a positive integer)
        #[arg(value_name = "ID", value_parser = node_id)]
        id: NodeId,
    },
}

impl NodeCommand {
    fn change(&self) -> MemberChange {
        match *self {
            NodeCommand::Add { id } => MemberChange::Add(id),
            NodeCommand::Drain { id, .. } => MemberChange::Drain(id),
            NodeCommand::Remove { id, force } => MemberChange::Remove { id, force },
        }
    }
}

/// A node id as typed: a positive integer.
fn node_id(s: &str) -> std::result::Result<NodeId, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(NodeId(n)),
        _ => Err(format!("{s:?} is not a node id (a positive integer)")),
    }
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    // `scs ls | head`: end quietly when the reader goes away, as other Unix
    // tools do, rather than panic on the failed print (Rust ignores
    // SIGPIPE by default). Sockets are unaffected: they send with MSG_NOSIGNAL.
    // SAFETY: setting a signal's disposition to its default, before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&Error::Internal(e.to_string())),
    };
    let code = if matches!(args.command, Command::Status { check: true, .. }) {
        runtime.block_on(check(&args))
    } else if let Command::Node { change } = &args.command {
        runtime.block_on(change_members(&args, change))
    } else {
        // Ctrl-C drops the command, and with it a download's partial file.
        let ran = runtime.block_on(async {
            tokio::select! {
                r = run(args) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        match ran {
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(e)) => fail(&e),
            None => {
                // The threads of a download drop its partial file as they
                // end; one reading stdin may never end, so not for long.
                runtime.shutdown_timeout(Duration::from_secs(1));
                return ExitCode::from(130);
            }
        }
    };
    match out::finish() {
        Some(e) => fail(&Error::Local(format!("cannot write the output: {e}"))),
        None => code,
    }
}

fn fail(e: &Error) -> ExitCode {
    fail_with(&e.to_string())
}

/// An error that is not one of the library's (a wait that ran out).
fn fail_with(line: &str) -> ExitCode {
    eprintln!("scs: {line}");
    ExitCode::from(1)
}

/// The flags, over the client config file.
fn options(args: &Args) -> Result<ClientOptions> {
    let given = Given {
        nodes: args.node.clone(),
        group: args.group.clone(),
        iface: args.iface.clone(),
        secret_file: args.secret_file.clone(),
    };
    client_config::resolve(given, ClientFile::load_default()?)
}

/// A remote name as typed, normalized and checked ("" = root where allowed).
/// A name typed with a trailing slash must be a directory, as with the
/// shell's tools (`rm file/` says "Not a directory"); whether it had one.
///
/// # Errors
/// `NotDir` when `path` (as typed: `input`) ends in a slash and is not a
/// directory, or is missing.
async fn must_be_dir(client: &Client, path: &str, input: &str) -> Result<bool> {
    if !input.ends_with('/') || path.is_empty() {
        return Ok(false);
    }
    match client.resolve(path, true).await {
        Ok(Some(i)) if i.is_dir() => Ok(true),
        Ok(_) | Err(Error::NotFound(_)) => Err(Error::NotDir(input.to_string())),
        Err(e) => Err(e),
    }
}

fn remote_name(input: &str) -> Result<String> {
    let n = name::normalize(input)?;
    if n.is_empty() {
        return Err(Error::BadName(format!("{input:?} names the root, not a file")));
    }
    Ok(n)
}

async fn run(args: Args) -> Result<()> {
    let client = Client::new(options(&args)?)?;
    match args.command {
        Command::Upload { local, remote } if local.as_os_str() == "-" => {
            let remote = remote
                .ok_or_else(|| Error::BadName("upload - reads stdin: give the REMOTE name to store it as".into()))?;
            let target = remote_name(&remote)?;
            if remote.ends_with('/')
                || client.resolve(&target, true).await.is_ok_and(|at| at.is_some_and(|i| i.is_dir()))
            {
                return Err(Error::IsDir(format!("{target} (upload - needs a file name)")));
            }
            let spec = UploadSpec::new(Target::Path(target.clone()), None, 0o644, client::now_ns());
            let e = client.upload_once_read(spec, Box::new(std::io::stdin()), None).await?;
            if std::io::stderr().is_terminal() {
                eprintln!("stored {target} ({} bytes, inode {}) {}", e.size, e.ino, kept_on(&e));
            }
            Ok(())
        }
        Command::Upload { local, remote } => {
            let base = local
                .file_name()
                .map(|b| b.to_string_lossy().to_string())
                .ok_or_else(|| Error::BadName(format!("{} has no file name", local.display())))?;
            let target = match remote.as_deref() {
                None => base.clone(),
                Some(r) if r.ends_with('/') => name::join(&name::normalize(r)?, &base),
                Some(r) => r.to_string(),
            };
            let mut target = remote_name(&target)?;
            let meta = std::fs::metadata(&local)
                .map_err(|e| Error::Local(format!("cannot read {}: {}", local.display(), io_reason(&e))))?;
            if meta.is_dir() {
                return Err(Error::IsDir(format!("{} (upload takes files)", local.display())));
            }
            // Like cp: a target that is an existing directory receives the file.
            let at = match client.resolve(&target, true).await {
                Err(Error::NotFound(_)) => None,
                other => other?,
            };
            if remote.is_some() && at.is_some_and(|e| e.is_dir()) {
                target = name::join(&target, &base);
            }
            let size = meta.len();
            let bar = progress_bar(size, &format!("upload {target}"));
            let tick = |n: u64| bar.as_ref().map_or((), |b| b.set_position(n));
            let e = client.upload_file(&local, &target, Some(&tick)).await?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if std::io::stderr().is_terminal() {
                eprintln!("stored {target} ({} bytes, inode {}) {}", e.size, e.ino, kept_on(&e));
            }
            Ok(())
        }
        Command::Download { remote: given, local, version } => {
            let remote = remote_name(&given)?;
            must_be_dir(&client, &remote, &given).await?;
            let sink = match local.as_deref() {
                Some("-") => Sink::Stdout,
                Some(l) if Path::new(l).is_dir() => Sink::File(Path::new(l).join(name::base(&remote))),
                // A trailing slash asks for a directory, as with `cp`.
                Some(l) if l.ends_with('/') => return Err(Error::NotDir(l.to_string())),
                Some(l) => Sink::File(PathBuf::from(l)),
                None => Sink::File(PathBuf::from(name::base(&remote))),
            };
            let earlier = match version {
                Some(n) => Some(versions::pick(&client, &remote, n).await?.1),
                None => None,
            };
            let bar = if matches!(sink, Sink::Stdout) || !std::io::stderr().is_terminal() {
                None
            } else {
                // The size is only needed for a progress bar: no extra round trip otherwise.
                let size = match &earlier {
                    Some(v) => v.size,
                    None => client.resolve(&remote, true).await?.map(|e| e.size).unwrap_or(0),
                };
                progress_bar(size, &format!("download {remote}"))
            };
            let tick = |n: u64| bar.as_ref().map_or((), |b| b.set_position(n));
            match &earlier {
                Some(v) => client.download_ino(v.ino, sink, Some(&tick)).await?,
                None => client.download(&remote, sink, Some(&tick)).await?,
            };
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            Ok(())
        }
        Command::Delete { remote } => {
            let path = remote_name(&remote)?;
            must_be_dir(&client, &path, &remote).await?;
            client.delete(&path, Removal::Any).await
        }
        Command::Ls { prefix, json } => {
            let given = prefix.as_deref().unwrap_or("");
            let dir = name::normalize(given)?;
            // A symlink is listed as itself, as ls does (LINK/ lists where it leads).
            if !dir.is_empty() && !given.ends_with('/') {
                if let Ok(Some(link)) = client.resolve(&dir, false).await.map(|i| i.filter(|i| i.kind == Kind::Symlink))
                {
                    print_entries(&[(dir.clone(), &link)], json);
                    return Ok(());
                }
            }
            let (at, children) = client.list(&dir).await?;
            // A path that names a file lists that file under its own name.
            let shown: Vec<(String, &Inode)> = if at.is_dir() {
                children.iter().map(|c| (name::join(&dir, &c.name), &c.inode)).collect()
            } else {
                children.iter().map(|c| (dir.clone(), &c.inode)).collect()
            };
            print_entries(&shown, json);
            Ok(())
        }
        Command::Mkdir { name, parents } => client.mkdir(&remote_name(&name)?, 0o755, parents).await.map(|_| ()),
        Command::Mv { from, to } => {
            let (from_path, to_path) = (remote_name(&from)?, remote_name(&to)?);
            must_be_dir(&client, &from_path, &from).await?;
            must_be_dir(&client, &to_path, &to).await?;
            client.mv(&from_path, &to_path).await
        }
        Command::Ln { target, link, symbolic } => {
            let mut link_path = remote_name(&link)?;
            // As with ln: LINK/ is a directory the link goes in.
            if must_be_dir(&client, &link_path, &link).await? {
                let base = target.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
                link_path = name::join(&link_path, name::validate_component(base)?);
            }
            let (parent, name) = client.parent_of(&link_path).await?;
            if symbolic {
                let node =
                    NewNode { kind: Kind::Symlink, mode: 0o777, uid: own_uid(), gid: own_gid(), rdev: 0, target };
                return client.make(parent.ino, &name, &node).await.map(|_| ());
            }
            let target = remote_name(&target)?;
            let at = client.resolve(&target, false).await?.ok_or_else(|| Error::NotFound(target.clone()))?;
            if at.is_dir() {
                return Err(Error::NotPermitted(format!("{target} is a directory: it cannot have a second name")));
            }
            client.link(at.ino, parent.ino, &name).await.map(|_| ())
        }
        Command::Status { json, .. } => {
            let report = status(&client).await?;
            if json {
                say!("{}", status_json(&report));
            } else {
                print_status(&report);
            }
            Ok(())
        }
        Command::Versions { path, json } => versions::list(&client, &remote_name(&path)?, json).await,
        Command::Restore { path, version } => {
            let path = remote_name(&path)?;
            let (file, v) = versions::pick(&client, &path, version).await?;
            let now = client.restore_version(file.ino, &v).await?;
            if std::io::stderr().is_terminal() {
                eprintln!("{path} has the content of version {version} again ({} bytes)", now.size);
            }
            Ok(())
        }
        Command::Trash { cmd } => trash::run(&client, cmd).await,
        Command::Node { .. } => Err(Error::Internal("scs node is run apart".into())),
    }
}

/// `scs node add|drain|remove`: one change of the membership, and then what
/// became of it. Apart from `run` because a drain's wait can run out, which
/// is a failure (exit 1) but not an error of the cluster.
async fn change_members(args: &Args, cmd: &NodeCommand) -> ExitCode {
    let client = match options(args).and_then(Client::new) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    // Only to word the answer: an add of a node already active changes nothing.
    let was_active = match *cmd {
        NodeCommand::Add { id } => client
            .leader_status()
            .await
            .is_ok_and(|s| s.nodes.iter().any(|n| n.id == id && n.state == MemberState::Active)),
        _ => false,
    };
    if let Err(e) = client.change_members(cmd.change()).await {
        return fail(&member_error(e));
    }
    match *cmd {
        NodeCommand::Add { id } if was_active => {
            say!("node {id} is already a member{}", members_now(&client).await)
        }
        NodeCommand::Add { id } => say!("node {id} is a member now{}", members_now(&client).await),
        NodeCommand::Drain { id, no_wait: true, .. } => {
            say!("node {id} is draining: scs status shows what is left to move")
        }
        NodeCommand::Drain { id, timeout, .. } => {
            match follow_drain(&client, id, timeout.map(Duration::from_secs)).await {
                Ok(DrainEnd::Drained) => say!("node {id} is drained: remove it with scs node remove {id}"),
                Ok(DrainEnd::TimedOut { waited, left }) => {
                    return fail_with(&format!(
                        "node {id} is still draining after {}s ({}); the drain goes on",
                        waited.as_secs(),
                        moving_left(&left)
                    ))
                }
                Ok(DrainEnd::Stopped(why)) => return fail_with(&why),
                Err(e) => return fail(&e),
            }
        }
        NodeCommand::Remove { id, .. } => say!(
            "node {id} is no longer a member{}; stop it and wipe its data_dir before reusing the machine",
            members_now(&client).await
        ),
    }
    ExitCode::SUCCESS
}

/// The leader answers "no such member" as `NotFound`, whose message is
/// about files ("no such file: ..."): said plainly instead.
fn member_error(e: Error) -> Error {
    match e {
        Error::NotFound(m) => Error::Invalid(m),
        e => e,
    }
}

/// " (4 members)" after a change, from the leader; nothing when it cannot
/// be asked (the change itself is committed, so that is no failure).
async fn members_now(client: &Client) -> String {
    match client.leader_status().await {
        Ok(s) => format!(" ({})", count(s.nodes.len() as u64, "member", "members")),
        Err(e) => {
            log::warn!("the change is committed, but the leader did not say how many members there are: {e}");
            String::new()
        }
    }
}

/// How waiting for a drain ended.
#[derive(Debug)]
enum DrainEnd {
    /// Nothing is left to move off the node: it can be removed.
    Drained,
    /// The wait ran out with this left to move; the drain goes on.
    TimedOut { waited: Duration, left: Moving },
    /// The node is no longer a draining member; why.
    Stopped(String),
}

/// Where a drain stands in one report of the leader.
#[derive(Debug, PartialEq)]
enum DrainStep {
    Done,
    Left(Moving),
    Stopped(String),
}

/// Where the drain of `id` stands in the leader's report `s`. `counted`:
/// the report's `moving` comes from a count made since the drain was
/// committed (see [`MOVING_COUNT_LAG`]).
fn drain_step(s: &StatusReport, id: NodeId, counted: bool) -> DrainStep {
    let Some(node) = s.nodes.iter().find(|n| n.id == id) else {
        return DrainStep::Stopped(format!("node {id} is no longer a member (removed while draining)"));
    };
    match node.state {
        MemberState::Draining if counted && s.moving.files == 0 => DrainStep::Done,
        MemberState::Active if counted => {
            DrainStep::Stopped(format!("node {id} is active again: its drain was called off"))
        }
        _ => DrainStep::Left(s.moving.clone()),
    }
}

/// Asks the leader every [`DRAIN_POLL`] how far the drain of `id` is and
/// shows it, until nothing is left to move or `limit` has passed.
async fn follow_drain(client: &Client, id: NodeId, limit: Option<Duration>) -> Result<DrainEnd> {
    let started = Instant::now();
    let mut counted_from = started + MOVING_COUNT_LAG;
    let mut term = None;
    let mut shown = DrainShown::new(id);
    loop {
        let s = client.leader_status().await?;
        let now = Instant::now();
        // A new leader's first count may predate what it knows of the drain.
        if term.is_some_and(|t| t != s.term) {
            counted_from = counted_from.max(now + MOVING_COUNT_LAG);
        }
        term = Some(s.term);
        let left = match drain_step(&s, id, now >= counted_from) {
            DrainStep::Done => {
                shown.finish();
                return Ok(DrainEnd::Drained);
            }
            DrainStep::Stopped(why) => {
                shown.finish();
                return Ok(DrainEnd::Stopped(why));
            }
            DrainStep::Left(left) => left,
        };
        shown.update(&left, now >= counted_from, now);
        let waited = now - started;
        let pause = match limit {
            Some(limit) if waited >= limit => {
                shown.finish();
                return Ok(DrainEnd::TimedOut { waited, left });
            }
            Some(limit) => DRAIN_POLL.min(limit - waited),
            None => DRAIN_POLL,
        };
        tokio::time::sleep(pause).await;
    }
}

/// The progress of a drain on stderr: a bar on a terminal, else a line
/// every [`DRAIN_LINE_EVERY`].
struct DrainShown {
    id: NodeId,
    bar: Option<indicatif::ProgressBar>,
    last_line: Option<Instant>,
}

impl DrainShown {
    fn new(id: NodeId) -> DrainShown {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(format!("draining node {id}"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        DrainShown { id, bar, last_line: None }
    }

    /// Shows what is left; `counted` as for [`drain_step`].
    fn update(&mut self, left: &Moving, counted: bool, now: Instant) {
        let what = if counted || left.files > 0 { moving_left(left) } else { "counting what is left to move".into() };
        if let Some(bar) = &self.bar {
            // The bar spans the most ever seen left, so it fills as copies move.
            let total = bar.length().unwrap_or(0).max(left.bytes);
            bar.set_length(total);
            bar.set_position(total - left.bytes);
            bar.set_message(what);
        } else if self.last_line.is_none_or(|t| now >= t + DRAIN_LINE_EVERY) {
            eprintln!("draining node {}: {what}", self.id);
            self.last_line = Some(now);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `scs status --check`: one line, and the exit code monitoring expects.
async fn check(args: &Args) -> ExitCode {
    let report = match Client::new(match options(args) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    }) {
        Ok(client) => status(&client).await,
        Err(e) => Err(e),
    };
    let (code, line) = match report {
        Ok(s) => health(&s),
        Err(e @ (Error::Auth(_) | Error::Config(_))) => return fail(&e),
        Err(e) => (2, format!("CRITICAL: no answer from the cluster ({e})")),
    };
    say!("{line}");
    ExitCode::from(code)
}

/// The state of the cluster for a monitoring check: 0 healthy, 1 degraded,
/// 2 without quorum; and a line saying why.
fn health(s: &StatusReport) -> (u8, String) {
    let alive = s.nodes.iter().filter(|n| n.alive).count();
    let members = format!("{alive} of {} members alive", s.cluster_size);
    let Some(leader) = s.leader.filter(|_| s.quorum) else {
        return (2, format!("CRITICAL: no leader with a quorum in term {}; {members}", s.term));
    };
    let mut wrong = Vec::new();
    let down: Vec<String> = s.nodes.iter().filter(|n| !n.alive).map(|n| n.id.to_string()).collect();
    if !down.is_empty() {
        wrong.push(format!("node(s) {} down", down.join(", ")));
    }
    if s.under_replicated > 0 {
        wrong.push(format!("{} file(s) below their replica target", s.under_replicated));
    }
    let repairing: u64 = s.nodes.iter().filter(|n| n.alive).map(|n| n.wanted).sum();
    if repairing > 0 {
        wrong.push(format!("{repairing} cop(ies) being repaired"));
    }
    if wrong.is_empty() {
        // Draining is asked for, not a fault; said so the line explains copies moving.
        let draining: Vec<String> =
            s.nodes.iter().filter(|n| n.state == MemberState::Draining).map(|n| n.id.to_string()).collect();
        let note =
            if draining.is_empty() { String::new() } else { format!("; node(s) {} draining", draining.join(", ")) };
        (0, format!("OK: node {leader} leads term {}; {members}; every file at its replica target{note}", s.term))
    } else {
        (1, format!("DEGRADED: {}; node {leader} leads term {}", wrong.join("; "), s.term))
    }
}

/// Status from the leader, or from any node heard when there is none.
async fn status(client: &Client) -> Result<StatusReport> {
    client.status().await
}

/// Where a stored file's content is kept, for the upload's message.
fn kept_on(e: &Inode) -> String {
    if e.is_inline() {
        return "in every node's index".into();
    }
    let ids = e.holders.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(",");
    format!("on node(s) {ids}")
}

fn progress_bar(size: u64, what: &str) -> Option<indicatif::ProgressBar> {
    if size < PROGRESS_MIN || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(size);
    let style =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// One item of `ls --json`: its path, and its inode as `stat` shows it.
fn entry_json(path: &str, i: &Inode) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": path,
        "size": i.st_size(),
        "mtime": i.mtime_ns.div_euclid(1_000_000_000),
        "mtime_ns": i.mtime_ns,
        "ctime_ns": i.ctime_ns,
        "atime_ns": i.atime_ns,
        "kind": i.kind.as_str(),
        "mode": i.mode,
        "ino": i.ino.0,
        "uid": i.uid,
        "gid": i.gid,
        "nlink": i.nlink,
    });
    if i.kind == Kind::Symlink {
        v["target"] = serde_json::Value::String(i.target.clone());
    }
    if matches!(i.kind, Kind::CharDev | Kind::BlockDev) {
        v["rdev"] = serde_json::json!(i.rdev);
    }
    v
}

/// `1970-01-01 00:00` style local-independent UTC time.
fn format_time(ns: i64) -> String {
    let (y, m, d, h, mi, _) = crate::fs::time::utc(ns);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}")
}

/// `ls -l` for people: type and mode, links, owner, size, time, name
/// (a directory with a `/`, a symlink with its target).
/// A listing as `ls` prints it: as JSON, or a line per entry.
fn print_entries(entries: &[(String, &Inode)], json: bool) {
    if json {
        say!("{}", serde_json::Value::Array(entries.iter().map(|(n, i)| entry_json(n, i)).collect()));
    } else {
        print_listing(entries);
    }
}

fn print_listing(entries: &[(String, &Inode)]) {
    // On a terminal, control characters in a name (a newline, an escape
    // sequence) show as ?, as ls shows them.
    let tty = std::io::stdout().is_terminal();
    let safe =
        |s: &str| if tty { s.chars().map(|c| if c.is_control() { '?' } else { c }).collect() } else { s.to_string() };
    for (path, i) in entries {
        let shown = safe(name::base(path));
        let size = match i.kind {
            Kind::Dir => "-".to_string(),
            Kind::CharDev | Kind::BlockDev => {
                format!("{},{}", i.rdev >> 8 & 0xfff, (i.rdev & 0xff) | (i.rdev >> 12 & 0xfff00))
            }
            _ => i.st_size().to_string(),
        };
        let name = match i.kind {
            Kind::Dir => format!("{shown}/"),
            Kind::Symlink => format!("{shown} -> {}", safe(&i.target)),
            _ => shown.to_string(),
        };
        say!(
            "{} {:>3} {:>6} {:>6} {size:>12}  {} UTC  {name}",
            mode_string(i),
            i.nlink,
            i.uid,
            i.gid,
            format_time(i.mtime_ns)
        );
    }
}

/// `-rw-r--r--` as ls shows it, with setuid, setgid and sticky.
fn mode_string(i: &Inode) -> String {
    let t = match i.kind {
        Kind::File => '-',
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::Fifo => 'p',
        Kind::Socket => 's',
        Kind::CharDev => 'c',
        Kind::BlockDev => 'b',
    };
    let m = i.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |x: u32, s: u32, on: char, off: char| match (m & x != 0, m & s != 0) {
        (true, true) => on,
        (false, true) => off,
        (x, false) => {
            if x {
                'x'
            } else {
                '-'
            }
        }
    };
    let mut out = String::with_capacity(10);
    out.push(t);
    out.push(bit(0o400, 'r'));
    out.push(bit(0o200, 'w'));
    out.push(special(0o100, 0o4000, 's', 'S'));
    out.push(bit(0o040, 'r'));
    out.push(bit(0o020, 'w'));
    out.push(special(0o010, 0o2000, 's', 'S'));
    out.push(bit(0o004, 'r'));
    out.push(bit(0o002, 'w'));
    out.push(special(0o001, 0o1000, 't', 'T'));
    out
}

fn role_name(r: Option<Role>) -> &'static str {
    match r {
        Some(Role::Leader) => "leader",
        Some(Role::Candidate) => "candidate",
        Some(Role::Follower) => "follower",
        None => "-",
    }
}

fn print_status(s: &StatusReport) {
    let leader = s.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
    say!(
        "cluster of {}, term {}, leader {leader}, quorum {}, {} replica(s) per file",
        s.cluster_size,
        s.term,
        if s.quorum { "yes" } else { "NO" },
        s.replicas
    );
    let repairing: u64 = s.nodes.iter().filter(|n| n.alive).map(|n| n.wanted).sum();
    let corrupt: u64 = s.nodes.iter().map(|n| n.corrupt).sum();
    if s.under_replicated > 0 || repairing > 0 || corrupt > 0 {
        say!(
            "{} file(s) below their replica target, {repairing} cop(ies) being repaired, {corrupt} bad cop(ies) found and replaced",
            s.under_replicated
        );
    }
    if s.moving.files > 0 {
        say!("moving: {}", moving_left(&s.moving));
    }
    say!(
        "{:>4}  {:<22} {:<10} {:<6} {:>8} {:>8} {:>10} {:>10} {:>9} {:>8}",
        "ID",
        "ADDRESS",
        "ROLE",
        "ALIVE",
        "FILES",
        "BYTES",
        "MAX_FILES",
        "DISK_FREE",
        "REPAIRING",
        "TRASH"
    );
    for n in &s.nodes {
        let max = n.max_files.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
        let addr = if n.addr.is_empty() { "?" } else { &n.addr };
        let role = if n.alive { role_name(n.role) } else { "-" };
        let free = if n.disk_total == 0 { "-".to_string() } else { human_bytes(n.disk_free) };
        // Only the unusual state is shown, after the columns the table always had.
        let state = if n.state == MemberState::Active { String::new() } else { format!("  {}", n.state.as_str()) };
        say!(
            "{:>4}  {:<22} {:<10} {:<6} {:>8} {:>8} {:>10} {:>10} {:>9} {:>8}{state}",
            n.id.0,
            addr,
            role,
            if n.alive { "yes" } else { "no" },
            n.files,
            human_bytes(n.bytes),
            max,
            free,
            n.wanted,
            human_bytes(n.trash_bytes)
        );
    }
    for c in &s.candidates {
        let addr = if c.node.addr.is_empty() { "?" } else { &c.node.addr };
        let id = c.node.id;
        say!("candidate: node {id} at {addr} has the cluster key but is not a member: scs node add {id} makes it one");
    }
}

/// "12 files, 3.4G left at 25M/s, about 2m 16s left": what a drain still
/// has to move (the rate and time only once the leader has seen copies move).
fn moving_left(m: &Moving) -> String {
    let left = format!("{}, {} left", count(m.files, "file", "files"), human_bytes(m.bytes));
    if m.bytes_per_sec == 0 {
        return format!("{left}, no rate measured yet");
    }
    let secs = m.bytes.div_ceil(m.bytes_per_sec);
    format!("{left} at {}/s, about {} left", human_bytes(m.bytes_per_sec), human_duration(secs))
}

/// "1 file", "3 files".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// 45s, 2m 16s, 3h 05m: a rough time left for people.
fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// 1.5G, 340M, 12K: sizes for people.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v >= 10.0 {
        format!("{:.0}{}", v, UNITS[u])
    } else {
        format!("{:.1}{}", v, UNITS[u])
    }
}

fn status_json(s: &StatusReport) -> serde_json::Value {
    serde_json::json!({
        "leader": s.leader.map(|l| l.0),
        "term": s.term.0,
        "quorum": s.quorum,
        "cluster_size": s.cluster_size,
        "replicas": s.replicas,
        "under_replicated": s.under_replicated,
        "nodes": s.nodes.iter().map(|n| serde_json::json!({
            "id": n.id.0,
            "addr": n.addr,
            "state": n.state.as_str(),
            "alive": n.alive,
            "role": role_name(n.role),
            "files": n.files,
            "bytes": n.bytes,
            "trash_bytes": n.trash_bytes,
            "max_files": n.max_files,
            "wanted": n.wanted,
            "corrupt": n.corrupt,
            "disk_free": n.disk_free,
            "disk_total": n.disk_total,
        })).chain(s.candidates.iter().map(|c| serde_json::json!({
            "id": c.node.id.0,
            "addr": c.node.addr,
            "state": "candidate",
            "alive": c.node.alive,
            "role": "-",
            "files": c.node.files,
            "bytes": c.node.bytes,
            "max_files": c.node.max_files,
            "disk_free": c.node.disk_free,
            "disk_total": c.node.disk_total,
            "cluster_size": c.cluster_size,
        }))).collect::<Vec<_>>(),
        "moving": {
            "files": s.moving.files,
            "bytes": s.moving.bytes,
            "bytes_per_sec": s.moving.bytes_per_sec,
        },
    })
}

/// An I/O error's reason without the "(os error N)" tail.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_for_people() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(340 << 20), "340M");
    }

    #[test]
    fn modes_are_shown_as_ls_shows_them() {
        let mut i = Inode::new(scs_common::Ino(5), Kind::File, 0o4755, 0, 0, 0);
        assert_eq!(mode_string(&i), "-rwsr-xr-x");
        i.mode = 0o2644;
        assert_eq!(mode_string(&i), "-rw-r-Sr--");
        i.kind = Kind::Dir;
        i.mode = 0o1777;
        assert_eq!(mode_string(&i), "drwxrwxrwt");
        i.kind = Kind::Symlink;
        i.mode = 0o777;
        assert_eq!(mode_string(&i), "lrwxrwxrwx");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(1_700_000_000 * 1_000_000_000), "2023-11-14 22:13");
        assert_eq!(format_time(951_782_400 * 1_000_000_000), "2000-02-29 00:00");
    }

    #[test]
    fn remote_names_are_normalized_and_the_root_is_refused() {
        assert_eq!(remote_name("/a//b/").unwrap(), "a/b");
        assert!(remote_name("/").is_err());
        assert!(remote_name("a/../b").is_err());
    }

    #[test]
    fn usage_parses_every_command_and_alias() {
        for argv in [
            vec!["scs", "upload", "f"],
            vec!["scs", "--node", "127.0.0.1:1", "download", "a", "-"],
            vec!["scs", "rm", "a"],
            vec!["scs", "view-directory", "--json"],
            vec!["scs", "mkdir", "-p", "a/b"],
            vec!["scs", "mv", "a", "b"],
            vec!["scs", "ln", "a", "b"],
            vec!["scs", "ln", "-s", "../a", "b"],
            vec!["scs", "status", "--json"],
            vec!["scs", "status", "--check"],
            vec!["scs", "node", "add", "4"],
            vec!["scs", "node", "drain", "2", "--timeout", "60"],
            vec!["scs", "node", "drain", "--no-wait", "2"],
        ] {
            Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
        assert!(Args::try_parse_from(["scs", "frobnicate"]).is_err());
        assert!(Args::try_parse_from(["scs", "status", "--check", "--json"]).is_err(), "one or the other");
    }

    fn node_command(argv: &[&str]) -> std::result::Result<NodeCommand, clap::Error> {
        match Args::try_parse_from(argv)?.command {
            Command::Node { change } => Ok(change),
            other => panic!("{argv:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn node_commands_parse_to_one_change_each() {
        let remove = node_command(&["scs", "node", "remove", "--force", "3"]).unwrap();
        assert_eq!(remove.change(), MemberChange::Remove { id: NodeId(3), force: true });
        let remove = node_command(&["scs", "node", "remove", "3"]).unwrap();
        assert_eq!(remove.change(), MemberChange::Remove { id: NodeId(3), force: false });
        let add = node_command(&["scs", "node", "add", "12"]).unwrap();
        assert_eq!(add.change(), MemberChange::Add(NodeId(12)));
        let drain = node_command(&["scs", "node", "drain", "--timeout", "30", "2"]).unwrap();
        assert_eq!(drain.change(), MemberChange::Drain(NodeId(2)));
        assert!(matches!(drain, NodeCommand::Drain { timeout: Some(30), no_wait: false, .. }), "{drain:?}");

        for bad in [&["scs", "node", "add", "0"][..], &["scs", "node", "add", "-1"], &["scs", "node", "add", "x"]] {
            assert!(node_command(bad).is_err(), "{bad:?}: ids are positive integers");
        }
        assert!(node_command(&["scs", "node", "remove"]).is_err(), "an id is needed");
        assert!(
            node_command(&["scs", "node", "drain", "2", "--no-wait", "--timeout", "5"]).is_err(),
            "one or the other"
        );
    }

    fn report(alive: &[bool], quorum: bool, under: u64, wanted: u64) -> StatusReport {
        use scs_common::proto::rpc::NodeStatus;
        use scs_common::{NodeId, Term};
        let nodes = alive
            .iter()
            .enumerate()
            .map(|(i, &alive)| NodeStatus {
                id: NodeId(i as u32 + 1),
                addr: format!("127.0.0.1:{}", 7781 + i),
                alive,
                role: None,
                files: 3,
                max_files: None,
                disk_free: 1,
                disk_total: 2,
                wanted: if i == 0 { wanted } else { 0 },
                corrupt: 0,
                state: MemberState::Active,
                bytes: 0,
                trash_bytes: 0,
            })
            .collect();
        StatusReport {
            node: NodeId(1),
            leader: Some(NodeId(alive.len() as u32)),
            term: Term(4),
            quorum,
            cluster_size: alive.len() as u32,
            replicas: alive.len() as u32,
            nodes,
            under_replicated: under,
            candidates: Vec::new(),
            moving: Default::default(),
        }
    }

    #[test]
    fn the_check_is_ok_degraded_or_critical_as_monitoring_expects() {
        let (code, line) = health(&report(&[true, true, true], true, 0, 0));
        assert_eq!(code, 0, "{line}");
        assert!(line.starts_with("OK: node 3 leads term 4; 3 of 3 members alive"), "{line}");

        let (code, line) = health(&report(&[false, true, true], true, 2, 0));
        assert_eq!(code, 1, "{line}");
        assert_eq!(line, "DEGRADED: node(s) 1 down; 2 file(s) below their replica target; node 3 leads term 4");

        let (code, line) = health(&report(&[true, true, true], true, 0, 5));
        assert_eq!((code, line.contains("5 cop(ies) being repaired")), (1, true), "{line}");

        let (code, line) = health(&report(&[false, false, true], false, 0, 0));
        assert_eq!(code, 2, "{line}");
        assert!(line.starts_with("CRITICAL: no leader with a quorum in term 4; 1 of 3 members alive"), "{line}");
    }

    #[test]
    fn a_draining_member_alone_does_not_degrade_the_check() {
        let mut s = report(&[true, true, true], true, 0, 0);
        s.nodes[1].state = MemberState::Draining;
        let (code, line) = health(&s);
        assert_eq!(code, 0, "{line}");
        assert!(line.ends_with("every file at its replica target; node(s) 2 draining"), "{line}");

        s.nodes[1].alive = false;
        let (code, line) = health(&s);
        assert_eq!((code, line.contains("node(s) 2 down")), (1, true), "a draining member down is down: {line}");
    }

    #[test]
    fn what_is_left_to_move_reads_as_files_bytes_rate_and_time() {
        let m = |files, bytes, bytes_per_sec| Moving { files, bytes, bytes_per_sec };
        assert_eq!(moving_left(&m(12, 3 << 30, 25 << 20)), "12 files, 3.0G left at 25M/s, about 2m 03s left");
        assert_eq!(moving_left(&m(1, 1536, 512)), "1 file, 1.5K left at 512B/s, about 3s left");
        assert_eq!(moving_left(&m(40, 10 << 30, 1 << 20)), "40 files, 10G left at 1.0M/s, about 2h 50m left");
        // Nothing moved yet: no rate to tell a time from.
        assert_eq!(moving_left(&m(5, 2 << 20, 0)), "5 files, 2.0M left, no rate measured yet");
    }

    #[test]
    fn the_status_shows_draining_members_and_what_is_left_to_move() {
        let mut s = report(&[true, true, true], true, 0, 0);
        s.nodes[0].state = MemberState::Draining;
        s.moving = Moving { files: 3, bytes: 300, bytes_per_sec: 100 };
        let json = status_json(&s);
        let states: Vec<&str> =
            json["nodes"].as_array().unwrap().iter().map(|n| n["state"].as_str().unwrap()).collect();
        assert_eq!(states, ["draining", "active", "active"]);
        assert_eq!(json["moving"], serde_json::json!({"files": 3, "bytes": 300, "bytes_per_sec": 100}));
    }

    #[test]
    fn a_drain_is_done_only_once_a_count_since_it_began_finds_nothing_to_move() {
        let mut s = report(&[true, true, true], true, 0, 0);
        s.nodes[1].state = MemberState::Draining;
        let id = NodeId(2);
        // A count older than the drain says nothing is left: not believed yet.
        assert_eq!(drain_step(&s, id, false), DrainStep::Left(Moving::default()));
        assert_eq!(drain_step(&s, id, true), DrainStep::Done);

        s.moving = Moving { files: 2, bytes: 10, bytes_per_sec: 0 };
        assert_eq!(drain_step(&s, id, true), DrainStep::Left(s.moving.clone()));

        s.nodes[1].state = MemberState::Active;
        assert!(matches!(drain_step(&s, id, true), DrainStep::Stopped(_)), "called off");
        s.nodes.remove(1);
        assert!(matches!(drain_step(&s, id, false), DrainStep::Stopped(_)), "removed meanwhile");
    }
}
