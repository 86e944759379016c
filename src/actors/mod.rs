//! The actors: a `ConnectionActor` per job server (restarted forever by the
//! `supervisor`), one `ControllerActor` that turns jobs into answers and serializes the
//! driver work, and one `DriverActor` on its own thread that owns the appliance.
//!
//! ```text
//! gearmand ─┬─ ConnectionActor ─┐  Job            Execute(Command)
//! gearmand ─┴─ ConnectionActor ─┴─▶ ControllerActor ───────────────▶ DriverActor ─▶ HAProxy
//!                                   (DISCOVER, DIAGNOSTICS here)      (SyncArbiter thread)
//! ```

pub(crate) mod backoff;
pub(crate) mod connection;
pub(crate) mod controller;
pub(crate) mod driver;
pub(crate) mod supervisor;
pub(crate) mod watchdog;
