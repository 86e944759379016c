//! A worker with the HAProxy driver for the bench: its configuration (managed mode, the
//! state directory inside the bench's temporary directory, bind 127.0.0.1, metrics off),
//! its start and registration with the bench's gearmand, and its teardown: the worker is
//! stopped, then its HAProxy with `libra-worker haproxy stop --config FILE` (a managed
//! HAProxy outlives the worker on purpose, so stopping the worker is not enough).

use std::path::{Path, PathBuf};
use std::time::Duration;

use libra_worker::config::{haproxy_binary_from_env, HaproxySettings, Settings};
use libra_worker::tools::command;
use libra_worker::tools::process::{Managed, ManagedPaths};

use super::procs::{self, ProcsError, Running};

/// Bound on `libra-worker haproxy stop`.
const STOP_HAPROXY_LIMIT: Duration = Duration::from_secs(30);

/// What can go wrong setting up or tearing down the bench's HAProxy-driver worker.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error("cannot write the appliance worker's configuration {path}: {source}")]
    WriteConfig {
        path: String,
        source: std::io::Error,
    },
    #[error("the appliance worker's configuration {path} does not load: {problem}")]
    LoadConfig { path: String, problem: String },
    #[error(transparent)]
    Start(#[from] ProcsError),
    #[error("`libra-worker haproxy stop --config {config}` failed: {problem}")]
    StopHaproxy { config: String, problem: String },
    #[error("cannot ask HAProxy's master for its reload count: {0}")]
    ShowProc(String),
}

/// How the worker logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// One line per job is not written (the throughput rows).
    Warning,
    /// Driver command durations, as JSON lines the bench reads back.
    DebugJson,
    /// One line per job and the driver's `update steps`, as JSON lines: what a big job
    /// costs without debug's copies of every request and answer.
    InfoJson,
}

/// A running HAProxy-driver worker, and the HAProxy it manages once an UPDATE has
/// started one. Both are stopped on drop.
pub struct HaproxyWorker {
    binary: PathBuf,
    config: PathBuf,
    function: String,
    log_file: PathBuf,
    settings: HaproxySettings,
    worker: Option<Running>,
    haproxy_stopped: bool,
}

impl HaproxyWorker {
    /// Writes `<dir>/<function>.toml`, starts `binary run` with it and waits until it has
    /// registered `function` at the job server `gearmand`.
    pub fn start(
        binary: &Path,
        gearmand: &str,
        dir: &Path,
        function: &str,
        level: LogLevel,
    ) -> Result<HaproxyWorker, ApplianceError> {
        Self::start_with(binary, gearmand, dir, function, level, "")
    }

    /// As `start`, with `extra` appended to the configuration (sections the base text
    /// does not have, such as `[limits]`).
    pub fn start_with(
        binary: &Path,
        gearmand: &str,
        dir: &Path,
        function: &str,
        level: LogLevel,
        extra: &str,
    ) -> Result<HaproxyWorker, ApplianceError> {
        let log_file = dir.join(format!("{function}.log"));
        let (level_name, format) = match level {
            LogLevel::Warning => ("warning", "term"),
            LogLevel::DebugJson => ("debug", "json"),
            LogLevel::InfoJson => ("info", "json"),
        };
        let text = format!(
            "[gearman]\nservers = [\"{gearmand}\"]\nreconnect_sleep = 1\n\n\
             [worker]\nfunction = \"{function}\"\ndriver = \"haproxy\"\n\n\
             [log]\nlevel = \"{level_name}\"\nformat = \"{format}\"\nfile = \"{log}\"\n\n\
             [haproxy]\nmode = \"managed\"\nbinary = \"{haproxy}\"\nstate_dir = \"{state}\"\n\
             bind_address = \"127.0.0.1\"\n\n\
             [metrics]\nlisten = \"\"\n{extra}",
            log = log_file.display(),
            haproxy = haproxy_binary_from_env().display(),
            state = dir.join(format!("{function}-state")).display(),
        );
        let config = dir.join(format!("{function}.toml"));
        std::fs::write(&config, text).map_err(|source| ApplianceError::WriteConfig {
            path: config.display().to_string(),
            source,
        })?;
        let settings = Settings::load(&config)
            .map_err(|e| ApplianceError::LoadConfig {
                path: config.display().to_string(),
                problem: e.to_string(),
            })?
            .haproxy;
        let mut this = HaproxyWorker {
            binary: binary.to_path_buf(),
            config,
            function: function.to_string(),
            log_file,
            settings,
            worker: None,
            // Nothing to stop until the worker ran.
            haproxy_stopped: true,
        };
        let mut worker = procs::start_worker(
            binary,
            &this.config,
            &[],
            &dir.join(format!("{function}.out")),
        )?;
        this.haproxy_stopped = false;
        let registered = procs::wait_registered(gearmand, function, 1, &mut worker);
        this.worker = Some(worker);
        registered?;
        Ok(this)
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    pub fn pid(&self) -> u32 {
        self.worker.as_ref().map_or(0, Running::pid)
    }

    /// The worker's own log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Where its HAProxy's files are (config, sockets, pid file, log).
    pub fn haproxy(&self) -> &HaproxySettings {
        &self.settings
    }

    /// The process control the driver itself uses, pointed at this worker's HAProxy.
    pub fn managed(&self) -> Managed {
        Managed::new(ManagedPaths::from_settings(&self.settings))
    }

    /// Reloads HAProxy's master has done since it started (from `show proc`).
    pub fn reloads(&self) -> Result<u32, ApplianceError> {
        self.managed()
            .show_proc()
            .map(|p| p.master.reloads)
            .map_err(|e| ApplianceError::ShowProc(e.to_string()))
    }

    /// Stops the worker, then its HAProxy with `libra-worker haproxy stop`; returns what
    /// that command printed. Done once; drop does it if nobody did.
    pub fn stop(&mut self) -> Result<String, ApplianceError> {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        if self.haproxy_stopped {
            return Ok(String::new());
        }
        self.haproxy_stopped = true;
        let argv = [
            self.binary.display().to_string(),
            "haproxy".to_string(),
            "stop".to_string(),
            "--config".to_string(),
            self.config.display().to_string(),
        ];
        command::run(&argv, STOP_HAPROXY_LIMIT)
            .map(|out| out.output)
            .map_err(|e| ApplianceError::StopHaproxy {
                config: self.config.display().to_string(),
                problem: e.to_string(),
            })
    }
}

impl Drop for HaproxyWorker {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            note!("libra-bench: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::JobClient;
    use crate::procs::{free_port, Gearmand};
    use crate::updates::Appliance;
    use libra_worker::tools::process::alive;

    #[test]
    fn runs_an_update_and_stops_its_haproxy() {
        // `cargo test --workspace` builds it; `cargo test -p libra-bench` alone does not.
        let Ok(bin) = crate::procs::worker_binary() else {
            crate::skip_or_fail(
                "the libra-worker binary is not built (cargo build -p libra-worker)",
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let g = Gearmand::start(dir.path(), 1).unwrap();
        let mut w = HaproxyWorker::start(
            &bin,
            &g.addr(),
            dir.path(),
            "appliance-test",
            LogLevel::DebugJson,
        )
        .unwrap();
        let layout = Appliance::two_lbs(free_port().unwrap(), free_port().unwrap(), 2, 1);
        let mut c = JobClient::connect(&g.addr(), w.function(), Duration::from_secs(60)).unwrap();
        let a = c.submit_pass(&layout.update_body()).unwrap();
        assert!(a.took > Duration::ZERO);
        let stats = c
            .submit_pass(&bytes::Bytes::from_static(br#"{"hpcs_action":"STATS"}"#))
            .unwrap();
        assert!(stats.passed());
        let pid = std::fs::read_to_string(&w.haproxy().pid_file)
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap();
        assert!(alive(pid));
        assert_eq!(w.reloads().unwrap(), 0, "the first UPDATE starts HAProxy");
        let said = w.stop().unwrap();
        assert!(said.contains("stopped HAProxy"), "{said}");
        // Reparented to init when the worker exited: gone, or a zombie init has not
        // reaped yet, which `alive` does not count.
        assert!(!alive(pid), "HAProxy is stopped");
    }
}
