//! The JSON path of one UPDATE job (2 load balancers x 10 nodes): `request::parse` (bytes
//! to action and object, with the limits), `update::parse` (object to typed load
//! balancers), the answer's serialization, and the masked copy a debug log line makes.

mod common;

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use libra_worker::config::Limits;
use libra_worker::jobs::{request, update};
use serde_json::Value;

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let body = common::update_job(2, 10).to_string().into_bytes();
    let parsed = request::parse(&body, &limits).expect("valid UPDATE");
    let answer = common::update_answer(2, 10);
    // What is timed must be the success path, not an early error.
    let lbs = update::parse(&mut parsed.body.clone(), &limits).expect("the job validates");
    assert_eq!(lbs.len(), 2);
    assert!(lbs.iter().all(|lb| lb.nodes.len() == 10));
    let mut g = c.benchmark_group("job_path");
    g.bench_function("request::parse UPDATE 2x10", |b| {
        b.iter(|| black_box(request::parse(black_box(&body), &limits).is_ok()))
    });
    g.bench_function("update::parse 2x10", |b| {
        b.iter_batched(
            || parsed.body.clone(),
            |mut msg| black_box(update::parse(&mut msg, &limits).map(|l| l.len())),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("request::parse + update::parse 2x10", |b| {
        b.iter(|| {
            let mut req = request::parse(black_box(&body), &limits).expect("valid");
            black_box(update::parse(&mut req.body, &limits).map(|l| l.len()))
        })
    });
    g.bench_function("serialize answer 2x10", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&answer)).map(|v| v.len())))
    });
    g.bench_function("masked copy for a debug line 2x10", |b| {
        b.iter(|| {
            black_box(libra_worker::logging::masked(&Value::Object(
                black_box(&parsed.body).clone(),
            )))
        })
    });
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
