//! The generator's capacity: how fast the load generator itself can go (4 C workers, which
//! do no work, over 4 connections at window 256), and its CPU per job and ceiling beside
//! the main table's C worker and our prefetch-16 worker at window 64.

use std::fmt::Write as _;

use bytes::Bytes;

use super::measure::{Case, Measure, Suite};
use super::report::find;
use super::SuiteError;
use crate::load::Expect;
use crate::procs::Running;

/// Many C workers, many connections: the generator is the limit.
pub(super) fn measure(s: &Suite, discover: &Bytes) -> Result<Vec<Measure>, SuiteError> {
    note!("generator capacity: 4 C workers, 4 connections, window 256");
    let c4 = s.start_c_workers("cworker4", 4)?;
    let cap_case = Case {
        label: "generator vs 4 C workers, 4 connections, window 256".to_string(),
        function: "cworker4",
        workers: c4.iter().map(Running::pid).collect(),
        body: discover,
        window: 256,
        connections: 4,
        jobs: s.jobs_for(64),
        expect: Expect::Any,
    };
    let cap = s.measure(std::slice::from_ref(&cap_case), s.args.reps)?;
    drop(c4);
    Ok(cap)
}

/// The generator capacity table: the capacity run, then the C worker's window-64 DISCOVER
/// row of the main table and prefetch 16 at window 64 of the prefetch section.
pub(super) fn write_table(
    md: &mut String,
    cap: &[Measure],
    main_runs: &[Measure],
    pf_runs: &[Measure],
) {
    let c64 = find(main_runs, "C worker, window 64, DISCOVER");
    let pf16_64 = find(pf_runs, "prefetch 16, window 64").map(|mut m| {
        m.label = "libra-worker prefetch 16, window 64".to_string();
        m
    });
    let _ = writeln!(md, "### Generator capacity\n");
    let _ = writeln!(
        md,
        "| run | jobs/s | generator CPU per job | generator % of one core | generator ceiling (one core / CPU per job) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for m in cap.iter().chain(c64.iter()).chain(pf16_64.iter()) {
        let us = m.load.generator_us_per_job();
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2} us | {:.0}% | {:.0} jobs/s |",
            m.label,
            m.rate(),
            us,
            m.load.generator_core_percent(),
            if us > 0.0 { 1e6 / us } else { 0.0 }
        );
    }
    let _ = writeln!(md);
}
