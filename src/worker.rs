//! Wiring: builds the logger, the driver thread, the controller and the supervised
//! connections from `Settings`, tells systemd READY once the driver runs, then runs until
//! SIGTERM/SIGINT and stops gracefully (no new grabs; the jobs in hand are finished and
//! answered; exit 0). SIGHUP re-reads the configuration file's log level.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{info, warn, Logger};

use crate::actors::controller::{ControllerActor, ControllerConfig};
use crate::actors::driver;
use crate::actors::supervisor::Connections;
use crate::actors::watchdog::Watchdog;
use crate::config::{DriverKind, Settings};
use crate::drivers::haproxy::capabilities::{Capabilities, CapabilityError};
use crate::drivers::haproxy::HaproxyDriver;
use crate::drivers::null::NullDriver;
use crate::drivers::{EventSink, LoadBalancerDriver};
use crate::jobs::diagnostics;
use crate::telemetry::{DriverStats, Telemetry};
use crate::transport;

/// Extra time, beyond the job timeout, a graceful stop waits for jobs in hand.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the log: {0}")]
    Log(std::io::Error),
    #[error(transparent)]
    Tls(#[from] transport::TransportError),
    #[error("cannot write pid file {path}: {source}")]
    Pid {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The HAProxy found is too old, or not HAProxy.
    #[error("haproxy.binary: {0}")]
    Haproxy(CapabilityError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("metrics.listen: cannot listen on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Builds the configured driver. Runs on the driver thread; `events` queues the driver's
/// own reports (its watch on HAProxy) for that thread.
pub fn build_driver(
    settings: &Settings,
    stats: Arc<DriverStats>,
    events: EventSink,
    log: &Logger,
) -> Box<dyn LoadBalancerDriver> {
    match settings.worker.driver {
        DriverKind::Null => Box::new(NullDriver),
        DriverKind::Haproxy => Box::new(HaproxyDriver::new(
            settings.haproxy.clone(),
            settings.worker.job_timeout,
            stats,
            Some(events),
            log.new(slog::o!("driver" => "haproxy")),
        )),
    }
}

/// The periodic one-line summary of the counters.
fn log_summary(t: &Telemetry, log: &Logger) {
    let (pass, fail) = t.jobs.total();
    let conns: Vec<String> = t
        .connections()
        .iter()
        .map(|c| format!("{}={}", c.server, c.state().name()))
        .collect();
    info!(log, "metrics summary";
        "jobs_pass" => pass,
        "jobs_fail" => fail,
        "controller_depth" => t.controller.depth(),
        "controller_high_water" => t.controller.high_water(),
        "driver_depth" => t.driver_mailbox.depth(),
        "connections" => conns.join(" "),
        "healthy" => t.health().is_ok(),
    );
}

/// Runs the worker until it is told to stop. `config_file` is where `settings` came from:
/// SIGHUP reads its log level again.
pub fn run(settings: Settings, config_file: Option<PathBuf>) -> Result<(), RunError> {
    let logging = crate::logging::build(&settings.log).map_err(RunError::Log)?;
    let log = logging.log.clone();
    for w in &settings.warnings {
        warn!(log, "configuration"; "note" => w);
    }
    let tls = settings
        .gearman
        .tls
        .as_ref()
        .map(transport::tls_connector)
        .transpose()?;
    if settings.worker.driver == DriverKind::Haproxy {
        // An HAProxy that cannot read what the worker writes is refused now, not at the
        // first UPDATE; one that is missing may still be installed, and every job says so.
        match Capabilities::ask(&settings.haproxy.binary) {
            Err(CapabilityError::Run(e)) => {
                warn!(log, "cannot ask HAProxy what it is"; "error" => %e)
            }
            Err(e) => return Err(RunError::Haproxy(e)),
            Ok(_) => {}
        }
    }
    if let Some(path) = &settings.worker.pid {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            RunError::Pid {
                path: path.clone(),
                source,
            }
        })?;
    }
    let system = actix_rt::System::new();
    let reload = LogReload {
        config_file,
        level: logging.level.clone(),
    };
    let result = system.block_on(serve(settings.clone(), tls, reload, log.clone()));
    if let Some(path) = &settings.worker.pid {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// What SIGHUP needs: the file to read again and the level to change.
struct LogReload {
    config_file: Option<PathBuf>,
    level: crate::logging::LevelHandle,
}

impl LogReload {
    /// Reads the configuration file again and applies its log level; nothing else changes
    /// (the connections, jobs in hand and HAProxy go on). A file that no longer loads
    /// changes nothing and is logged.
    async fn apply(&self, log: &Logger) {
        let Some(path) = self.config_file.clone() else {
            return;
        };
        let loaded = tokio::task::spawn_blocking(move || Settings::load(&path)).await;
        match loaded {
            Ok(Ok(new)) => {
                let old = self.level.get();
                // Said at the old level and the new, so it shows whichever way it goes.
                info!(log, "SIGHUP: log level re-read"; "from" => old.as_str(), "to" => new.log.level.as_str());
                self.level.set(new.log.level);
                let _ = sd_notify::notify(
                    false,
                    &[sd_notify::NotifyState::Status(&format!(
                        "running; log level {}",
                        new.log.level.as_str()
                    ))],
                );
            }
            Ok(Err(e)) => {
                warn!(log, "SIGHUP: the configuration file no longer loads; log level kept"; "error" => %e)
            }
            Err(e) => warn!(log, "SIGHUP: cannot read the configuration"; "error" => %e),
        }
    }
}

async fn serve(
    settings: Settings,
    tls: Option<transport::TlsConnector>,
    reload: LogReload,
    log: Logger,
) -> Result<(), RunError> {
    let mut signals = Signals::install().map_err(RunError::Runtime)?;
    let telemetry = Arc::new(Telemetry::default());
    let driver_settings = settings.clone();
    let driver_log = log.clone();
    let driver_stats = telemetry.driver.clone();
    let driver = driver::start(
        move |events| build_driver(&driver_settings, driver_stats.clone(), events, &driver_log),
        telemetry.clone(),
        log.clone(),
    );
    let controller = ControllerActor::new(
        ControllerConfig {
            limits: settings.limits,
            job_timeout: settings.worker.job_timeout,
            diagnostics: diagnostics::Targets {
                gearman: settings.gearman.servers.clone(),
                network: settings.worker.diagnostics_target.clone(),
            },
        },
        driver.clone().recipient(),
        telemetry.clone(),
        log.clone(),
    )
    .with_watchdog(Watchdog::from_env(
        driver.clone().recipient(),
        settings.worker.job_timeout,
    ))
    .start();
    let supervisor = Connections::start(
        &settings.gearman,
        &settings.worker.function,
        tls,
        controller.recipient(),
        telemetry.clone(),
        &log,
    );
    if let Some(addr) = settings.metrics.listen {
        match crate::telemetry::http::serve(addr, telemetry.clone(), log.clone()).await {
            Ok(bound) => info!(log, "metrics endpoint listening"; "address" => %bound),
            Err(e) => return Err(RunError::Metrics { addr, source: e }),
        }
    }
    if !settings.metrics.summary_interval.is_zero() {
        let (t, l) = (telemetry.clone(), log.clone());
        let every = settings.metrics.summary_interval;
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                log_summary(&t, &l);
            }
        });
    }
    info!(log, "libra-worker started";
        "version" => crate::jobs::discover::release(),
        "function" => &settings.worker.function,
        "servers" => settings.gearman.servers.iter().map(|s| s.config_form()).collect::<Vec<_>>().join(","),
        "driver" => settings.worker.driver.name(),
    );
    // READY once the driver thread has built its driver and answers: the configuration
    // is valid (it was loaded) and jobs can run.
    if driver.send(driver::Ping).await.is_ok() {
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("running"),
            ],
        );
    }
    let signal = signals.wait_for_stop(&reload, &log).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    info!(log, "stopping: taking no new jobs, finishing the jobs in hand"; "signal" => signal);
    if supervisor
        .drain(settings.worker.job_timeout + DRAIN_GRACE)
        .await
    {
        info!(log, "stopped");
    } else {
        warn!(
            log,
            "stopped with jobs still in hand after the grace period"
        );
    }
    Ok(())
}

/// The signals the worker handles, installed before the first connection starts: a
/// signal that came before its handler would take its default action (SIGHUP and SIGTERM
/// end the process), so a `systemctl reload` or stop in the first moments would kill the
/// worker instead of reloading it or stopping it gracefully.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT, applying every SIGHUP meanwhile.
    async fn wait_for_stop(&mut self, reload: &LogReload, log: &Logger) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => reload.apply(log).await,
            }
        }
    }
}
