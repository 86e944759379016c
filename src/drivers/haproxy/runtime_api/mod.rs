//! HAProxy's runtime API: the stats socket and the master CLI, which speak the same text
//! protocol.

pub(crate) mod client;

pub use client::*;
