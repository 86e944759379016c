//! libra-worker: the Libra LBaaS appliance worker. It takes JSON jobs from Gearman job
//! servers and drives the HAProxy on its machine.
//!
//! Layout, from the wire down (dependencies point downward only):
//! - `gearman`: the binary protocol (packets, codec, a small client). No actix, no JSON.
//! - `transport`: TCP/TLS connections to job servers.
//! - `config`, `logging`: settings from TOML/INI/environment; slog with secret masking.
//! - `jobs`: the JSON messages of the contract, one module per action.
//! - `actors`: supervisor, connection, controller and driver actors.
//! - `drivers`: the driver trait; `drivers::haproxy` is the real appliance.
//! - `worker`, `cli`: wiring and the command line.
//! - `tools`: the HAProxy internals the bench (`bench/`, `libra-bench`), tests and fuzz
//!   targets use. The modules no tool needs (`actors`, `telemetry`, `transport`,
//!   `worker`, the driver itself) are private to the crate, so the compiler reports what
//!   nothing uses.

mod actors;
pub mod cli;
pub mod config;
pub mod drivers;
pub mod gearman;
pub mod jobs;
pub mod logging;
mod telemetry;
pub mod tools;
mod transport;
mod worker;
