//! `DriverActor`: the only owner of the appliance state. It runs on its own thread
//! (a one-thread `SyncArbiter`), so HAProxy checks, reloads, socket and file I/O block
//! that thread and never the arbiter that runs the Gearman connections.

use std::sync::{Arc, Mutex};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use slog::{debug, Logger};

use crate::drivers::{Command, DriverResult, LoadBalancerDriver, Reply};
use crate::telemetry::{Telemetry, Ticket};

/// Runs one driver command; the controller sends these one at a time, in job order.
#[derive(Debug, Message)]
#[rtype(result = "DriverResult<Reply>")]
pub struct Execute {
    pub command: Command,
    /// When the command entered the driver's queue (the controller's FIFO).
    pub queued: Ticket,
}

pub struct DriverActor {
    driver: Box<dyn LoadBalancerDriver>,
    telemetry: Arc<Telemetry>,
    log: Logger,
}

impl Actor for DriverActor {
    type Context = SyncContext<Self>;
}

impl Handler<Execute> for DriverActor {
    type Result = DriverResult<Reply>;

    fn handle(&mut self, msg: Execute, _ctx: &mut SyncContext<Self>) -> Self::Result {
        let taken = self.telemetry.driver_mailbox.started(msg.queued);
        let started = std::time::Instant::now();
        let name = command_name(&msg.command);
        let result = msg.command.run(self.driver.as_mut());
        let took = started.elapsed();
        self.telemetry.driver_mailbox.finished(taken);
        debug!(self.log, "driver command done"; "command" => name, "ms" => took.as_millis() as u64, "ok" => result.is_ok());
        result
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Update(_) => "update",
        Command::Suspend => "suspend",
        Command::Enable => "enable",
        Command::Delete => "delete",
        Command::Stats => "stats",
        Command::Metrics { .. } => "metrics",
        Command::Archive(_) => "archive",
        Command::Housekeeping => "housekeeping",
    }
}

/// Starts the driver thread. `build` makes the driver; it runs on that thread, again if
/// the thread ever has to be restarted.
pub fn start<F>(build: F, telemetry: Arc<Telemetry>, log: Logger) -> Addr<DriverActor>
where
    F: Fn() -> Box<dyn LoadBalancerDriver> + Send + Sync + 'static,
{
    let build = Arc::new(Mutex::new(build));
    SyncArbiter::start(1, move || {
        let driver = match build.lock() {
            Ok(make) => make(),
            Err(poisoned) => (poisoned.into_inner())(),
        };
        DriverActor {
            driver,
            telemetry: telemetry.clone(),
            log: log.new(slog::o!("actor" => "driver")),
        }
    })
}
