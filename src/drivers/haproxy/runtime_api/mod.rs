//! HAProxy's runtime API, which the stats socket and the master CLI both speak: the
//! socket client (`client`), what the driver asks through it (`commands`), and the readers
//! of HAProxy's answers (`stat_csv`), and a session of several commands held across a
//! reload (`session`).

pub(crate) mod client;
pub(crate) mod commands;
pub(crate) mod server_states;
pub(crate) mod session;
pub(crate) mod stat_csv;

pub use client::{StatsError, StatsSocket};
pub use stat_csv::StatRow;

/// Longest answer quoted in an error text.
const MAX_QUOTED: usize = 300;

/// A text for an error message: one line, at most `MAX_QUOTED` characters.
fn quote(text: &str) -> String {
    let one_line = text.trim().replace(['\n', '\r'], " ");
    match one_line.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}
