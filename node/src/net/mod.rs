//! The node's TCP side: the accept loop and the request handler.

pub mod handler;
pub mod limit;
pub mod server;
