//! [`Netns`]: network namespaces of the fault suite's own — one per node, one
//! for the clients, and one holding the bridge that joins them — and the
//! network faults staged on them (links down, blackholes, loss, a slow link).
//!
//! The bridge lives in a namespace the harness owns and is never connected to
//! a real interface: nothing here touches the host's interfaces, routes or
//! firewall, and no packet can leave the machine. Every namespace is named
//! `scsf-<pid>-…`, and all of them are deleted when the [`Netns`] is dropped,
//! also on a panic. Leftovers of a run that was killed are removed at start.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli;

/// Prefix of every namespace, temp dir and mount of the fault suite.
pub const PREFIX: &str = "scsf-";
/// How long one `ip`, `tc` or `nft` command may take.
const TOOL_DEADLINE: Duration = Duration::from_secs(10);
/// Where `ip netns add` puts its namespace handles.
const NETNS_DIR: &str = "/run/netns";
/// The TCP port every node listens on (each node has an address of its own).
pub const NODE_PORT: u16 = 7000;
/// The nft table of the faults, in the bridge namespace.
const NFT_TABLE: &str = "scsf";

/// An open handle on a named network namespace; commands spawned with
/// [`NsHandle::enter`] run inside it (network only: they share the host's
/// file system and mounts, so a FUSE mount or a tmpfs is visible to all).
#[derive(Clone, Debug)]
pub struct NsHandle {
    name: String,
    file: Arc<File>,
}

impl NsHandle {
    fn open(name: &str) -> Result<NsHandle, String> {
        let path = Path::new(NETNS_DIR).join(name);
        let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(NsHandle { name: name.to_string(), file: Arc::new(file) })
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes `cmd` run in this namespace: the child joins it between fork and
    /// exec. The handle must outlive the spawn.
    pub fn enter(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let fd = self.file.as_raw_fd();
        // SAFETY: setns(2) is a plain system call, async-signal-safe, and
        // the descriptor stays open in the parent until the spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Why the namespace suite cannot run here (`None`: it can). Probed once
/// per process: tests that run at once must not race on the probe.
pub fn unavailable_reason() -> Option<String> {
    static REASON: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    REASON.get_or_init(probe).clone()
}

fn probe() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: creating network namespaces needs root".into());
    }
    for tool in ["ip", "tc"] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is missing (Debian package iproute2)"));
        }
    }
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    let _ = tool("ip", ["netns", "del", probe.as_str()], None);
    if let Err(e) = tool("ip", ["netns", "add", probe.as_str()], None) {
        return Some(format!("`ip netns add` failed: {e}"));
    }
    let _ = tool("ip", ["netns", "del", probe.as_str()], None);
    None
}

/// Whether `nft` can be run (Debian package nftables): without it,
/// blackholes fall back to taking the bridge side of a link down and random
/// loss is not available.
pub fn have_nft() -> bool {
    which("nft").is_some()
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs a network tool (`ip`, `tc`, `nft`) with a deadline, optionally inside
/// `ns`; `Err` carries its stderr.
fn tool<I, S>(program: &str, args: I, ns: Option<&NsHandle>) -> Result<String, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    tool_with_input(program, args, ns, None)
}

fn tool_with_input<I, S>(program: &str, args: I, ns: Option<&NsHandle>, input: Option<&str>) -> Result<String, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown = format!(
        "{}{program} {}",
        ns.map(|n| format!("[{}] ", n.name())).unwrap_or_default(),
        args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    let exe = which(program).ok_or_else(|| format!("{shown}: {program} is not installed"))?;
    let mut cmd = Command::new(exe);
    cmd.args(&args).stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(ns) = ns {
        ns.enter(&mut cmd);
    }
    cli::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("{shown}: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        if let Some(p) = out.as_mut() {
            let _ = p.read_to_string(&mut o);
        }
        if let Some(p) = err.as_mut() {
            let _ = p.read_to_string(&mut e);
        }
        (o, e)
    });
    let Some(status) = cli::wait_until(&mut child, Instant::now() + TOOL_DEADLINE) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{shown}: no answer within {TOOL_DEADLINE:?}"));
    };
    let (stdout, stderr) = reader.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!("{shown}: {status}: {}", stderr.trim()))
    }
}

/// Which address a member of the test network has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Node(u32),
    Clients,
}

/// A network fault that [`Netns::apply_filter`] installs in the bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Frames between a node of one group and a node of another are
    /// dropped silently (the clients still reach every node).
    pub groups: Vec<Vec<u32>>,
    /// Nodes whose frames, both ways, are dropped with this probability (%).
    pub lossy: Vec<(u32, u32)>,
}

/// The namespaces of one fault-suite cluster. See the module docs.
pub struct Netns {
    run: String,
    subnet: [u8; 3],
    nodes: u32,
    bridge: Option<NsHandle>,
    members: Vec<(Member, NsHandle)>,
    /// Every namespace created, for the cleanup.
    created: Vec<String>,
    /// Whether nft is there for blackholes and loss.
    nft: bool,
}

impl Netns {
    /// Creates the bridge, `nodes` node namespaces and the clients'
    /// namespace, each with its address on the bridge and multicast routed
    /// to it. `run` makes the names unique within this process.
    ///
    /// # Errors
    /// The failing command; whatever was created is removed again.
    pub fn create(run: u32, nodes: u32) -> Result<Netns, String> {
        clean_leftovers();
        let pid = std::process::id();
        // A /24 of its own per run: 10.213.<n>.0/24.
        let third = (1 + (pid.wrapping_mul(7) + run) % 250) as u8;
        let mut net = Netns {
            run: format!("{PREFIX}{pid}-{run}"),
            subnet: [10, 213, third],
            nodes,
            bridge: None,
            members: Vec::new(),
            created: Vec::new(),
            nft: have_nft(),
        };
        net.build()?;
        Ok(net)
    }

    fn add_ns(&mut self, suffix: &str) -> Result<NsHandle, String> {
        let name = format!("{}-{suffix}", self.run);
        let _ = tool("ip", ["netns", "del", name.as_str()], None);
        tool("ip", ["netns", "add", name.as_str()], None)?;
        self.created.push(name.clone());
        tool("ip", ["-n", name.as_str(), "link", "set", "lo", "up"], None)?;
        NsHandle::open(&name)
    }

    fn build(&mut self) -> Result<(), String> {
        let br = self.add_ns("br")?;
        let b = br.name().to_string();
        // IGMP snooping off: multicast floods to every port, as on a hub.
        tool("ip", ["-n", &b, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"], None)?;
        tool("ip", ["-n", &b, "link", "set", "br0", "up"], None)?;
        self.bridge = Some(br);
        let members: Vec<Member> = (1..=self.nodes).map(Member::Node).chain([Member::Clients]).collect();
        for m in members {
            let ns = self.add_ns(&suffix(m))?;
            let n = ns.name().to_string();
            let port = port(m);
            tool("ip", ["-n", &n, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &b], None)?;
            tool("ip", ["-n", &b, "link", "set", &port, "master", "br0"], None)?;
            tool("ip", ["-n", &b, "link", "set", &port, "up"], None)?;
            let addr = format!("{}/24", self.ip(m));
            tool("ip", ["-n", &n, "addr", "add", &addr, "dev", "eth0"], None)?;
            self.member_up(&n)?;
            self.members.push((m, ns));
        }
        if self.nft {
            let rules = format!(
                "table bridge {NFT_TABLE} {{\n chain faults {{\n  type filter hook forward priority 0; policy accept;\n }}\n}}\n"
            );
            tool_with_input("nft", ["-f", "-"], self.bridge.as_ref(), Some(&rules))?;
        }
        Ok(())
    }

    /// Brings a member's link up with its multicast route (a link taken
    /// down loses its routes).
    fn member_up(&self, ns: &str) -> Result<(), String> {
        tool("ip", ["-n", ns, "link", "set", "eth0", "up"], None)?;
        tool("ip", ["-n", ns, "route", "replace", "224.0.0.0/4", "dev", "eth0"], None)?;
        Ok(())
    }

    fn ip(&self, m: Member) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        let host = match m {
            Member::Node(id) => u8::try_from(id).expect("a node id below 100"),
            Member::Clients => 100,
        };
        Ipv4Addr::new(a, b, c, host)
    }

    fn handle(&self, m: Member) -> &NsHandle {
        &self.members.iter().find(|(x, _)| *x == m).expect("a member of this network").1
    }

    /// The address of node `id`.
    pub fn node_ip(&self, id: u32) -> Ipv4Addr {
        self.ip(Member::Node(id))
    }

    /// The address node `id` listens on.
    pub fn node_addr(&self, id: u32) -> String {
        format!("{}:{NODE_PORT}", self.node_ip(id))
    }

    /// The clients' address.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.ip(Member::Clients)
    }

    /// The namespace of node `id`.
    pub fn node_ns(&self, id: u32) -> &NsHandle {
        self.handle(Member::Node(id))
    }

    /// The clients' namespace.
    pub fn client_ns(&self) -> &NsHandle {
        self.handle(Member::Clients)
    }

    /// The subnet, for messages.
    pub fn subnet(&self) -> String {
        let [a, b, c] = self.subnet;
        format!("{a}.{b}.{c}.0/24")
    }

    /// Whether blackholes and loss use nft (else the fallbacks, see [`have_nft`]).
    pub fn has_nft(&self) -> bool {
        self.nft
    }

    // ----- faults -----

    /// Takes node `id`'s own interface down: it sees its network vanish
    /// (sends fail at once) and nobody hears it.
    ///
    /// # Errors
    /// The failing command.
    pub fn link_down(&self, id: u32) -> Result<(), String> {
        tool("ip", ["-n", self.node_ns(id).name(), "link", "set", "eth0", "down"], None).map(|_| ())
    }

    /// Brings node `id`'s interface back with its multicast route.
    ///
    /// # Errors
    /// The failing command.
    pub fn link_up(&self, id: u32) -> Result<(), String> {
        self.member_up(self.node_ns(id).name())
    }

    /// Takes the bridge's port of node `id` down: the node keeps its
    /// interface (without carrier) and its packets go nowhere.
    ///
    /// # Errors
    /// The failing command.
    pub fn port_down(&self, id: u32) -> Result<(), String> {
        let b = self.bridge.as_ref().expect("the bridge");
        tool("ip", ["-n", b.name(), "link", "set", &port(Member::Node(id)), "down"], None).map(|_| ())
    }

    /// Brings the bridge's port of node `id` up again.
    ///
    /// # Errors
    /// The failing command.
    pub fn port_up(&self, id: u32) -> Result<(), String> {
        let b = self.bridge.as_ref().expect("the bridge");
        tool("ip", ["-n", b.name(), "link", "set", &port(Member::Node(id)), "up"], None).map(|_| ())
    }

    /// Replaces the bridge's fault rules with `f` (an empty filter heals).
    ///
    /// # Errors
    /// Without nft, or the failing command.
    pub fn apply_filter(&self, f: &Filter) -> Result<(), String> {
        if !self.nft {
            return if *f == Filter::default() { Ok(()) } else { Err("nft is not installed".into()) };
        }
        let mut rules = format!("flush chain bridge {NFT_TABLE} faults\n");
        for (i, a) in f.groups.iter().enumerate() {
            for b in &f.groups[i + 1..] {
                let (pa, pb) = (port_set(a), port_set(b));
                rules += &format!("add rule bridge {NFT_TABLE} faults iifname {pa} oifname {pb} drop\n");
                rules += &format!("add rule bridge {NFT_TABLE} faults iifname {pb} oifname {pa} drop\n");
            }
        }
        for &(id, pct) in &f.lossy {
            let p = port(Member::Node(id));
            for dir in ["iifname", "oifname"] {
                rules +=
                    &format!("add rule bridge {NFT_TABLE} faults {dir} \"{p}\" numgen random mod 100 < {pct} drop\n");
            }
        }
        tool_with_input("nft", ["-f", "-"], self.bridge.as_ref(), Some(&rules)).map(|_| ())
    }

    /// Drops every multicast datagram at the bridge, as most cloud networks
    /// and VPNs do, for good: the fault rules and [`Netns::heal`] leave it.
    ///
    /// # Errors
    /// Without nft, or the failing command.
    pub fn block_multicast(&self) -> Result<(), String> {
        if !self.nft {
            return Err("nft (Debian package nftables) is needed to block multicast".into());
        }
        let rules = format!(
            "add chain bridge {NFT_TABLE} no_multicast {{ type filter hook forward priority -10; policy accept; }}\n\
             add rule bridge {NFT_TABLE} no_multicast ip daddr 224.0.0.0/4 counter drop\n"
        );
        tool_with_input("nft", ["-f", "-"], self.bridge.as_ref(), Some(&rules)).map(|_| ())
    }

    /// Shapes node `id`'s link both ways to `kbit` kbit/s with a token
    /// bucket: queued packets wait up to `latency_ms` (then are dropped).
    /// The kernel here has no netem, so this is the delay available: a
    /// slow, queueing link rather than a fixed added latency.
    ///
    /// # Errors
    /// The failing command.
    pub fn shape(&self, id: u32, kbit: u32, latency_ms: u32) -> Result<(), String> {
        let b = self.bridge.as_ref().expect("the bridge").name();
        let n = self.node_ns(id).name();
        let p = port(Member::Node(id));
        let (rate, lat) = (format!("{kbit}kbit"), format!("{latency_ms}ms"));
        for (ns, dev) in [(n, "eth0"), (b, p.as_str())] {
            let args = ["-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate];
            let rest = ["burst", "16kb", "latency", &lat];
            tool("tc", args.iter().chain(rest.iter()), None)?;
        }
        Ok(())
    }

    /// Removes node `id`'s shaping (no error if there was none).
    pub fn unshape(&self, id: u32) {
        let b = self.bridge.as_ref().expect("the bridge").name().to_string();
        let n = self.node_ns(id).name().to_string();
        let p = port(Member::Node(id));
        for (ns, dev) in [(n.as_str(), "eth0"), (b.as_str(), p.as_str())] {
            let _ = tool("tc", ["-n", ns, "qdisc", "del", "dev", dev, "root"], None);
        }
    }

    /// Undoes every network fault: links and ports up, filter empty, no
    /// shaping. Best effort; returns what failed.
    pub fn heal(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for id in 1..=self.nodes {
            for r in [self.link_up(id), self.port_up(id)] {
                if let Err(e) = r {
                    errors.push(e);
                }
            }
            self.unshape(id);
        }
        if let Err(e) = self.apply_filter(&Filter::default()) {
            errors.push(e);
        }
        errors
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.members.clear();
        self.bridge = None;
        for name in self.created.drain(..).rev() {
            if let Err(e) = tool("ip", ["netns", "del", name.as_str()], None) {
                eprintln!("netns cleanup: {e}");
            }
        }
    }
}

fn suffix(m: Member) -> String {
    match m {
        Member::Node(id) => format!("n{id}"),
        Member::Clients => "cl".into(),
    }
}

/// The bridge's port of a member (interface names are at most 15 bytes).
fn port(m: Member) -> String {
    match m {
        Member::Node(id) => format!("p{id}"),
        Member::Clients => "pc".into(),
    }
}

fn port_set(ids: &[u32]) -> String {
    let names: Vec<String> = ids.iter().map(|&id| format!("\"{}\"", port(Member::Node(id)))).collect();
    format!("{{ {} }}", names.join(", "))
}

/// Whether a `scsf-<pid>-…` name belongs to this process or to one that is
/// gone (a run killed before its cleanup).
fn is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else { return false };
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { return false };
    pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and tmpfs mounts left by fault-suite runs that no
/// longer exist, and, the first time in a process, those named after this
/// pid (left by an earlier process that had it).
pub fn clean_leftovers() {
    static FIRST: std::sync::Once = std::sync::Once::new();
    let mut first = false;
    FIRST.call_once(|| first = true);
    let ours = format!("{PREFIX}{}-", std::process::id());
    let stale = |name: &str| is_stale(name) && (first || !name.starts_with(&ours));
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines() {
            let Some(mp) = line.split(' ').nth(4) else { continue };
            let base = Path::new(mp).iter().filter_map(|c| c.to_str()).find(|c| c.starts_with(PREFIX));
            if base.is_some_and(stale) && line.contains(" - tmpfs ") {
                let _ = tool("umount", ["-l", mp], None);
            }
        }
    }
    let Ok(list) = tool("ip", ["netns", "list"], None) else { return };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if stale(name) {
            let _ = tool("ip", ["netns", "del", name], None);
        }
    }
}

/// Removes every namespace and tmpfs mount named after this process, in
/// use or not: for a watchdog about to end the process.
pub fn emergency_cleanup() {
    let ours = format!("{PREFIX}{}-", std::process::id());
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines() {
            let Some(mp) = line.split(' ').nth(4) else { continue };
            if mp.contains(&ours) && line.contains(" - tmpfs ") {
                let _ = tool("umount", ["-l", mp], None);
            }
        }
    }
    if let Ok(list) = tool("ip", ["netns", "list"], None) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with(&ours) {
                let _ = tool("ip", ["netns", "del", name], None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_this_process_or_of_dead_ones_are_stale() {
        assert!(is_stale(&format!("{PREFIX}{}-0-br", std::process::id())));
        assert!(!is_stale(&format!("{PREFIX}1-0-br")), "pid 1 is alive");
        assert!(!is_stale("scs-other-123"));
        assert!(is_stale(&format!("{PREFIX}4194304999-0-n1")), "no such pid");
    }

    #[test]
    fn port_sets_name_the_bridge_ports_of_nodes() {
        assert_eq!(port_set(&[1, 5]), "{ \"p1\", \"p5\" }");
        assert_eq!(port(Member::Clients), "pc");
    }
}
