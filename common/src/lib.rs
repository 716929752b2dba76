//! What SCS nodes and clients both speak.
//!
//! # Layout
//! - [`types`]: the newtypes every other module uses (`NodeId`, `Term`,
//!   `Version`, `Ino`, `Kind`, `Key`, `ContentHash`).
//! - [`inode`]: what the cluster stores: inodes, directory entries, and the
//!   versioned [`inode::Record`]s that replicate them.
//! - [`namespace`]: the rules of the namespace (create, link, unlink,
//!   rename, attributes, path resolution) as pure functions over a view.
//! - [`locks`]: advisory locks across mounts: the wire types and the
//!   leader's lock table (POSIX ranges, leases, the grace period), pure.
//! - [`name`]: validation of user-supplied file names and the name → key hash.
//! - [`proto`]: the messages: UDP gossip ([`proto::gossip`]), TCP requests and
//!   responses ([`proto::rpc`]) and the pure frame codec ([`proto::frame`]).
//! - [`conn`]: the one type that reads and writes a TCP stream.
//! - [`auth`]: the cluster key, datagram MACs and the session handshake.
//! - [`config`]: the node configuration (TOML keys and defaults) and its validation.
//! - [`error`]: the error enum shared by both sides, with stable wire codes.

pub mod auth;
pub mod config;
pub mod conn;
pub mod error;
pub mod http;
pub mod inode;
pub mod locks;
pub mod mounts;
pub mod multicast;
pub mod name;
pub mod namespace;
#[cfg(test)]
mod proptests;
pub mod proto;
pub mod secure;
pub mod types;

pub use error::{Error, ErrorCode, Result};
pub use inode::{Changed, Dentry, DirEntry, DirStep, Inode, Listed, MemberState, Members, Record, Trashed};
pub use types::{ContentHash, Ino, Key, Kind, NodeId, Term, Version};

/// The protocol version spoken on TCP sessions and in datagrams. A peer with
/// another version is refused with a clear message.
pub const PROTOCOL_VERSION: u16 = 7;

/// Largest chunk of file data in one frame.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Raises the open-file limit to its hard maximum: a node holds a
/// descriptor per session, peer connection and blob being read; a mount one
/// per file open or waiting to go up.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
