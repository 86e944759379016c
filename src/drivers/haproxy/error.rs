//! What can go wrong in the HAProxy driver, one variant per step, each carrying its cause
//! in the typed error of the room that failed. `From` makes it the trait's `DriverError`:
//! a refused value (`Render`) is `Invalid`, every other step `Failed`; the controller alone
//! turns either into `hpcs_error` and the log's full text.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::archive::ArchiveError;
use super::capabilities::CapabilityError;
use super::files::FileError;
use super::ledger::LedgerError;
use super::live_files::LiveFileError;
use super::model::ModelError;
use super::process::ProcessError;
use super::render::RenderError;
use super::runtime::RuntimeError;
use super::runtime_api::StatsError;
use crate::drivers::DriverError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum HaproxyError {
    /// There is no load balancer (STATS and METRICS answer `status: DELETED`).
    #[error("Load balancer is deleted.")]
    Deleted,
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// What the HAProxy binary is and can do.
    #[error(transparent)]
    Capabilities(#[from] CapabilityError),
    #[error("haproxy.bind_address '{0}' is not an IP address")]
    BindAddress(String),
    /// A file of the state directory (candidate, model, marker, server states, cookie key).
    #[error(transparent)]
    StateFile(#[from] FileError),
    /// The live configuration, its backup or the log.
    #[error(transparent)]
    LiveFile(#[from] LiveFileError),
    /// A value the renderer would not write (the model's types already refuse them).
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Checking, starting, reloading or stopping HAProxy.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A runtime-API change HAProxy refused half-way (the driver reloads from the file).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Reading HAProxy's stats socket.
    #[error(transparent)]
    StatsSocket(#[from] StatsError),
    #[error("HAProxy's `show info` has no Pid")]
    NoPid,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("Cannot take over the reference worker's METRICS state: {0}")]
    ReferenceState(#[source] LiveFileError),
    #[error("Starting frontend {frontend}: cannot bind socket ({cause}) [{addr}]; the previous configuration keeps serving")]
    PortTaken {
        frontend: String,
        cause: String,
        addr: SocketAddr,
    },
    #[error("There is no load balancer configuration to enable (it was deleted or never created)")]
    NothingToEnable,
    #[error("HAProxy is not running{}.", if *.suspended { " (the load balancer is suspended)" } else { "" })]
    NotRunning { suspended: bool },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

pub(crate) type Result<T> = std::result::Result<T, HaproxyError>;

impl From<HaproxyError> for DriverError {
    fn from(e: HaproxyError) -> DriverError {
        match e {
            HaproxyError::Deleted => DriverError::Deleted,
            HaproxyError::Render(_) => DriverError::Invalid(Box::new(e)),
            other => DriverError::Failed(Box::new(other)),
        }
    }
}

impl From<ModelError> for DriverError {
    fn from(e: ModelError) -> DriverError {
        DriverError::Invalid(Box::new(e))
    }
}
