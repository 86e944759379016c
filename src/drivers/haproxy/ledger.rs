//! The METRICS ledger: per protocol, the last reported `bout` counter of the HAProxy worker
//! process that produced it, and the bytes saved ("unreported") before a stop or reload.
//! Tying each baseline to a worker pid is what makes double counting impossible: a counter
//! is only ever subtracted from a value of the same process. The state is a small JSON file
//! replaced atomically (`files::write_atomic`) before any figure leaves this module.
//! Usage is kept per billing protocol (`http`, `tcp`; GALERA bills as tcp). The reference
//! worker's own state file can be taken over once, when an appliance switches workers.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::drivers::types::{Protocol, Statistics, Usage};

/// The METRICS time format: `YYYY-MM-DD HH:MM:SS.ffffff`, UTC.
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// The version written in the state file; another one is refused rather than guessed at.
const FILE_VERSION: u32 = 1;

/// One backend's `bout` counter as read from HAProxy, with the worker process it came from
/// (`show info` Pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub protocol: Protocol,
    pub pid: u32,
    pub bout: u64,
}

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("Cannot read the metrics state file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("The metrics state file {} is corrupt ({reason}); delete it to start counting afresh", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("Cannot write the metrics state file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("Cannot write the metrics state file {}: {source}", path.display())]
    Store {
        path: PathBuf,
        source: super::files::FileError,
    },
    #[error("The reference worker's METRICS state {} is not as it wrote it ({reason})", path.display())]
    CorruptReference { path: PathBuf, reason: String },
    /// A driver bug: two counters for one load balancer would be counted twice.
    #[error("Two byte counters given for the {0} load balancer")]
    DuplicateSample(Protocol),
}

/// What the ledger knows about one load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The worker process whose counter `bout` is.
    pid: u32,
    /// That process's counter when it was last reported or saved.
    bout: u64,
    /// Bytes counted before a stop or reload and not reported yet.
    unreported: u64,
}

impl Entry {
    /// Bytes sent since the baseline. A counter of another process, or one that went down
    /// (HAProxy restarted behind our back, or its counters were cleared), started from zero.
    fn delta(baseline: Option<&Entry>, sample: &Sample) -> u64 {
        match baseline {
            Some(b) if b.pid == sample.pid && sample.bout >= b.bout => sample.bout - b.bout,
            _ => sample.bout,
        }
    }
}

/// The file's shape. Protocols are keyed by their contract name (`HTTP`, `TCP`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    last_end: Option<String>,
    protocols: BTreeMap<String, Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_report: Option<StoredReport>,
}

/// The last report and the job it answered: the same job again gets the same report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredReport {
    job: String,
    utc_start: String,
    utc_end: String,
    bytes_out: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    last_end: Option<String>,
    entries: BTreeMap<Protocol, Entry>,
    last_report: Option<StoredReport>,
}

/// The METRICS ledger of one appliance, backed by its state file.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    state: State,
}

impl Ledger {
    /// Reads the ledger at `path`; a missing file is an empty ledger, a corrupt one an error.
    pub fn load(path: &Path) -> Result<Ledger, LedgerError> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Ledger {
                    path: path.to_path_buf(),
                    state: State::default(),
                })
            }
            Err(source) => {
                return Err(LedgerError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let corrupt = |reason: String| LedgerError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file: StateFile = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FILE_VERSION {
            return Err(corrupt(format!("unknown version {}", file.version)));
        }
        if let Some(end) = &file.last_end {
            NaiveDateTime::parse_from_str(end, TIME_FORMAT)
                .map_err(|e| corrupt(format!("bad last_end '{}': {e}", end.escape_debug())))?;
        }
        let mut entries = BTreeMap::new();
        let mut seen = Vec::new();
        for (name, entry) in file.protocols {
            let named = Protocol::parse(&name)
                .ok_or_else(|| corrupt(format!("unknown protocol '{}'", name.escape_debug())))?;
            if seen.contains(&named) {
                return Err(corrupt(format!("protocol {named} listed twice")));
            }
            seen.push(named);
            // Files of earlier versions kept GALERA apart from TCP, whose bill it shares.
            let merged = match entries.get(&named.billing()) {
                None => entry,
                Some(other) => merge(*other, entry),
            };
            entries.insert(named.billing(), merged);
        }
        let last_report = file.last_report;
        if let Some(r) = &last_report {
            for name in r.bytes_out.keys() {
                Protocol::parse(name).ok_or_else(|| {
                    corrupt(format!("unknown protocol '{}'", name.escape_debug()))
                })?;
            }
        }
        Ok(Ledger {
            path: path.to_path_buf(),
            state: State {
                last_end: file.last_end,
                entries,
                last_report,
            },
        })
    }

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

    /// Reports the bytes out of every sampled load balancer since the last report, plus the
    /// bytes saved before stops and reloads (also of load balancers that no longer exist,
    /// once). The new baselines are on disk before the figures are returned; if writing
    /// fails nothing changes and the same bytes are reported next time.
    ///
    /// `job` (the job's unique id; empty if none) is kept with the report: when the worker
    /// dies between writing a report and answering it, the job server hands the same job
    /// out again, and it gets the same report rather than a new, empty one.
    pub fn report(
        &mut self,
        now: DateTime<Utc>,
        samples: &[Sample],
        job: &str,
    ) -> Result<Statistics, LedgerError> {
        if let Some(last) = &self.state.last_report {
            if !job.is_empty() && last.job == job {
                return Ok(last.statistics());
            }
        }
        let samples = billed(samples);
        check_unique(&samples)?;
        let mut next = self.state.clone();
        let mut usage = BTreeMap::new();
        for sample in &samples {
            let old = next.entries.get(&sample.protocol);
            let delta = Entry::delta(old, sample);
            let unreported = old.map_or(0, |e| e.unreported);
            usage.insert(sample.protocol, unreported.saturating_add(delta));
            next.entries.insert(
                sample.protocol,
                Entry {
                    pid: sample.pid,
                    bout: sample.bout,
                    unreported: 0,
                },
            );
        }
        for (protocol, entry) in next.entries.iter_mut() {
            // A load balancer without a counter now: its saved bytes are reported once, and
            // its baseline stays in case the counter is only missing from this sample.
            if entry.unreported > 0 && !usage.contains_key(protocol) {
                usage.insert(*protocol, entry.unreported);
                entry.unreported = 0;
            }
        }
        let now = format_utc(now);
        // As the reference: the period starts just after the previous one ended.
        let utc_start = next
            .last_end
            .as_deref()
            .and_then(just_after)
            .unwrap_or_else(|| now.clone());
        // A clock stepped back must not give a period that ends before it starts.
        let utc_end = if now < utc_start {
            utc_start.clone()
        } else {
            now
        };
        next.last_end = Some(utc_end.clone());
        let usage: Vec<Usage> = usage
            .into_iter()
            .map(|(protocol, bytes_out)| Usage {
                protocol,
                bytes_out,
            })
            .collect();
        let statistics = Statistics {
            utc_start,
            utc_end,
            usage,
        };
        next.last_report = (!job.is_empty()).then(|| StoredReport::new(job, &statistics));
        self.commit(next)?;
        Ok(statistics)
    }

    /// Moves the bytes counted since the baseline into "unreported" and takes the samples as
    /// the new baselines; called before every stop or reload, whose new worker process
    /// counts from zero again.
    pub fn save_before_stop(&mut self, samples: &[Sample]) -> Result<(), LedgerError> {
        let samples = billed(samples);
        check_unique(&samples)?;
        let mut next = self.state.clone();
        for sample in &samples {
            let old = next.entries.get(&sample.protocol);
            let delta = Entry::delta(old, sample);
            let unreported = old.map_or(0, |e| e.unreported).saturating_add(delta);
            next.entries.insert(
                sample.protocol,
                Entry {
                    pid: sample.pid,
                    bout: sample.bout,
                    unreported,
                },
            );
        }
        self.commit(next)
    }

    /// Forgets everything (DELETE): the next report starts a new period from zero.
    pub fn forget_all(&mut self) -> Result<(), LedgerError> {
        self.commit(State::default())
    }

    /// Writes `next` to disk, then adopts it; on failure the ledger is unchanged.
    fn commit(&mut self, next: State) -> Result<(), LedgerError> {
        let file = StateFile {
            version: FILE_VERSION,
            last_end: next.last_end.clone(),
            protocols: next
                .entries
                .iter()
                .map(|(p, e)| (p.as_str().to_string(), *e))
                .collect(),
            last_report: next.last_report.clone(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| LedgerError::Write {
            path: self.path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        super::files::write_atomic(&self.path, &text, super::files::PRIVATE_MODE).map_err(|e| {
            LedgerError::Store {
                path: self.path.clone(),
                source: e,
            }
        })?;
        self.state = next;
        Ok(())
    }
}

impl StoredReport {
    fn new(job: &str, s: &Statistics) -> StoredReport {
        StoredReport {
            job: job.to_string(),
            utc_start: s.utc_start.clone(),
            utc_end: s.utc_end.clone(),
            bytes_out: s
                .usage
                .iter()
                .map(|u| (u.protocol.as_str().to_string(), u.bytes_out))
                .collect(),
        }
    }

    fn statistics(&self) -> Statistics {
        Statistics {
            utc_start: self.utc_start.clone(),
            utc_end: self.utc_end.clone(),
            usage: self
                .bytes_out
                .iter()
                .filter_map(|(name, &bytes_out)| {
                    Protocol::parse(name).map(|protocol| Usage {
                        protocol,
                        bytes_out,
                    })
                })
                .collect(),
        }
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

/// Two entries of one bill: the saved bytes add up; the baseline is the one further along
/// (the other belonged to a process that is gone).
fn merge(a: Entry, b: Entry) -> Entry {
    let base = if b.bout > a.bout { b } else { a };
    Entry {
        unreported: a.unreported.saturating_add(b.unreported),
        ..base
    }
}

/// The samples keyed by the protocol they are billed under.
fn billed(samples: &[Sample]) -> Vec<Sample> {
    samples
        .iter()
        .map(|s| Sample {
            protocol: s.protocol.billing(),
            ..*s
        })
        .collect()
}

/// One microsecond after `time` (a stored period end), in the same format.
fn just_after(time: &str) -> Option<String> {
    let t = NaiveDateTime::parse_from_str(time, TIME_FORMAT).ok()?;
    Some(
        (t + chrono::Duration::microseconds(1))
            .format(TIME_FORMAT)
            .to_string(),
    )
}

fn check_unique(samples: &[Sample]) -> Result<(), LedgerError> {
    for (i, s) in samples.iter().enumerate() {
        if samples[..i].iter().any(|t| t.protocol == s.protocol) {
            return Err(LedgerError::DuplicateSample(s.protocol));
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`; what is stored is exactly what was reported, so the next
/// period starts where this one ended.
fn format_utc(t: DateTime<Utc>) -> String {
    t.format(TIME_FORMAT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::os::unix::fs::PermissionsExt;

    fn at(h: u32, m: u32, s: u32, micros: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2014, 1, 9, h, m, s).unwrap()
            + chrono::Duration::microseconds(micros.into())
    }

    fn http(pid: u32, bout: u64) -> Sample {
        Sample {
            protocol: Protocol::Http,
            pid,
            bout,
        }
    }

    fn tcp(pid: u32, bout: u64) -> Sample {
        Sample {
            protocol: Protocol::Tcp,
            pid,
            bout,
        }
    }

    fn bytes(stats: &Statistics, protocol: Protocol) -> Option<u64> {
        stats
            .usage
            .iter()
            .find(|u| u.protocol == protocol)
            .map(|u| u.bytes_out)
    }

    fn fresh() -> (tempfile::TempDir, PathBuf, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        let ledger = Ledger::load(&path).unwrap();
        (dir, path, ledger)
    }

    #[test]
    fn first_report_counts_from_zero_and_starts_now() {
        let (_dir, _path, mut ledger) = fresh();
        let stats = ledger
            .report(
                at(15, 11, 45, 704_754),
                &[http(100, 5000), tcp(100, 70)],
                "",
            )
            .unwrap();
        assert_eq!(stats.utc_start, "2014-01-09 15:11:45.704754");
        assert_eq!(stats.utc_end, "2014-01-09 15:11:45.704754");
        assert_eq!(
            stats.usage,
            vec![
                Usage {
                    protocol: Protocol::Http,
                    bytes_out: 5000
                },
                Usage {
                    protocol: Protocol::Tcp,
                    bytes_out: 70
                }
            ]
        );
    }

    #[test]
    fn second_report_counts_only_new_bytes_and_periods_join() {
        let (_dir, _path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 1), &[http(100, 5000)], "")
            .unwrap();
        let second = ledger
            .report(at(16, 0, 0, 2), &[http(100, 5000)], "")
            .unwrap();
        assert_eq!(bytes(&second, Protocol::Http), Some(0));
        // The reference's rule: a period starts one microsecond after the last one ended.
        assert_eq!(second.utc_start, "2014-01-09 15:00:00.000002");
        assert_eq!(second.utc_end, "2014-01-09 16:00:00.000002");
        let third = ledger
            .report(at(17, 0, 0, 0), &[http(100, 5123)], "")
            .unwrap();
        assert_eq!(bytes(&third, Protocol::Http), Some(123));
        assert_eq!(third.utc_start, "2014-01-09 16:00:00.000003");
        assert_eq!(third.utc_end, "2014-01-09 17:00:00.000000");
    }

    #[test]
    fn reload_between_reports_loses_nothing_and_counts_nothing_twice() {
        let (_dir, _path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 1000)], "")
            .unwrap();
        // 500 more bytes, then a reload: the old worker's 500 are saved.
        ledger.save_before_stop(&[http(100, 1500)]).unwrap();
        // The new worker counts from zero and has sent 40 bytes.
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(200, 40)], "")
            .unwrap();
        assert_eq!(bytes(&stats, Protocol::Http), Some(540));
        let next = ledger
            .report(at(17, 0, 0, 0), &[http(200, 50)], "")
            .unwrap();
        assert_eq!(bytes(&next, Protocol::Http), Some(10));
    }

    #[test]
    fn a_new_process_counts_from_zero_even_past_the_old_counter() {
        let (_dir, _path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 1000), tcp(100, 1000)], "")
            .unwrap();
        // HTTP reloaded (500 saved) and TCP restarted behind our back; both new workers have
        // since sent more than the old counters held, which must not hide the change.
        ledger.save_before_stop(&[http(100, 1500)]).unwrap();
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(200, 2000), tcp(300, 5000)], "")
            .unwrap();
        assert_eq!(bytes(&stats, Protocol::Http), Some(2500));
        assert_eq!(bytes(&stats, Protocol::Tcp), Some(5000));
    }

    #[test]
    fn several_reloads_accumulate() {
        let (_dir, _path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 1000)], "")
            .unwrap();
        ledger.save_before_stop(&[http(100, 1100)]).unwrap();
        ledger.save_before_stop(&[http(200, 30)]).unwrap();
        ledger.save_before_stop(&[http(300, 7)]).unwrap();
        let stats = ledger.report(at(16, 0, 0, 0), &[http(400, 2)], "").unwrap();
        assert_eq!(bytes(&stats, Protocol::Http), Some(100 + 30 + 7 + 2));
    }

    #[test]
    fn crash_after_save_before_reload_counts_only_new_bytes() {
        let (_dir, path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 1000)], "")
            .unwrap();
        ledger.save_before_stop(&[http(100, 1500)]).unwrap();
        drop(ledger);
        // The worker died before reloading: the same HAProxy process kept counting.
        let mut ledger = Ledger::load(&path).unwrap();
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(100, 1600)], "")
            .unwrap();
        assert_eq!(bytes(&stats, Protocol::Http), Some(600));
    }

    #[test]
    fn counters_going_down_without_save_count_from_zero() {
        let (_dir, _path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 1000), tcp(100, 1000)], "")
            .unwrap();
        // HAProxy restarted behind our back: a new pid, or the same pid with a lower counter.
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(300, 25), tcp(100, 30)], "")
            .unwrap();
        assert_eq!(bytes(&stats, Protocol::Http), Some(25));
        assert_eq!(bytes(&stats, Protocol::Tcp), Some(30));
        let next = ledger
            .report(at(17, 0, 0, 0), &[http(300, 26), tcp(100, 31)], "")
            .unwrap();
        assert_eq!(bytes(&next, Protocol::Http), Some(1));
        assert_eq!(bytes(&next, Protocol::Tcp), Some(1));
    }

    #[test]
    fn removed_load_balancer_is_reported_once() {
        let (_dir, _path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 10), tcp(100, 20)], "")
            .unwrap();
        // The TCP load balancer is removed by an UPDATE: its bytes are saved first.
        ledger
            .save_before_stop(&[http(100, 15), tcp(100, 28)])
            .unwrap();
        let stats = ledger.report(at(16, 0, 0, 0), &[http(200, 1)], "").unwrap();
        assert_eq!(bytes(&stats, Protocol::Http), Some(6));
        assert_eq!(bytes(&stats, Protocol::Tcp), Some(8));
        let next = ledger.report(at(17, 0, 0, 0), &[http(200, 1)], "").unwrap();
        assert_eq!(bytes(&next, Protocol::Tcp), None);
        assert_eq!(next.usage.len(), 1);
    }

    #[test]
    fn a_counter_missing_once_is_not_counted_twice() {
        let (_dir, _path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 10), tcp(100, 20)], "")
            .unwrap();
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(100, 11)], "")
            .unwrap();
        assert_eq!(bytes(&stats, Protocol::Tcp), None);
        let next = ledger
            .report(at(17, 0, 0, 0), &[http(100, 11), tcp(100, 25)], "")
            .unwrap();
        assert_eq!(bytes(&next, Protocol::Tcp), Some(5));
    }

    #[test]
    fn state_survives_load_and_file_is_private() {
        let (_dir, path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 42), &[http(100, 1000)], "")
            .unwrap();
        ledger.save_before_stop(&[http(100, 1200)]).unwrap();
        drop(ledger);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut ledger = Ledger::load(&path).unwrap();
        let stats = ledger.report(at(16, 0, 0, 0), &[http(200, 3)], "").unwrap();
        assert_eq!(stats.utc_start, "2014-01-09 15:00:00.000043");
        assert_eq!(bytes(&stats, Protocol::Http), Some(203));
        let mut ledger = Ledger::load(&path).unwrap();
        let again = ledger.report(at(17, 0, 0, 0), &[http(200, 3)], "").unwrap();
        assert_eq!(bytes(&again, Protocol::Http), Some(0));
        assert_eq!(again.utc_start, "2014-01-09 16:00:00.000001");
        assert!(!path.with_file_name("metrics.json.tmp").exists());
    }

    #[test]
    fn a_stale_tmp_file_does_not_leak_its_rights() {
        let (_dir, path, mut ledger) = fresh();
        let tmp = path.with_file_name("metrics.json.tmp");
        fs::write(&tmp, "leftover").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        ledger.report(at(15, 0, 0, 0), &[http(100, 1)], "").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!tmp.exists());
    }

    #[test]
    fn timestamps_have_microseconds_and_never_run_backwards() {
        let (_dir, _path, mut ledger) = fresh();
        let stats = ledger.report(at(9, 5, 7, 3), &[], "").unwrap();
        assert_eq!(stats.utc_end, "2014-01-09 09:05:07.000003");
        assert!(NaiveDateTime::parse_from_str(&stats.utc_end, "%Y-%m-%d %H:%M:%S%.f").is_ok());
        // Nanoseconds are cut, not rounded into a different period boundary.
        let t = Utc.with_ymd_and_hms(2014, 1, 9, 10, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(1_999);
        let stats = ledger.report(t, &[], "").unwrap();
        assert_eq!(stats.utc_end, "2014-01-09 10:00:00.000001");
        let back = ledger.report(at(8, 0, 0, 0), &[], "").unwrap();
        assert_eq!(back.utc_start, "2014-01-09 10:00:00.000002");
        assert_eq!(back.utc_end, back.utc_start);
    }

    #[test]
    fn forget_all_starts_afresh() {
        let (_dir, path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 1000)], "")
            .unwrap();
        ledger.save_before_stop(&[http(100, 1200)]).unwrap();
        ledger.forget_all().unwrap();
        let mut ledger = Ledger::load(&path).unwrap();
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(100, 1300)], "")
            .unwrap();
        assert_eq!(stats.utc_start, "2014-01-09 16:00:00.000000");
        assert_eq!(bytes(&stats, Protocol::Http), Some(1300));
    }

    #[test]
    fn corrupt_files_are_errors_that_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        for bad in [
            "not json",
            r#"{"version":2,"last_end":null,"protocols":{}}"#,
            r#"{"version":1,"last_end":"yesterday","protocols":{}}"#,
            r#"{"version":1,"last_end":null,"protocols":{"UDP":{"pid":1,"bout":1,"unreported":0}}}"#,
            r#"{"version":1,"last_end":null,"protocols":{"HTTP":{"pid":1,"bout":-1,"unreported":0}}}"#,
            r#"{"version":1,"last_end":null,"protocols":{"HTTP":{"pid":1,"bout":1,"unreported":0},"http":{"pid":1,"bout":1,"unreported":0}}}"#,
        ] {
            fs::write(&path, bad).unwrap();
            let err = Ledger::load(&path).unwrap_err();
            assert!(matches!(err, LedgerError::Corrupt { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains("corrupt"), "{err}");
        }
    }

    #[test]
    fn duplicate_samples_are_refused_without_change() {
        let (_dir, path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 10)], "")
            .unwrap();
        assert!(matches!(
            ledger.report(at(16, 0, 0, 0), &[http(100, 20), http(100, 30)], ""),
            Err(LedgerError::DuplicateSample(Protocol::Http))
        ));
        assert!(ledger.save_before_stop(&[tcp(1, 1), tcp(1, 2)]).is_err());
        let stats = Ledger::load(&path)
            .unwrap()
            .report(at(16, 0, 0, 0), &[http(100, 30)], "")
            .unwrap();
        assert_eq!(bytes(&stats, Protocol::Http), Some(20));
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("metrics.json");
        let mut ledger = Ledger::load(&path).unwrap();
        let err = ledger
            .report(at(15, 0, 0, 0), &[http(100, 10)], "")
            .unwrap_err();
        assert!(matches!(err, LedgerError::Store { .. }), "{err:?}");
        fs::create_dir(path.parent().unwrap()).unwrap();
        let stats = ledger
            .report(at(16, 0, 0, 0), &[http(100, 10)], "")
            .unwrap();
        assert_eq!(bytes(&stats, Protocol::Http), Some(10));
        assert_eq!(stats.utc_start, "2014-01-09 16:00:00.000000");
    }

    #[test]
    fn galera_is_billed_as_tcp() {
        let (_dir, path, mut ledger) = fresh();
        let galera = |pid, bout| Sample {
            protocol: Protocol::Galera,
            pid,
            bout,
        };
        ledger
            .report(at(15, 0, 0, 0), &[galera(100, 1000)], "")
            .unwrap();
        // The tcp load balancer turns from GALERA into TCP: one reload, one bill.
        ledger.save_before_stop(&[galera(100, 1500)]).unwrap();
        let stats = ledger.report(at(16, 0, 0, 0), &[tcp(200, 40)], "").unwrap();
        assert_eq!(
            stats.usage,
            vec![Usage {
                protocol: Protocol::Tcp,
                bytes_out: 540
            }]
        );
        assert!(!fs::read_to_string(&path).unwrap().contains("GALERA"));
    }

    #[test]
    fn files_that_kept_galera_apart_are_merged_into_tcp() {
        let (_dir, path, _) = fresh();
        fs::write(
            &path,
            r#"{"version":1,"last_end":null,"protocols":{
                "GALERA":{"pid":100,"bout":1500,"unreported":500},
                "TCP":{"pid":200,"bout":40,"unreported":7}}}"#,
        )
        .unwrap();
        let mut ledger = Ledger::load(&path).unwrap();
        let stats = ledger
            .report(at(16, 0, 0, 0), &[tcp(100, 1600)], "")
            .unwrap();
        assert_eq!(bytes(&stats, Protocol::Tcp), Some(100 + 507));
    }

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

    #[test]
    fn a_job_handed_out_again_gets_the_same_report() {
        let (_dir, path, mut ledger) = fresh();
        ledger
            .report(at(15, 0, 0, 0), &[http(100, 1000)], "job-1")
            .unwrap();
        let first = ledger
            .report(at(16, 0, 0, 0), &[http(100, 1500)], "job-2")
            .unwrap();
        assert_eq!(bytes(&first, Protocol::Http), Some(500));
        // The worker died after writing job-2's report, before answering: the job server
        // hands job-2 to the next worker, which must answer it the same, not with 0 bytes.
        let mut restarted = Ledger::load(&path).unwrap();
        let again = restarted
            .report(at(16, 0, 1, 0), &[http(100, 1600)], "job-2")
            .unwrap();
        assert_eq!(again, first);
        // The next job gets what came since job-2's report, once.
        let next = restarted
            .report(at(17, 0, 0, 0), &[http(100, 1600)], "job-3")
            .unwrap();
        assert_eq!(bytes(&next, Protocol::Http), Some(100));
        // Without an id there is nothing to recognise: every call is a new report.
        let anon = restarted
            .report(at(18, 0, 0, 0), &[http(100, 1600)], "")
            .unwrap();
        let anon2 = restarted
            .report(at(18, 0, 0, 1), &[http(100, 1600)], "")
            .unwrap();
        assert_ne!(anon.utc_end, anon2.utc_end);
    }
}
