//! The METRICS ledger: per protocol, the last reported `bout` counter of the HAProxy worker
//! process that produced it, and the bytes saved ("unreported") before a stop or reload.
//! Tying each baseline to a worker pid is what makes double counting impossible: a counter
//! is only ever subtracted from a value of the same process. The state is a small JSON file
//! replaced atomically (`files::write_atomic`) before any figure leaves this module.
//! Usage is kept per billing protocol (`http`, `tcp`; GALERA bills as tcp). The reference
//! worker's own state file can be taken over once, when an appliance switches workers.

mod reference;

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
mod tests;
