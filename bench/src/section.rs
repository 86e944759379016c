//! What a HAProxy bench section (UPDATE latency, zero-drop) is given and gives back, and
//! how one runs on its own (`libra-bench --update-latency`, `--zero-drop`): a gearmand on
//! a free loopback port in a temporary directory that is removed afterwards unless the
//! section failed, then the section's markdown (and JSON with `--json`) on stdout.

use std::path::Path;

use super::procs::{self, Gearmand, ProcsError};
use super::suite::TempDir;

/// What a section runs against.
pub struct Env<'a> {
    /// The libra-worker binary to start workers from.
    pub binary: &'a Path,
    /// The bench's job server, `host:port`.
    pub gearmand: String,
    /// The bench's temporary directory: every file a section writes goes here.
    pub dir: &'a Path,
}

/// A section's report.
pub struct Section {
    pub markdown: String,
    pub json: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    #[error(transparent)]
    Procs(#[from] ProcsError),
    #[error("{0}")]
    Section(String),
}

/// Runs `section` alone with its own gearmand; prints its report; returns the exit code.
pub fn main_alone<F>(name: &str, json: bool, section: F) -> i32
where
    F: FnOnce(&Env) -> Result<Section, String>,
{
    // Looked up first: without it there is nothing to run and no directory to keep.
    let binary = match procs::worker_binary() {
        Ok(b) => b,
        Err(e) => {
            note!("libra-bench: {name}: {e}");
            return 1;
        }
    };
    let mut dir = match TempDir::create() {
        Ok(d) => d,
        Err(e) => {
            note!("libra-bench: {e}");
            return 1;
        }
    };
    match run_alone(&binary, &dir.path, section) {
        Ok(s) => {
            out!("{}", s.markdown.trim_end());
            if json {
                out!("{}", s.json);
            }
            0
        }
        Err(e) => {
            dir.keep = true;
            note!("libra-bench: {name}: {e}");
            note!("libra-bench: logs kept in {}", dir.path.display());
            1
        }
    }
}

fn run_alone<F>(binary: &Path, dir: &Path, section: F) -> Result<Section, SectionError>
where
    F: FnOnce(&Env) -> Result<Section, String>,
{
    let gearmand = Gearmand::start(dir, 1)?;
    let env = Env {
        binary,
        gearmand: gearmand.addr(),
        dir,
    };
    note!(
        "bench: gearmand at {}, work in {}",
        env.gearmand,
        dir.display()
    );
    section(&env).map_err(SectionError::Section)
}
