//! The surface for the worker's own tools (the bench, `libra-bench`; the integration tests;
//! the fuzz targets), not for appliances: the HAProxy driver internals they drive, and the
//! types those hand out, re-exported. The one place their paths live, so the driver stays
//! private to the crate and can be reorganised by changing this file alone. On these
//! types only the members a tool uses are `pub`.

/// Bounded child processes, as the driver runs them (bench: `libra-worker haproxy stop`).
pub mod command {
    pub use crate::drivers::haproxy::command::{run, CommandError, CommandOutput};
}

/// The driver's fsynced atomic write (bench: the UPDATE step timings).
pub mod files {
    pub use crate::drivers::haproxy::files::{write_atomic, FileError, PRIVATE_MODE};
}

/// The typed desired state an UPDATE becomes (tests and fuzz: job to configuration).
pub mod model {
    pub use crate::drivers::haproxy::model::{Model, ModelError};
}

/// `haproxy -c`, the managed master-worker HAProxy, its master CLI's `show proc`, and
/// whether a process is alive as the driver reads it (bench: standalone HAProxy copies,
/// reload timings, the appliance worker's reloads, its processes' liveness).
pub mod process {
    pub use crate::drivers::haproxy::process::{
        alive, show_proc, validate, Managed, ManagedPaths, MasterProc, ProcList, Process,
        ProcessError, ShowProcError, StepTimeouts, WorkerProc,
    };
}

/// What a HAProxy binary can do, as the driver asks it (tests: render for the HAProxy
/// under test).
pub mod capabilities {
    pub use crate::drivers::haproxy::capabilities::{Capabilities, CapabilityError, Version};
}

/// The only producer of `haproxy.cfg` (tests and fuzz: job to configuration; bench: the
/// empty server-state file of a standalone copy).
pub mod render {
    pub use crate::drivers::haproxy::render::{
        render, LogTarget, ProcessLimits, RenderEnv, RenderError, EMPTY_SERVER_STATE,
    };
}

/// The runtime API client of the stats socket and the master CLI (bench: socket read
/// timings and reload probes; tests: the serving HAProxy's pid).
pub mod runtime_api {
    pub use crate::drivers::haproxy::runtime_api::{StatRow, StatsError, StatsSocket};
}

/// ARCHIVE's upload of a load balancer's log lines to Swift (tests: against a mock Swift).
pub mod archive {
    pub use crate::drivers::haproxy::archive::{archive, ArchiveError};
}
