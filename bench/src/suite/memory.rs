//! The memory table: resident memory (`VmRSS`, its peak `VmHWM`, from /proc/<pid>/status)
//! of libra-worker as it ships and of the C worker, idle and after load, and the same
//! readings for the JSON report.

use std::fmt::Write as _;

use serde_json::json;

use crate::procfs::Memory;

/// What the main comparison read of both workers, before and after its runs.
pub(super) struct Readings {
    pub(super) idle_ours: Memory,
    pub(super) idle_c: Memory,
    pub(super) loaded_ours: Memory,
    pub(super) loaded_c: Memory,
}

/// Writes the memory table; `ours_peak` is the main worker after every run of the suite,
/// the prefetch phase included.
pub(super) fn write_table(md: &mut String, r: &Readings, ours_peak: Memory) {
    let _ = writeln!(md, "### Memory (/proc/<pid>/status)\n");
    let _ = writeln!(
        md,
        "| process | idle VmRSS | VmRSS after the window-64 runs | peak (VmHWM) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    mem_row(
        md,
        "libra-worker (prefetch 16, the default)",
        Some(r.idle_ours),
        ours_peak,
    );
    mem_row(md, "C worker (gearman -w)", Some(r.idle_c), r.loaded_c);
    let _ = writeln!(md);
}

/// One process's row: idle (if read), after load, and the peak.
fn mem_row(md: &mut String, name: &str, idle: Option<Memory>, after: Memory) {
    let _ = writeln!(
        md,
        "| {name} | {} | {} KiB | {} KiB |",
        idle.map_or("".to_string(), |m| format!("{} KiB", m.rss_kib)),
        after.rss_kib,
        after.peak_kib
    );
}

/// The readings as the JSON report has them.
pub(super) fn json(r: &Readings, ours_peak: Memory) -> serde_json::Value {
    json!({
        "ours_idle": r.idle_ours, "ours_after_load": r.loaded_ours, "ours_prefetch16": ours_peak,
        "c_idle": r.idle_c, "c_after_load": r.loaded_c,
    })
}
