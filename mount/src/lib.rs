//! The client side of SCS.
//!
//! # Layout
//! - [`discover`]: finding the leader from the cluster's heartbeats.
//! - [`client`]: the client library every command goes through.
//! - [`cli`]: the `scs` command line.
//! - [`options`]: the mount(8) option list of `scs-mount -o` and `mount.scs`.

pub mod cli;
pub mod client;
pub mod discover;
pub mod fs;
pub mod options;
