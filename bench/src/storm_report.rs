//! The reload storm's report: what each part saw (UPDATE latency, both wrk runs, the long
//! connections' cuts grouped into the waves a reload makes, HAProxy's old workers and RSS)
//! as markdown and JSON, and the list of what failed. A long connection cut by
//! `mworker-max-reloads` is reported, not failed: that is the limit doing its job; a
//! connection the limit should have spared, a refused reconnection, a failed request or
//! an old worker over the limit fail the run.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::haproxy_procs::SamplerReport;
use super::long_conns::{CutKind, PoolReport};
use super::soak::percentile;
use super::wrk::WrkReport;

/// Cuts less than this apart belong to one wave (one reload stops one old worker).
const WAVE_GAP_S: f64 = 0.5;
/// Consecutive 100 ms polls with more old workers than the limit that still count as the
/// moment between a reload's new worker and the exit of the one its master stops.
const MAX_EPISODE_POLLS: u64 = 2;
/// The RSS of the last third of a part may exceed the middle third's peak by this much
/// before it counts as growth: a reload's new worker briefly doubles a process's pages.
const RSS_GROWTH_TOLERANCE: f64 = 1.25;

/// The first part: the long connections across `limit` reloads, then one more.
pub struct LimitPart {
    pub limit: u32,
    /// Long connections that exchanged after the `limit` reloads.
    pub survived: usize,
    /// Long connections lost during those reloads (should be none).
    pub lost_at_limit: usize,
    /// When the reload past the limit was sent and answered (seconds on the part's clock).
    pub one_more_at: f64,
    pub one_more_answered_at: f64,
    pub outcomes: Vec<Result<f64, String>>,
    pub conns: PoolReport,
    pub keep_alive: WrkReport,
    pub close: WrkReport,
    pub procs: SamplerReport,
}

/// The storm proper, or its spread variant.
pub struct StormPart {
    /// Between two long connections' opening (zero: all at once).
    pub stagger: std::time::Duration,
    pub seconds: f64,
    pub outcomes: Vec<Result<f64, String>>,
    pub conns: PoolReport,
    pub keep_alive: WrkReport,
    pub close: WrkReport,
    pub procs: SamplerReport,
}

/// Cuts close together in time: the old worker a reload's master stopped.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Wave {
    pub seconds: f64,
    /// UPDATEs answered when the first cut was seen: the wave came with the next one.
    pub after_updates: u64,
    pub cuts: usize,
}

/// Groups the lost connections (not failed reconnections) of `conns` into waves.
pub fn waves(conns: &PoolReport) -> Vec<Wave> {
    let mut out: Vec<Wave> = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for cut in conns.lost() {
        match out.last_mut() {
            Some(w) if cut.seconds - last <= WAVE_GAP_S => w.cuts += 1,
            _ => out.push(Wave {
                seconds: cut.seconds,
                after_updates: cut.after_updates,
                cuts: 1,
            }),
        }
        last = cut.seconds;
    }
    out
}

/// Sorted latencies (ms) and the failures' messages.
fn split(outcomes: &[Result<f64, String>]) -> (Vec<f64>, Vec<String>) {
    let mut ms: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .copied()
        .collect();
    ms.sort_by(f64::total_cmp);
    let failed = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .cloned()
        .collect();
    (ms, failed)
}

/// Least-squares slope of `(x, y)` points, per unit of x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// HAProxy's RSS over a part: min, max, last, slope per minute, and the peaks of the
/// middle and last thirds (by time) in KiB: the first third is the ramp-up (old workers
/// filling up to the limit), growth after it would be a leak.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RssSummary {
    pub min_kib: u64,
    pub max_kib: u64,
    pub last_kib: u64,
    pub slope_kib_per_min: f64,
    pub middle_third_max_kib: u64,
    pub last_third_max_kib: u64,
}

pub fn rss(procs: &SamplerReport) -> RssSummary {
    let s = &procs.samples;
    let Some(end) = s.last().map(|l| l.seconds) else {
        return RssSummary::default();
    };
    let third = |from: f64, to: f64| {
        s.iter()
            .filter(|x| x.seconds > end * from && x.seconds <= end * to)
            .map(|x| x.rss_kib)
            .max()
            .unwrap_or(0)
    };
    let points: Vec<(f64, f64)> = s.iter().map(|x| (x.seconds, x.rss_kib as f64)).collect();
    RssSummary {
        min_kib: s.iter().map(|x| x.rss_kib).min().unwrap_or(0),
        max_kib: s.iter().map(|x| x.rss_kib).max().unwrap_or(0),
        last_kib: s.last().map_or(0, |x| x.rss_kib),
        slope_kib_per_min: slope(&points) * 60.0,
        middle_third_max_kib: third(1.0 / 3.0, 2.0 / 3.0),
        last_third_max_kib: third(2.0 / 3.0, 1.0),
    }
}

fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

fn wrk_cell(r: &WrkReport) -> String {
    format!("{} / {} / {}", r.requests, r.non_2xx_3xx, r.socket_errors())
}

fn kinds(conns: &PoolReport) -> String {
    let all = [
        (CutKind::Reset, "reset"),
        (CutKind::Closed, "closed"),
        (CutKind::Timeout, "timeout"),
        (CutKind::WrongEcho, "wrong echo"),
        (CutKind::Other, "other"),
    ];
    let parts: Vec<String> = all
        .iter()
        .filter_map(|(k, name)| {
            let n = conns.count(*k);
            (n > 0).then(|| format!("{name} {n}"))
        })
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

/// Failures common to both parts.
fn common_failures(
    part: &str,
    failed_updates: &[String],
    ka: &WrkReport,
    close: &WrkReport,
    procs: &SamplerReport,
    why: &mut Vec<String>,
) {
    for (mode, r) in [("keep-alive", ka), ("close-mode", close)] {
        if r.failed() > 0 {
            why.push(format!("{part}: {} failed {mode} requests", r.failed()));
        }
    }
    if !failed_updates.is_empty() {
        why.push(format!(
            "{part}: {} failed UPDATEs: {}",
            failed_updates.len(),
            failed_updates.join("; ")
        ));
    }
    if procs.longest_episode_polls > MAX_EPISODE_POLLS {
        why.push(format!(
            "{part}: {} old workers seen (limit {}) for {} polls in a row ({} polls over the limit of {})",
            procs.max_old_workers,
            procs.limit,
            procs.longest_episode_polls,
            procs.polls_over_limit,
            procs.polls
        ));
    }
}

/// The report's markdown and JSON, and what failed (empty: the run passed).
pub fn render(
    limit: &LimitPart,
    storm: &StormPart,
    spread: &StormPart,
) -> (String, Value, Vec<String>) {
    let mut why = Vec::new();
    let mut md = String::new();

    // To the limit.
    let (limit_ms, limit_failed) = split(&limit.outcomes);
    common_failures(
        "to the limit",
        &limit_failed,
        &limit.keep_alive,
        &limit.close,
        &limit.procs,
        &mut why,
    );
    let n = limit.conns.connections;
    if limit.survived < n || limit.lost_at_limit > 0 {
        why.push(format!(
            "to the limit: only {} of {n} long connections exchanged after {} reloads ({} lost)",
            limit.survived, limit.limit, limit.lost_at_limit
        ));
    }
    let limit_waves = waves(&limit.conns);
    let cut_by_next = limit.conns.lost().count();
    let cut_after = limit
        .conns
        .lost()
        .last()
        .map(|c| c.seconds - limit.one_more_at);
    let _ = writeln!(
        md,
        "### Reload storm, part 1: {n} long TCP connections across max_old_workers = {} reloads, then one more\n",
        limit.limit
    );
    let _ = writeln!(md, "| figure | value |\n|---|---:|");
    let _ = writeln!(
        md,
        "| long connections exchanging after {} reloads | {} of {n} ({} lost) |",
        limit.limit, limit.survived, limit.lost_at_limit
    );
    let _ = writeln!(
        md,
        "| cut by reload {} (the master stops the worker past `mworker-max-reloads`) | {cut_by_next} of {n} ({}), last seen {} after that UPDATE was sent (answered after {:.2} s) |",
        limit.limit + 1,
        kinds(&limit.conns),
        cut_after.map_or("-".to_string(), |s| format!("{s:.2} s")),
        limit.one_more_answered_at - limit.one_more_at
    );
    let _ = writeln!(
        md,
        "| UPDATEs (failed), p50 / max ms | {} ({}), {:.1} / {:.1} |",
        limit.outcomes.len(),
        limit_failed.len(),
        percentile(&limit_ms, 0.5),
        limit_ms.last().copied().unwrap_or(0.0)
    );
    let _ = writeln!(
        md,
        "| wrk keep-alive: requests / non-2xx / socket errors | {} |\n| wrk close-mode: requests / non-2xx / socket errors | {} |",
        wrk_cell(&limit.keep_alive),
        wrk_cell(&limit.close)
    );
    let _ = writeln!(
        md,
        "| old workers, most seen (limit) | {} ({}) |",
        limit.procs.max_old_workers, limit.procs.limit
    );

    let (storm_md, storm_json) = storm_section("part 2", storm, &mut why);
    let (spread_md, spread_json) = storm_section("part 3", spread, &mut why);
    md.push_str(&storm_md);
    md.push_str(&spread_md);
    let json = json!({
        "to_the_limit": {
            "max_old_workers": limit.limit,
            "long_connections": n,
            "survived_limit_reloads": limit.survived,
            "lost_during_limit_reloads": limit.lost_at_limit,
            "cut_by_one_more": cut_by_next,
            "cut_seen_after_s": cut_after,
            "one_more_answered_after_s": limit.one_more_answered_at - limit.one_more_at,
            "update_ms": limit_ms,
            "failed_updates": limit_failed,
            "wrk_keep_alive": limit.keep_alive,
            "wrk_close": limit.close,
            "waves": limit_waves,
            "procs": limit.procs,
        },
        "storm": storm_json,
        "spread": spread_json,
        "failures": why,
    });
    (md, json, why)
}

/// A storm part's markdown and JSON; what failed goes to `why`.
fn storm_section(part: &str, storm: &StormPart, why: &mut Vec<String>) -> (String, Value) {
    let mut md = String::new();
    let (ms, failed) = split(&storm.outcomes);
    common_failures(
        part,
        &failed,
        &storm.keep_alive,
        &storm.close,
        &storm.procs,
        why,
    );
    let c = &storm.conns;
    if c.alive_at_end < c.connections {
        why.push(format!(
            "{part}: {} of {} long connections alive at the end",
            c.alive_at_end, c.connections
        ));
    }
    let refused = c.count(CutKind::ConnectFailed);
    if refused > 0 {
        why.push(format!("{part}: {refused} failed reconnections"));
    }
    let odd = c.count(CutKind::Timeout) + c.count(CutKind::WrongEcho) + c.count(CutKind::Other);
    if odd > 0 {
        why.push(format!(
            "{part}: {odd} long connections lost otherwise than closed or reset ({})",
            kinds(c)
        ));
    }
    let r = rss(&storm.procs);
    if r.last_third_max_kib as f64 > r.middle_third_max_kib as f64 * RSS_GROWTH_TOLERANCE {
        why.push(format!(
            "{part}: HAProxy RSS grew: peak {} in the last third against {} in the middle one",
            mb(r.last_third_max_kib),
            mb(r.middle_third_max_kib)
        ));
    }
    let storm_waves = waves(c);
    let mut gaps: Vec<f64> = storm_waves
        .windows(2)
        .map(|w| w[1].after_updates.saturating_sub(w[0].after_updates) as f64)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let waited = ms.iter().filter(|m| **m >= 1000.0).count();
    let opened = if storm.stagger.is_zero() {
        "opened together".to_string()
    } else {
        format!("opened {} ms apart", storm.stagger.as_millis())
    };
    let _ = writeln!(
        md,
        "\n### Reload storm, {part}: {} structural UPDATEs back to back in {:.0} s, wrk keep-alive x{} and close-mode x{}, {} long TCP connections {opened} that reconnect when cut\n",
        storm.outcomes.len(),
        storm.seconds,
        super::storm::WRK_CONNECTIONS_PER_MODE,
        super::storm::WRK_CONNECTIONS_PER_MODE,
        c.connections
    );
    let _ = writeln!(md, "| figure | value |\n|---|---:|");
    let _ = writeln!(
        md,
        "| UPDATEs (failed) | {} ({}) |\n| UPDATE p50 / p90 / p99 / max ms | {:.1} / {:.1} / {:.1} / {:.1} |\n| UPDATEs that took >= 1 s (a doomed old worker given its 1 s to finish first) | {waited} |",
        storm.outcomes.len(),
        failed.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(0.0)
    );
    let _ = writeln!(
        md,
        "| wrk keep-alive: requests / non-2xx / socket errors | {} |\n| wrk close-mode: requests / non-2xx / socket errors | {} |",
        wrk_cell(&storm.keep_alive),
        wrk_cell(&storm.close)
    );
    let _ = writeln!(
        md,
        "| long connections alive at the end / never cut | {} / {} of {} |\n| long-connection exchanges | {} |\n| long connections cut ({}) | {} in {} waves |",
        c.alive_at_end,
        c.never_cut,
        c.connections,
        c.exchanges,
        kinds(c),
        c.lost().count(),
        storm_waves.len()
    );
    if let Some(first) = storm_waves.first() {
        let _ = writeln!(
            md,
            "| first wave | {} cuts at {:.1} s, with UPDATE {} |\n| UPDATEs between waves, min / median / max | {:.0} / {:.0} / {:.0} |",
            first.cuts,
            first.seconds,
            first.after_updates + 1,
            gaps.first().copied().unwrap_or(0.0),
            percentile(&gaps, 0.5),
            gaps.last().copied().unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        md,
        "| failed reconnections | {refused} |\n| old workers, most seen (limit) | {} ({}) |\n| 100 ms polls over the limit; in how many runs, longest run | {} of {}; {}, {} polls |",
        storm.procs.max_old_workers,
        storm.procs.limit,
        storm.procs.polls_over_limit,
        storm.procs.polls,
        storm.procs.episodes_over_limit,
        storm.procs.longest_episode_polls
    );
    let _ = writeln!(
        md,
        "| HAProxy RSS (master + workers) min / max / last | {} / {} / {} |\n| HAProxy RSS slope; peak of the middle / last third | {:+.1} KiB/min; {} / {} |",
        mb(r.min_kib),
        mb(r.max_kib),
        mb(r.last_kib),
        r.slope_kib_per_min,
        mb(r.middle_third_max_kib),
        mb(r.last_third_max_kib)
    );
    let _ = writeln!(
        md,
        "\nHAProxy's processes, one sample in ten (every ~10 s):\n\n| t (s) | UPDATEs | processes | old workers | RSS |\n|---:|---:|---:|---:|---:|"
    );
    let samples = &storm.procs.samples;
    for (i, s) in samples.iter().enumerate() {
        if i.is_multiple_of(10) || i + 1 == samples.len() {
            let _ = writeln!(
                md,
                "| {:.0} | {} | {} | {} | {} |",
                s.seconds,
                s.after_updates,
                s.processes,
                s.old_workers,
                mb(s.rss_kib)
            );
        }
    }
    let json = json!({
        "updates": storm.outcomes.len(),
        "stagger_ms": storm.stagger.as_millis() as u64,
        "seconds": storm.seconds,
        "update_p50_ms": percentile(&ms, 0.5),
        "update_p99_ms": percentile(&ms, 0.99),
        "update_max_ms": ms.last().copied().unwrap_or(0.0),
        "updates_over_1s": waited,
        "failed_updates": failed,
        "wrk_keep_alive": storm.keep_alive,
        "wrk_close": storm.close,
        "long_connections": c,
        "waves": storm_waves,
        "rss": r,
        "procs": storm.procs,
    });
    (md, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::long_conns::Cut;

    fn cut(seconds: f64, after_updates: u64, kind: CutKind) -> Cut {
        Cut {
            conn: 0,
            seconds,
            after_updates,
            kind,
            exchanges: 1,
        }
    }

    #[test]
    fn cuts_close_together_make_one_wave_and_refusals_none() {
        let conns = PoolReport {
            connections: 3,
            exchanges: 10,
            cuts: vec![
                cut(1.0, 10, CutKind::Reset),
                cut(1.1, 10, CutKind::Reset),
                cut(1.2, 10, CutKind::ConnectFailed),
                cut(1.3, 11, CutKind::Closed),
                cut(5.0, 21, CutKind::Reset),
            ],
            alive_at_end: 3,
            never_cut: 0,
        };
        let w = waves(&conns);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!((w[0].cuts, w[0].after_updates), (3, 10));
        assert_eq!((w[1].cuts, w[1].after_updates), (1, 21));
        assert_eq!(kinds(&conns), "reset 3, closed 1");
    }

    #[test]
    fn slopes_and_halves() {
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(0.0, 1.0)]), 0.0);
    }
}
