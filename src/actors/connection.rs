//! `ConnectionActor`: one per job server. Connects, registers the function, runs the
//! grab loop (GRAB_JOB_UNIQ / NO_JOB / PRE_SLEEP / NOOP), hands each job to the controller
//! and writes its WORK_COMPLETE together with the next grab in one write. On any failure
//! it waits out the back-off and stops, and its `actix::Supervisor` starts it again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::transport::TlsConnector;
use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use bytes::Bytes;
use slog::{debug, info, warn, Logger};
use tokio::io::WriteHalf;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;

use super::backoff::Backoff;
use super::controller::{Job, JobAnswer};
use crate::config::{Keepalive, ServerAddr};
use crate::gearman::{CodecError, GearmanCodec, Packet};
use crate::telemetry::connection::{ConnState, ConnectionStatus};
use crate::telemetry::Telemetry;
use crate::transport::{self, BoxStream};

/// Everything a connection needs that does not change between reconnects.
#[derive(Clone)]
pub struct ConnectionConfig {
    pub server: ServerAddr,
    pub function: Bytes,
    pub client_id: Bytes,
    pub tls: Option<TlsConnector>,
    pub keepalive: Option<Keepalive>,
    pub max_packet_bytes: u32,
    pub prefetch: usize,
    /// Silence after which the worker pings its job server with ECHO_REQ; a ping that
    /// gets no answer within the same time drops the connection.
    pub heartbeat: Duration,
}

/// Stop taking jobs; resolves once no job is in hand (graceful stop).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

type Writer = FramedWrite<Packet, WriteHalf<BoxStream>, GearmanCodec>;

pub struct ConnectionActor {
    config: ConnectionConfig,
    name: Arc<str>,
    controller: Recipient<Job>,
    /// The controller's mailbox statistics: this actor is one of its senders.
    telemetry: Arc<Telemetry>,
    log: Logger,
    backoff: Backoff,
    status: Arc<ConnectionStatus>,
    /// A failure series is being logged (so retries go to debug).
    down_logged: bool,
    draining: bool,
    drain_waiters: Vec<oneshot::Sender<()>>,
    // Per-connection state, reset on every (re)start.
    writer: Option<Writer>,
    in_hand: usize,
    /// GRAB_JOB_UNIQs sent and not answered yet.
    grabs_out: usize,
    /// How many grabs may be in flight: 1 while the queue looks empty, doubled (up to
    /// `prefetch`) by every grab that brings a job, back to 1 on NO_JOB.
    grab_window: usize,
    /// The job server woke us (NOOP) and no job has come since: the first one does not
    /// widen the grab window, since one job after a wake-up says nothing of a busy queue.
    after_wake: bool,
    healthy: bool,
    failed: bool,
    last_rx: Instant,
    ping_outstanding: bool,
}

impl ConnectionActor {
    pub fn new(
        config: ConnectionConfig,
        controller: Recipient<Job>,
        telemetry: Arc<Telemetry>,
        backoff: Backoff,
        status: Arc<ConnectionStatus>,
        log: &Logger,
    ) -> Self {
        let name: Arc<str> = Arc::from(config.server.host_port());
        ConnectionActor {
            log: log.new(slog::o!("server" => name.to_string())),
            name,
            config,
            controller,
            telemetry,
            backoff,
            status,
            down_logged: false,
            draining: false,
            drain_waiters: Vec::new(),
            writer: None,
            in_hand: 0,
            grabs_out: 0,
            grab_window: 1,
            after_wake: false,
            healthy: false,
            failed: false,
            last_rx: Instant::now(),
            ping_outstanding: false,
        }
    }

    fn reset(&mut self) {
        self.writer = None;
        self.in_hand = 0;
        self.grabs_out = 0;
        self.grab_window = 1;
        self.after_wake = false;
        self.healthy = false;
        self.failed = false;
        self.last_rx = Instant::now();
        self.ping_outstanding = false;
    }

    fn send(&mut self, packet: Packet) {
        if self.failed {
            return;
        }
        if let Some(w) = self.writer.as_mut() {
            w.write(packet);
        }
    }

    fn connected(&mut self, stream: BoxStream, ctx: &mut Context<Self>) {
        let (read, write) = tokio::io::split(stream);
        let max = self.config.max_packet_bytes;
        ctx.add_stream(FramedRead::new(read, GearmanCodec::client(max)));
        self.writer = Some(FramedWrite::new(write, GearmanCodec::client(max), ctx));
        self.last_rx = Instant::now();
        self.send(Packet::SetClientId {
            id: self.config.client_id.clone(),
        });
        self.send(Packet::CanDo {
            function: self.config.function.clone(),
        });
        self.grab(ctx);
        debug!(self.log, "registered"; "function" => String::from_utf8_lossy(&self.config.function).into_owned());
    }

    /// Asks for jobs while there is room, with up to `grab_window` grabs in flight, so
    /// that a busy queue is taken in batches (one write of grabs, one read of
    /// assignments) while an empty one costs a single NO_JOB per wake-up.
    fn grab(&mut self, _ctx: &mut Context<Self>) {
        if self.draining || self.writer.is_none() {
            return;
        }
        let mut sent = false;
        while self.grabs_out < self.grab_window
            && self.in_hand + self.grabs_out < self.config.prefetch
        {
            self.grabs_out += 1;
            self.send(Packet::GrabJobUniq);
            sent = true;
        }
        if sent && self.in_hand == 0 {
            self.status.set_state(ConnState::Grabbing);
        }
    }

    fn became_healthy(&mut self) {
        if self.healthy {
            return;
        }
        self.healthy = true;
        self.backoff.reset();
        if self.down_logged {
            info!(self.log, "job server connection restored");
            self.down_logged = false;
        } else {
            info!(self.log, "connected to job server");
        }
        self.status.set_last_error("");
    }

    fn assigned(&mut self, handle: Bytes, unique: Bytes, data: Bytes, ctx: &mut Context<Self>) {
        self.grabs_out = self.grabs_out.saturating_sub(1);
        if !std::mem::take(&mut self.after_wake) {
            self.grab_window = (self.grab_window * 2).min(self.config.prefetch.max(1));
        }
        self.became_healthy();
        self.job(handle, unique, data, ctx);
    }

    fn job(&mut self, handle: Bytes, unique: Bytes, data: Bytes, ctx: &mut Context<Self>) {
        self.in_hand += 1;
        self.status.set_state(ConnState::Working);
        self.status.jobs.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            server: self.name.clone(),
            handle: handle.clone(),
            unique,
            body: data,
            queued: self.telemetry.controller.sent(),
        };
        // This connection's own queue: jobs it handed over whose answers it has not
        // written yet.
        let in_hand = self.status.inbox.sent();
        self.controller
            .send(job)
            .into_actor(self)
            .map(move |res, act, ctx| {
                let started = act.status.inbox.started(in_hand);
                act.answered(handle, res, ctx);
                act.status.inbox.finished(started);
            })
            .spawn(ctx);
        // Prefetch: ask for the next job while this one runs, when configured; but one turn
        // of the event loop later. A job answered at once (DISCOVER, the null driver) has
        // then written its WORK_COMPLETE first, and the grabs follow it in the same write:
        // the job server forwards the answer to the client before it answers the grabs,
        // instead of after (the answer is what the client waits for).
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(tokio::task::yield_now())
                .map(|(), act, ctx| act.grab(ctx)),
        );
    }

    fn answered(
        &mut self,
        handle: Bytes,
        res: Result<JobAnswer, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        self.in_hand = self.in_hand.saturating_sub(1);
        match res {
            Ok(answer) => self.send(Packet::WorkComplete {
                handle,
                data: Bytes::from(answer.body),
            }),
            Err(e) => {
                warn!(self.log, "job could not be run"; "error" => %e);
                self.send(Packet::WorkFail { handle });
            }
        }
        // Same handler, same write buffer: WORK_COMPLETE and the grab leave in one write.
        self.grab(ctx);
        if self.in_hand == 0 && self.grabs_out == 0 {
            self.status.set_state(ConnState::Sleeping);
        }
        self.notify_drained();
    }

    fn notify_drained(&mut self) {
        if self.draining && self.in_hand == 0 && self.grabs_out == 0 {
            for w in self.drain_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Drops the connection and restarts after the back-off.
    fn fail(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        self.failed = true;
        // The writer is not dropped here: this may run inside its own write task (a write
        // error), where dropping it would re-borrow what that task holds. `reset` drops it
        // once the context has cancelled the task.
        let delay = self.backoff.next_delay();
        self.status.set_state(ConnState::BackingOff);
        self.status.set_last_error(&reason);
        self.status.reconnects.fetch_add(1, Ordering::Relaxed);
        let retry = format!("{:.1}s", delay.as_secs_f64());
        if self.healthy {
            warn!(self.log, "lost job server connection; reconnecting"; "reason" => &reason, "retry_in" => retry);
            self.down_logged = true;
        } else if !self.down_logged {
            warn!(self.log, "cannot reach job server; retrying with back-off"; "reason" => &reason, "retry_in" => retry);
            self.down_logged = true;
        } else {
            debug!(self.log, "job server still unreachable"; "reason" => &reason, "retry_in" => retry,
                   "attempt" => self.backoff.attempts());
        }
        // Jobs in hand are abandoned: their handles belong to this connection, and the
        // job server hands them to another worker.
        self.in_hand = 0;
        self.grabs_out = 0;
        self.grab_window = 1;
        self.notify_drained();
        ctx.run_later(delay, |_, ctx| ctx.stop());
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.writer.is_none() || self.failed {
            return;
        }
        let ping_after = self.config.heartbeat;
        if self.last_rx.elapsed() < ping_after {
            return;
        }
        if self.ping_outstanding {
            self.fail(
                format!(
                    "job server sent nothing for {} s, not even an ECHO_RES",
                    ping_after.as_secs() * 2
                ),
                ctx,
            );
        } else {
            self.ping_outstanding = true;
            self.last_rx = Instant::now();
            self.send(Packet::EchoReq {
                data: Bytes::from_static(b"libra-worker"),
            });
        }
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.reset();
        self.status.set_state(ConnState::Connecting);
        if self.draining {
            self.notify_drained();
            return;
        }
        let server = self.config.server.clone();
        let tls = self.config.tls.clone();
        let keepalive = self.config.keepalive;
        async move { transport::connect(&server, tls.as_ref(), keepalive).await }
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(stream) => act.connected(stream, ctx),
                Err(e) => act.fail(e.to_string(), ctx),
            })
            .spawn(ctx);
        ctx.run_interval(self.config.heartbeat / 3, |act, ctx| act.heartbeat(ctx));
    }
}

impl Supervised for ConnectionActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.reset();
    }
}

impl StreamHandler<Result<Packet, CodecError>> for ConnectionActor {
    fn handle(&mut self, item: Result<Packet, CodecError>, ctx: &mut Context<Self>) {
        self.packet(item, ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The read half ended: the job server closed the connection. Reconnect, don't stop.
        self.fail("connection closed by job server".to_string(), ctx);
    }
}

impl ConnectionActor {
    fn packet(&mut self, item: Result<Packet, CodecError>, ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        let packet = match item {
            Ok(p) => p,
            Err(e) => return self.fail(format!("protocol error: {e}"), ctx),
        };
        self.last_rx = Instant::now();
        self.ping_outstanding = false;
        match packet {
            Packet::NoJob => {
                self.grabs_out = self.grabs_out.saturating_sub(1);
                self.grab_window = 1;
                self.became_healthy();
                // Sleep once every grab in flight is answered: a later one may bring a job.
                if !self.draining && self.grabs_out == 0 {
                    self.send(Packet::PreSleep);
                }
                if self.in_hand == 0 {
                    self.status.set_state(ConnState::Sleeping);
                }
                self.notify_drained();
            }
            Packet::Noop => {
                self.after_wake = true;
                self.grab(ctx)
            }
            Packet::JobAssignUniq {
                handle,
                unique,
                data,
                ..
            } => self.assigned(handle, unique, data, ctx),
            Packet::JobAssign { handle, data, .. } => {
                self.assigned(handle, Bytes::new(), data, ctx)
            }
            // Answers to our heartbeat; a server-side ECHO_REQ has no worker answer, so it is
            // only taken as a sign of life.
            Packet::EchoRes { .. } | Packet::EchoReq { .. } => {}
            Packet::Error { code, text } => self.fail(
                format!(
                    "job server error {}: {}",
                    String::from_utf8_lossy(&code),
                    String::from_utf8_lossy(&text)
                ),
                ctx,
            ),
            other => self.fail(
                format!("unexpected {} packet from job server", other.name()),
                ctx,
            ),
        }
    }
}

impl WriteHandler<CodecError> for ConnectionActor {
    fn error(&mut self, err: CodecError, ctx: &mut Self::Context) -> Running {
        self.fail(format!("write failed: {err}"), ctx);
        // Stop the writer: on Continue actix retries the same buffer at once, in a loop
        // that never yields, and a failed transport (a TLS session after the peer's
        // fatal alert) fails every retry, spinning the only thread and so keeping the
        // back-off timer from ever firing.
        Running::Stop
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Drain> for ConnectionActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        self.notify_drained();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerAddr;
    use crate::gearman::DEFAULT_MAX_PACKET_BYTES;
    use futures::{SinkExt, StreamExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::codec::Framed;

    /// Answers every job at once.
    struct AnswerAtOnce;

    impl Actor for AnswerAtOnce {
        type Context = Context<Self>;
    }

    impl Handler<Job> for AnswerAtOnce {
        type Result = MessageResult<Job>;

        fn handle(&mut self, _job: Job, _ctx: &mut Context<Self>) -> Self::Result {
            MessageResult(JobAnswer {
                body: b"{}".to_vec(),
            })
        }
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    async fn next(server: &mut Framed<TcpStream, GearmanCodec>) -> Packet {
        tokio::time::timeout(Duration::from_secs(10), server.next())
            .await
            .expect("a packet within 10 s")
            .expect("connection open")
            .expect("valid packet")
    }

    #[actix_rt::test]
    async fn grabs_in_flight_double_while_the_queue_is_busy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = ConnectionConfig {
            server: ServerAddr {
                host: "127.0.0.1".to_string(),
                port,
                tls: false,
            },
            function: b("f"),
            client_id: b("test"),
            tls: None,
            keepalive: None,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            prefetch: 4,
            heartbeat: Duration::from_secs(30),
        };
        let actor = ConnectionActor::new(
            config,
            AnswerAtOnce.start().recipient(),
            Arc::new(Telemetry::default()),
            Backoff::new(Duration::from_secs(1)),
            Arc::new(ConnectionStatus::new("test".to_string())),
            &crate::logging::discard(),
        );
        let _conn = actor.start();
        let (sock, _) = listener.accept().await.unwrap();
        let mut server = Framed::new(sock, GearmanCodec::server(DEFAULT_MAX_PACKET_BYTES));
        assert!(matches!(
            next(&mut server).await,
            Packet::SetClientId { .. }
        ));
        assert!(matches!(next(&mut server).await, Packet::CanDo { .. }));
        let assign = |h: &'static str| Packet::JobAssignUniq {
            handle: b(h),
            function: b("f"),
            unique: b(""),
            data: b("{}"),
        };
        // Reads until `grabs` grabs and the answers to `jobs` have arrived, in any order.
        async fn expect(
            server: &mut Framed<TcpStream, GearmanCodec>,
            mut grabs: usize,
            mut jobs: Vec<Bytes>,
        ) {
            while grabs > 0 || !jobs.is_empty() {
                match next(server).await {
                    Packet::GrabJobUniq if grabs > 0 => grabs -= 1,
                    Packet::WorkComplete { handle, .. } if jobs.contains(&handle) => {
                        jobs.retain(|h| *h != handle)
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        // The queue may be empty: one grab.
        assert_eq!(next(&mut server).await, Packet::GrabJobUniq);
        // It brought a job: two grabs in flight.
        server.send(assign("H:1")).await.unwrap();
        expect(&mut server, 2, vec![b("H:1")]).await;
        // Both brought jobs: four in flight (the prefetch), refilled as jobs are answered.
        server.feed(assign("H:2")).await.unwrap();
        server.send(assign("H:3")).await.unwrap();
        expect(&mut server, 4, vec![b("H:2"), b("H:3")]).await;
        // Sleep only once every grab in flight is answered.
        for _ in 0..4 {
            server.feed(Packet::NoJob).await.unwrap();
        }
        server.flush().await.unwrap();
        assert_eq!(next(&mut server).await, Packet::PreSleep);
        // Woken with an empty queue behind it: one grab again, then sleep.
        server.send(Packet::Noop).await.unwrap();
        assert_eq!(next(&mut server).await, Packet::GrabJobUniq);
        server.send(Packet::NoJob).await.unwrap();
        assert_eq!(next(&mut server).await, Packet::PreSleep);
        // Woken for one job (window 1): its answer and a single grab, no prefetch grabs
        // ahead of it; that grab's NO_JOB puts the worker back to sleep.
        server.send(Packet::Noop).await.unwrap();
        assert_eq!(next(&mut server).await, Packet::GrabJobUniq);
        server.send(assign("H:4")).await.unwrap();
        assert!(matches!(
            next(&mut server).await,
            Packet::WorkComplete { handle, .. } if handle == b("H:4")
        ));
        assert_eq!(next(&mut server).await, Packet::GrabJobUniq);
        server.send(Packet::NoJob).await.unwrap();
        assert_eq!(next(&mut server).await, Packet::PreSleep);
    }
}
