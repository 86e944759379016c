//! Gearman codec micro-benchmarks: encoding and decoding the two packets every job
//! costs the worker (JOB_ASSIGN_UNIQ in, WORK_COMPLETE out) with a realistic UPDATE
//! body (2 load balancers x 10 nodes, about 2.4 KB).

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use libra_worker::gearman::codec::encode_packet;
use libra_worker::gearman::{GearmanCodec, Packet, DEFAULT_MAX_PACKET_BYTES};
use tokio_util::codec::Decoder;

fn packets() -> (Packet, Packet) {
    let job = Bytes::from(common::update_job(2, 10).to_string());
    let answer = Bytes::from(common::update_answer(2, 10).to_string());
    let assign = Packet::JobAssignUniq {
        handle: Bytes::from_static(b"H:lb-appliance-7:123456"),
        function: Bytes::from_static(b"lb-appliance-7"),
        unique: Bytes::new(),
        data: job,
    };
    let complete = Packet::WorkComplete {
        handle: Bytes::from_static(b"H:lb-appliance-7:123456"),
        data: answer,
    };
    (assign, complete)
}

fn wire(p: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_packet(p, &mut buf).expect("encodable");
    buf
}

fn bench(c: &mut Criterion) {
    let (assign, complete) = packets();
    let mut g = c.benchmark_group("codec");
    for (name, packet, mut codec) in [
        (
            "JOB_ASSIGN_UNIQ",
            &assign,
            GearmanCodec::client(DEFAULT_MAX_PACKET_BYTES),
        ),
        (
            "WORK_COMPLETE",
            &complete,
            GearmanCodec::server(DEFAULT_MAX_PACKET_BYTES),
        ),
    ] {
        let bytes = wire(packet);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("encode {name}"), |b| {
            let mut buf = BytesMut::with_capacity(bytes.len());
            b.iter(|| {
                buf.clear();
                encode_packet(black_box(packet), &mut buf).expect("encodable");
                black_box(buf.len())
            })
        });
        g.bench_function(format!("decode {name}"), |b| {
            b.iter(|| {
                let mut src = bytes.clone();
                let p = codec.decode(black_box(&mut src)).expect("valid");
                black_box(p)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
