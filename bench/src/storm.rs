//! `libra-bench storm`: issue 12's reload storm. A HAProxy-driver worker of its own runs
//! an HTTP load balancer (three in-process backends) and a TCP one (an in-process echo
//! server). Under wrk keep-alive and close-mode clients, both running the whole time, and
//! 50 long-lived TCP connections through the TCP load balancer (a line and its echo about
//! once a second each), UPDATEs that each change the HTTP client timeout (so each is
//! `haproxy -c` plus a reload) run back to back. A sampler polls HAProxy's processes: how
//! many old workers there are, and their RSS.
//!
//! HAProxy's `mworker-max-reloads` (`max_old_workers`) has the master stop a worker that
//! has outlived that many reloads, whatever it still holds; so a connection can outlive
//! `max_old_workers` reloads and not one more. The bench shows both sides in two parts:
//! "to the limit" opens the long connections, runs exactly `max_old_workers` reloads and
//! checks every connection still exchanges, then one more reload and counts the cuts; the
//! storm proper (1,000 UPDATEs) lets a cut connection reconnect at once, as a client
//! would, and reports every cut with the UPDATE it came with. Opened together, the long
//! connections all sit on one HAProxy process, which keeps at most one old worker busy;
//! so a third part opens them one by one while reloads run, spreading them over many
//! processes, which keeps the old workers at the limit (and every reload then waits for
//! the one it would stop). Requests must not fail, reconnections must not be refused, the
//! old workers must stay within the limit and the RSS must not grow.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use super::appliance::{HaproxyWorker, LogLevel};
use super::client::JobClient;
use super::echo_backend::EchoBackend;
use super::haproxy_procs::Sampler;
use super::http_backend::HttpBackend;
use super::long_conns::{LongConns, PoolOpts, PoolReport};
use super::procs::free_port;
use super::section::{Env, Section};
use super::storm_report::{self, LimitPart, StormPart};
use super::wrk::{self, ClientMode, WrkReport, WrkRun};

/// UPDATEs of the storm proper, and of a `--quick` one.
pub const DEFAULT_UPDATES: usize = 1_000;
pub const QUICK_UPDATES: usize = 100;
/// UPDATEs of the third part, whose long connections open one by one while reloads run,
/// so that they sit on many HAProxy processes and keep the old workers at the limit.
pub const SPREAD_UPDATES: usize = 60;
/// Between two long connections' opening in the third part: about one reload.
const SPREAD_STAGGER: Duration = Duration::from_millis(150);
/// Long-lived TCP connections.
pub const LONG_CONNECTIONS: usize = 50;
/// Between two exchanges of one long connection.
const LONG_EVERY: Duration = Duration::from_secs(1);
/// wrk clients per mode.
pub const WRK_CONNECTIONS_PER_MODE: u32 = 8;
/// wrk's own end of run, far beyond any storm: the bench stops it with SIGINT.
const WRK_MAX_RUN: Duration = Duration::from_secs(4 * 3600);
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// After the last UPDATE of a part: every long connection exchanges at least once more,
/// and wrk's requests in flight end.
const SETTLE: Duration = Duration::from_millis(2_500);
/// How long the long connections may take to make their first exchange, or to be seen
/// cut by the reload past the limit (which waits up to 1 s for them first).
const CONN_WAIT: Duration = Duration::from_secs(10);
const FUNCTION: &str = "lbw-storm";

#[derive(Debug, thiserror::Error)]
pub enum StormError {
    #[error("wrk is not installed (apt-get install wrk)")]
    NoWrk,
    #[error("an HTTP backend: {0}")]
    Backend(#[from] super::http_backend::BackendError),
    #[error("the echo backend: {0}")]
    Echo(#[from] super::echo_backend::EchoError),
    #[error("the HAProxy-driver worker: {0}")]
    Appliance(#[from] super::appliance::ApplianceError),
    #[error("{0}")]
    Job(#[from] super::client::JobError),
    #[error("a free port: {0}")]
    Port(#[from] super::procs::ProcsError),
    #[error("wrk: {0}")]
    Wrk(#[from] wrk::WrkError),
    #[error("cannot start a bench thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("the set-up UPDATE failed: {0}")]
    Setup(String),
    #[error("only {ok} of {count} long connections made a first exchange within {waited:?}")]
    LongConnsDown {
        ok: usize,
        count: usize,
        waited: Duration,
    },
    #[error("{report}\nstorm FAILED: {why}")]
    Failed { report: String, why: String },
}

/// How long the storm proper is.
#[derive(Debug, Clone, Copy)]
pub struct StormOpts {
    pub updates: usize,
}

pub fn main(opts: StormOpts, json: bool) -> i32 {
    super::section::main_alone("storm", json, |env| {
        run(env, opts).map_err(|e| e.to_string())
    })
}

/// The worker, its backends and the job client, and the UPDATEs sent so far.
struct Rig {
    _backends: Vec<HttpBackend>,
    echo: EchoBackend,
    worker: HaproxyWorker,
    client: JobClient,
    http_port: u16,
    tcp_port: u16,
    backend_ports: Vec<u16>,
    round: u32,
    /// UPDATEs answered in the current part: the clock the cuts and samples are told.
    progress: Arc<AtomicU64>,
}

/// One UPDATE's outcome.
type Outcome = Result<f64, String>;

impl Rig {
    fn start(env: &Env) -> Result<Rig, StormError> {
        let backends = (1..=3)
            .map(|i| HttpBackend::start(&format!("s{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let echo = EchoBackend::start()?;
        let worker = HaproxyWorker::start(
            env.binary,
            &env.gearmand,
            env.dir,
            FUNCTION,
            LogLevel::Warning,
        )?;
        let client = JobClient::connect(&env.gearmand, FUNCTION, JOB_TIMEOUT)?;
        let mut rig = Rig {
            backend_ports: backends.iter().map(HttpBackend::port).collect(),
            _backends: backends,
            echo,
            worker,
            client,
            http_port: free_port()?,
            tcp_port: free_port()?,
            round: 0,
            progress: Arc::new(AtomicU64::new(0)),
        };
        let body = rig.body();
        rig.client.submit_pass(&body).map_err(StormError::Setup)?;
        Ok(rig)
    }

    /// The appliance in the current round: the HTTP load balancer's client timeout is
    /// 30,000 ms in even rounds and 30,001 in odd ones, so every round changes the
    /// structure (validate and reload); nodes and the TCP load balancer never change.
    fn body(&self) -> Bytes {
        update_body(
            self.http_port,
            self.tcp_port,
            &self.backend_ports,
            self.echo.port(),
            self.round,
        )
    }

    /// The next structural UPDATE: its time in ms, or why it failed.
    fn update(&mut self) -> Outcome {
        self.round += 1;
        let body = self.body();
        let outcome = self
            .client
            .submit_pass(&body)
            .map(|a| a.took.as_secs_f64() * 1e3)
            .map_err(|e| format!("UPDATE {}: {e}", self.round));
        self.progress.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    fn tcp_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.tcp_port).into()
    }

    /// A sampler of this worker's HAProxy on `clock`, counting this part's UPDATEs.
    fn sampler(&self, clock: Instant) -> Result<Sampler, StormError> {
        self.progress.store(0, Ordering::Relaxed);
        Ok(Sampler::start(
            self.worker.haproxy().pid_file.clone(),
            clock,
            self.progress.clone(),
            self.worker.haproxy().max_old_workers,
        )?)
    }

    /// Opens the long connections and, unless they are staggered, waits until each has
    /// made one exchange.
    fn long_conns(
        &self,
        clock: Instant,
        reconnect: bool,
        stagger: Duration,
    ) -> Result<LongConns, StormError> {
        let opts = PoolOpts {
            count: LONG_CONNECTIONS,
            addr: self.tcp_addr(),
            every: LONG_EVERY,
            reconnect,
            stagger,
        };
        let pool = LongConns::start(opts, clock, self.progress.clone())?;
        if !stagger.is_zero() {
            return Ok(pool);
        }
        let until = Instant::now() + CONN_WAIT;
        while pool.ok_since(clock) < LONG_CONNECTIONS {
            if Instant::now() >= until {
                return Err(StormError::LongConnsDown {
                    ok: pool.ok_since(clock),
                    count: LONG_CONNECTIONS,
                    waited: CONN_WAIT,
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(pool)
    }
}

/// Both wrk runs, through the HTTP load balancer, for as long as a part lasts.
struct Traffic {
    keep_alive: WrkRun,
    close: WrkRun,
}

impl Traffic {
    fn start(env: &Env, rig: &Rig, part: &str) -> Result<Traffic, StormError> {
        let program = wrk::program().ok_or(StormError::NoWrk)?;
        let url = format!("http://127.0.0.1:{}/", rig.http_port);
        let one = |mode: ClientMode| {
            wrk::start_for(
                &program,
                &url,
                mode,
                WRK_CONNECTIONS_PER_MODE,
                1,
                &env.dir
                    .join(format!("storm-{part}-wrk-{}.txt", mode.label())),
                WRK_MAX_RUN,
            )
        };
        Ok(Traffic {
            keep_alive: one(ClientMode::KeepAlive)?,
            close: one(ClientMode::Close)?,
        })
    }

    fn check(&mut self) -> Result<(), StormError> {
        self.keep_alive.check_running()?;
        Ok(self.close.check_running()?)
    }

    fn finish(self) -> Result<(WrkReport, WrkReport), StormError> {
        Ok((self.keep_alive.finish()?, self.close.finish()?))
    }
}

fn run(env: &Env, opts: StormOpts) -> Result<Section, StormError> {
    let mut rig = Rig::start(env)?;
    let limit = rig.worker.haproxy().max_old_workers;
    note!(
        "storm: to the limit: {LONG_CONNECTIONS} long connections, {limit} reloads, then one more"
    );
    let limit_part = to_the_limit(env, &mut rig, limit)?;
    note!(
        "storm: {} structural UPDATEs back to back, long connections reconnecting",
        opts.updates
    );
    let storm_part = storm(env, &mut rig, opts.updates, Duration::ZERO, "storm")?;
    note!(
        "storm: spread: {SPREAD_UPDATES} UPDATEs, the long connections opened {} ms apart",
        SPREAD_STAGGER.as_millis()
    );
    let spread = storm(env, &mut rig, SPREAD_UPDATES, SPREAD_STAGGER, "spread")?;
    let _ = rig.worker.stop();
    let (markdown, json, why) = storm_report::render(&limit_part, &storm_part, &spread);
    if why.is_empty() {
        Ok(Section { markdown, json })
    } else {
        Err(StormError::Failed {
            report: markdown,
            why: why.join("; "),
        })
    }
}

/// `max_old_workers` reloads under the long connections (none may be cut), then one more
/// (HAProxy's master stops the worker that holds them).
fn to_the_limit(env: &Env, rig: &mut Rig, limit: u32) -> Result<LimitPart, StormError> {
    let clock = Instant::now();
    let sampler = rig.sampler(clock)?;
    let mut traffic = Traffic::start(env, rig, "limit")?;
    let pool = rig.long_conns(clock, false, Duration::ZERO)?;
    let mut outcomes = Vec::new();
    for _ in 0..limit {
        outcomes.push(rig.update());
        traffic.check()?;
    }
    let after_limit = Instant::now();
    thread::sleep(SETTLE);
    let survived = pool.ok_since(after_limit);
    let lost_at_limit = pool.lost_so_far();
    let one_more = Instant::now();
    outcomes.push(rig.update());
    let answered = Instant::now();
    while pool.lost_so_far() < LONG_CONNECTIONS && answered.elapsed() < CONN_WAIT {
        thread::sleep(Duration::from_millis(20));
    }
    // One exchange interval more: a connection the reload did not cut shows as alive.
    thread::sleep(LONG_EVERY);
    let conns = pool.finish();
    let (keep_alive, close) = traffic.finish()?;
    Ok(LimitPart {
        limit,
        survived,
        lost_at_limit,
        one_more_at: one_more.duration_since(clock).as_secs_f64(),
        one_more_answered_at: answered.duration_since(clock).as_secs_f64(),
        outcomes,
        conns,
        keep_alive,
        close,
        procs: sampler.finish(),
    })
}

/// `updates` structural UPDATEs back to back; long connections reconnect when cut. With
/// a `stagger`, they open one by one while the UPDATEs run.
fn storm(
    env: &Env,
    rig: &mut Rig,
    updates: usize,
    stagger: Duration,
    label: &str,
) -> Result<StormPart, StormError> {
    let clock = Instant::now();
    let sampler = rig.sampler(clock)?;
    let mut traffic = Traffic::start(env, rig, label)?;
    let pool = rig.long_conns(clock, true, stagger)?;
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(updates);
    for i in 0..updates {
        outcomes.push(rig.update());
        traffic.check()?;
        if (i + 1).is_multiple_of(100) {
            note!(
                "storm: {label}: {} UPDATEs in {:.0} s, {} long-connection cuts so far",
                i + 1,
                started.elapsed().as_secs_f64(),
                pool.lost_so_far()
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    thread::sleep(SETTLE);
    let conns: PoolReport = pool.finish();
    let (keep_alive, close) = traffic.finish()?;
    Ok(StormPart {
        stagger,
        seconds,
        outcomes,
        conns,
        keep_alive,
        close,
        procs: sampler.finish(),
    })
}

/// The appliance's UPDATE in round `round` (see `Rig::body`).
fn update_body(
    http_port: u16,
    tcp_port: u16,
    backend_ports: &[u16],
    echo_port: u16,
    round: u32,
) -> Bytes {
    let node = |id: usize, port: u16| json!({"id": id, "address": "127.0.0.1", "port": port});
    let nodes: Vec<Value> = backend_ports
        .iter()
        .enumerate()
        .map(|(i, p)| node(i + 1, *p))
        .collect();
    let body = json!({
        "hpcs_action": "UPDATE",
        "loadBalancers": [
            {"name": "storm-web", "protocol": "HTTP", "port": http_port, "nodes": nodes,
             "options": {"client_timeout": 30_000 + round % 2}},
            {"name": "storm-tcp", "protocol": "TCP", "port": tcp_port,
             "nodes": [node(100, echo_port)]},
        ],
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_changes_the_structure_and_nothing_else() {
        let body = |round| -> Value {
            serde_json::from_slice(&update_body(80, 81, &[1, 2, 3], 9, round)).unwrap()
        };
        let (a, b, c) = (body(1), body(2), body(3));
        let web = |v: &Value| v["loadBalancers"][0].clone();
        assert_ne!(web(&a)["options"], web(&b)["options"]);
        assert_eq!(web(&a)["options"], web(&c)["options"]);
        assert_eq!(web(&a)["nodes"], web(&b)["nodes"]);
        assert_eq!(a["loadBalancers"][1], b["loadBalancers"][1]);
        assert_eq!(a["loadBalancers"][1]["nodes"][0]["port"], 9);
    }
}
