//! `DriverActor`: the only owner of the appliance state. It runs on its own thread
//! (a one-thread `SyncArbiter`), so HAProxy checks, reloads, socket and file I/O block
//! that thread and never the arbiter that runs the Gearman connections. Besides the
//! controller's commands it takes the driver's own reports (`Event`: HAProxy's master
//! exited, a node-health snapshot is due), sent from the driver's watch thread through
//! the `EventSink` given to the driver when it is built: one mailbox, one thread, so a
//! restart is never run alongside an UPDATE's apply.

use std::sync::{Arc, Mutex, OnceLock};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext, WeakAddr};
use slog::{debug, warn, Logger};

use crate::drivers::{Command, DriverEvent, DriverResult, EventSink, LoadBalancerDriver, Reply};
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

/// Answered when the driver thread takes it: the driver is built and its thread turns.
/// Start-up waits for one before telling systemd READY; the watchdog sends one per turn.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for DriverActor {
    type Result = ();

    fn handle(&mut self, _: Ping, _ctx: &mut SyncContext<Self>) {}
}

/// A report of the driver's own watch, run between commands.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Event(pub DriverEvent);

impl Handler<Event> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: Event, _ctx: &mut SyncContext<Self>) {
        let started = std::time::Instant::now();
        match self.driver.on_event(msg.0) {
            Ok(()) => {
                debug!(self.log, "driver event done"; "event" => ?msg.0, "ms" => started.elapsed().as_millis() as u64)
            }
            Err(e) => warn!(self.log, "driver event failed"; "event" => ?msg.0, "error" => %e),
        }
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
/// the thread ever has to be restarted. It is given the `EventSink` that queues the
/// driver's own reports in this actor's mailbox.
pub fn start<F>(build: F, telemetry: Arc<Telemetry>, log: Logger) -> Addr<DriverActor>
where
    F: Fn(EventSink) -> Box<dyn LoadBalancerDriver> + Send + Sync + 'static,
{
    // The address exists only once the arbiter runs; the driver arms its watch only while
    // running a command, which comes later still. Weak: the driver holding its own
    // actor's address must not keep the actor alive.
    let slot: Arc<OnceLock<WeakAddr<DriverActor>>> = Arc::new(OnceLock::new());
    let reports = slot.clone();
    let sink: EventSink = Arc::new(move |event| {
        if let Some(addr) = reports.get().and_then(WeakAddr::upgrade) {
            addr.do_send(Event(event));
        }
    });
    let build = Arc::new(Mutex::new(build));
    let addr = SyncArbiter::start(1, move || {
        let driver = match build.lock() {
            Ok(make) => make(sink.clone()),
            Err(poisoned) => (poisoned.into_inner())(sink.clone()),
        };
        DriverActor {
            driver,
            telemetry: telemetry.clone(),
            log: log.new(slog::o!("actor" => "driver")),
        }
    });
    let _ = slot.set(addr.downgrade());
    addr
}
