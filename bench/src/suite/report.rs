//! What every table of the suite's report shares: the machine line's facts, ratios (one
//! pair of numbers, and side-by-side runs), and looking a run up by its label.

use serde_json::json;

use super::measure::Measure;
use crate::stats;

/// Static facts about the machine and the programs.
pub(super) fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let gearmand = std::process::Command::new("gearmand")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    json!({
        "nproc": nproc,
        "cpu": cpu,
        "kernel": kernel,
        "gearmand": gearmand,
        "worker": libra_worker::jobs::discover::release(),
    })
}

/// Ratios of runs made side by side (same repetition), as median, lowest and highest:
/// steadier than the ratio of two medians on a machine whose load changes.
pub(super) fn paired(ours: &[f64], theirs: &[f64]) -> (f64, f64, f64) {
    let r: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(&o, &t)| ratio(o, t))
        .collect();
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    let mid = stats::median_index(&r).map_or(0.0, |i| r[i]);
    (mid, lo, hi)
}

/// `a / b`; 0 when `b` is not above 0 (a row whose other side did not run).
pub(super) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The run labelled `label`, if it ran.
pub(super) fn find(runs: &[Measure], label: &str) -> Option<Measure> {
    runs.iter().find(|m| m.label == label).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_ratios() {
        let (mid, lo, hi) = paired(&[10.0, 30.0, 20.0], &[10.0, 10.0, 10.0]);
        assert_eq!((mid, lo, hi), (2.0, 1.0, 3.0));
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
