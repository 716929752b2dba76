//! The messages SCS speaks: UDP gossip, TCP requests/responses, and the frame codec.

pub mod frame;
pub mod gossip;
pub mod rpc;
