//! Node health saved between reloads: every `watch::SNAPSHOT_PERIOD` the driver writes
//! `show servers state` to the server-state file (`load-server-state-from-file global`),
//! so that a HAProxy restarted after a crash starts with each node as it last was — a
//! node that was DOWN is not sent traffic first — and not only after a reload (`apply`
//! saves the carried states right before each one).
//!
//! It runs on the driver's thread, in order with the jobs (never between an apply's own
//! save and its reload), and costs one stats-socket round trip: the file is rewritten only
//! when a server's state changed (the clock column, seconds since the last change, left
//! out of the comparison).

use std::sync::atomic::Ordering;

use slog::debug;

use super::error::Result;
use super::{render, HaproxyDriver};

/// The server-state column that changes every second on its own.
const CLOCK_COLUMN: &str = "srv_time_since_last_change";

impl HaproxyDriver {
    /// Saves node health if HAProxy should be serving and the states changed.
    pub(super) fn snapshot_server_state(&mut self) -> Result<()> {
        if let Some(watch) = &self.watch {
            watch.snapshot_taken();
        }
        if !self.started_up || !self.should_run() {
            return Ok(());
        }
        let Some(applied) = &self.applied else {
            return Ok(());
        };
        let dump = match self.socket.show_servers_state() {
            Ok(dump) => dump,
            // Not running (or going): the last snapshot is the one to restart from.
            Err(e) => {
                debug!(self.log, "no node-health snapshot now"; "error" => %e);
                return Ok(());
            }
        };
        // Only servers of the applied model: parked ones are not in the file HAProxy
        // restarts from.
        let text = render::carry_server_state(&dump, applied, applied);
        let saved = std::fs::read_to_string(&self.paths.server_state).unwrap_or_default();
        if without_clock(&saved) == without_clock(&text) {
            return Ok(());
        }
        self.write_server_state(&text)?;
        self.stats.state_snapshots.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A server-state text with the clock column blanked, to tell whether states changed.
fn without_clock(text: &str) -> String {
    let mut clock = None;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some(names) = line.strip_prefix('#') {
            clock = names.split_whitespace().position(|n| n == CLOCK_COLUMN);
            out.push_str(line);
        } else {
            for (i, f) in fields.iter().enumerate() {
                out.push_str(if Some(i) == clock { "-" } else { f });
                out.push(' ');
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clock_column_is_left_out() {
        let head = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state \
                    srv_uweight srv_iweight srv_time_since_last_change srv_check_status\n";
        let a = format!("{head}3 b 1 s 127.0.0.1 2 0 1 1 10 6\n");
        let later = format!("{head}3 b 1 s 127.0.0.1 2 0 1 1 12 6\n");
        let down = format!("{head}3 b 1 s 127.0.0.1 0 0 1 1 12 6\n");
        assert_eq!(without_clock(&a), without_clock(&later));
        assert_ne!(without_clock(&a), without_clock(&down));
        assert_ne!(without_clock(&a), without_clock(head));
    }
}
