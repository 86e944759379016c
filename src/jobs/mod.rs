//! Jobs: the JSON messages of the wire contract. `request` turns a Gearman job body into
//! an action and a JSON object (or a ready answer when it cannot); one module per action
//! parses its fields into driver types and writes its answer into the echoed request.

pub mod archive;
pub(crate) mod diagnostics;
pub mod discover;
pub mod request;
pub mod response;
pub mod update;

use std::fmt;

/// The `hpcs_action` values of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Update,
    Suspend,
    Enable,
    Delete,
    Discover,
    Archive,
    Stats,
    Metrics,
    Diagnostics,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Update,
        Action::Suspend,
        Action::Enable,
        Action::Delete,
        Action::Discover,
        Action::Archive,
        Action::Stats,
        Action::Metrics,
        Action::Diagnostics,
    ];

    /// Case-insensitive, as the contract says for enumerated fields.
    pub fn parse(s: &str) -> Option<Action> {
        let upper = s.to_ascii_uppercase();
        Action::ALL.into_iter().find(|a| a.as_str() == upper)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Update => "UPDATE",
            Action::Suspend => "SUSPEND",
            Action::Enable => "ENABLE",
            Action::Delete => "DELETE",
            Action::Discover => "DISCOVER",
            Action::Archive => "ARCHIVE",
            Action::Stats => "STATS",
            Action::Metrics => "METRICS",
            Action::Diagnostics => "DIAGNOSTICS",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
