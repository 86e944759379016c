//! The supervisor: starts one `ConnectionActor` per configured job server under an
//! `actix::Supervisor`, which restarts it every time it stops, forever; owns the back-off
//! policy (exponential from 1 s up to `reconnect_sleep`, plus jitter, reset once a
//! connection proves healthy) and the graceful drain at shutdown.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use rand::Rng;
use slog::Logger;

use super::connection::{ConnectionActor, ConnectionConfig, Drain};
use super::controller::Job;
use crate::config::GearmanSettings;
use crate::telemetry::connection::ConnectionStatus;
use crate::telemetry::Telemetry;
use crate::transport::TlsConnector;

/// First delay after a failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);

/// Exponential back-off with jitter: 1 s, 2 s, 4 s ... up to `max`, each plus up to a
/// fifth of itself at random so that many workers do not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    max: Duration,
    current: Option<Duration>,
    attempts: u32,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Backoff {
            max: max.max(BACKOFF_START),
            current: None,
            attempts: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = match self.current {
            None => BACKOFF_START,
            Some(c) => (c * 2).min(self.max),
        };
        self.current = Some(base);
        self.attempts += 1;
        let jitter = rand::thread_rng().gen_range(0.0..=0.2);
        base + base.mul_f64(jitter)
    }

    /// The longest delay this policy can produce (the test checks `next_delay` against it).
    #[cfg(test)]
    pub fn bound(&self) -> Duration {
        self.max + self.max.mul_f64(0.2)
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Called once a connection has proved healthy.
    pub fn reset(&mut self) {
        self.current = None;
        self.attempts = 0;
    }
}

/// The running connections.
pub struct Supervisor {
    connections: Vec<Addr<ConnectionActor>>,
}

impl Supervisor {
    /// Starts a supervised connection per job server, on the current arbiter.
    pub fn start(
        gearman: &GearmanSettings,
        function: &str,
        tls: Option<TlsConnector>,
        controller: Recipient<Job>,
        telemetry: Arc<Telemetry>,
        log: &Logger,
    ) -> Supervisor {
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
        Supervisor { connections }
    }

    /// Stops every connection from taking jobs and waits, at most `limit`, until none
    /// has a job in hand.
    pub async fn drain(&self, limit: Duration) -> bool {
        let all = futures::future::join_all(self.connections.iter().map(|c| c.send(Drain)));
        tokio::time::timeout(limit, all).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(8));
        for base in [1.0, 2.0, 4.0, 8.0, 8.0, 8.0] {
            let d = b.next_delay().as_secs_f64();
            // Each delay is its base plus at most 20 % jitter.
            assert!(d >= base && d <= base * 1.2 + 1e-9, "{d} for base {base}");
        }
        assert!(b.next_delay() <= b.bound());
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }
}
