//! The one error type of SCS, shared by nodes and clients.
//!
//! On the wire an error is a stable [`ErrorCode`] plus its message, so the
//! client decides the errno and the exit code in one place from the code.

use serde::{Deserialize, Serialize};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each with what it means for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The name (or inode) does not exist; nothing was changed.
    #[error("no such file: {0}")]
    NotFound(String),
    /// The name is taken (exclusive create, mkdir, rename onto a directory); nothing was changed.
    #[error("already exists: {0}")]
    Exists(String),
    /// A path component that must be a directory is a file; nothing was changed.
    #[error("not a directory: {0}")]
    NotDir(String),
    /// A file operation was asked of a directory; nothing was changed.
    #[error("is a directory: {0}")]
    IsDir(String),
    /// rmdir (or rename onto) a directory that has children; nothing was changed.
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    /// The name breaks the rules of DESIGN section 2; nothing was changed.
    #[error("bad name: {0}")]
    BadName(String),
    /// A component is over NAME_MAX or the name over PATH_MAX; nothing was changed.
    #[error("name too long: {0}")]
    NameTooLong(String),
    /// No node has room for another file; nothing was stored.
    #[error("no space: {0}")]
    NoSpace(String),
    /// The leader cannot hear a majority; it refuses writes rather than fork the data.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// This node does not lead; the address of the leader when it knows one.
    #[error("not the leader{}", .0.as_ref().map(|a| format!(" (the leader is at {a})")).unwrap_or_default())]
    NotLeader(Option<String>),
    /// No leader could be reached within the retry window.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The peer does not share our cluster key; the session was refused.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A request from an older term or a deposed leader was refused; nothing was changed.
    #[error("stale leader: {0}")]
    Stale(String),
    /// Content did not match its hash; the copy was not used.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The peer broke the protocol (bad frame, unknown message, wrong version); the connection was closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A well-formed request that cannot be done as asked (a range past the end, a rename into itself).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A local I/O error.
    #[error("i/o error: {0}")]
    Io(String),
    /// A client's own file could not be read or written (the file to
    /// upload, the download's destination): the caller's to fix, so not
    /// retried as a failure on the way to the cluster is. Goes on the wire
    /// as `Io`.
    #[error("i/o error: {0}")]
    Local(String),
    /// A bad configuration value or flag; nothing was started.
    #[error("bad config: {0}")]
    Config(String),
    /// A bug or an unexpected state; the operation was abandoned.
    #[error("internal error: {0}")]
    Internal(String),
    /// Not allowed for anyone (a hard link to a directory); nothing was changed.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// Too many symlinks were followed (a loop); nothing was read or changed.
    #[error("too many levels of symbolic links: {0}")]
    Loop(String),
    /// The extended attribute does not exist; nothing was changed.
    #[error("no such attribute: {0}")]
    NoAttr(String),
    /// An extended attribute name is too long, or a buffer too small; nothing was changed.
    #[error("out of range: {0}")]
    Range(String),
    /// An extended attribute value is too big; nothing was changed.
    #[error("too big: {0}")]
    TooBig(String),
    /// Not supported here (POSIX ACLs); nothing was changed.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// A change through a read-only mount; nothing was changed.
    #[error("read-only: {0}")]
    ReadOnly(String),
}

/// Stable wire codes for [`Error`] variants. Never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u16)]
pub enum ErrorCode {
    NotFound = 1,
    Exists = 2,
    NotDir = 3,
    IsDir = 4,
    NotEmpty = 5,
    BadName = 6,
    NameTooLong = 7,
    NoSpace = 8,
    NoQuorum = 9,
    NotLeader = 10,
    Unavailable = 11,
    Auth = 12,
    Stale = 13,
    Corrupt = 14,
    Protocol = 15,
    Invalid = 16,
    Io = 17,
    Config = 18,
    Internal = 19,
    NotPermitted = 20,
    Loop = 21,
    NoAttr = 22,
    Range = 23,
    TooBig = 24,
    NotSupported = 25,
    ReadOnly = 26,
}

/// An error as it travels in a response frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: u16,
    pub message: String,
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Exists(_) => ErrorCode::Exists,
            Error::NotDir(_) => ErrorCode::NotDir,
            Error::IsDir(_) => ErrorCode::IsDir,
            Error::NotEmpty(_) => ErrorCode::NotEmpty,
            Error::BadName(_) => ErrorCode::BadName,
            Error::NameTooLong(_) => ErrorCode::NameTooLong,
            Error::NoSpace(_) => ErrorCode::NoSpace,
            Error::NoQuorum(_) => ErrorCode::NoQuorum,
            Error::NotLeader(_) => ErrorCode::NotLeader,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Auth(_) => ErrorCode::Auth,
            Error::Stale(_) => ErrorCode::Stale,
            Error::Corrupt(_) => ErrorCode::Corrupt,
            Error::Protocol(_) => ErrorCode::Protocol,
            Error::Invalid(_) => ErrorCode::Invalid,
            Error::Io(_) | Error::Local(_) => ErrorCode::Io,
            Error::Config(_) => ErrorCode::Config,
            Error::Internal(_) => ErrorCode::Internal,
            Error::NotPermitted(_) => ErrorCode::NotPermitted,
            Error::Loop(_) => ErrorCode::Loop,
            Error::NoAttr(_) => ErrorCode::NoAttr,
            Error::Range(_) => ErrorCode::Range,
            Error::TooBig(_) => ErrorCode::TooBig,
            Error::NotSupported(_) => ErrorCode::NotSupported,
            Error::ReadOnly(_) => ErrorCode::ReadOnly,
        }
    }

    /// The variant's payload: what goes in the wire message.
    fn detail(&self) -> String {
        match self {
            Error::NotLeader(addr) => addr.clone().unwrap_or_default(),
            Error::NotFound(s)
            | Error::Exists(s)
            | Error::NotDir(s)
            | Error::IsDir(s)
            | Error::NotEmpty(s)
            | Error::BadName(s)
            | Error::NameTooLong(s)
            | Error::NoSpace(s)
            | Error::NoQuorum(s)
            | Error::Unavailable(s)
            | Error::Auth(s)
            | Error::Stale(s)
            | Error::Corrupt(s)
            | Error::Protocol(s)
            | Error::Invalid(s)
            | Error::Io(s)
            | Error::Local(s)
            | Error::Config(s)
            | Error::Internal(s)
            | Error::NotPermitted(s)
            | Error::Loop(s)
            | Error::NoAttr(s)
            | Error::Range(s)
            | Error::TooBig(s)
            | Error::NotSupported(s)
            | Error::ReadOnly(s) => s.clone(),
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError { code: self.code() as u16, message: self.detail() }
    }

    /// Rebuilds an error from the wire; an unknown code becomes `Protocol`.
    pub fn from_wire(w: WireError) -> Error {
        let m = w.message;
        match w.code {
            1 => Error::NotFound(m),
            2 => Error::Exists(m),
            3 => Error::NotDir(m),
            4 => Error::IsDir(m),
            5 => Error::NotEmpty(m),
            6 => Error::BadName(m),
            7 => Error::NameTooLong(m),
            8 => Error::NoSpace(m),
            9 => Error::NoQuorum(m),
            10 => Error::NotLeader(if m.is_empty() { None } else { Some(m) }),
            11 => Error::Unavailable(m),
            12 => Error::Auth(m),
            13 => Error::Stale(m),
            14 => Error::Corrupt(m),
            15 => Error::Protocol(m),
            16 => Error::Invalid(m),
            17 => Error::Io(m),
            18 => Error::Config(m),
            19 => Error::Internal(m),
            20 => Error::NotPermitted(m),
            21 => Error::Loop(m),
            22 => Error::NoAttr(m),
            23 => Error::Range(m),
            24 => Error::TooBig(m),
            25 => Error::NotSupported(m),
            26 => Error::ReadOnly(m),
            other => Error::Protocol(format!("unknown error code {other}: {m}")),
        }
    }

    /// Whether a client should retry the operation elsewhere or later
    /// (the leader moved, lost its quorum, or the peer went away).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NotLeader(_) | Error::Unavailable(_) | Error::NoQuorum(_) | Error::Stale(_))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::StorageFull => Error::NoSpace(e.to_string()),
            _ => Error::Io(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_survives_the_wire() {
        let all = [
            Error::NotFound("cat.png".into()),
            Error::Exists("a".into()),
            Error::NotDir("a".into()),
            Error::IsDir("a".into()),
            Error::NotEmpty("a".into()),
            Error::BadName("x".into()),
            Error::NameTooLong("x".into()),
            Error::NoSpace("x".into()),
            Error::NoQuorum("x".into()),
            Error::NotLeader(Some("127.0.0.1:1".into())),
            Error::NotLeader(None),
            Error::Unavailable("x".into()),
            Error::Auth("x".into()),
            Error::Stale("x".into()),
            Error::Corrupt("x".into()),
            Error::Protocol("x".into()),
            Error::Invalid("x".into()),
            Error::Io("x".into()),
            Error::Config("x".into()),
            Error::Internal("x".into()),
            Error::NotPermitted("x".into()),
            Error::Loop("x".into()),
            Error::NoAttr("x".into()),
            Error::Range("x".into()),
            Error::TooBig("x".into()),
            Error::NotSupported("x".into()),
            Error::ReadOnly("x".into()),
        ];
        for e in all {
            assert_eq!(Error::from_wire(e.to_wire()), e);
        }
    }

    #[test]
    fn messages_read_as_one_lowercase_line() {
        assert_eq!(Error::NotFound("cat.png".into()).to_string(), "no such file: cat.png");
        assert_eq!(
            Error::NotLeader(Some("10.0.0.3:7783".into())).to_string(),
            "not the leader (the leader is at 10.0.0.3:7783)"
        );
        assert_eq!(Error::from_wire(WireError { code: 999, message: "m".into() }).code(), ErrorCode::Protocol);
    }
}
