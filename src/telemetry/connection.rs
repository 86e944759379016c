//! The state of one job-server connection as the metrics page and the health check see
//! it: lifecycle state, reconnects, jobs taken, the last error, and its inbox statistics.
//! Written by the connection actor, read by anyone, lock-free except the error text.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use super::mailbox::MailboxStats;

/// Where a connection is in its life, as metrics and health checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    Connecting = 0,
    /// Registered, waiting for the answer to a grab.
    Grabbing = 1,
    /// PRE_SLEEP sent, waiting for NOOP.
    Sleeping = 2,
    /// At least one job in hand.
    Working = 3,
    BackingOff = 4,
}

impl ConnState {
    pub const ALL: [ConnState; 5] = [
        ConnState::Connecting,
        ConnState::Grabbing,
        ConnState::Sleeping,
        ConnState::Working,
        ConnState::BackingOff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Grabbing => "grabbing",
            ConnState::Sleeping => "sleeping",
            ConnState::Working => "working",
            ConnState::BackingOff => "backing_off",
        }
    }

    fn from_u8(v: u8) -> ConnState {
        ConnState::ALL
            .get(v as usize)
            .copied()
            .unwrap_or(ConnState::Connecting)
    }

    /// Registered with the job server and able to take jobs.
    pub fn is_connected(self) -> bool {
        matches!(
            self,
            ConnState::Grabbing | ConnState::Sleeping | ConnState::Working
        )
    }
}

/// A connection's state, shared with the metrics page (lock-free except the error text).
#[derive(Debug)]
pub struct ConnectionStatus {
    pub server: String,
    state: AtomicU8,
    pub reconnects: AtomicU64,
    pub jobs: AtomicU64,
    /// Packets from the job server (and control messages) handled by the actor.
    pub inbox: MailboxStats,
    last_error: Mutex<String>,
}

impl ConnectionStatus {
    pub fn new(server: String) -> Self {
        ConnectionStatus {
            server,
            state: AtomicU8::new(ConnState::Connecting as u8),
            reconnects: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
            inbox: MailboxStats::default(),
            last_error: Mutex::new(String::new()),
        }
    }

    pub fn state(&self) -> ConnState {
        ConnState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: ConnState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    pub fn set_last_error(&self, e: &str) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = e.to_string();
        }
    }
}
