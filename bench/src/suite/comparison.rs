//! The main table: the C worker (`gearman -w`, which does no work) and libra-worker as it
//! ships (`MAIN`), both registered on one gearmand, DISCOVER and STATS at windows 1 and
//! 64, measured in turn; the targets (window-64 jobs/s, window-1 p50) and notes under it,
//! then where the CPU goes per job. Also the idle and after-load memory readings of both
//! workers, which the memory table prints.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;

use super::measure::{action_body, Case, Measure, Suite, MAIN};
use super::memory::Readings;
use super::report::{find, paired, ratio};
use super::stats_worker;
use super::SuiteError;
use crate::load::Expect;
use crate::procfs;
use crate::procs::Running;

/// The STATS rows of a HAProxy-driver worker run this fraction of the jobs.
const HAPROXY_STATS_JOB_DIVISOR: u64 = 5;

/// What the main comparison leaves to the sections after it.
pub(super) struct Comparison {
    /// The C worker, which the prefetch section measures again beside ours.
    pub(super) c_workers: Vec<Running>,
    pub(super) c_pid: u32,
    /// libra-worker as it ships (`MAIN`), measured again by the later sections.
    pub(super) ours: Running,
    pub(super) runs: Vec<Measure>,
    pub(super) targets: Vec<String>,
    pub(super) notes: Vec<String>,
    pub(super) memory: Readings,
}

/// Starts both workers (and the STATS worker), measures the main cases, writes the main
/// table and the CPU table to `md`.
pub(super) fn run(
    s: &Suite,
    machine: &serde_json::Value,
    discover: &Bytes,
    md: &mut String,
) -> Result<Comparison, SuiteError> {
    let args = s.args;
    // The C worker and ours, both registered, idle memory read first.
    let c_workers = s.start_c_workers("cworker", 1)?;
    let c_pid = c_workers[0].pid();
    let main = s.start_ours(&MAIN)?;
    std::thread::sleep(Duration::from_millis(200));
    let idle_ours = procfs::memory(main.pid())?;
    let idle_c = procfs::memory(c_pid)?;

    let stats_body = action_body("STATS");
    let mut notes: Vec<String> = Vec::new();
    let stats = stats_worker::start(s, main.pid(), &stats_body, &mut notes)?;

    note!("main table: C worker vs libra-worker");
    let mut main_cases = Vec::new();
    for window in [1usize, 64] {
        for (action, body) in [("DISCOVER", discover), ("STATS", &stats_body)] {
            let jobs = s.jobs_for(window);
            main_cases.push(Case {
                label: format!("C worker, window {window}, {action}"),
                function: "cworker",
                workers: vec![c_pid],
                body,
                window,
                connections: 1,
                jobs,
                expect: Expect::Any,
            });
            if action == "DISCOVER" || stats.ok {
                main_cases.push(Case {
                    label: format!("libra-worker, window {window}, {action}"),
                    function: if action == "STATS" {
                        stats.function
                    } else {
                        MAIN.function
                    },
                    workers: vec![if action == "STATS" {
                        stats.pid
                    } else {
                        main.pid()
                    }],
                    body,
                    window,
                    connections: 1,
                    // A STATS that reads HAProxy costs about 0.5 ms on the driver thread:
                    // a fifth of the jobs still makes a run of a few seconds.
                    jobs: if action == "STATS" && stats.own_worker() {
                        (jobs / HAPROXY_STATS_JOB_DIVISOR).max(10)
                    } else {
                        jobs
                    },
                    expect: Expect::Pass,
                });
            }
        }
    }
    if stats.ok && stats.own_worker() {
        notes.push(format!(
            "our STATS rows run 1/{HAPROXY_STATS_JOB_DIVISOR} of the jobs ({} at window 1, {} at window 64): \
             each reads HAProxy's sockets on the one driver thread.",
            (s.jobs_for(1) / HAPROXY_STATS_JOB_DIVISOR).max(10),
            (s.jobs_for(64) / HAPROXY_STATS_JOB_DIVISOR).max(10)
        ));
    }
    let main_runs = s.measure(&main_cases, args.reps)?;
    let loaded_ours = procfs::memory(main.pid())?;
    let loaded_c = procfs::memory(c_pid)?;
    drop(stats);
    let targets = write_tables(md, s, machine, &main_runs, &notes);
    Ok(Comparison {
        c_workers,
        c_pid,
        ours: main,
        runs: main_runs,
        targets,
        notes,
        memory: Readings {
            idle_ours,
            idle_c,
            loaded_ours,
            loaded_c,
        },
    })
}

/// The main table with its targets and notes, then the CPU table; returns the targets.
fn write_tables(
    md: &mut String,
    s: &Suite,
    machine: &serde_json::Value,
    main_runs: &[Measure],
    notes: &[String],
) -> Vec<String> {
    let args = s.args;
    let _ = writeln!(
        md,
        "## libra-worker vs the C worker (`gearman -w`, which does no work), same generator, same gearmand\n"
    );
    let _ = writeln!(
        md,
        "Machine: {} x {} (nproc {}), Linux {}; {} (`--threads={}`); {}.\n",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["nproc"],
        machine["kernel"].as_str().unwrap_or(""),
        machine["gearmand"].as_str().unwrap_or(""),
        args.gearmand_threads,
        machine["worker"].as_str().unwrap_or(""),
    );
    let _ = writeln!(
        md,
        "Every number is the median (by jobs/s) of {} interleaved runs; window 1: {} jobs, window 64: {} jobs \
         per run after a warm-up. Ours: null driver, log level warning, metrics endpoint on, prefetch 16 (the default). \
         Latency = submit to WORK_COMPLETE at the client, in microseconds.\n",
        args.reps,
        s.jobs_for(1),
        s.jobs_for(64)
    );
    let _ = writeln!(
        md,
        "| load | C jobs/s | ours jobs/s | ratio | C p50 | our p50 | p50 ratio | C p99 | our p99 |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut targets = Vec::new();
    for window in [1usize, 64] {
        for action in ["DISCOVER", "STATS"] {
            let c = find(main_runs, &format!("C worker, window {window}, {action}"));
            let o = find(
                main_runs,
                &format!("libra-worker, window {window}, {action}"),
            );
            let Some(c) = c else { continue };
            match o {
                Some(o) => {
                    let _ = writeln!(
                        md,
                        "| window {window}, {action} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} |",
                        c.rate(),
                        o.rate(),
                        ratio(o.rate(), c.rate()),
                        c.p50(),
                        o.p50(),
                        ratio(o.p50(), c.p50()),
                        c.p99(),
                        o.p99()
                    );
                    if action == "DISCOVER" && window == 64 {
                        let (mid, lo, hi) = paired(&o.rates, &c.rates);
                        targets.push(format!(
                            "window 64 jobs/s >= 5x the C worker: {:.2}x (median of the {} side-by-side pairs; \
                             range {lo:.2}x–{hi:.2}x; ratio of the medians {:.2}x): {}",
                            mid,
                            o.rates.len(),
                            ratio(o.rate(), c.rate()),
                            if mid >= 5.0 { "met" } else { "MISSED" }
                        ));
                    }
                    if action == "DISCOVER" && window == 1 {
                        let (mid, lo, hi) = paired(&o.p50s, &c.p50s);
                        targets.push(format!(
                            "window 1 p50 <= 1.0x the C worker: {:.2}x (median of the {} side-by-side pairs; \
                             range {lo:.2}x–{hi:.2}x; ratio of the medians {:.2}x): {}",
                            mid,
                            o.p50s.len(),
                            ratio(o.p50(), c.p50()),
                            if mid <= 1.0 { "met" } else { "MISSED" }
                        ));
                    }
                }
                None => {
                    let _ = writeln!(
                        md,
                        "| window {window}, {action} | {:.0} | skipped | | {:.0} | skipped | | {:.0} | skipped |",
                        c.rate(),
                        c.p50(),
                        c.p99()
                    );
                }
            }
        }
    }
    let _ = writeln!(md);
    for t in &targets {
        let _ = writeln!(md, "- Target: {t}");
    }
    for n in notes {
        let _ = writeln!(md, "- Note: {n}");
    }
    let _ = writeln!(md);

    let _ = writeln!(
        md,
        "### Where the CPU goes (CPU time per job, microseconds, from /proc/<pid>/task/*/schedstat)\n"
    );
    let _ = writeln!(
        md,
        "| run | jobs/s (min–max of runs) | gearmand | worker | generator | busy: gearmand + worker + generator = total (% of one core) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for m in main_runs {
        let gen = m.load.generator_core_percent();
        let _ = writeln!(
            md,
            "| {} | {:.0} ({}) | {:.1} | {:.1} | {:.1} | {:.0} + {:.0} + {:.0} = {:.0}% |",
            m.label,
            m.rate(),
            m.spread(),
            m.gearmand_us_per_job,
            m.worker_us_per_job,
            m.load.generator_us_per_job(),
            m.gearmand_core_percent,
            m.worker_core_percent,
            gen,
            m.gearmand_core_percent + m.worker_core_percent + gen
        );
    }
    let _ = writeln!(md);
    targets
}
