//! The names of the files the worker keeps in its state directory, in one place: the
//! defaults of the managed HAProxy's own files (configuration, log, sockets, pid file, the
//! METRICS ledger) and the driver's bookkeeping beside them.

/// The live HAProxy configuration (managed mode).
pub const CONFIG: &str = "haproxy.cfg";
/// HAProxy's standard output and error: its log and alerts (managed mode).
pub const LOG: &str = "haproxy.log";
/// The runtime API socket of the configuration (managed mode).
pub const STATS_SOCKET: &str = "stats.sock";
/// The master's pid (managed mode).
pub const PID: &str = "haproxy.pid";
/// The master CLI socket (managed mode).
pub const MASTER_SOCKET: &str = "master.sock";
/// The METRICS ledger.
pub const LEDGER: &str = "metrics.json";
/// The model of what is live, written with the configuration.
pub const MODEL: &str = "model.json";
/// A new configuration being checked, before it replaces the live one.
pub const CANDIDATE: &str = "haproxy.cfg.new";
/// Present while the load balancer is suspended.
pub const SUSPENDED: &str = "suspended";
/// Node health handed from one HAProxy process to the next (`server-state-file`).
pub const SERVER_STATE: &str = "server-state";
/// The secret behind HTTP dynamic cookies.
pub const COOKIE_KEY: &str = "cookie.key";
/// Present while a change is being applied: a worker that finds it at start-up (it died
/// half-way) reloads HAProxy from the file, so that what runs is what the file says.
pub const APPLYING: &str = "applying";
