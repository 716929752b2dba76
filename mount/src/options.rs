//! The mount(8) option list of `scs-mount SOURCE DIR -o OPTIONS` and of
//! `mount.scs`: a pure parse of the comma-separated words into an
//! [`OptionList`]. Nothing here touches a file, the cluster or FUSE.

use std::fmt;
use std::path::PathBuf;

/// Options mount(8) and fstab pass to every helper that mean nothing to an
/// scs mount. scs mounts are always nosuid and nodev, whatever is asked;
/// `user=NAME` is what mount(8) adds when a user mounts a `user` entry.
const GENERIC: &[&str] = &[
    "defaults",
    "_netdev",
    "nofail",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "lazytime",
];

/// The scs options that take no value.
const FLAGS: &[&str] = &["allow_other", "write_back", "foreground", "ro", "rw"];

/// Generic options that carry a value or a namespace of their own
/// (`x-systemd.requires=...`, `x-gvfs-show`, `comment=...`, `user=NAME`).
const GENERIC_PREFIXES: &[&str] = &["x-", "comment=", "user="];

/// What one or more `-o` lists ask for; `None`, empty or `false` when not
/// given. A later word overrides an earlier one (`ro,rw` is read-write), as
/// in mount(8), except `node=`: every one given counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionList {
    pub allow_other: bool,
    /// `Some(true)` for `ro`, `Some(false)` for `rw`.
    pub read_only: Option<bool>,
    pub write_back: bool,
    pub foreground: bool,
    pub cache_dir: Option<PathBuf>,
    pub group: Option<String>,
    pub iface: Option<String>,
    /// Every `node=`, in order (`node=a:7781,node=b:7781`).
    pub nodes: Vec<String>,
    pub secret_file: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    /// Words accepted without effect (the generic ones, and unknown ones
    /// under [`Unknown::Ignore`]), in order, for a verbose report.
    pub ignored: Vec<String>,
}

/// What to do with a word that is neither an scs option nor a generic one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// Refuse the whole list (the default).
    Refuse,
    /// Accept it without effect (`mount.scs -s`, mount(8)'s sloppy mode).
    Ignore,
}

/// Why an option list was refused; nothing was mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// A word scs does not know (and the list is not sloppy).
    Unknown(String),
    /// `cache_dir`, `group`, ... without `=VALUE`, or with an empty one.
    NeedsValue(&'static str),
    /// `ro=1`, `allow_other=yes`: a flag given a value.
    TakesNoValue(String),
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::Unknown(word) => write!(f, "unknown mount option: {word}"),
            OptionError::NeedsValue(name) => write!(f, "mount option {name} needs a value ({name}=...)"),
            OptionError::TakesNoValue(word) => write!(f, "mount option {word} takes no value"),
        }
    }
}

impl std::error::Error for OptionError {}

impl OptionList {
    /// Parses one comma-separated list into this one (so several `-o` add up).
    /// Empty words (`ro,,rw`, a trailing comma) are skipped. Values cannot
    /// contain commas.
    ///
    /// # Errors
    /// The first word refused; the list is then left partly applied.
    pub fn add(&mut self, list: &str, unknown: Unknown) -> Result<(), OptionError> {
        for word in list.split(',').filter(|w| !w.is_empty()) {
            self.add_word(word, unknown)?;
        }
        Ok(())
    }

    fn add_word(&mut self, word: &str, unknown: Unknown) -> Result<(), OptionError> {
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (word, None),
        };
        if value.is_some() && FLAGS.contains(&name) {
            return Err(OptionError::TakesNoValue(name.to_string()));
        }
        match name {
            "allow_other" => self.allow_other = true,
            "write_back" => self.write_back = true,
            "foreground" => self.foreground = true,
            "ro" | "rw" => self.read_only = Some(name == "ro"),
            "cache_dir" => self.cache_dir = Some(needs_value("cache_dir", value)?.into()),
            "group" => self.group = Some(needs_value("group", value)?.to_string()),
            "iface" => self.iface = Some(needs_value("iface", value)?.to_string()),
            "node" => self.nodes.push(needs_value("node", value)?.to_string()),
            "secret_file" => self.secret_file = Some(needs_value("secret_file", value)?.into()),
            "metrics_listen" => self.metrics_listen = Some(needs_value("metrics_listen", value)?.to_string()),
            _ if is_generic(word) => self.ignored.push(word.to_string()),
            _ => match unknown {
                Unknown::Refuse => return Err(OptionError::Unknown(word.to_string())),
                Unknown::Ignore => self.ignored.push(word.to_string()),
            },
        }
        Ok(())
    }
}

fn needs_value<'a>(name: &'static str, value: Option<&'a str>) -> Result<&'a str, OptionError> {
    value.filter(|v| !v.is_empty()).ok_or(OptionError::NeedsValue(name))
}

fn is_generic(word: &str) -> bool {
    GENERIC.contains(&word) || GENERIC_PREFIXES.iter().any(|p| word.starts_with(p))
}

/// Whether fuse.conf text lets users other than root mount with
/// `allow_other`: a `user_allow_other` line, as fusermount3 reads it
/// (anything after `#` is a comment; surrounding blanks do not count).
pub fn fuse_conf_allows_other(text: &str) -> bool {
    text.lines().any(|line| line.split('#').next().unwrap_or("").trim() == "user_allow_other")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &str) -> Result<OptionList, OptionError> {
        let mut o = OptionList::default();
        o.add(list, Unknown::Refuse).map(|()| o)
    }

    #[test]
    fn scs_options_set_what_they_name() {
        let o = parse("allow_other,ro,write_back,foreground,cache_dir=/var/cache/x,group=239.1.2.3:7000,iface=10.0.0.2,node=10.0.0.3:7781,secret_file=/etc/k").unwrap();
        assert!(o.allow_other && o.write_back && o.foreground);
        assert_eq!(o.read_only, Some(true));
        assert_eq!(o.cache_dir, Some(PathBuf::from("/var/cache/x")));
        assert_eq!(o.group.as_deref(), Some("239.1.2.3:7000"));
        assert_eq!(o.iface.as_deref(), Some("10.0.0.2"));
        assert_eq!(o.nodes, ["10.0.0.3:7781"]);
        assert_eq!(o.secret_file, Some(PathBuf::from("/etc/k")));
        assert!(o.ignored.is_empty());
    }

    #[test]
    fn nothing_given_leaves_every_option_unset() {
        assert_eq!(parse("").unwrap(), OptionList::default());
        assert_eq!(parse(",,").unwrap(), OptionList::default());
    }

    #[test]
    fn the_last_of_ro_and_rw_wins_as_in_mount() {
        assert_eq!(parse("ro,rw").unwrap().read_only, Some(false));
        assert_eq!(parse("rw,ro").unwrap().read_only, Some(true));
        let mut o = parse("node=a:1,ro").unwrap();
        o.add("node=b:2,rw", Unknown::Refuse).unwrap();
        assert_eq!(o.read_only, Some(false));
    }

    #[test]
    fn every_node_given_counts_in_order() {
        let mut o = parse("node=a:1,ro,node=b:2").unwrap();
        o.add("node=c:3", Unknown::Refuse).unwrap();
        assert_eq!(o.nodes, ["a:1", "b:2", "c:3"]);
        assert_eq!(parse("ro").unwrap().nodes, Vec::<String>::new());
    }

    #[test]
    fn generic_fstab_options_are_accepted_and_ignored() {
        let list = "defaults,_netdev,nofail,auto,noauto,user,users,nouser,exec,noexec,suid,nosuid,dev,nodev,\
                    relatime,noatime,x-systemd.automount,x-systemd.requires=network-online.target,x-gvfs-show,\
                    comment=shared drive,user=alice";
        let o = parse(list).unwrap();
        assert_eq!(o.ignored, list.split(',').collect::<Vec<_>>());
        assert_eq!(OptionList { ignored: vec![], ..o }, OptionList::default());
    }

    #[test]
    fn an_unknown_option_is_refused_by_name() {
        assert_eq!(parse("allow_other,bogus,ro"), Err(OptionError::Unknown("bogus".into())));
        assert_eq!(parse("sync").unwrap_err().to_string(), "unknown mount option: sync");
        assert_eq!(parse("fsname=x").unwrap_err().to_string(), "unknown mount option: fsname=x");
    }

    #[test]
    fn a_sloppy_list_ignores_unknown_options_but_not_bad_known_ones() {
        let mut o = OptionList::default();
        o.add("bogus,ro,vers=4", Unknown::Ignore).unwrap();
        assert_eq!(o.read_only, Some(true));
        assert_eq!(o.ignored, ["bogus", "vers=4"]);
        assert_eq!(o.add("node=", Unknown::Ignore), Err(OptionError::NeedsValue("node")));
    }

    #[test]
    fn values_are_required_where_named_and_refused_on_flags() {
        for name in ["cache_dir", "group", "iface", "node", "secret_file", "metrics_listen"] {
            assert_eq!(parse(name), Err(OptionError::NeedsValue(name)), "{name}");
            assert_eq!(parse(&format!("{name}=")), Err(OptionError::NeedsValue(name)), "{name}=");
        }
        assert_eq!(parse("node").unwrap_err().to_string(), "mount option node needs a value (node=...)");
        for word in ["ro=1", "rw=0", "allow_other=yes", "write_back=", "foreground=1"] {
            assert!(matches!(parse(word), Err(OptionError::TakesNoValue(_))), "{word}");
        }
        assert_eq!(parse("ro=1").unwrap_err().to_string(), "mount option ro takes no value");
    }

    #[test]
    fn a_value_keeps_everything_after_the_first_equals_sign() {
        assert_eq!(parse("cache_dir=/tmp/a=b").unwrap().cache_dir, Some(PathBuf::from("/tmp/a=b")));
    }

    #[test]
    fn fuse_conf_allows_other_only_with_an_uncommented_line() {
        assert!(fuse_conf_allows_other("# mount_max = 1000\nuser_allow_other\n"));
        assert!(fuse_conf_allows_other("  user_allow_other   # for scs\n"));
        assert!(!fuse_conf_allows_other("#user_allow_other\n"));
        assert!(!fuse_conf_allows_other("# user_allow_other\nmount_max = 10\n"));
        assert!(!fuse_conf_allows_other("user_allow_other_not\n"));
        assert!(!fuse_conf_allows_other(""));
    }
}
