//! Node configuration: the TOML keys of DESIGN section 9, their defaults, and
//! validation. Validated once, before any socket opens.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::NodeId;

pub const DEFAULT_GROUP: &str = "239.255.77.77:7777";
pub const DEFAULT_IFACE: &str = "127.0.0.1";
/// Node `n` listens on this port + n unless told otherwise.
pub const BASE_PORT: u16 = 7780;
/// Copies per file unless `replicas` says otherwise (fewer on a smaller cluster).
pub const DEFAULT_REPLICAS: u32 = 3;

/// The config file and the command-line flags both fill this: every key
/// optional, flags laid over the file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    pub id: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub group: Option<String>,
    pub iface: Option<String>,
    pub cluster_size: Option<u32>,
    pub max_files: Option<u64>,
    pub replicas: Option<u32>,
    pub secret_file: Option<PathBuf>,
    pub heartbeat_ms: Option<u64>,
    pub leader_timeout_ms: Option<u64>,
    pub answer_timeout_ms: Option<u64>,
    pub repair_delay_ms: Option<u64>,
    pub scrub_bytes_per_sec: Option<u64>,
    pub rebalance_bytes_per_sec: Option<u64>,
    pub scrub_interval_ms: Option<u64>,
    pub tombstone_ttl_ms: Option<u64>,
    pub trash_hours: Option<f64>,
    pub max_versions: Option<u32>,
    pub max_handshakes: Option<usize>,
    pub max_client_sessions: Option<usize>,
    pub max_node_sessions: Option<usize>,
    pub handshake_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub client_requests_per_sec: Option<u32>,
    pub metrics_listen: Option<String>,
    pub log_format: Option<String>,
    pub peers: Option<Vec<String>>,
    pub members: Option<Vec<u32>>,
}

impl NodeSettings {
    /// Reads a TOML config file.
    ///
    /// # Errors
    /// `Config` naming the file and the offending key or line.
    pub fn from_file(path: &Path) -> Result<NodeSettings> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().to_string();
            Error::Config(format!("{}: {msg}", path.display()))
        })
    }

    /// `self` with every key that `over` sets replaced.
    pub fn overlay(self, over: NodeSettings) -> NodeSettings {
        NodeSettings {
            id: over.id.or(self.id),
            data_dir: over.data_dir.or(self.data_dir),
            listen: over.listen.or(self.listen),
            group: over.group.or(self.group),
            iface: over.iface.or(self.iface),
            cluster_size: over.cluster_size.or(self.cluster_size),
            max_files: over.max_files.or(self.max_files),
            replicas: over.replicas.or(self.replicas),
            secret_file: over.secret_file.or(self.secret_file),
            heartbeat_ms: over.heartbeat_ms.or(self.heartbeat_ms),
            leader_timeout_ms: over.leader_timeout_ms.or(self.leader_timeout_ms),
            answer_timeout_ms: over.answer_timeout_ms.or(self.answer_timeout_ms),
            repair_delay_ms: over.repair_delay_ms.or(self.repair_delay_ms),
            scrub_bytes_per_sec: over.scrub_bytes_per_sec.or(self.scrub_bytes_per_sec),
            rebalance_bytes_per_sec: over.rebalance_bytes_per_sec.or(self.rebalance_bytes_per_sec),
            scrub_interval_ms: over.scrub_interval_ms.or(self.scrub_interval_ms),
            tombstone_ttl_ms: over.tombstone_ttl_ms.or(self.tombstone_ttl_ms),
            trash_hours: over.trash_hours.or(self.trash_hours),
            max_versions: over.max_versions.or(self.max_versions),
            max_handshakes: over.max_handshakes.or(self.max_handshakes),
            max_client_sessions: over.max_client_sessions.or(self.max_client_sessions),
            max_node_sessions: over.max_node_sessions.or(self.max_node_sessions),
            handshake_timeout_ms: over.handshake_timeout_ms.or(self.handshake_timeout_ms),
            idle_timeout_ms: over.idle_timeout_ms.or(self.idle_timeout_ms),
            client_requests_per_sec: over.client_requests_per_sec.or(self.client_requests_per_sec),
            metrics_listen: over.metrics_listen.or(self.metrics_listen),
            log_format: over.log_format.or(self.log_format),
            peers: over.peers.or(self.peers),
            members: over.members.or(self.members),
        }
    }
}

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Where the TCP server binds.
    pub listen: SocketAddr,
    /// Where peers and clients reach it (the listen address, or the
    /// interface address when listening on 0.0.0.0).
    pub advertise: SocketAddr,
    pub group: SocketAddrV4,
    pub iface: Ipv4Addr,
    /// The members a new cluster starts with: `members`, else 1 to
    /// `cluster_size`. Once a cluster's first leader has committed the
    /// membership, the replicated record is what counts (it changes with
    /// `scs node add/drain/remove`); a node whose id is not among them
    /// waits as a candidate until it is added.
    pub members: BTreeSet<NodeId>,
    /// How many members there are.
    pub cluster_size: u32,
    pub max_files: Option<u64>,
    pub replicas: u32,
    pub secret_file: PathBuf,
    pub heartbeat: Duration,
    pub leader_timeout: Duration,
    pub answer_timeout: Duration,
    pub repair_delay: Duration,
    /// How fast the scrub re-reads blobs; 0 turns it off.
    pub scrub_bytes_per_sec: u64,
    /// How fast the leader moves copies to emptier members; 0 turns the
    /// rebalancer off.
    pub rebalance_bytes_per_sec: u64,
    /// Pause between two scrub passes.
    pub scrub_interval: Duration,
    /// How old a tombstone must be before it may be purged (once every node has it).
    pub tombstone_ttl: Duration,
    /// How long files removed, or replaced by a name, stay in the trash
    /// (`trash_hours`); `None` when the trash is off. The leader's setting
    /// counts.
    pub trash: Option<Duration>,
    /// Earlier versions kept of one file at most (`max_versions`), with
    /// the trash on; the oldest go first. 0 keeps none (removed files still
    /// go to the trash). The leader's setting counts.
    pub max_versions: u32,
    pub limits: Limits,
    /// Where `/metrics` and `/health` are served over HTTP (off when unset).
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// The members' addresses (`host:port`, each node's `listen`) for
    /// unicast gossip; empty: gossip goes to the multicast group.
    pub peers: Vec<String>,
}

/// How a node writes its log lines (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `[time LEVEL target] message`, for people.
    #[default]
    Text,
    /// One JSON object per line (`ts`, `level`, `target`, `msg`), for log
    /// collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<LogFormat> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(Error::Config(format!("log_format must be \"text\" or \"json\", not {s:?}"))),
        }
    }
}

/// What one node gives the network at most, so that no peer, with the key
/// or without, can shut others out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Handshakes in progress at once; past it the oldest is ended.
    pub max_handshakes: usize,
    /// Authenticated sessions at once, for clients and for other nodes
    /// (counted apart, so clients never take the slots replication needs).
    pub max_client_sessions: usize,
    pub max_node_sessions: usize,
    /// How long a whole handshake may take (a slow-loris peer is cut off).
    pub handshake_timeout: Duration,
    /// How long a session may sit between requests.
    pub idle_timeout: Duration,
    /// Requests per second served to the clients of one address (a second's
    /// worth may come at once); more are delayed, not refused. 0: no limit.
    pub client_requests_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_handshakes: 4096,
            max_client_sessions: 512,
            max_node_sessions: 256,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            client_requests_per_sec: 5000,
        }
    }
}

impl Limits {
    fn resolve(s: &NodeSettings) -> Result<Limits> {
        let d = Limits::default();
        let count = |key: &str, v: Option<usize>, default: usize| match v {
            None => Ok(default),
            Some(n) if (1..=1_000_000).contains(&n) => Ok(n),
            Some(n) => Err(Error::Config(format!("{key} must be between 1 and 1000000, not {n}"))),
        };
        let millis = |key: &str, v: Option<u64>, default: Duration| match v {
            None => Ok(default),
            Some(ms) if (100..=86_400_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            Some(ms) => Err(Error::Config(format!("{key} must be between 100 and 86400000, not {ms}"))),
        };
        Ok(Limits {
            max_handshakes: count("max_handshakes", s.max_handshakes, d.max_handshakes)?,
            max_client_sessions: count("max_client_sessions", s.max_client_sessions, d.max_client_sessions)?,
            max_node_sessions: count("max_node_sessions", s.max_node_sessions, d.max_node_sessions)?,
            handshake_timeout: millis("handshake_timeout_ms", s.handshake_timeout_ms, d.handshake_timeout)?,
            idle_timeout: millis("idle_timeout_ms", s.idle_timeout_ms, d.idle_timeout)?,
            client_requests_per_sec: s.client_requests_per_sec.unwrap_or(d.client_requests_per_sec),
        })
    }
}

impl NodeConfig {
    /// Whether an overwrite keeps what it replaces as an earlier version:
    /// with the trash on and `max_versions` above 0.
    pub fn keeps_versions(&self) -> bool {
        self.trash.is_some() && self.max_versions > 0
    }

    /// Fills in defaults and checks every value.
    ///
    /// # Errors
    /// `Config` with a message naming the key.
    pub fn resolve(s: NodeSettings) -> Result<NodeConfig> {
        let bad = |m: String| Err(Error::Config(m));
        let members = Self::members(&s)?;
        let cluster_size = members.len() as u32;
        // An id outside the bootstrap members is a node that joins a running
        // cluster: it waits as a candidate until `scs node add`.
        let id = s.id.unwrap_or(1);
        if id == 0 {
            return bad("id must be a positive integer, not 0".into());
        }
        let group = parse_group(s.group.as_deref().unwrap_or(DEFAULT_GROUP))?;
        let iface = parse_iface(s.iface.as_deref().unwrap_or(DEFAULT_IFACE))?;
        let listen: SocketAddr = match &s.listen {
            Some(l) => l.parse().map_err(|_| {
                Error::Config(format!("listen must be IP:PORT, like 127.0.0.1:{}, not {l:?}", BASE_PORT + 1))
            })?,
            None => {
                let port = u16::try_from(BASE_PORT as u32 + id)
                    .map_err(|_| Error::Config(format!("no default port for id {id}; set listen")))?;
                SocketAddr::new(IpAddr::V4(iface), port)
            }
        };
        let advertise =
            if listen.ip().is_unspecified() { SocketAddr::new(IpAddr::V4(iface), listen.port()) } else { listen };
        // Copies per file: at most one per member that takes copies, so
        // a smaller cluster keeps a copy on every member.
        let replicas = s.replicas.unwrap_or(DEFAULT_REPLICAS);
        if !(1..=1000).contains(&replicas) {
            return bad(format!("replicas must be between 1 and 1000, not {replicas}"));
        }
        let heartbeat_ms = s.heartbeat_ms.unwrap_or(100);
        if !(10..=10_000).contains(&heartbeat_ms) {
            return bad(format!("heartbeat_ms must be between 10 and 10000, not {heartbeat_ms}"));
        }
        let leader_timeout_ms = s.leader_timeout_ms.unwrap_or(600);
        if leader_timeout_ms < 3 * heartbeat_ms {
            return bad(format!(
                "leader_timeout_ms ({leader_timeout_ms}) must be at least 3 × heartbeat_ms ({heartbeat_ms}), so one lost heartbeat is not a death"
            ));
        }
        let answer_timeout_ms = s.answer_timeout_ms.unwrap_or(200);
        if answer_timeout_ms == 0 || answer_timeout_ms > leader_timeout_ms {
            return bad(format!("answer_timeout_ms must be between 1 and leader_timeout_ms, not {answer_timeout_ms}"));
        }
        let limits = Limits::resolve(&s)?;
        let metrics_listen = match &s.metrics_listen {
            None => None,
            Some(m) => Some(m.parse().map_err(|_| {
                Error::Config(format!("metrics_listen must be IP:PORT, like 127.0.0.1:9780, not {m:?}"))
            })?),
        };
        let log_format = s.log_format.as_deref().map_or(Ok(LogFormat::Text), str::parse)?;
        let peers = s.peers.unwrap_or_default();
        for p in &peers {
            check_peer(p)?;
        }
        if !peers.is_empty() && listen.ip().is_unspecified() && advertise.ip().is_loopback() {
            return bad(format!(
                "with peers and listen on {listen}, set iface to this node's address that the others reach it at \
                 (it would tell them {advertise})"
            ));
        }
        if peers.len() > 1000 {
            return bad(format!("peers lists {} addresses; at most 1000", peers.len()));
        }
        Ok(NodeConfig {
            id: NodeId(id),
            data_dir: s.data_dir.unwrap_or_else(|| default_data_dir(id)),
            listen,
            advertise,
            group,
            iface,
            members,
            cluster_size,
            max_files: s.max_files,
            replicas,
            secret_file: s.secret_file.unwrap_or_else(default_secret_file),
            heartbeat: Duration::from_millis(heartbeat_ms),
            leader_timeout: Duration::from_millis(leader_timeout_ms),
            answer_timeout: Duration::from_millis(answer_timeout_ms),
            repair_delay: Duration::from_millis(s.repair_delay_ms.unwrap_or(30_000)),
            scrub_bytes_per_sec: s.scrub_bytes_per_sec.unwrap_or(32 << 20),
            rebalance_bytes_per_sec: s.rebalance_bytes_per_sec.unwrap_or(32 << 20),
            scrub_interval: Duration::from_millis(s.scrub_interval_ms.unwrap_or(600_000)),
            tombstone_ttl: Duration::from_millis(s.tombstone_ttl_ms.unwrap_or(3_600_000)),
            trash: trash_retention(s.trash_hours)?,
            max_versions: s.max_versions.unwrap_or(DEFAULT_MAX_VERSIONS),
            limits,
            metrics_listen,
            log_format,
            peers,
        })
    }

    /// The members: the `members` list (any distinct positive ids), else
    /// 1 to `cluster_size`; `cluster_size` with `members` must agree.
    fn members(s: &NodeSettings) -> Result<BTreeSet<NodeId>> {
        let bad = |m: String| Err(Error::Config(m));
        let Some(list) = &s.members else {
            let size = s.cluster_size.unwrap_or(1);
            if size == 0 || size > 1000 {
                return bad(format!("cluster_size must be between 1 and 1000, not {size}"));
            }
            return Ok((1..=size).map(NodeId).collect());
        };
        let members: BTreeSet<NodeId> = list.iter().copied().map(NodeId).collect();
        if members.len() != list.len() || members.contains(&NodeId(0)) {
            return bad(format!("members must be distinct ids from 1 up, not {list:?}"));
        }
        if members.is_empty() || members.len() > 1000 {
            return bad(format!("members must list between 1 and 1000 ids, not {}", members.len()));
        }
        if let Some(size) = s.cluster_size.filter(|n| *n as usize != members.len()) {
            return bad(format!(
                "cluster_size ({size}) is not the number of members ({}); leave it out",
                members.len()
            ));
        }
        Ok(members)
    }

    /// Whether gossip goes to each peer by unicast rather than to the group.
    pub fn unicast(&self) -> bool {
        !self.peers.is_empty()
    }
}

/// Parses a multicast group `IP:PORT` (IPv4, 224.0.0.0/4).
pub fn parse_group(g: &str) -> Result<SocketAddrV4> {
    let addr: SocketAddrV4 = g
        .parse()
        .map_err(|_| Error::Config(format!("group must be MCAST_IP:PORT, like {DEFAULT_GROUP}, not {g:?}")))?;
    if !addr.ip().is_multicast() {
        return Err(Error::Config(format!("group {g} is not a multicast address (224.0.0.0 to 239.255.255.255)")));
    }
    if addr.port() == 0 {
        return Err(Error::Config(format!("group {g} needs a port")));
    }
    Ok(addr)
}

/// Checks one entry of `peers`: see [`is_host_port`]. Names are looked up
/// later, and again now and then, so a machine may change its address.
fn check_peer(p: &str) -> Result<()> {
    if is_host_port(p) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "each of peers must be HOST:PORT (a node's listen address), like 10.0.0.2:7782, not {p:?}"
    )))
}

/// Whether `addr` is `HOST:PORT`: the host a name or an IP address (IPv6
/// in brackets), the port not 0.
pub fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else { return false };
    let bracketed = host.starts_with('[') && host.ends_with(']');
    port.parse::<u16>().is_ok_and(|p| p != 0)
        && !host.is_empty()
        && (bracketed || !host.contains(':'))
        && !host.contains(char::is_whitespace)
}

/// Parses the IPv4 address of the interface multicast goes out on.
pub fn parse_iface(i: &str) -> Result<Ipv4Addr> {
    i.parse().map_err(|_| {
        Error::Config(format!("iface must be the IPv4 address of an interface, like {DEFAULT_IFACE}, not {i:?}"))
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// `/etc/scs/cluster.key` for root (system services), else
/// `~/.config/scs/cluster.key`; `SCS_SECRET_FILE` overrides both.
/// Hours the trash keeps what was removed unless `trash_hours` says otherwise.
pub const DEFAULT_TRASH_HOURS: f64 = 168.0;

/// Earlier versions kept of one file unless `max_versions` says otherwise.
pub const DEFAULT_MAX_VERSIONS: u32 = 100;

/// `trash_hours` as a duration; 0 turns the trash off.
fn trash_retention(hours: Option<f64>) -> Result<Option<Duration>> {
    let h = hours.unwrap_or(DEFAULT_TRASH_HOURS);
    // Ten years; past it a duration in nanoseconds comes close to overflowing.
    if !h.is_finite() || !(0.0..=87_600.0).contains(&h) {
        return Err(Error::Config(format!("trash_hours must be between 0 (off) and 87600, not {h}")));
    }
    Ok((h > 0.0).then(|| Duration::from_secs_f64(h * 3600.0)))
}

pub fn default_secret_file() -> PathBuf {
    if let Some(p) = std::env::var_os("SCS_SECRET_FILE") {
        return PathBuf::from(p);
    }
    if is_root() {
        PathBuf::from("/etc/scs/cluster.key")
    } else {
        home().join(".config/scs/cluster.key")
    }
}

/// `/var/lib/scs/node-N` for root, else `~/.local/share/scs/node-N`.
pub fn default_data_dir(id: u32) -> PathBuf {
    if is_root() {
        PathBuf::from(format!("/var/lib/scs/node-{id}"))
    } else {
        home().join(format!(".local/share/scs/node-{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_one_node_cluster_on_loopback() {
        let c = NodeConfig::resolve(NodeSettings::default()).unwrap();
        assert_eq!(c.id, NodeId(1));
        assert_eq!(c.group.to_string(), DEFAULT_GROUP);
        assert_eq!(c.iface, Ipv4Addr::LOCALHOST);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7781");
        assert_eq!(c.replicas, DEFAULT_REPLICAS);
        assert_eq!(c.members, [NodeId(1)].into());
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        assert_eq!(NodeConfig::resolve(NodeSettings::default()).unwrap().metrics_listen, None);
        let on = NodeSettings { metrics_listen: Some("127.0.0.1:9780".into()), ..Default::default() };
        assert_eq!(NodeConfig::resolve(on).unwrap().metrics_listen, Some("127.0.0.1:9780".parse().unwrap()));
        assert_eq!(NodeConfig::resolve(NodeSettings::default()).unwrap().log_format, LogFormat::Text);
        let json = NodeSettings { log_format: Some("json".into()), ..Default::default() };
        assert_eq!(NodeConfig::resolve(json).unwrap().log_format, LogFormat::Json);
        let e = NodeConfig::resolve(NodeSettings { log_format: Some("xml".into()), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains(r#"log_format must be "text" or "json", not "xml""#), "{e}");
        let bad = NodeSettings { metrics_listen: Some("9780".into()), ..Default::default() };
        let e = NodeConfig::resolve(bad).unwrap_err().to_string();
        assert!(e.contains("metrics_listen must be IP:PORT"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let file: NodeSettings =
            toml::from_str("id = 2\ncluster_size = 3\nmax_files = 5\nlisten = \"0.0.0.0:9000\"").unwrap();
        let flags = NodeSettings { max_files: Some(2), ..Default::default() };
        let c = NodeConfig::resolve(file.overlay(flags)).unwrap();
        assert_eq!((c.id, c.cluster_size, c.max_files), (NodeId(2), 3, Some(2)));
        assert_eq!(c.advertise.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let cases = [
            ("id = 0\ncluster_size = 3", "id must be a positive integer"),
            ("group = \"10.0.0.1:7777\"", "not a multicast"),
            ("iface = \"eth0\"", "iface must be"),
            ("heartbeat_ms = 100\nleader_timeout_ms = 150", "at least 3"),
            ("replicas = 0", "replicas must be"),
            ("max_client_sessions = 0", "max_client_sessions must be"),
            ("handshake_timeout_ms = 5", "handshake_timeout_ms must be"),
            ("peers = [\"10.0.0.2\"]", "each of peers must be HOST:PORT"),
            ("peers = [\"10.0.0.2:0\"]", "each of peers must be HOST:PORT"),
            ("peers = [\"::1:7000\"]", "each of peers must be HOST:PORT"),
            ("peers = [\":7000\"]", "each of peers must be HOST:PORT"),
            ("peers = [\"10.0.0.2:7000\"]\nlisten = \"0.0.0.0:7000\"", "set iface to this node's address"),
            ("id = 10\nmembers = [10, 10]", "members must be distinct"),
            ("id = 10\nmembers = [0, 10]", "members must be distinct"),
            ("id = 10\nmembers = [10, 20]\ncluster_size = 3", "is not the number of members"),
            ("id = 100000\nmembers = [100000]", "no default port for id 100000"),
        ];
        for (toml_text, want) in cases {
            let s: NodeSettings = toml::from_str(toml_text).unwrap();
            let e = NodeConfig::resolve(s).unwrap_err().to_string();
            assert!(e.contains(want), "{toml_text}: {e}");
        }
    }

    #[test]
    fn members_may_be_any_distinct_ids() {
        let s: NodeSettings = toml::from_str("id = 20\nmembers = [30, 10, 20]").unwrap();
        let c = NodeConfig::resolve(s).unwrap();
        assert_eq!(c.members.iter().map(|m| m.0).collect::<Vec<_>>(), [10, 20, 30]);
        assert_eq!(c.cluster_size, 3);
        assert_eq!(c.listen.port(), BASE_PORT + 20);
        let by_size = NodeConfig::resolve(toml::from_str("id = 2\ncluster_size = 3").unwrap()).unwrap();
        assert_eq!(by_size.members, [1, 2, 3].map(NodeId).into());
        // An id outside them is a node that joins later (`scs node add`).
        let joiner = NodeConfig::resolve(toml::from_str("id = 4\ncluster_size = 3").unwrap()).unwrap();
        assert_eq!((joiner.id, joiner.cluster_size, joiner.listen.port()), (NodeId(4), 3, BASE_PORT + 4));
    }

    #[test]
    fn peers_turn_gossip_to_unicast() {
        assert!(!NodeConfig::resolve(NodeSettings::default()).unwrap().unicast());
        let s: NodeSettings =
            toml::from_str("peers = [\"10.0.0.1:7000\", \"node-b.lan:7000\", \"[fd00::3]:7000\"]").unwrap();
        let c = NodeConfig::resolve(s).unwrap();
        assert!(c.unicast());
        assert_eq!(c.peers, ["10.0.0.1:7000", "node-b.lan:7000", "[fd00::3]:7000"]);
    }

    #[test]
    fn network_limits_have_safe_defaults_and_can_be_set() {
        let c = NodeConfig::resolve(NodeSettings::default()).unwrap();
        assert_eq!(c.limits, Limits::default());
        let s: NodeSettings =
            toml::from_str("max_handshakes = 100\nidle_timeout_ms = 1000\nclient_requests_per_sec = 0").unwrap();
        let l = NodeConfig::resolve(s).unwrap().limits;
        assert_eq!((l.max_handshakes, l.idle_timeout, l.client_requests_per_sec), (100, Duration::from_secs(1), 0));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        std::fs::write(&p, "idd = 3\n").unwrap();
        let e = NodeSettings::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("idd"), "{e}");
    }
}
