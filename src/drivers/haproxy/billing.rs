//! METRICS: the `bout` counters of HAProxy's backends, tied to the process that counts
//! them, banked in the ledger before every stop or reload and reported from it; the
//! reference worker's state file is taken over on the first start after the switch.

use std::collections::BTreeMap;
use std::path::Path;

use slog::{error, info, warn};

use super::error::{HaproxyError, Result};
use super::ledger::{self, Ledger, Sample};
use super::runtime_api::session::CliSession;
use super::runtime_api::{stat_csv, StatRow, StatsError};
use super::{render, HaproxyDriver};
use crate::drivers::Protocol;

impl HaproxyDriver {
    /// The ledger, loaded on first use (taking over the reference worker's state file the
    /// first time there is none of our own).
    pub(super) fn ledger(&mut self) -> Result<&mut Ledger> {
        let ledger = match self.ledger.take() {
            Some(l) => l,
            None => self.load_ledger()?,
        };
        Ok(self.ledger.insert(ledger))
    }

    fn load_ledger(&mut self) -> Result<Ledger> {
        let path = self.settings.statsfile.clone();
        let reference = self
            .settings
            .reference_statsfile
            .clone()
            .filter(|r| !path.exists() && r.exists());
        if let Some(reference) = reference {
            return self.take_over_reference_ledger(&path, &reference);
        }
        match Ledger::load(&path) {
            Ok(l) => Ok(l),
            Err(e @ ledger::LedgerError::Corrupt { .. }) => {
                // Keep the evidence, start a fresh count.
                let aside = path.with_extension("corrupt");
                let _ = std::fs::rename(&path, &aside);
                error!(self.log, "metrics ledger unreadable; starting afresh"; "error" => %e, "kept_as" => %aside.display());
                Ok(Ledger::load(&path)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The first start after the reference worker: its METRICS state becomes ours, so the
    /// next report bills exactly what it had not (its file is left as it was).
    fn take_over_reference_ledger(&mut self, path: &Path, reference: &Path) -> Result<Ledger> {
        let text = self
            .live
            .read(reference)
            .map_err(HaproxyError::ReferenceState)?;
        let pids: Vec<(Protocol, u32)> = if self.process.is_running() {
            self.samples()
                .unwrap_or_default()
                .iter()
                .map(|s| (s.protocol, s.pid))
                .collect()
        } else {
            Vec::new()
        };
        let ledger = Ledger::import_reference(path, reference, &text, &pids)?;
        info!(self.log, "took over the reference worker's METRICS state";
            "from" => %reference.display(), "ledger" => %path.display());
        Ok(ledger)
    }

    /// The `bout` counters of every load balancer, tied to the worker process that holds them.
    pub(super) fn samples(&self) -> Result<Vec<Sample>> {
        let info = self.socket.show_info()?;
        let rows = self.socket.show_stat_backends()?;
        self.samples_from(&info, &rows)
    }

    /// The `BACKEND` rows' `bout` of each load balancer, as counted by the process whose
    /// `show info` is `info`.
    fn samples_from(
        &self,
        info: &BTreeMap<String, String>,
        rows: &[StatRow],
    ) -> Result<Vec<Sample>> {
        let pid: u32 = info
            .get("Pid")
            .and_then(|p| p.parse().ok())
            .ok_or(HaproxyError::NoPid)?;
        let protocols: Vec<Protocol> = match &self.applied {
            Some(m) => m.load_balancers().iter().map(|lb| lb.protocol).collect(),
            None => vec![Protocol::Http, Protocol::Tcp],
        };
        let mut out = Vec::new();
        for protocol in protocols {
            let backend = render::backend_name(protocol);
            if let Some(row) = rows.iter().find(|r| {
                r.get("pxname") == Some(backend.as_str()) && r.get("svname") == Some("BACKEND")
            }) {
                out.push(Sample {
                    protocol,
                    pid,
                    bout: row.get_u64("bout").unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// Before HAProxy's current process goes away: bank its counters.
    pub(super) fn save_counters(&mut self) -> Result<()> {
        let samples = match self.samples() {
            Ok(s) => s,
            Err(e) => {
                warn!(self.log, "cannot read HAProxy counters before a stop or reload"; "error" => %e);
                return Ok(());
            }
        };
        self.ledger()?.save_before_stop(&samples)?;
        crash_point!("ledger-saved-before-reload");
        Ok(())
    }

    /// A session on the current process, opened before a reload: it keeps that process
    /// answering after it retires (see `bank_retired`). `None` if it cannot be opened, or
    /// if this HAProxy would show nothing through it (`Capabilities::retiring_counters`).
    pub(super) fn hold_retiring(&mut self) -> Option<CliSession> {
        if !self.capabilities().map_or(true, |c| c.retiring_counters) {
            return None;
        }
        match CliSession::open(&self.socket, self.timeouts.cli) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(self.log, "cannot open a session to bill the reload window"; "error" => %e);
                None
            }
        }
    }

    /// After a reload: the retired process went on serving while its successor started (a
    /// reload under load takes tens of milliseconds to seconds). Read through the session
    /// held since before the reload, its counters now include those bytes; the difference
    /// is banked (a soak with a reload every 2 s under wrk billed 10% too little without
    /// this). What it serves after this reading (at most the answer in progress on each of
    /// its keep-alive connections) is not billed. HAProxy 2.2 lists no proxies for a
    /// stopping process (`Capabilities::retiring_counters`): there the reload window goes
    /// unbilled (`haproxy_reload::bytes_served_while_a_reload_runs_are_billed`).
    pub(super) fn bank_retired(&mut self, mut session: CliSession) {
        let samples = self.retired_samples(&mut session);
        let banked = samples.and_then(|s| Ok(self.ledger()?.save_before_stop(&s)?));
        if let Err(e) = banked {
            warn!(self.log, "cannot bill the retired HAProxy process's last bytes"; "error" => %e);
        }
    }

    fn retired_samples(&self, session: &mut CliSession) -> Result<Vec<Sample>> {
        let stat = "show stat -1 2 -1";
        let unexpected = |command: &str| {
            let command = command.to_string();
            move |source| StatsError::Unexpected { command, source }
        };
        let info = session.command("show info")?;
        let info = stat_csv::parse_info(&info).map_err(unexpected("show info"))?;
        let rows = session.command(stat)?;
        let rows = stat_csv::parse_stat(&rows).map_err(unexpected(stat))?;
        self.samples_from(&info, &rows)
    }
}
