//! The client config file, `$XDG_CONFIG_HOME/scs/client.toml` (else
//! `~/.config/scs/client.toml`), read by `scs` and `scs-mount`, and how it
//! combines with their command lines into [`ClientOptions`]. It reads that
//! one file and opens no socket.
//!
//! ```toml
//! nodes = ["10.0.0.1:7781", "10.0.0.2:7781"]   # no multicast: ask these
//! secret_file = "/etc/scs/cluster.key"
//! ```

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use scs_common::config::{self, DEFAULT_GROUP, DEFAULT_IFACE};
use scs_common::{Error, Result};

use crate::client::{ClientOptions, RETRY_WINDOW};

/// The keys of `client.toml`, every one optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// Nodes to ask where the leader is (HOST:PORT), instead of listening
    /// for heartbeats; the other members are learned from them.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// The multicast group the heartbeats are on (when no node is named).
    pub group: Option<String>,
    /// The interface to listen for heartbeats on.
    pub iface: Option<String>,
    /// The cluster key.
    pub secret_file: Option<PathBuf>,
}

/// Where the cluster is as the command line (flags, or mount options) puts
/// it: empty or `None` for what it does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Given {
    pub nodes: Vec<String>,
    pub group: Option<String>,
    pub iface: Option<String>,
    pub secret_file: Option<PathBuf>,
}

/// `$XDG_CONFIG_HOME/scs/client.toml`, else `~/.config/scs/client.toml`;
/// `None` when neither variable is set (a mount at boot, say).
pub fn default_path() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|home| home.join(".config")))?;
    Some(dir.join("scs/client.toml"))
}

impl ClientFile {
    /// Reads the file at `path`; a missing file is an empty one.
    ///
    /// # Errors
    /// `Config`, in one line naming the file and the problem: unreadable,
    /// not TOML, an unknown key, an address or group that cannot be right.
    pub fn load(path: &Path) -> Result<ClientFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ClientFile::default()),
            // A HOME that is not ours (sudo, setpriv, a mount.scs run by
            // mount(8)): a file we cannot even see is none. One we can see
            // but not read is a mistake worth naming.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && std::fs::metadata(path).is_err() => {
                return Ok(ClientFile::default())
            }
            Err(e) => return Err(Error::Config(format!("cannot read {}: {e}", path.display()))),
        };
        // Root with a user's HOME (sudo -E) must not take that user's word
        // for which nodes and key a shared mount uses.
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid == 0 && std::fs::metadata(path).is_ok_and(|m| m.uid() != 0) {
            log::warn!("ignoring {}: run as root, only a file root owns is read", path.display());
            return Ok(ClientFile::default());
        }
        ClientFile::parse(&text).map_err(|why| Error::Config(format!("{}: {why}", path.display())))
    }

    /// The file at [`default_path`], if there is one.
    ///
    /// # Errors
    /// As [`ClientFile::load`].
    pub fn load_default() -> Result<ClientFile> {
        default_path().map_or(Ok(ClientFile::default()), |p| ClientFile::load(&p))
    }

    /// The keys in `text`, checked; else the problem, in one line.
    fn parse(text: &str) -> std::result::Result<ClientFile, String> {
        let file: ClientFile = toml::from_str(text).map_err(|e| {
            // toml's Display draws the offending line; one line is wanted.
            let why = e.message().trim().replace('\n', " ");
            match e.span() {
                Some(span) => format!("line {}: {why}", text[..span.start.min(text.len())].matches('\n').count() + 1),
                None => why,
            }
        })?;
        let checked = (file.nodes.iter().try_for_each(|n| check_node(n)))
            .and_then(|()| file.group.as_deref().map_or(Ok(()), |g| config::parse_group(g).map(drop)))
            .and_then(|()| file.iface.as_deref().map_or(Ok(()), |i| config::parse_iface(i).map(drop)));
        // The messages are `Config` ones: drop the "bad config: " prefix.
        checked.map_err(|e| match e {
            Error::Config(m) => m,
            other => other.to_string(),
        })?;
        Ok(file)
    }
}

/// The options for a client: each setting from the command line when given
/// there, else from the file, else the default. Nodes named on the command
/// line replace the file's; `--group` or `--iface` on the command line ask
/// for multicast even when the file names nodes.
///
/// # Errors
/// `Config` for a node address, group or interface that cannot be right.
pub fn resolve(given: Given, file: ClientFile) -> Result<ClientOptions> {
    let multicast_asked = given.group.is_some() || given.iface.is_some();
    let nodes = match (given.nodes.is_empty(), multicast_asked) {
        (false, _) => given.nodes,
        (true, true) => Vec::new(),
        (true, false) => file.nodes,
    };
    for n in &nodes {
        check_node(n)?;
    }
    let group = given.group.or(file.group);
    let iface = given.iface.or(file.iface);
    Ok(ClientOptions {
        group: config::parse_group(group.as_deref().unwrap_or(DEFAULT_GROUP))?,
        iface: config::parse_iface(iface.as_deref().unwrap_or(DEFAULT_IFACE))?,
        nodes,
        secret_file: given.secret_file.or(file.secret_file).unwrap_or_else(config::default_secret_file),
        retry_window: RETRY_WINDOW,
    })
}

/// A node address: `HOST:PORT` (the host is looked up when it is dialled).
///
/// # Errors
/// `Config` saying what is wrong with it.
pub fn check_node(addr: &str) -> Result<()> {
    if config::is_host_port(addr) {
        return Ok(());
    }
    Err(Error::Config(format!("a node is HOST:PORT, like 10.0.0.1:7781, not {addr:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_sets_every_key() {
        let f = ClientFile::parse(
            "nodes = [\"10.0.0.1:7781\", \"node-b.example:7782\"]\ngroup = \"239.1.2.3:7000\"\n\
             iface = \"10.0.0.9\"\nsecret_file = \"/etc/scs/k\"\n",
        )
        .unwrap();
        assert_eq!(f.nodes, ["10.0.0.1:7781", "node-b.example:7782"]);
        assert_eq!((f.group.as_deref(), f.iface.as_deref()), (Some("239.1.2.3:7000"), Some("10.0.0.9")));
        assert_eq!(f.secret_file, Some(PathBuf::from("/etc/scs/k")));
        assert_eq!(ClientFile::parse("").unwrap(), ClientFile::default());
    }

    #[test]
    fn an_unknown_key_is_named_in_one_line_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, "nodes = [\"10.0.0.1:7781\"]\nnode = \"10.0.0.2:7781\"\n").unwrap();
        let e = ClientFile::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("bad config: {}: line 2: unknown field `node`", path.display())), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn bad_toml_and_bad_values_are_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        for (text, want) in [
            ("nodes = [\"10.0.0.1:7781\"", "line 1"),
            ("nodes = \"10.0.0.1:7781\"", "invalid type"),
            ("nodes = [\"10.0.0.1\"]", "a node is HOST:PORT, like 10.0.0.1:7781, not \"10.0.0.1\""),
            ("group = \"nonsense\"", "nonsense"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = ClientFile::load(&path).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()) && e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'), "{text}: {e}");
        }
    }

    #[test]
    fn a_missing_file_is_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ClientFile::load(&dir.path().join("client.toml")).unwrap(), ClientFile::default());
    }

    #[test]
    fn flags_override_the_file_key_by_key() {
        let file = ClientFile {
            nodes: vec!["10.0.0.1:7781".into()],
            group: Some("239.1.2.3:7000".into()),
            iface: Some("10.0.0.9".into()),
            secret_file: Some("/from/file".into()),
        };
        let o = resolve(Given::default(), file.clone()).unwrap();
        assert_eq!(o.nodes, ["10.0.0.1:7781"]);
        assert_eq!((o.group.to_string(), o.iface.to_string()), ("239.1.2.3:7000".into(), "10.0.0.9".into()));
        assert_eq!(o.secret_file, PathBuf::from("/from/file"));

        let given = Given {
            nodes: vec!["10.0.0.5:1".into(), "10.0.0.6:2".into()],
            secret_file: Some("/from/flag".into()),
            ..Given::default()
        };
        let o = resolve(given, file.clone()).unwrap();
        assert_eq!(o.nodes, ["10.0.0.5:1", "10.0.0.6:2"], "nodes on the command line replace the file's");
        assert_eq!(o.secret_file, PathBuf::from("/from/flag"));
        assert_eq!(o.group.to_string(), "239.1.2.3:7000", "what the flags leave out still comes from the file");

        let given = Given { group: Some("239.9.9.9:9000".into()), ..Given::default() };
        let o = resolve(given, file).unwrap();
        assert!(o.nodes.is_empty(), "--group on the command line asks for multicast: {o:?}");
        assert_eq!(o.group.to_string(), "239.9.9.9:9000");
    }

    #[test]
    fn without_file_or_flags_the_defaults_listen_on_the_group() {
        let o = resolve(Given::default(), ClientFile::default()).unwrap();
        assert!(o.nodes.is_empty());
        assert_eq!(o.group.to_string(), DEFAULT_GROUP);
        assert_eq!(o.iface.to_string(), DEFAULT_IFACE);
    }

    #[test]
    fn node_addresses_need_a_host_and_a_port() {
        for good in ["10.0.0.1:7781", "node-a:1", "[::1]:7781"] {
            assert!(check_node(good).is_ok(), "{good}");
        }
        for bad in ["", "10.0.0.1", ":7781", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:99999", "a b:1"] {
            assert!(check_node(bad).is_err(), "{bad:?}");
        }
        let given = Given { nodes: vec!["10.0.0.1".into()], ..Given::default() };
        assert!(resolve(given, ClientFile::default()).unwrap_err().to_string().contains("HOST:PORT"));
    }
}
