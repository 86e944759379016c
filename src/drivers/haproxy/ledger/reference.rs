//! Taking over the reference worker's METRICS state file, once, when an appliance switches
//! from the Python worker: its baselines and saved totals become this ledger's, so the
//! first report bills exactly what the reference had not.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDateTime;
use serde::Deserialize;

use super::{Entry, Ledger, LedgerError, State, TIME_FORMAT};
use crate::drivers::types::Protocol;

impl Ledger {
    /// Creates the ledger at `path` from the reference worker's state file `reference`, so
    /// that the first report bills exactly what the reference had not: its baselines
    /// (`last_*_bytes_out`, the counters at its last report) and its saved totals
    /// (`unreported_*_bytes_out`, counted before HAProxy stopped or restarted, and holding
    /// the baseline). `pids` gives the HAProxy process now counting for each protocol; a
    /// protocol without one is taken to count from zero in whatever process comes next.
    pub fn import_reference(
        path: &Path,
        reference: &Path,
        text: &[u8],
        pids: &[(Protocol, u32)],
    ) -> Result<Ledger, LedgerError> {
        let corrupt = |reason: String| LedgerError::CorruptReference {
            path: reference.to_path_buf(),
            reason,
        };
        let old: ReferenceState =
            serde_json::from_slice(text).map_err(|e| corrupt(e.to_string()))?;
        let last_end = match old.end.as_deref() {
            None => None,
            Some(end) => Some(
                parse_python_datetime(end)
                    .ok_or_else(|| corrupt(format!("bad end '{}'", end.escape_debug())))?
                    .format(TIME_FORMAT)
                    .to_string(),
            ),
        };
        let mut entries = BTreeMap::new();
        for (protocol, last, unreported) in [
            (
                Protocol::Http,
                old.last_http_bytes_out,
                old.unreported_http_bytes_out,
            ),
            (
                Protocol::Tcp,
                old.last_tcp_bytes_out,
                old.unreported_tcp_bytes_out,
            ),
        ] {
            if last == 0 && unreported == 0 {
                continue;
            }
            let pid = pids
                .iter()
                .find(|(p, _)| p.billing() == protocol)
                .map_or(0, |(_, pid)| *pid);
            // The reference billed `unreported + current - last`: with saved totals the
            // process now counting started from zero after they were saved.
            let entry = if unreported > 0 {
                Entry {
                    pid,
                    bout: 0,
                    unreported: unreported.saturating_sub(last),
                }
            } else {
                Entry {
                    pid,
                    bout: last,
                    unreported: 0,
                }
            };
            entries.insert(protocol, entry);
        }
        let mut ledger = Ledger {
            path: path.to_path_buf(),
            state: State::default(),
        };
        ledger.commit(State {
            last_end,
            entries,
            last_report: None,
        })?;
        Ok(ledger)
    }
}

/// The reference worker's state file (`libra/worker/drivers/haproxy/stats.py`): missing
/// fields read as zero, as it read them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReferenceState {
    end: Option<String>,
    last_http_bytes_out: u64,
    last_tcp_bytes_out: u64,
    unreported_http_bytes_out: u64,
    unreported_tcp_bytes_out: u64,
}

/// Python's `str(datetime)`: `2014-01-09 15:11:45.704754`, without the fraction when it
/// is zero.
fn parse_python_datetime(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, bytes, fresh, http, tcp};
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    fn reference_file(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("haproxy.stats");
        fs::write(&path, body).unwrap();
        path
    }

    fn import(
        path: &Path,
        reference: &Path,
        pids: &[(Protocol, u32)],
    ) -> Result<Ledger, LedgerError> {
        Ledger::import_reference(path, reference, &fs::read(reference).unwrap(), pids)
    }

    #[test]
    fn the_reference_state_is_taken_over_exactly() {
        let (dir, path, _) = fresh();
        // Reported at 15:11:45 with HAProxy at 5000 (http) and 70 (tcp) bytes out.
        let reference = reference_file(
            dir.path(),
            r#"{"start": "2014-01-09 14:11:45.000001", "end": "2014-01-09 15:11:45.704754",
                "last_tcp_bytes_out": 70, "last_http_bytes_out": 5000,
                "unreported_tcp_bytes_out": 0, "unreported_http_bytes_out": 0}"#,
        );
        let mut ledger = import(
            &path,
            &reference,
            &[(Protocol::Http, 100), (Protocol::Tcp, 100)],
        )
        .unwrap();
        // The same HAProxy process kept counting: only what came after the report is billed.
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(100, 5300), tcp(100, 71)], "")
            .unwrap();
        assert_eq!(stats.utc_start, "2014-01-09 15:11:45.704755");
        assert_eq!(bytes(&stats, Protocol::Http), Some(300));
        assert_eq!(bytes(&stats, Protocol::Tcp), Some(1));
        let next = ledger
            .report(at(17, 0, 0, 0), &[http(100, 5300), tcp(100, 71)], "")
            .unwrap();
        assert_eq!(bytes(&next, Protocol::Http), Some(0));
        // The file is ours from now on.
        let again = Ledger::load(&path).unwrap();
        assert_eq!(again.state, ledger.state);
    }

    #[test]
    fn the_references_saved_totals_are_billed_once() {
        let (dir, path, _) = fresh();
        // The reference reported at 1500, then HAProxy restarted at 2000 (saved total
        // 2000); the new process has sent 40 bytes since. The reference would bill
        // 2000 + 40 - 1500 = 540.
        let reference = reference_file(
            dir.path(),
            r#"{"start": "2014-01-09 14:00:00", "end": "2014-01-09 15:00:00",
                "last_http_bytes_out": 1500, "unreported_http_bytes_out": 2000}"#,
        );
        let mut ledger = import(&path, &reference, &[(Protocol::Http, 200)]).unwrap();
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(200, 40)], "")
            .unwrap();
        assert_eq!(stats.utc_start, "2014-01-09 15:00:00.000001");
        assert_eq!(bytes(&stats, Protocol::Http), Some(540));
        assert_eq!(bytes(&stats, Protocol::Tcp), None);
    }

    #[test]
    fn a_reference_state_without_haproxy_counts_the_next_process_from_zero() {
        let (dir, path, _) = fresh();
        let reference = reference_file(dir.path(), r#"{"last_http_bytes_out": 1500}"#);
        let mut ledger = import(&path, &reference, &[]).unwrap();
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(300, 40)], "")
            .unwrap();
        assert_eq!(bytes(&stats, Protocol::Http), Some(40));
        assert_eq!(stats.utc_start, stats.utc_end);
    }

    #[test]
    fn a_bad_reference_state_says_which_file() {
        let (dir, path, _) = fresh();
        let bad = reference_file(dir.path(), r#"{"end": "yesterday"}"#);
        let err = import(&path, &bad, &[]).unwrap_err();
        assert!(err.to_string().contains("haproxy.stats"), "{err}");
        assert!(matches!(err, LedgerError::CorruptReference { .. }), "{err}");
        assert!(!path.exists());
    }
}
