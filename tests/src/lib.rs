//! The integration test harness: real `scs-node` processes on 127.0.0.1 and
//! the real `scs` command line, with a multicast group of their own per
//! cluster, hard timeouts everywhere, and cleanup by pid even on failure.
//!
//! # Layout
//!
//! - [`bins`]: where the built binaries are (`target/debug`, or `SCS_BIN_DIR`).
//! - [`cluster`]: [`Cluster`] — start, kill, stop, restart, pause and resume
//!   nodes; run the CLI against the cluster; wait for a cluster state.
//! - [`cli`]: running one `scs` command with a deadline; its [`Output`].
//! - [`report`]: the JSON of `scs status --json` and `scs ls --json`.
//! - [`data`]: seeded file contents, so a failure can be replayed.
//! - [`netns`]: network namespaces of the fault suite's own, bridged in a
//!   namespace of their own, and the network faults staged on them.
//! - [`faults`]: the fault suite (nodes in those namespaces, clients,
//!   nemesis, history checker); `tests/faults.rs` runs it.
//!
//! Nothing here sends a packet anywhere but 127.0.0.1 and the cluster's own
//! multicast group on the loopback interface, or, for the fault suite,
//! addresses inside namespaces it created, on a bridge with no way out.

pub mod bins;
pub mod cli;
pub mod cluster;
pub mod data;
pub mod faults;
pub mod mount;
pub mod netns;
pub mod report;

pub use cli::Output;
pub use cluster::{eventually, free_port, write_random_key, Cluster, ClusterBuilder, StopOnDrop};
pub use data::{key_hex, seeded_bytes, sha256_hex, write_seeded_file};
pub use report::{LsEntry, Moving, NodeStatus, Status};
