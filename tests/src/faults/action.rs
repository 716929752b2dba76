//! What a client asks for and what a read sees: the words the workload,
//! the model of possible states and the checker share.

use std::fmt;

use scs_common::name::is_inside as inside;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create or overwrite `name` with content hashing to `sha`.
    Upload {
        name: String,
        sha: String,
        size: u64,
    },
    Read {
        name: String,
    },
    Delete {
        name: String,
    },
    /// `mv from to` of a file (replaces `to`).
    Rename {
        from: String,
        to: String,
    },
    /// `ln from to`: a second name of the file.
    Link {
        from: String,
        to: String,
    },
    /// `mv from to` of a directory, with everything below it.
    RenameDir {
        from: String,
        to: String,
    },
    /// `rm name` of an empty directory.
    RemoveDir {
        name: String,
    },
    /// `scs trash restore name` of a file removed from there.
    Restore {
        name: String,
    },
    /// `scs restore name --version N` of the newest version `scs versions`
    /// lists: the file's content before its last overwrite, again.
    Revert {
        name: String,
    },
}

impl Action {
    /// The names it touches.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Action::Upload { name, .. }
            | Action::Read { name }
            | Action::Delete { name }
            | Action::RemoveDir { name }
            | Action::Restore { name }
            | Action::Revert { name } => vec![name],
            Action::Rename { from, to } | Action::Link { from, to } | Action::RenameDir { from, to } => {
                vec![from, to]
            }
        }
    }

    /// Whether it may change what `name` reads: it names it or a directory
    /// above it.
    pub fn touches(&self, name: &str) -> bool {
        self.names().iter().any(|n| *n == name || inside(name, n))
    }

    pub fn is_write(&self) -> bool {
        !matches!(self, Action::Read { .. })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Upload { .. } => "upload",
            Action::Read { .. } => "read",
            Action::Delete { .. } => "delete",
            Action::Rename { .. } => "rename",
            Action::Link { .. } => "link",
            Action::RenameDir { .. } => "rename-dir",
            Action::RemoveDir { .. } => "rmdir",
            Action::Restore { .. } => "restore",
            Action::Revert { .. } => "revert",
        }
    }
}

/// What a read saw.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seen {
    Absent,
    Present(String),
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Absent => write!(f, "absent"),
            Seen::Present(sha) => write!(f, "{}", &sha[..12.min(sha.len())]),
        }
    }
}
