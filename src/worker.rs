//! Wiring: builds the logger, the driver thread, the controller and the supervised
//! connections from `Settings`, then runs until SIGTERM/SIGINT and stops gracefully
//! (no new grabs; the jobs in hand are finished and answered; exit 0).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{info, warn, Logger};

use crate::actors::controller::{ControllerActor, ControllerConfig};
use crate::actors::driver;
use crate::actors::supervisor::Connections;
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

/// Runs the worker until it is told to stop.
pub fn run(settings: Settings) -> Result<(), RunError> {
    let (log, _guard) = crate::logging::build(&settings.log).map_err(RunError::Log)?;
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
    let result = system.block_on(serve(settings.clone(), tls, log.clone()));
    if let Some(path) = &settings.worker.pid {
        let _ = std::fs::remove_file(path);
    }
    result
}

async fn serve(
    settings: Settings,
    tls: Option<transport::TlsConnector>,
    log: Logger,
) -> Result<(), RunError> {
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
        driver.recipient(),
        telemetry.clone(),
        log.clone(),
    )
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
    let signal = wait_for_stop_signal().await.map_err(RunError::Runtime)?;
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

async fn wait_for_stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
