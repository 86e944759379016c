//! The Gearman binary framing as a tokio-util codec: 4-byte magic, 4-byte big-endian
//! type, 4-byte big-endian length, NUL-separated arguments. Written by hand because the
//! crates that exist either panic on unknown types or have no size bound; this one never
//! panics and never reserves a claimed length before the bytes have arrived.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::packet::{type_name, Magic, Packet};

/// Size of the fixed packet header.
pub const HEADER_LEN: usize = 12;

/// Default bound on one packet's body (16 MiB), as in the wire contract.
pub const DEFAULT_MAX_PACKET_BYTES: u32 = 16 * 1024 * 1024;

/// Everything that makes a byte stream not a valid Gearman packet stream. Each one
/// closes the connection it came from.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("bad magic {0:02x?}: expected {1:?} packets")]
    BadMagic([u8; 4], Magic),
    #[error("unknown packet type {0}")]
    UnknownType(u32),
    #[error("packet body of {claimed} bytes exceeds the limit of {limit} bytes")]
    TooLarge { claimed: u32, limit: u32 },
    #[error("malformed {name} packet: expected {expected} arguments, found {found}")]
    Malformed {
        name: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{0} packet has a NUL byte inside an argument")]
    NulInArgument(&'static str),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Codec for one side of a Gearman connection: it decodes packets carrying the magic
/// `expect` and encodes any packet with its natural magic.
#[derive(Debug, Clone)]
pub struct GearmanCodec {
    expect: Magic,
    max_body: u32,
}

impl GearmanCodec {
    /// The worker's and client's side: reads `\0RES` packets from a job server.
    pub fn client(max_body: u32) -> Self {
        GearmanCodec {
            expect: Magic::Res,
            max_body,
        }
    }

    /// The job server's side: reads `\0REQ` packets (used by tests and fakes).
    pub fn server(max_body: u32) -> Self {
        GearmanCodec {
            expect: Magic::Req,
            max_body,
        }
    }
}

impl Decoder for GearmanCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let magic: [u8; 4] = [src[0], src[1], src[2], src[3]];
        if magic != self.expect.bytes() {
            return Err(CodecError::BadMagic(magic, self.expect));
        }
        let code = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
        let len = u32::from_be_bytes([src[8], src[9], src[10], src[11]]);
        let arity = Packet::arity(code).ok_or(CodecError::UnknownType(code))?;
        if len > self.max_body {
            return Err(CodecError::TooLarge {
                claimed: len,
                limit: self.max_body,
            });
        }
        // Bounded by max_body above, so the conversion cannot truncate on 32/64-bit.
        let body_len = len as usize;
        if src.len() < HEADER_LEN + body_len {
            // Deliberately no `reserve(body_len)`: a peer must send the bytes it claims.
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(body_len).freeze();
        let args = split_args(body, arity).map_err(|found| CodecError::Malformed {
            name: type_name(code),
            expected: arity,
            found,
        })?;
        Packet::from_parts(code, args)
            .ok_or(CodecError::UnknownType(code))
            .map(Some)
    }
}

impl Encoder<Packet> for GearmanCodec {
    type Error = CodecError;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_packet(&packet, dst)
    }
}

/// Appends the wire form of `packet` to `dst`. Every argument but the last must be free
/// of NUL bytes, since NUL is the separator.
pub fn encode_packet(packet: &Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
    let args = packet.args();
    if let Some((_, head)) = args.split_last() {
        if head.iter().any(|a| a.contains(&0)) {
            return Err(CodecError::NulInArgument(packet.name()));
        }
    }
    let body_len: usize =
        args.iter().map(|a| a.len()).sum::<usize>() + args.len().saturating_sub(1);
    let body_len = u32::try_from(body_len).map_err(|_| CodecError::TooLarge {
        claimed: u32::MAX,
        limit: u32::MAX,
    })?;
    dst.reserve(HEADER_LEN + body_len as usize);
    dst.put_slice(&packet.magic().bytes());
    dst.put_u32(packet.code());
    dst.put_u32(body_len);
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            dst.put_u8(0);
        }
        dst.put_slice(arg);
    }
    Ok(())
}

/// Splits a body into exactly `arity` arguments; the last keeps any further NULs.
/// On a count mismatch, returns the number of arguments found.
fn split_args(body: Bytes, arity: usize) -> Result<Vec<Bytes>, usize> {
    if arity == 0 {
        return if body.is_empty() {
            Ok(Vec::new())
        } else {
            Err(1)
        };
    }
    let mut args = Vec::with_capacity(arity);
    let mut rest = body;
    for _ in 0..arity - 1 {
        match rest.iter().position(|&b| b == 0) {
            Some(at) => {
                let arg = rest.split_to(at);
                rest.advance(1);
                args.push(arg);
            }
            None => return Err(args.len() + 1),
        }
    }
    args.push(rest);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn every_packet() -> Vec<Packet> {
        vec![
            Packet::CanDo {
                function: b("lbaas-host"),
            },
            Packet::CantDo {
                function: b("lbaas-host"),
            },
            Packet::ResetAbilities,
            Packet::PreSleep,
            Packet::Noop,
            Packet::SubmitJob {
                function: b("f"),
                unique: b("u-1"),
                data: b("{\"a\":\"\0x\"}"),
            },
            Packet::JobCreated {
                handle: b("H:host:1"),
            },
            Packet::GrabJob,
            Packet::NoJob,
            Packet::JobAssign {
                handle: b("H:host:1"),
                function: b("f"),
                data: b("{}"),
            },
            Packet::WorkStatus {
                handle: b("H:1"),
                numerator: b("1"),
                denominator: b("2"),
            },
            Packet::WorkComplete {
                handle: b("H:1"),
                data: b("{\"ok\":1}\0tail"),
            },
            Packet::WorkFail { handle: b("H:1") },
            Packet::EchoReq {
                data: b("ping\0with nul"),
            },
            Packet::EchoRes { data: b("ping") },
            Packet::Error {
                code: b("ERR_1"),
                text: b("bad thing"),
            },
            Packet::SetClientId { id: b("worker-1") },
            Packet::WorkException {
                handle: b("H:1"),
                data: b("boom"),
            },
            Packet::WorkData {
                handle: b("H:1"),
                data: b(""),
            },
            Packet::WorkWarning {
                handle: b("H:1"),
                data: b("w"),
            },
            Packet::GrabJobUniq,
            Packet::JobAssignUniq {
                handle: b("H:1"),
                function: b("f"),
                unique: b(""),
                data: b("{\"hpcs_action\":\"DISCOVER\"}"),
            },
        ]
    }

    fn codec_for(p: &Packet) -> GearmanCodec {
        match p.magic() {
            Magic::Req => GearmanCodec::server(DEFAULT_MAX_PACKET_BYTES),
            Magic::Res => GearmanCodec::client(DEFAULT_MAX_PACKET_BYTES),
        }
    }

    #[test]
    fn every_packet_round_trips() {
        for p in every_packet() {
            let mut codec = codec_for(&p);
            let mut buf = BytesMut::new();
            codec.encode(p.clone(), &mut buf).unwrap();
            let decoded = codec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(decoded, p, "{}", p.name());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn two_packets_in_one_buffer_and_byte_by_byte_arrival() {
        let mut wire = BytesMut::new();
        let a = Packet::JobAssignUniq {
            handle: b("H:1"),
            function: b("f"),
            unique: b("u"),
            data: b("x"),
        };
        encode_packet(&a, &mut wire).unwrap();
        encode_packet(&Packet::Noop, &mut wire).unwrap();
        let mut codec = GearmanCodec::client(1024);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(p) = codec.decode(&mut buf).unwrap() {
                out.push(p);
            }
        }
        assert_eq!(out, vec![a, Packet::Noop]);
    }

    #[test]
    fn known_wire_bytes() {
        let mut buf = BytesMut::new();
        encode_packet(&Packet::CanDo { function: b("ab") }, &mut buf).unwrap();
        assert_eq!(&buf[..], b"\0REQ\0\0\0\x01\0\0\0\x02ab");
        let mut buf = BytesMut::new();
        encode_packet(
            &Packet::WorkComplete {
                handle: b("H"),
                data: b("d"),
            },
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..], b"\0REQ\0\0\0\x0d\0\0\0\x03H\0d");
    }

    #[test]
    fn wrong_magic_is_an_error() {
        let mut buf = BytesMut::from(&b"\0REQ\0\0\0\x06\0\0\0\0"[..]);
        let err = GearmanCodec::client(1024).decode(&mut buf).unwrap_err();
        assert!(matches!(err, CodecError::BadMagic(..)), "{err}");
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        assert!(matches!(
            GearmanCodec::client(1024).decode(&mut buf),
            Err(CodecError::BadMagic(..))
        ));
    }

    #[test]
    fn unknown_type_is_an_error() {
        let mut buf = BytesMut::from(&b"\0RES\0\0\x01\0\0\0\0\0"[..]);
        assert!(matches!(
            GearmanCodec::client(1024).decode(&mut buf),
            Err(CodecError::UnknownType(256))
        ));
    }

    #[test]
    fn oversized_body_is_refused_before_it_arrives() {
        // A header claiming 4 GiB - 1, with nothing behind it.
        let mut buf = BytesMut::from(&b"\0RES\0\0\0\x0b\xff\xff\xff\xff"[..]);
        let cap_before = buf.capacity();
        let err = GearmanCodec::client(DEFAULT_MAX_PACKET_BYTES)
            .decode(&mut buf)
            .unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::TooLarge {
                    claimed: u32::MAX,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn a_claimed_length_within_the_bound_is_not_reserved_up_front() {
        let mut buf = BytesMut::from(&b"\0RES\0\0\0\x0b\0\x10\0\0H\0f\0"[..]);
        let cap_before = buf.capacity();
        assert!(GearmanCodec::client(DEFAULT_MAX_PACKET_BYTES)
            .decode(&mut buf)
            .unwrap()
            .is_none());
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn missing_arguments_are_malformed() {
        // JOB_ASSIGN needs three arguments; this body has one separator only.
        let mut buf = BytesMut::from(&b"\0RES\0\0\0\x0b\0\0\0\x03H\0f"[..]);
        let err = GearmanCodec::client(1024).decode(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::Malformed {
                    name: "JOB_ASSIGN",
                    expected: 3,
                    found: 2
                }
            ),
            "{err}"
        );
        // NOOP carries no body.
        let mut buf = BytesMut::from(&b"\0RES\0\0\0\x06\0\0\0\x01x"[..]);
        assert!(matches!(
            GearmanCodec::client(1024).decode(&mut buf),
            Err(CodecError::Malformed { name: "NOOP", .. })
        ));
    }

    #[test]
    fn nul_inside_a_leading_argument_cannot_be_encoded() {
        let mut buf = BytesMut::new();
        let p = Packet::WorkComplete {
            handle: b("H\0x"),
            data: b("d"),
        };
        assert!(matches!(
            encode_packet(&p, &mut buf),
            Err(CodecError::NulInArgument(_))
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut codec = GearmanCodec::client(1024);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }

        #[test]
        fn random_bodies_behind_a_valid_header_never_panic(
            code in 0u32..40,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut buf = BytesMut::new();
            buf.put_slice(b"\0RES");
            buf.put_u32(code);
            buf.put_u32(body.len() as u32);
            buf.put_slice(&body);
            let mut codec = GearmanCodec::client(1024);
            let _ = codec.decode(&mut buf);
        }

        #[test]
        fn job_assign_uniq_round_trips(
            handle in "[A-Za-z0-9:._-]{1,40}",
            function in "[A-Za-z0-9._-]{1,40}",
            unique in "[A-Za-z0-9-]{0,40}",
            data in proptest::collection::vec(any::<u8>(), 0..1024),
        ) {
            let p = Packet::JobAssignUniq {
                handle: Bytes::from(handle), function: Bytes::from(function),
                unique: Bytes::from(unique), data: Bytes::from(data),
            };
            let mut buf = BytesMut::new();
            encode_packet(&p, &mut buf).unwrap();
            let got = GearmanCodec::client(4096).decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(got, p);
        }
    }
}
