//! The client side of SCS.
//!
//! # Layout
//! - [`discover`]: finding the leader from the cluster's heartbeats, or by
//!   polling the nodes named where there is no multicast.
//! - [`client`]: the client library every command goes through.
//! - [`client_config`]: `~/.config/scs/client.toml`, and how the command
//!   line overrides it.
//! - [`cli`]: the `scs` command line.
//! - [`options`]: the mount(8) option list of `scs-mount -o` and `mount.scs`.

pub mod cli;
pub mod client;
pub mod client_config;
pub mod discover;
pub mod fs;
pub mod options;
