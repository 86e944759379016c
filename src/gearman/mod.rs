//! The Gearman binary protocol: packet types, the framing codec, and a small async
//! client. No actix and no JSON in here; the actors build on top of it.

pub mod client;
pub mod codec;
pub(crate) mod packet;

pub use codec::{CodecError, GearmanCodec, DEFAULT_MAX_PACKET_BYTES};
pub use packet::{Magic, Packet};
