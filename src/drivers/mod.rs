//! The driver API: what a load-balancer appliance must do for the worker. The trait keeps
//! the reference's incremental shape (init, add protocol/server/monitor, set algorithm and
//! timeouts, then create) plus the operations the contract needs. Every method has a
//! default that answers "not supported", so a partial driver is still a valid driver.

pub(crate) mod haproxy;
pub(crate) mod null;
pub(crate) mod stats;
pub(crate) mod types;

pub use stats::DriverStats;
pub use types::*;

/// Why a driver operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver does not implement this action.
    #[error("{action} is not supported by the {driver} driver")]
    Unsupported {
        action: &'static str,
        driver: &'static str,
    },
    /// The load balancer was deleted; STATS and METRICS report `status: DELETED`.
    #[error("Load balancer is deleted.")]
    Deleted,
    /// A value the driver refuses (it never reaches the configuration).
    #[error("{0}")]
    Invalid(Box<dyn std::error::Error + Send + Sync>),
    /// The appliance failed at a step; the driver's typed error says which, gist first.
    #[error("{0}")]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl DriverError {
    pub fn unsupported(action: &'static str, driver: &'static str) -> DriverError {
        DriverError::Unsupported { action, driver }
    }
}

pub type DriverResult<T> = Result<T, DriverError>;

/// Something a driver noticed between jobs that needs a turn on its own thread, in order
/// with the jobs (a restart must never race an UPDATE's apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverEvent {
    /// The process the driver runs (HAProxy's master) exited.
    ProcessExited,
    /// Time to save what the appliance would lose in a crash (node health).
    SnapshotDue,
}

/// How a driver reaches the layer above it: a callback that layer provides, callable from
/// any thread and never blocking, that queues a `DriverEvent` for the driver's thread.
pub type EventSink = std::sync::Arc<dyn Fn(DriverEvent) + Send + Sync>;

/// A load-balancer appliance. Calls arrive one at a time, in job order, on a thread
/// where blocking is allowed.
///
/// UPDATE is `init`, then per load balancer `add_protocol`, `set_algorithm`,
/// `add_monitor` (if any), `set_timeouts`, `add_server` per node, and finally `create`,
/// which must make the queued configuration live or leave the previous one serving.
pub trait LoadBalancerDriver: Send {
    /// Short name used in error texts (`haproxy`).
    fn name(&self) -> &'static str;

    /// Starts a new desired configuration, dropping anything queued before.
    fn init(&mut self) -> DriverResult<()> {
        Err(DriverError::unsupported("UPDATE", self.name()))
    }

    /// Declares a load balancer for `protocol`, listening on `port`.
    fn add_protocol(&mut self, _protocol: Protocol, _port: u16) -> DriverResult<()> {
        Err(DriverError::unsupported("UPDATE", self.name()))
    }

    fn set_algorithm(&mut self, _protocol: Protocol, _algorithm: Algorithm) -> DriverResult<()> {
        Err(DriverError::unsupported("UPDATE", self.name()))
    }

    fn add_monitor(&mut self, _protocol: Protocol, _monitor: &Monitor) -> DriverResult<()> {
        Err(DriverError::unsupported("UPDATE", self.name()))
    }

    fn set_timeouts(&mut self, _protocol: Protocol, _timeouts: &Timeouts) -> DriverResult<()> {
        Err(DriverError::unsupported("UPDATE", self.name()))
    }

    fn add_server(&mut self, _protocol: Protocol, _node: &Node) -> DriverResult<()> {
        Err(DriverError::unsupported("UPDATE", self.name()))
    }

    /// Makes the queued configuration live. On failure the previous configuration keeps
    /// serving and the error carries the appliance's own message.
    fn create(&mut self) -> DriverResult<()> {
        Err(DriverError::unsupported("UPDATE", self.name()))
    }

    /// Stops serving but keeps the configuration. Idempotent.
    fn suspend(&mut self) -> DriverResult<()> {
        Err(DriverError::unsupported("SUSPEND", self.name()))
    }

    /// Serves the kept configuration again. Idempotent.
    fn enable(&mut self) -> DriverResult<()> {
        Err(DriverError::unsupported("ENABLE", self.name()))
    }

    /// Stops serving and removes the configuration, its backup and its log. Idempotent.
    fn delete(&mut self) -> DriverResult<()> {
        Err(DriverError::unsupported("DELETE", self.name()))
    }

    /// Health of every node; `Deleted` when there is no load balancer.
    fn get_status(&mut self) -> DriverResult<Vec<NodeStatus>> {
        Err(DriverError::unsupported("STATS", self.name()))
    }

    /// Bytes out per load balancer since the last call; `Deleted` when there is none.
    /// `job` is the job's unique id: the same id again (a job the job server handed out
    /// anew because the worker died before answering it) gets the same report, so that
    /// nothing is billed twice or lost. Empty: no such id.
    fn get_statistics(&mut self, _job: &str) -> DriverResult<Statistics> {
        Err(DriverError::unsupported("METRICS", self.name()))
    }

    /// Ships a load balancer's log to object storage.
    fn archive(&mut self, _target: &ArchiveTarget) -> DriverResult<()> {
        Err(DriverError::unsupported("ARCHIVE", self.name()))
    }

    /// Periodic upkeep between jobs (for example restarting a crashed process).
    fn housekeeping(&mut self) -> DriverResult<()> {
        Ok(())
    }

    /// Handles what the driver's own watch reported through its `EventSink`; runs on the
    /// driver's thread, between jobs.
    fn on_event(&mut self, _event: DriverEvent) -> DriverResult<()> {
        Ok(())
    }
}

/// Runs an UPDATE through the driver's incremental API, in the reference's order.
pub fn apply_update(driver: &mut dyn LoadBalancerDriver, lbs: &[LoadBalancer]) -> DriverResult<()> {
    driver.init()?;
    for lb in lbs {
        driver.add_protocol(lb.protocol, lb.port)?;
        driver.set_algorithm(lb.protocol, lb.algorithm)?;
        if let Some(monitor) = &lb.monitor {
            driver.add_monitor(lb.protocol, monitor)?;
        }
        driver.set_timeouts(lb.protocol, &lb.timeouts)?;
        for node in &lb.nodes {
            driver.add_server(lb.protocol, node)?;
        }
    }
    driver.create()
}

/// One driver operation in message form, as the controller queues it.
#[derive(Debug, Clone)]
pub enum Command {
    Update(Vec<LoadBalancer>),
    Suspend,
    Enable,
    Delete,
    Stats,
    /// With the job's unique id (see `get_statistics`).
    Metrics {
        job: String,
    },
    Archive(ArchiveTarget),
    Housekeeping,
}

/// What a command gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    Status(Vec<NodeStatus>),
    Statistics(Statistics),
}

impl Command {
    /// Runs the command on `driver`. Blocking is allowed: this runs on the driver's own
    /// thread.
    pub fn run(self, driver: &mut dyn LoadBalancerDriver) -> DriverResult<Reply> {
        match self {
            Command::Update(lbs) => apply_update(driver, &lbs).map(|()| Reply::Done),
            Command::Suspend => driver.suspend().map(|()| Reply::Done),
            Command::Enable => driver.enable().map(|()| Reply::Done),
            Command::Delete => driver.delete().map(|()| Reply::Done),
            Command::Stats => driver.get_status().map(Reply::Status),
            Command::Metrics { job } => driver.get_statistics(&job).map(Reply::Statistics),
            Command::Archive(target) => driver.archive(&target).map(|()| Reply::Done),
            Command::Housekeeping => driver.housekeeping().map(|()| Reply::Done),
        }
    }
}
