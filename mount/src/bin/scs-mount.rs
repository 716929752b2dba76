//! `scs-mount MOUNTPOINT`: the cluster as a local directory. Also
//! `scs-mount SOURCE DIR -o OPTIONS`, the form mount(8) and fstab use, and,
//! invoked as `mount.scs`, the helper mount(8) runs for fstab type `scs`.
//!
//! Without `--foreground` it forks before anything else starts; the child
//! mounts and tells the parent through a pipe whether the directory works,
//! and the parent exits 0 then (or fails with the child's one-line error).
//! The daemon's log is `scs-mount.log` in its cache directory. Everything
//! that can be refused (options, the directory, the key, `allow_other`
//! without permission) is refused before the fork.

use std::cell::Cell;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use scs_common::auth::ClusterKey;
use scs_mount::client::{Client, ClientOptions};
use scs_mount::client_config::{self, ClientFile, Given};
use scs_mount::fs::mountpoint;
use scs_mount::fs::session::{self, Settings};
use scs_mount::options::{fuse_conf_allows_other, OptionList, Unknown};

/// Where fusermount3 reads whether users may mount with `allow_other`.
const FUSE_CONF: &str = "/etc/fuse.conf";
/// Replaces [`FUSE_CONF`] in the `allow_other` check: for tests only.
const FUSE_CONF_ENV: &str = "SCS_FUSE_CONF";
/// Root's cache root in the mount(8) form: the same at boot (where HOME may
/// be unset) as from a shell or the unit, so each mount of the directory
/// finds what the last one left to upload.
const SYSTEM_CACHE_ROOT: &str = "/var/cache/scs";
/// The name that makes this binary mount(8)'s helper for fstab type `scs`.
const HELPER_NAME: &str = "mount.scs";

const OPTIONS_HELP: &str = "\
Mount options (-o, comma separated, as in fstab; -o may be repeated):
  allow_other     let other users use the mount (their access is checked
                  against owners and modes); as a user it needs
                  'user_allow_other' in /etc/fuse.conf
  ro, rw          read-only (every change fails with EROFS), or read-write
                  (the default); the last one given wins
  write_back, foreground, cache_dir=DIR, group=G, iface=I, node=HOST:PORT,
  secret_file=F, metrics_listen=IP:PORT
                  as the flags of the same name (not both); node= may be
                  given several times (node=a:7781,node=b:7781)
  defaults, _netdev, nofail, auto, noauto, user, users, nouser, exec, noexec,
  suid, nosuid, dev, nodev, *atime, x-*, comment=...
                  accepted and ignored (scs mounts are always nosuid,nodev)
An unknown option is bad usage (exit 2).

In the mount(8) form SOURCE is ignored (write `scs`; the mount shows as `scs`
whatever it is). It daemonizes unless -o foreground; as root its cache dir
defaults to /var/cache/scs. Invoked as mount.scs (make install links
/sbin/mount.scs), it is the helper mount(8) runs for fstab type scs.

Where the cluster is: by default the nodes' heartbeats on the multicast group.
Without multicast, name one or more nodes (--node, node=); the mount learns
the other members from them and follows the leader through failovers.
Defaults for nodes, group, iface and secret_file can be kept in
$XDG_CONFIG_HOME/scs/client.toml (else ~/.config/scs/client.toml), e.g.
  nodes = [\"10.0.0.1:7781\", \"10.0.0.2:7781\"]
Flags and -o override the file (see scs --help).

Unmount with `fusermount3 -u MOUNTPOINT` (or SIGTERM/SIGINT to a foreground mount).";

/// Mount an SCS cluster as a local directory.
#[derive(Parser, Debug)]
#[command(
    name = "scs-mount",
    version,
    about = "Mount an SCS cluster as a local directory",
    override_usage = "scs-mount MOUNTPOINT [FLAGS] [-o OPTIONS]\n       scs-mount SOURCE DIR -o OPTIONS [FLAGS]",
    after_help = OPTIONS_HELP
)]
struct Args {
    /// Where the cluster appears, an existing directory (in the mount(8)
    /// form: SOURCE, ignored)
    #[arg(value_name = "MOUNTPOINT")]
    first: PathBuf,
    /// The mount(8) form: where the cluster appears
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Mount options, comma separated (see below)
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Multicast group the cluster's heartbeats are on [default: 239.255.77.77:7777]
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// IPv4 address of the interface to listen for heartbeats on [default: 127.0.0.1]
    #[arg(long, value_name = "I")]
    iface: Option<String>,
    /// Ask this node (HOST:PORT) where the leader is instead of listening
    /// for heartbeats; repeat it, or give a comma-separated list, to name
    /// several (the other members are learned from them)
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    node: Vec<String>,
    /// The cluster key [default: secret_file in client.toml, else
    /// /etc/scs/cluster.key as root, else ~/.config/scs/cluster.key]
    #[arg(long, value_name = "F")]
    secret_file: Option<PathBuf>,
    /// Where staging files and cached contents go (one subdirectory per mount)
    /// [default: $XDG_CACHE_HOME/scs or ~/.cache/scs]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Stay in the foreground (logs on stderr) instead of daemonizing
    #[arg(long)]
    foreground: bool,
    /// Close returns once a small file (up to 1 MiB) is in a journal in the
    /// cache dir (synced to disk as its last descriptor is released); it
    /// reaches the cluster in the background, shortly after (fsync waits for
    /// it). Much faster for many small files; other clients see a file a
    /// moment after it is closed, not at once
    #[arg(long)]
    write_back: bool,
    /// Serve this mount's Prometheus metrics at /metrics (uploads pending,
    /// cache size, errors) and a health check at /health here [default: off]
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<String>,
}

/// mount(8)'s helper: `mount.scs SPEC DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t TYPE]`.
#[derive(Parser, Debug)]
#[command(
    name = "mount.scs",
    version,
    about = "The mount(8) helper for fstab type scs: mounts an SCS cluster at DIR",
    after_help = "OPTIONS are those of `scs-mount -o` (see scs-mount --help). Exit status: 0 mounted \
                  (or, with -f, would mount), 1 bad usage, 32 the mount failed (as mount(8) reports it)."
)]
struct HelperArgs {
    /// The fstab source (ignored; write `scs`)
    spec: OsString,
    /// Where the cluster appears: an existing directory
    dir: PathBuf,
    /// Sloppy: ignore unknown mount options instead of refusing them
    #[arg(short = 's')]
    sloppy: bool,
    /// Fake: check everything (options, directory, key, that the cluster
    /// answers) but do not mount
    #[arg(short = 'f')]
    fake: bool,
    /// Do not write /etc/mtab (there is none to write: accepted, no effect)
    #[arg(short = 'n')]
    #[allow(dead_code)] // mount(8) passes it; it asks for nothing here.
    no_mtab: bool,
    /// Say on stderr what is mounted, and which options had no effect
    #[arg(short = 'v')]
    verbose: bool,
    /// Mount in another mount namespace (not supported: refused)
    #[arg(short = 'N', value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Mount options, comma separated
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// The file system type (accepted, no effect: always scs)
    #[arg(short = 't', value_name = "TYPE")]
    #[allow(dead_code)] // as -n
    fstype: Option<String>,
}

/// How this process was invoked, which sets its name in messages and its
/// exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Personality {
    /// `scs-mount`: the project's contract (1 error, 2 bad usage).
    ScsMount,
    /// `mount.scs`: mount(8) passes its helper's exit code on, so it speaks
    /// mount(8)'s (1 bad usage, 32 mount failure), as nfs-utils' helper does.
    Helper,
}

impl Personality {
    fn of_this_process() -> Personality {
        let argv0 = std::env::args_os().next().unwrap_or_default();
        match Path::new(&argv0).file_name() {
            Some(name) if name == HELPER_NAME => Personality::Helper,
            _ => Personality::ScsMount,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Personality::ScsMount => "scs-mount",
            Personality::Helper => HELPER_NAME,
        }
    }

    /// The one-line message of a mount that failed; its exit code.
    fn fail(self, msg: &str) -> ExitCode {
        eprintln!("{}: {msg}", self.name());
        ExitCode::from(match self {
            Personality::ScsMount => 1,
            Personality::Helper => 32,
        })
    }

    /// The one-line message of a command line that makes no sense; its exit code.
    fn refuse(self, msg: &str) -> ExitCode {
        eprintln!("{}: {msg}", self.name());
        self.usage_code()
    }

    fn usage_code(self) -> ExitCode {
        ExitCode::from(match self {
            Personality::ScsMount => 2,
            Personality::Helper => 1,
        })
    }

    fn say(self, msg: &str) {
        eprintln!("{}: {msg}", self.name());
    }
}

/// Which command line asked, which decides the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `scs-mount MOUNTPOINT`.
    Plain,
    /// `scs-mount SOURCE DIR` or `mount.scs`: a system's mount, maybe at boot.
    Mount8,
}

/// One mount, as either command line asked for it (flags folded into `opts`).
#[derive(Debug)]
struct Request {
    mountpoint: PathBuf,
    opts: OptionList,
    form: Form,
    /// `mount.scs -f`: check everything, mount nothing.
    fake: bool,
    /// `mount.scs -v`.
    verbose: bool,
}

/// Why a command line asks for no mount that makes sense (bad usage).
#[derive(Debug)]
struct Refusal(String);

fn main() -> ExitCode {
    let who = Personality::of_this_process();
    let request = match who {
        Personality::ScsMount => scs_mount_request(Args::parse()),
        Personality::Helper => match HelperArgs::try_parse() {
            Ok(args) => helper_request(args),
            Err(e) => {
                let _ = e.print();
                return if e.use_stderr() { who.usage_code() } else { ExitCode::SUCCESS };
            }
        },
    };
    let req = match request {
        Ok(r) => r,
        Err(Refusal(msg)) => return who.refuse(&msg),
    };
    let settings = match settings(&req) {
        Ok(s) => s,
        Err(msg) => return who.fail(&msg),
    };
    if req.verbose && !req.opts.ignored.is_empty() {
        who.say(&format!("options without effect: {}", req.opts.ignored.join(",")));
    }
    if req.fake {
        if let Err(msg) = check_cluster(&settings.client) {
            return who.fail(&msg);
        }
        if req.verbose {
            who.say(&format!("would mount the cluster at {} (-f: not mounting)", describe(&settings)));
        }
        return ExitCode::SUCCESS;
    }
    if req.verbose {
        who.say(&format!("mounting the cluster at {}", describe(&settings)));
    }
    let res = if req.opts.foreground {
        init_logs();
        session::run(settings, || {})
    } else {
        daemonize(settings)
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => who.fail(&msg),
    }
}

/// `scs-mount`'s command line, either form.
fn scs_mount_request(args: Args) -> Result<Request, Refusal> {
    let mut opts = OptionList::default();
    for list in &args.options {
        opts.add(list, Unknown::Refuse).map_err(|e| Refusal(e.to_string()))?;
    }
    let (mountpoint, form) = match args.dir {
        Some(dir) => (dir, Form::Mount8),
        None => (args.first, Form::Plain),
    };
    opts.group = flag_or_option("group", args.group, opts.group)?;
    opts.iface = flag_or_option("iface", args.iface, opts.iface)?;
    let (flag_nodes, option_nodes) = (non_empty(args.node), non_empty(opts.nodes));
    opts.nodes = flag_or_option("node", flag_nodes, option_nodes)?.unwrap_or_default();
    opts.secret_file = flag_or_option("secret_file", args.secret_file, opts.secret_file)?;
    opts.cache_dir = flag_or_option("cache_dir", args.cache_dir, opts.cache_dir)?;
    opts.metrics_listen = flag_or_option("metrics_listen", args.metrics_listen, opts.metrics_listen)?;
    opts.foreground |= args.foreground;
    opts.write_back |= args.write_back;
    Ok(Request { mountpoint, opts, form, fake: false, verbose: false })
}

/// A setting given once, as a flag or in `-o`: given both ways, which one
/// was meant is anybody's guess.
fn flag_or_option<T>(name: &str, flag: Option<T>, option: Option<T>) -> Result<Option<T>, Refusal> {
    match (flag, option) {
        (Some(_), Some(_)) => Err(Refusal(format!("{name} is given twice: as --{} and in -o", name.replace('_', "-")))),
        (flag, option) => Ok(flag.or(option)),
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// `mount.scs`'s command line.
fn helper_request(args: HelperArgs) -> Result<Request, Refusal> {
    if args.namespace.is_some() {
        return Err(Refusal("-N (mounting in another mount namespace) is not supported".into()));
    }
    let unknown = if args.sloppy { Unknown::Ignore } else { Unknown::Refuse };
    let mut opts = OptionList::default();
    for list in &args.options {
        opts.add(list, unknown).map_err(|e| Refusal(e.to_string()))?;
    }
    Ok(Request { mountpoint: args.dir, opts, form: Form::Mount8, fake: args.fake, verbose: args.verbose })
}

/// Logs at info, fuser's at warn; but not fuser's "Failed to umount" at
/// the end of every unmount made with umount(8) (the mount is gone already
/// when the session tries to unmount it again).
fn init_logs() {
    let default = "info,fuser=warn,fuser::session=error";
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
}

/// Checks what can be checked before forking, with one-line errors.
fn settings(req: &Request) -> Result<Settings, String> {
    let opts = &req.opts;
    if opts.allow_other {
        check_allow_other()?;
    }
    let mountpoint = mountpoint::prepare(&req.mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        return Err("FUSE is not available: /dev/fuse is missing (load the fuse module)".into());
    }
    let given = Given {
        nodes: opts.nodes.clone(),
        group: opts.group.clone(),
        iface: opts.iface.clone(),
        secret_file: opts.secret_file.clone(),
    };
    let file = ClientFile::load_default().map_err(|e| e.to_string())?;
    let client = client_config::resolve(given, file).map_err(|e| e.to_string())?;
    ClusterKey::load(&client.secret_file).map_err(|e| e.to_string())?;
    let root = opts.cache_dir.clone().unwrap_or_else(|| default_cache_root(req.form));
    let cache_dir = session::cache_dir_for(&root, &mountpoint);
    std::fs::create_dir_all(&cache_dir)
        .map_err(|e| format!("cannot create the cache dir {}: {e}", cache_dir.display()))?;
    let metrics_listen = match &opts.metrics_listen {
        None => None,
        Some(m) => {
            Some(m.parse().map_err(|_| format!("metrics_listen must be IP:PORT, like 127.0.0.1:9781, not {m:?}"))?)
        }
    };
    Ok(Settings {
        mountpoint,
        client,
        cache_dir,
        write_back: opts.write_back,
        allow_other: opts.allow_other,
        read_only: opts.read_only == Some(true),
        metrics_listen,
    })
}

/// fusermount3 refuses `allow_other` to a user unless fuse.conf permits
/// it, and the daemon could only log that: say it before forking.
fn check_allow_other() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let conf = std::env::var_os(FUSE_CONF_ENV).map(PathBuf::from).unwrap_or_else(|| FUSE_CONF.into());
    // A missing or unreadable file permits nothing, for fusermount3 too.
    let text = std::fs::read_to_string(&conf).unwrap_or_default();
    if fuse_conf_allows_other(&text) {
        return Ok(());
    }
    Err(format!("allow_other needs 'user_allow_other' in {} (or mount as root)", conf.display()))
}

fn default_cache_root(form: Form) -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if form == Form::Mount8 && unsafe { libc::geteuid() } == 0 {
        return PathBuf::from(SYSTEM_CACHE_ROOT);
    }
    session::default_cache_root()
}

/// `mount.scs -f`: the check [`session::run`] makes first, without mounting.
fn check_cluster(opts: &ClientOptions) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let client = Client::new(opts.clone()).map_err(|e| e.to_string())?;
        match tokio::time::timeout(opts.retry_window + Duration::from_secs(3), client.getattr(scs_common::Ino::ROOT))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot reach the cluster: {e}")),
            Err(_) => Err("cannot reach the cluster: no answer".into()),
        }
    })
}

/// `/srv/scs (read-write, allow_other; cache /var/cache/scs/mount-...)`.
fn describe(s: &Settings) -> String {
    let mut how = vec![if s.read_only { "read-only" } else { "read-write" }];
    if s.allow_other {
        how.push("allow_other");
    }
    if s.write_back {
        how.push("write-back");
    }
    format!("{} ({}; cache {})", s.mountpoint.display(), how.join(", "), s.cache_dir.display())
}

/// Forks; the parent waits for the child's word on the mount.
///
/// # Errors
/// The child's one-line error, or why it could not be started.
fn daemonize(settings: Settings) -> Result<(), String> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two descriptors we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("cannot create a pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (mut from_child, to_parent) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: no thread has been started yet, so the child is a full copy.
    match unsafe { libc::fork() } {
        -1 => Err(format!("cannot fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(from_child);
            std::process::exit(serve(settings, to_parent))
        }
        _ => {
            drop(to_parent);
            let mut said = String::new();
            let _ = from_child.read_to_string(&mut said);
            match said.lines().next() {
                Some("ok") => Ok(()),
                Some(msg) => Err(msg.strip_prefix("error: ").unwrap_or(msg).to_string()),
                None => Err(format!(
                    "the mount process ended before the mount was ready (see {})",
                    log_path(&settings).display()
                )),
            }
        }
    }
}

/// The daemon: detaches, mounts, reports to the parent, serves.
fn serve(settings: Settings, to_parent: File) -> i32 {
    detach_from_terminal(&log_path(&settings));
    init_logs();
    let pipe = Cell::new(Some(to_parent));
    let res = session::run(settings, || {
        if let Some(mut p) = pipe.take() {
            let _ = p.write_all(b"ok\n");
        }
    });
    match res {
        Ok(()) => 0,
        Err(msg) => {
            log::error!("{msg}");
            if let Some(mut p) = pipe.take() {
                let _ = writeln!(p, "error: {msg}");
            }
            1
        }
    }
}

fn log_path(settings: &Settings) -> PathBuf {
    settings.cache_dir.join("scs-mount.log")
}

/// A new session without a terminal; stdin from /dev/null, stdout and
/// stderr to the log (so whoever ran us does not wait on our output).
fn detach_from_terminal(log: &Path) {
    // SAFETY: setsid has no preconditions; failing (already a leader) is harmless.
    unsafe { libc::setsid() };
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: dup2 onto the standard descriptors, from one we own.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    let out = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(log);
    let out = match out {
        Ok(f) => Some(f),
        Err(_) => std::fs::OpenOptions::new().write(true).open("/dev/null").ok(),
    };
    if let Some(f) = out {
        // SAFETY: as above.
        unsafe {
            libc::dup2(f.as_raw_fd(), 1);
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
}
