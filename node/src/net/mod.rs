//! The node's TCP side: the accept loop and the request handler, and the
//! HTTP endpoint for metrics and health.

pub mod handler;
pub mod http;
pub mod limit;
pub mod server;
