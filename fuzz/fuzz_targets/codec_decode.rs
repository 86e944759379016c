//! Fuzzes the Gearman codec's decoder with what a hostile job server (or client) could
//! send. Oracles beyond "never panics": feeding the bytes in small chunks gives the same
//! packets and error as feeding them at once; waiting for more bytes never grows the
//! buffer (a claimed length is not reserved); every decoded packet re-encodes to exactly
//! the bytes it was decoded from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use libra_worker::gearman::codec::encode_packet;
use libra_worker::gearman::{GearmanCodec, Packet, DEFAULT_MAX_PACKET_BYTES};
use tokio_util::codec::Decoder;

/// Packets with the exact bytes each was decoded from, and the error that ended the
/// stream, if any.
type Decoded = (Vec<(Packet, Vec<u8>)>, Option<String>);

fn decode(codec: &GearmanCodec, wire: &[u8], chunk: usize) -> Decoded {
    let mut codec = codec.clone();
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    // Bytes of `wire` consumed by the decoder so far.
    let mut consumed = 0;
    for piece in wire.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let (len, cap) = (buf.len(), buf.capacity());
            match codec.decode(&mut buf) {
                Ok(Some(p)) => {
                    let used = len - buf.len();
                    packets.push((p, wire[consumed..consumed + used].to_vec()));
                    consumed += used;
                }
                Ok(None) => {
                    assert_eq!(buf.len(), len, "waiting for more bytes consumed some");
                    assert_eq!(buf.capacity(), cap, "waiting for more bytes reserved some");
                    break;
                }
                Err(e) => return (packets, Some(e.to_string())),
            }
        }
    }
    (packets, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    // The control byte picks the side, the size bound and the chunk size.
    let max = if control & 2 == 0 {
        1024
    } else {
        DEFAULT_MAX_PACKET_BYTES
    };
    let codec = if control & 1 == 0 {
        GearmanCodec::client(max)
    } else {
        GearmanCodec::server(max)
    };
    let chunk = usize::from(control >> 2) + 1;

    let whole = decode(&codec, wire, wire.len());
    let pieces = decode(&codec, wire, chunk);
    assert_eq!(whole, pieces, "decoding depends on how the bytes arrive");

    for (packet, bytes) in &whole.0 {
        let mut out = BytesMut::new();
        encode_packet(packet, &mut out).expect("a decoded packet encodes");
        // WORK_* packets travel both ways, so only type, length and body must match: the
        // encoder gives each packet the magic of its first leg.
        assert_eq!(
            &out[4..],
            &bytes[4..],
            "{} does not re-encode to its bytes",
            packet.name()
        );
    }
});
