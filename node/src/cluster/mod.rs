//! Membership and the bully election: the pure state machine ([`election`]),
//! the async shell that does its IO ([`driver`]) over multicast or unicast
//! ([`transport`]), and a seeded simulation of
//! whole clusters of machines (`sim`, tests only).

pub mod driver;
pub mod election;
#[cfg(test)]
mod sim;
pub mod transport;
