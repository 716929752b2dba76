//! The client side of SCS.
//!
//! # Layout
//! - [`discover`]: finding the leader from the cluster's heartbeats.
//! - [`client`]: the client library every command goes through.
//! - [`cli`]: the `scs` command line.

pub mod cli;
pub mod client;
pub mod discover;
pub mod fs;
