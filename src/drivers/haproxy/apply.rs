//! Making a new configuration live: through the runtime API when only nodes change (no
//! reload), otherwise by checking a candidate file, carrying node health and byte counters
//! over, swapping the file in and reloading; a refusal puts the previous file back. The
//! `applying` marker brackets the change so a worker that dies half-way is reconciled.

use std::sync::atomic::Ordering;
use std::time::Instant;

use slog::{error, warn};

use super::error::{HaproxyError, Result};
use super::model::Model;
use super::runtime_api::session::CliSession;
use super::{command, files, process, render, runtime, HaproxyDriver};
use crate::config::HaproxyMode;
use crate::drivers::Protocol;

/// Where an UPDATE's time goes, step by step: each `lap` charges the time since the
/// previous one to a step (summed when a step recurs). Logged at info as one field, `us`:
/// `validate=120 plan=40 render=900 ...` in microseconds, for `libra-bench scale`.
#[derive(Debug, Default)]
pub(super) struct StepClock {
    last: Option<Instant>,
    steps: Vec<(&'static str, u128)>,
}

impl StepClock {
    pub(super) fn start(&mut self) {
        self.steps.clear();
        self.last = Some(Instant::now());
    }

    /// Charges the time since the last lap to `step`.
    pub(super) fn lap(&mut self, step: &'static str) {
        let now = Instant::now();
        let us = self.last.map_or(0, |t| now.duration_since(t).as_micros());
        self.last = Some(now);
        match self.steps.iter_mut().find(|(s, _)| *s == step) {
            Some((_, total)) => *total += us,
            None => self.steps.push((step, us)),
        }
    }

    /// The steps so far as `name=us` words, and a fresh start.
    pub(super) fn take(&mut self) -> String {
        let text = self
            .steps
            .iter()
            .map(|(s, us)| format!("{s}={us}"))
            .collect::<Vec<_>>()
            .join(" ");
        self.steps.clear();
        self.last = None;
        text
    }
}

impl HaproxyDriver {
    /// Makes `next` live: through the runtime API when only nodes change, otherwise by
    /// the full check-swap-reload path.
    pub(super) fn apply(&mut self, mut next: Model) -> Result<()> {
        self.ensure_state_dir()?;
        if let Some(live) = &self.applied {
            next.inherit_dynamic_cookies(live);
        }
        if self.settings.runtime_api
            && self.has_config()
            && !self.is_suspended()
            && self.process.is_running()
        {
            match self.apply_at_runtime(&mut next) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.stats.runtime_fallbacks.fetch_add(1, Ordering::Relaxed);
                    warn!(self.log, "runtime update failed half-way; reloading instead"; "error" => %e);
                }
            }
        }
        let text = render::render(&next, &self.render_env()?)?;
        self.clock.lap("render");
        // From here a worker that dies leaves the marker: its successor reloads from the
        // file, so that what runs is what the file says.
        self.mark_applying()?;
        let result = self.apply_with_reload(next, &text);
        self.applied_done();
        result
    }

    /// Applies a nodes-only change through the runtime API, then writes the same state to
    /// the file. `Ok(false)`: the change needs a reload. `Err`: HAProxy refused a step
    /// half-way; the caller reloads from the file, which makes both agree again.
    fn apply_at_runtime(&mut self, next: &mut Model) -> Result<bool> {
        if self.applied.is_none() {
            return Ok(false);
        }
        let dynamic_servers = self.capabilities()?.dynamic_servers;
        let env = self.render_env()?;
        // Borrowed, not cloned: a copy of a 10,000-node model per UPDATE was pure overhead.
        let Some(live) = self.applied.as_ref() else {
            return Ok(false);
        };
        let planned = runtime::plan(live, next, &self.lingering, dynamic_servers);
        self.clock.lap("diff");
        let steps = match planned {
            Ok(steps) => steps,
            Err(reason) => {
                slog::debug!(self.log, "update needs a reload"; "reason" => %reason);
                return Ok(false);
            }
        };
        // HTTP nodes that join at run time carry HAProxy's dynamic cookie; a parked server
        // that comes back keeps the cookie it had.
        let backend = render::backend_name(Protocol::Http);
        let added_http: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                runtime::Step::Add {
                    protocol: Protocol::Http,
                    node,
                } => Some(node.id.clone()),
                runtime::Step::Revive {
                    protocol: Protocol::Http,
                    node,
                } => self
                    .lingering
                    .get(&(backend.clone(), render::server_name(&node.id)))
                    .filter(|p| p.dynamic_cookie)
                    .map(|_| node.id.clone()),
                _ => None,
            })
            .collect();
        next.mark_dynamic_cookie(Protocol::Http, added_http.iter());
        let text = render::render(next, &env)?;
        self.clock.lap("render");
        self.mark_applying()?;
        self.clock.lap("write");
        let done = runtime::apply(&self.socket, live, next, &steps);
        self.clock.lap("runtime");
        let done = done?;
        for key in &done.revived {
            self.lingering.remove(key);
        }
        self.lingering.extend(done.parked);
        // The file says what now runs; it was produced by the same renderer from the same
        // structure HAProxy accepted, with validated node values, so it is not re-checked
        // here (that check alone costs more than the whole runtime change).
        // The model is encoded and flushed by a second thread while this one replaces the
        // file: the two fsyncs then share the file system's journal commit instead of
        // waiting in turn.
        let replaced = std::thread::scope(|scope| {
            let (model, log, path): (&Model, _, _) = (next, &self.log, &self.paths.model);
            let saved = scope.spawn(move || {
                super::encode_model(model, log)
                    .map(|bytes| files::write_atomic(path, &bytes, files::PRIVATE_MODE))
            });
            let replaced = self.live.replace_keeping_backup(
                &self.paths.config,
                &self.paths.backup,
                text.as_bytes(),
            );
            match saved.join() {
                Ok(Some(Err(e))) => warn!(self.log, "cannot save the applied model"; "error" => %e),
                Err(_) => warn!(
                    self.log,
                    "cannot save the applied model: its thread panicked"
                ),
                Ok(Some(Ok(()))) | Ok(None) => {}
            }
            replaced
        });
        drop(text);
        replaced?;
        self.applied_done();
        self.clock.lap("write");
        // The caller is done with `next` once this returns `Ok(true)`.
        self.applied = Some(std::mem::take(next));
        self.stats.runtime_applies.fetch_add(1, Ordering::Relaxed);
        self.stats.expect_up(true);
        Ok(true)
    }

    /// Refuses a port another process holds before HAProxy tries it: a reload that fails
    /// to bind pauses the old frontends for about two seconds, which would drop clients.
    fn check_ports(&self, next: &Model) -> Result<()> {
        let Ok(ip) = self.settings.bind_address.parse::<std::net::IpAddr>() else {
            return Ok(());
        };
        // In service mode the running HAProxy may have been configured by someone else
        // (the reference worker, before a switch): the ports its live file binds are its.
        let inherited = if self.settings.mode == HaproxyMode::Service && self.applied.is_none() {
            self.live
                .read(&self.paths.config)
                .map(|text| bound_ports(&String::from_utf8_lossy(&text)))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let ours = |port: u16| {
            inherited.contains(&port)
                || self
                    .applied
                    .as_ref()
                    .is_some_and(|m| m.load_balancers().iter().any(|lb| lb.port == port))
        };
        for lb in next.load_balancers() {
            // In service mode another user's HAProxy holds our current ports.
            if self.settings.mode == HaproxyMode::Service && ours(lb.port) {
                continue;
            }
            let addr = std::net::SocketAddr::new(ip, lb.port);
            if let Err(e) = process::check_bindable(&[addr]) {
                let cause = match &e {
                    // A service-mode HAProxy starts as root: a port the worker may not
                    // bind is no evidence that HAProxy cannot.
                    process::ProcessError::PortUnavailable { source, .. }
                        if self.settings.mode == HaproxyMode::Service
                            && source.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        continue;
                    }
                    process::ProcessError::PortUnavailable { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                return Err(HaproxyError::PortTaken {
                    frontend: render::frontend_name(lb.protocol),
                    cause,
                    addr,
                });
            }
        }
        Ok(())
    }

    /// Puts the previous file back after HAProxy refused the new one.
    fn roll_back(&mut self, had_previous: bool, was_running: bool) {
        let restored = if had_previous {
            self.live
                .restore(&self.paths.backup, &self.paths.config)
                .map(|_| ())
        } else {
            self.live.remove(&self.paths.config).map(|_| ())
        };
        if let Err(e) = restored {
            error!(self.log, "cannot restore the previous configuration"; "error" => %e);
            return;
        }
        if !(was_running && had_previous) {
            return;
        }
        // A failed reload leaves the old worker serving and the master waiting; a new
        // worker that died at start-up takes everything down. Either way, load the restored
        // file so that what runs is what is on disk.
        let result = if self.process.is_running() {
            self.process.reload()
        } else {
            self.process.start()
        };
        if let Err(e) = result {
            error!(self.log, "reloading the restored configuration failed"; "error" => %e);
        }
    }

    /// The full path: write and check the candidate, refuse ports held by others, carry
    /// node health and byte counters over, then swap the file in and reload.
    fn apply_with_reload(&mut self, next: Model, text: &str) -> Result<()> {
        files::write_atomic(&self.paths.candidate, text.as_bytes(), files::PRIVATE_MODE)?;
        self.ensure_server_state()?;
        self.clock.lap("write");
        let checked = process::validate_with_timeout(
            &self.settings.binary,
            &self.paths.candidate,
            self.timeouts.command,
        );
        self.clock.lap("check");
        if let Err(e) = checked {
            let _ = files::remove_if_exists(&self.paths.candidate);
            self.stats
                .validation_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
        crash_point!("apply-candidate-checked");
        let running = self.process.is_running();
        self.check_ports(&next)?;
        let mut retiring = None;
        if running {
            retiring = self.hold_retiring();
            // Node health survives the reload: hand HAProxy the states still valid.
            match self.socket.show_servers_state() {
                Ok(dump) => {
                    let live = self.applied.clone().unwrap_or_default();
                    self.write_server_state(&render::carry_server_state(&dump, &live, &next))?;
                }
                Err(e) => {
                    warn!(self.log, "cannot save server states before the reload"; "error" => %e)
                }
            }
            self.save_counters()?;
            self.clock.lap("state");
        }
        self.swap_and_load(next, text, running, retiring)
    }

    /// Puts the checked configuration in place (with its model, so a worker that dies
    /// now restarts knowing what the file says) and has HAProxy load it; on refusal the
    /// previous file and model come back and keep serving.
    /// `retiring`: a session on the process the reload replaces.
    fn swap_and_load(
        &mut self,
        next: Model,
        text: &str,
        running: bool,
        retiring: Option<CliSession>,
    ) -> Result<()> {
        let had_previous = self.live.backup(&self.paths.config, &self.paths.backup)?;
        crash_point!("apply-backup-taken");
        self.live.install(&self.paths.config, text.as_bytes())?;
        crash_point!("apply-file-replaced");
        let _ = files::remove_if_exists(&self.paths.candidate);
        self.persist_model(&next);
        crash_point!("apply-before-reload");
        self.clock.lap("write");
        let outcome = if running {
            self.process.reload()
        } else {
            self.process.start()
        };
        self.clock.lap("reload");
        match outcome {
            Ok(()) => {
                crash_point!("apply-after-reload");
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                if let Some(session) = retiring {
                    self.bank_retired(session);
                }
                // The new process was built from the file: nothing is parked any more.
                self.lingering.clear();
                let _ = files::remove_if_exists(&self.paths.suspended);
                self.applied = Some(next);
                self.stats.expect_up(true);
                self.stats.set_up(true);
                Ok(())
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                match self.applied.clone() {
                    Some(previous) => self.persist_model(&previous),
                    None => {
                        let _ = files::remove_if_exists(&self.paths.model);
                    }
                }
                // A command that hung told us nothing happened; running it again would
                // only hang again while the next jobs wait.
                let hung = matches!(
                    e,
                    process::ProcessError::ServiceCommand(command::CommandError::TimedOut { .. })
                );
                self.roll_back(had_previous, running && !hung);
                Err(e.into())
            }
        }
    }

    fn mark_applying(&self) -> Result<()> {
        // Not fsynced: the marker is for a worker that dies, and the page cache outlives a
        // process. After a power loss HAProxy starts afresh from the file, so there is
        // nothing left to reconcile. Two fsyncs less on every UPDATE.
        Ok(files::write_flag(
            &self.paths.applying,
            files::PRIVATE_MODE,
        )?)
    }

    fn applied_done(&self) {
        if let Err(e) = files::remove_if_exists(&self.paths.applying) {
            warn!(self.log, "cannot clear the update marker"; "error" => %e);
        }
    }
}

/// The ports of the `bind` lines of an HAProxy configuration (`bind <addr>:<port> ...`).
fn bound_ports(config: &str) -> Vec<u16> {
    config
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("bind")).then_some(())?;
            words.next()?.rsplit(':').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod bound_ports_tests {
    #[test]
    fn the_ports_of_a_reference_layout_file() {
        let text = "frontend http-in\n    mode http\n    bind 0.0.0.0:80\nfrontend tcp-in\n    bind [::]:443 v4v6\n    # bind 1.2.3.4:9\n";
        assert_eq!(super::bound_ports(text), vec![80, 443]);
    }
}
