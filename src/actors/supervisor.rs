//! Supervision of the job-server connections: `Connections` starts one `ConnectionActor`
//! per configured job server under an `actix::Supervisor`, which restarts it every time it
//! stops, forever (each with its own `Backoff`), and drains them all at shutdown.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use slog::Logger;

use super::backoff::Backoff;
use super::connection::{ConnectionActor, ConnectionConfig, Drain};
use super::controller::Job;
use crate::config::GearmanSettings;
use crate::telemetry::connection::ConnectionStatus;
use crate::telemetry::Telemetry;
use crate::transport::TlsConnector;

/// The running connections, each under an `actix::Supervisor`.
pub struct Connections {
    connections: Vec<Addr<ConnectionActor>>,
}

impl Connections {
    /// Starts a supervised connection per job server, on the current arbiter.
    pub fn start(
        gearman: &GearmanSettings,
        function: &str,
        tls: Option<TlsConnector>,
        controller: Recipient<Job>,
        telemetry: Arc<Telemetry>,
        log: &Logger,
    ) -> Connections {
        let client_id = Bytes::from(format!(
            "libra-worker-{}-{}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id()
        ));
        let mut connections = Vec::new();
        let mut statuses = Vec::new();
        for server in &gearman.servers {
            let status = Arc::new(ConnectionStatus::new(server.host_port()));
            let config = ConnectionConfig {
                server: server.clone(),
                function: Bytes::copy_from_slice(function.as_bytes()),
                client_id: client_id.clone(),
                tls: if server.tls { tls.clone() } else { None },
                keepalive: gearman.keepalive,
                max_packet_bytes: gearman.max_packet_bytes,
                prefetch: gearman.prefetch,
                heartbeat: gearman.heartbeat,
            };
            let actor = ConnectionActor::new(
                config,
                controller.clone(),
                telemetry.clone(),
                Backoff::new(gearman.reconnect_sleep),
                status.clone(),
                log,
            );
            connections.push(actix::Supervisor::start(move |_| actor));
            statuses.push(status);
        }
        telemetry.set_connections(statuses);
        Connections { connections }
    }

    /// Stops every connection from taking jobs and waits, at most `limit`, until none
    /// has a job in hand.
    pub async fn drain(&self, limit: Duration) -> bool {
        let all = futures::future::join_all(self.connections.iter().map(|c| c.send(Drain)));
        tokio::time::timeout(limit, all).await.is_ok()
    }
}
