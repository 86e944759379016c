//! `ControllerActor`: turns a job body into an answer. It parses and checks the request,
//! answers DISCOVER and DIAGNOSTICS itself, and queues every other action for the driver,
//! one at a time and in arrival order, with a deadline; driver errors become `hpcs_error`
//! text here and nowhere else.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use serde_json::{Map, Value};
use slog::{debug, info, warn, Drain, Logger};
use tokio::sync::oneshot;

use super::driver::{Execute, Ping};
use super::watchdog::Watchdog;
use crate::config::Limits;
use crate::drivers::{Command, DriverError, Reply};
use crate::jobs::{archive, diagnostics, discover, request, response, update, Action};
use crate::logging::masked;
use crate::telemetry::{Telemetry, Ticket};

/// How often the driver gets a housekeeping turn when no job is waiting.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

/// A job taken from a job server.
#[derive(Debug, Message)]
#[rtype(result = "JobAnswer")]
pub struct Job {
    /// The job server it came from, for logs.
    pub server: Arc<str>,
    pub handle: Bytes,
    /// The client's unique id (empty if the job server gave none): the API server knows
    /// its jobs by it, so every log line of the job carries it.
    pub unique: Bytes,
    pub body: Bytes,
    /// When it entered the controller's mailbox.
    pub queued: Ticket,
}

/// The JSON answer to send back as WORK_COMPLETE.
#[derive(Debug, Clone)]
pub struct JobAnswer {
    pub body: Vec<u8>,
}

/// What the controller needs to know.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub limits: Limits,
    pub job_timeout: Duration,
    pub diagnostics: diagnostics::Targets,
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Reply, JobError>>,
    /// Its place in the driver's queue, which is this queue plus the one in flight.
    queued: Ticket,
}

pub struct ControllerActor {
    config: ControllerConfig,
    driver: Recipient<Execute>,
    telemetry: Arc<Telemetry>,
    log: Logger,
    queue: VecDeque<Pending>,
    busy: bool,
    last_driver_turn: Instant,
    watchdog: Option<Watchdog>,
}

impl ControllerActor {
    pub fn new(
        config: ControllerConfig,
        driver: Recipient<Execute>,
        telemetry: Arc<Telemetry>,
        log: Logger,
    ) -> Self {
        ControllerActor {
            config,
            driver,
            telemetry,
            log: log.new(slog::o!("actor" => "controller")),
            queue: VecDeque::new(),
            busy: false,
            last_driver_turn: Instant::now(),
            watchdog: None,
        }
    }

    /// Feeds systemd's watchdog (see `watchdog`), when systemd asked for one.
    pub fn with_watchdog(mut self, watchdog: Option<Watchdog>) -> Self {
        self.watchdog = watchdog;
        self
    }

    /// One watchdog turn: feed systemd if the driver answered lately, and ping it again.
    fn watchdog_turn(&mut self, ctx: &mut Context<Self>) {
        let Some(w) = self.watchdog.as_mut() else {
            return;
        };
        if w.driver_alive(Instant::now()) {
            Watchdog::feed();
        } else {
            warn!(self.log, "the driver has not answered a ping for too long: the watchdog is no longer fed, systemd will restart the worker");
        }
        if !w.outstanding {
            w.outstanding = true;
            w.ping
                .send(Ping)
                .into_actor(self)
                .map(|res, act, _| {
                    if let Some(w) = act.watchdog.as_mut() {
                        w.outstanding = false;
                        if res.is_ok() {
                            w.pong(Instant::now());
                        }
                    }
                })
                .spawn(ctx);
        }
    }

    /// Queues a driver command; the receiver yields its result.
    fn enqueue(
        &mut self,
        command: Command,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<Reply, JobError>> {
        let (reply, rx) = oneshot::channel();
        let queued = self.telemetry.driver_mailbox.sent();
        self.queue.push_back(Pending {
            command,
            reply,
            queued,
        });
        self.pump(ctx);
        rx
    }

    /// Sends the next queued command to the driver unless one is in flight.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        // A job whose deadline passed while it waited is dropped, never run late.
        while let Some(next) = self.queue.pop_front() {
            if next.reply.is_closed() {
                self.telemetry.driver_mailbox.abandoned(next.queued);
                continue;
            }
            self.busy = true;
            self.last_driver_turn = Instant::now();
            let Pending {
                command,
                reply,
                queued,
            } = next;
            self.driver
                .send(Execute { command, queued })
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let result = match res {
                        Ok(done) => done.map_err(JobError::Driver),
                        Err(e) => {
                            // The driver never took it out of its queue.
                            act.telemetry.driver_mailbox.abandoned(queued);
                            Err(JobError::DriverGone(e))
                        }
                    };
                    let _ = reply.send(result);
                    act.busy = false;
                    act.pump(ctx);
                })
                .spawn(ctx);
            return;
        }
    }

    /// Gives the driver an upkeep turn when it has had nothing to do for a while.
    fn housekeeping_if_idle(&mut self, ctx: &mut Context<Self>) {
        // A test that must see the watch on HAProxy at work, and nothing else, turns the
        // periodic turns off (the first one, at start, still runs).
        fail::fail_point!("housekeeping-idle-off", |_| ());
        if !self.busy
            && self.queue.is_empty()
            && self.last_driver_turn.elapsed() >= HOUSEKEEPING_INTERVAL
        {
            self.housekeeping(ctx);
        }
    }

    fn housekeeping(&mut self, ctx: &mut Context<Self>) {
        let rx = self.enqueue(Command::Housekeeping, ctx);
        let log = self.log.clone();
        let t = self.telemetry.clone();
        ctx.spawn(
            async move {
                match rx.await {
                    Ok(Err(e)) => warn!(log, "driver housekeeping failed"; "error" => %e),
                    Ok(Ok(_)) => {}
                    Err(_) => return,
                }
                t.housekeeping
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            .into_actor(self),
        );
    }
}

impl Actor for ControllerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Connections hold at most `prefetch` jobs each; the mailbox must not be the bound.
        ctx.set_mailbox_capacity(1024);
        self.housekeeping(ctx);
        ctx.run_interval(HOUSEKEEPING_INTERVAL, |act, ctx| {
            act.housekeeping_if_idle(ctx)
        });
        if let Some(every) = self.watchdog.as_ref().map(|w| w.every) {
            self.watchdog_turn(ctx);
            ctx.run_interval(every, |act, ctx| act.watchdog_turn(ctx));
        }
    }
}

impl Handler<Job> for ControllerActor {
    type Result = ResponseFuture<JobAnswer>;

    fn handle(&mut self, job: Job, ctx: &mut Context<Self>) -> Self::Result {
        let taken = self.telemetry.controller.started(job.queued);
        let answer = self.dispatch(job, Instant::now(), ctx);
        self.telemetry.controller.finished(taken);
        answer
    }
}

impl ControllerActor {
    fn dispatch(
        &mut self,
        job: Job,
        started: Instant,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<JobAnswer> {
        let t = self.telemetry.clone();
        // Values a line shows, not copied per job: the handle is turned into text only
        // when a line is written.
        let handle = job.handle.clone();
        let unique = job.unique.clone();
        let log = self.log.new(slog::o!(
            "server" => job.server.clone(),
            "handle" => slog::FnValue(move |_| String::from_utf8_lossy(&handle).into_owned()),
            "unique" => slog::FnValue(move |_| String::from_utf8_lossy(&unique).into_owned()),
        ));
        let ready = |action: Option<Action>, answer: Value| -> ResponseFuture<JobAnswer> {
            Box::pin(futures::future::ready(finish(
                &t, &log, action, answer, started,
            )))
        };
        let req = match request::parse(&job.body, &self.config.limits) {
            Ok(req) => req,
            Err(rejected) => {
                if log.is_debug_enabled() {
                    debug!(log, "job refused"; "body" => crate::logging::masked_text(&job.body));
                }
                return ready(rejected.action, rejected.answer);
            }
        };
        let action = req.action;
        // slog evaluates a line's values before the level check: build the masked copy
        // (a deep clone, as costly as parsing the job) only when the line is written.
        if log.is_debug_enabled() {
            debug!(log, "job"; "action" => action.as_str(), "request" => %masked(&Value::Object(req.body.clone())));
        }
        let mut msg = req.body;
        let command = match action {
            Action::Discover => {
                discover::answer(&mut msg);
                return ready(Some(action), Value::Object(msg));
            }
            Action::Diagnostics => {
                let targets = self.config.diagnostics.clone();
                let (t, log) = (t.clone(), log.clone());
                return Box::pin(async move {
                    let msg = diagnostics::run(targets, msg).await;
                    finish(&t, &log, Some(action), Value::Object(msg), started)
                });
            }
            Action::Update => match update::parse(&mut msg, &self.config.limits) {
                Ok(lbs) => Command::Update(lbs),
                Err(error) => {
                    t.driver
                        .validation_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    update::refuse(&mut msg, &error.to_string());
                    return ready(Some(action), Value::Object(msg));
                }
            },
            Action::Archive => match archive::parse(&msg) {
                Ok(target) => Command::Archive(target),
                Err(error) => {
                    response::bad_request(&mut msg, &error.to_string());
                    return ready(Some(action), Value::Object(msg));
                }
            },
            Action::Suspend => Command::Suspend,
            Action::Enable => Command::Enable,
            Action::Delete => Command::Delete,
            Action::Stats => Command::Stats,
            Action::Metrics => Command::Metrics {
                job: String::from_utf8_lossy(&job.unique).into_owned(),
            },
        };
        let rx = self.enqueue(command, ctx);
        let timeout = self.config.job_timeout;
        let (t, log) = (t.clone(), log.clone());
        Box::pin(async move {
            let result = match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(JobError::Dropped),
                Err(_) => Err(JobError::TimedOut {
                    action,
                    after: timeout,
                }),
            };
            answer(action, &mut msg, result);
            finish(&t, &log, Some(action), Value::Object(msg), started)
        })
    }
}

/// Why a job that went to the driver has no driver answer.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Driver(DriverError),
    #[error("the driver is unavailable: {0}")]
    DriverGone(MailboxError),
    #[error("the driver dropped the job")]
    Dropped,
    #[error("{action} timed out after {} s", .after.as_secs())]
    TimedOut { action: Action, after: Duration },
}

/// Writes a driver result into the echoed request; an error's text becomes `hpcs_error`
/// here (cut to what the API server can store by `finish`, which logs it whole).
fn answer(action: Action, msg: &mut Map<String, Value>, result: Result<Reply, JobError>) {
    match result {
        Ok(reply) => {
            match reply {
                Reply::Done => {}
                Reply::Status(nodes) => {
                    let list = nodes
                        .into_iter()
                        .map(|n| serde_json::json!({"id": n.id, "status": if n.up { "UP" } else { "DOWN" }}))
                        .collect();
                    msg.insert("nodes".to_string(), Value::Array(list));
                }
                Reply::Statistics(stats) => {
                    msg.insert("utc_start".to_string(), Value::from(stats.utc_start));
                    msg.insert("utc_end".to_string(), Value::from(stats.utc_end));
                    // What the admin server's billing scheduler matches: `http` or `tcp`
                    // (GALERA bills as tcp), and an integer.
                    let list = stats
                        .usage
                        .into_iter()
                        .map(|u| serde_json::json!({"protocol": u.protocol.billing_name(), "bytes_out": u.bytes_out}))
                        .collect();
                    msg.insert("loadBalancers".to_string(), Value::Array(list));
                }
            }
            if action == Action::Update {
                update::mark_nodes(msg, update::NODE_OK);
            }
            response::pass(msg);
        }
        Err(e) => {
            if action == Action::Update {
                update::mark_nodes(msg, update::NODE_ERR);
            }
            let text = match &e {
                JobError::Driver(DriverError::Deleted) => {
                    msg.insert("status".to_string(), Value::from("DELETED"));
                    format!("Invalid operation {action} on a deleted LB.")
                }
                other => other.to_string(),
            };
            response::fail(msg, text);
        }
    }
}

/// Serializes the answer, counts the job and logs its one info line.
fn finish(
    t: &Telemetry,
    log: &Logger,
    action: Option<Action>,
    answer: Value,
    started: Instant,
) -> JobAnswer {
    let mut answer = answer;
    // Secrets the answer echoes are cut out of the error text before the token is masked.
    let secrets = crate::logging::secrets_in(&answer);
    let full_error = match &mut answer {
        Value::Object(msg) => {
            let full = response::fit_errors(msg);
            // The reference answered with the token masked; the API server logs answers.
            for field in crate::logging::SECRET_FIELDS {
                if let Some(v) = msg.get_mut(*field) {
                    *v = Value::from(crate::logging::MASK);
                }
            }
            full
        }
        _ => None,
    };
    let passed = response::passed(&answer);
    let elapsed = started.elapsed();
    t.jobs.record(action, passed, elapsed);
    if log.is_debug_enabled() {
        debug!(log, "answer"; "response" => %masked(&answer));
    }
    // As above: the duration's text and the error's copy only when the line is written.
    if log.is_info_enabled() {
        // The answer echoes the request: its secrets must not come back through the error.
        // The log keeps the whole text; the answer may carry only its first 128 characters.
        let error = crate::logging::redact(
            full_error.as_deref().unwrap_or_else(|| {
                answer
                    .get(response::ERROR_FIELD)
                    .and_then(Value::as_str)
                    .unwrap_or("")
            }),
            &secrets,
        );
        info!(log, "job done";
            "action" => action.map(|a| a.as_str()).unwrap_or("-"),
            "result" => if passed { response::PASS } else { response::FAIL },
            "duration_ms" => format!("{:.3}", elapsed.as_secs_f64() * 1000.0),
            "error" => error,
        );
    }
    let body =
        serde_json::to_vec(&answer).unwrap_or_else(|_| br#"{"hpcs_response":"FAIL"}"#.to_vec());
    drop_aside(answer, body.len());
    JobAnswer { body }
}

/// Answers above this size are freed by a thread of their own.
const DROP_ASIDE_BYTES: usize = 256 * 1024;

/// Frees a large answer off this thread: the echo of a 10,000-node UPDATE is a tree of
/// some 50,000 allocations, about 10 ms to free (measured with the bench's job bodies),
/// which would hold up the answer and every connection on this arbiter. Small answers,
/// and a thread that cannot be had, are freed here.
fn drop_aside(answer: Value, encoded_len: usize) {
    if encoded_len < DROP_ASIDE_BYTES {
        return;
    }
    // On failure the closure, and the answer with it, is dropped here instead.
    let _ = std::thread::Builder::new()
        .name("drop-answer".into())
        .spawn(move || drop(answer));
}
