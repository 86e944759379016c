//! The sections that change one thing of libra-worker as it ships (`MAIN`, already
//! running) and measure it beside the shipped one, DISCOVER at windows 1 and 64: log level
//! (warning against info), the metrics endpoint (on against off), and prefetch depth (1, 4
//! and 16, with the C worker in the same phase for the ratio).

use std::fmt::Write as _;

use bytes::Bytes;

use super::measure::{Case, Measure, Suite, Variant, MAIN};
use super::report::{find, ratio};
use super::SuiteError;
use crate::load::Expect;
use crate::procfs::{self, Memory};
use crate::procs::Running;

/// Log level: warning (the main table's) against the default, info; writes its table.
pub(super) fn log_level(
    s: &Suite,
    main: &Running,
    discover: &Bytes,
    md: &mut String,
) -> Result<Vec<Measure>, SuiteError> {
    note!("log level: warning vs info");
    let info_variant = Variant {
        function: "lbw-info",
        level: "info",
        ..MAIN
    };
    let info = s.start_ours(&info_variant)?;
    let mut cases = Vec::new();
    for window in [1usize, 64] {
        for (v, pid) in [(&MAIN, main.pid()), (&info_variant, info.pid())] {
            cases.push(Case {
                label: format!("log {}, window {window}", v.level),
                function: v.function,
                workers: vec![pid],
                body: discover,
                window,
                connections: 1,
                jobs: s.jobs_for(window),
                expect: Expect::Pass,
            });
        }
    }
    let log_runs = s.measure(&cases, s.args.reps)?;
    drop(info);
    let _ = writeln!(
        md,
        "### Log level (DISCOVER; info logs one line per job to a file)\n"
    );
    let _ = writeln!(
        md,
        "| window | warning jobs/s | info jobs/s | info/warning | warning p50 | info p50 | worker CPU/job warning | info |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for window in [1usize, 64] {
        if let (Some(w), Some(i)) = (
            find(&log_runs, &format!("log warning, window {window}")),
            find(&log_runs, &format!("log info, window {window}")),
        ) {
            let _ = writeln!(
                md,
                "| {window} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.1} us | {:.1} us |",
                w.rate(),
                i.rate(),
                ratio(i.rate(), w.rate()),
                w.p50(),
                i.p50(),
                w.worker_us_per_job,
                i.worker_us_per_job
            );
        }
    }
    let _ = writeln!(md);
    Ok(log_runs)
}

/// The metrics endpoint on (the main table's) and off; writes its table.
pub(super) fn metrics_endpoint(
    s: &Suite,
    main: &Running,
    discover: &Bytes,
    md: &mut String,
) -> Result<Vec<Measure>, SuiteError> {
    note!("metrics endpoint: on vs off");
    let off_variant = Variant {
        function: "lbw-nometrics",
        metrics: false,
        ..MAIN
    };
    let off = s.start_ours(&off_variant)?;
    let mut cases = Vec::new();
    for window in [1usize, 64] {
        for (name, v, pid) in [("on", &MAIN, main.pid()), ("off", &off_variant, off.pid())] {
            cases.push(Case {
                label: format!("metrics {name}, window {window}"),
                function: v.function,
                workers: vec![pid],
                body: discover,
                window,
                connections: 1,
                jobs: s.jobs_for(window),
                expect: Expect::Pass,
            });
        }
    }
    let metric_runs = s.measure(&cases, s.args.reps)?;
    drop(off);
    let _ = writeln!(
        md,
        "### Metrics endpoint (DISCOVER; not scraped during the run)\n"
    );
    let _ = writeln!(
        md,
        "| window | on jobs/s | off jobs/s | on/off | on p50 | off p50 | on p99 | off p99 |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for window in [1usize, 64] {
        if let (Some(on), Some(off)) = (
            find(&metric_runs, &format!("metrics on, window {window}")),
            find(&metric_runs, &format!("metrics off, window {window}")),
        ) {
            let _ = writeln!(
                md,
                "| {window} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.0} | {:.0} |",
                on.rate(),
                off.rate(),
                ratio(on.rate(), off.rate()),
                on.p50(),
                off.p50(),
                on.p99(),
                off.p99()
            );
        }
    }
    let _ = writeln!(md);
    Ok(metric_runs)
}

/// The prefetch section's runs, and the main worker's memory after them.
pub(super) struct Prefetch {
    pub(super) runs: Vec<Measure>,
    /// The main worker after every run of the suite, this phase included.
    pub(super) ours_peak: Memory,
}

/// Prefetch depth 1, 4 and 16 (the main worker), interleaved with the C worker, which is
/// stopped afterwards (its last phase); writes the table.
pub(super) fn prefetch(
    s: &Suite,
    main: &Running,
    c_workers: Vec<Running>,
    c_pid: u32,
    discover: &Bytes,
    md: &mut String,
) -> Result<Prefetch, SuiteError> {
    // The C worker runs in the same phase, interleaved with these, for the ratio.
    note!("prefetch: 1 vs 4 vs 16, with the C worker");
    let pf_variants = [
        Variant {
            function: "lbw-pf1",
            prefetch: 1,
            ..MAIN
        },
        Variant {
            function: "lbw-pf4",
            prefetch: 4,
            ..MAIN
        },
        MAIN,
    ];
    let pf1 = s.start_ours(&pf_variants[0])?;
    let pf4 = s.start_ours(&pf_variants[1])?;
    let pids = [pf1.pid(), pf4.pid(), main.pid()];
    let mut cases = Vec::new();
    for window in [1usize, 64] {
        cases.push(Case {
            label: format!("C worker, window {window}"),
            function: "cworker",
            workers: vec![c_pid],
            body: discover,
            window,
            connections: 1,
            jobs: s.jobs_for(window),
            expect: Expect::Any,
        });
        for (v, pid) in pf_variants.iter().zip(pids) {
            cases.push(Case {
                label: format!("prefetch {}, window {window}", v.prefetch),
                function: v.function,
                workers: vec![pid],
                body: discover,
                window,
                connections: 1,
                jobs: s.jobs_for(window),
                expect: Expect::Pass,
            });
        }
    }
    let pf_runs = s.measure(&cases, s.args.reps)?;
    let ours_peak = procfs::memory(main.pid())?;
    drop(pf1);
    drop(pf4);
    drop(c_workers);
    let _ = writeln!(md, "### Prefetch depth (`gearman.prefetch`; DISCOVER)\n");
    let _ = writeln!(
        md,
        "| window | prefetch | jobs/s | vs C worker | p50 | p99 | CPU/job: worker | gearmand | generator | generator % of one core |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in pf_runs.iter().filter(|m| m.label.starts_with("prefetch")) {
        let c = find(&pf_runs, &format!("C worker, window {}", m.window));
        let prefetch = m
            .label
            .split(',')
            .next()
            .unwrap_or("")
            .trim_start_matches("prefetch ");
        let _ = writeln!(
            md,
            "| {} | {prefetch} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.1} us | {:.1} us | {:.1} us | {:.0}% |",
            m.window,
            m.rate(),
            ratio(m.rate(), c.as_ref().map_or(0.0, Measure::rate)),
            m.p50(),
            m.p99(),
            m.worker_us_per_job,
            m.gearmand_us_per_job,
            m.load.generator_us_per_job(),
            m.load.generator_core_percent()
        );
    }
    let _ = writeln!(md);
    Ok(Prefetch {
        runs: pf_runs,
        ours_peak,
    })
}
