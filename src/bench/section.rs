//! What a HAProxy bench section (UPDATE latency, zero-drop) is given and gives back, and
//! how one runs on its own (`bench --update-latency`, `bench --zero-drop`): a gearmand on
//! a free loopback port in a temporary directory that is removed afterwards unless the
//! section failed, then the section's markdown (and JSON with `--json`) on stdout.

use std::path::{Path, PathBuf};

use super::procs::{Gearmand, ProcsError};
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
    #[error("cannot find this program's binary to run as the worker: {0}")]
    Binary(std::io::Error),
    #[error(transparent)]
    Gearmand(#[from] ProcsError),
    #[error("{0}")]
    Section(String),
}

/// Runs `section` alone with its own gearmand; prints its report; returns the exit code.
pub fn main_alone<F>(name: &str, json: bool, section: F) -> i32
where
    F: FnOnce(&Env) -> Result<Section, String>,
{
    let mut dir = match TempDir::create() {
        Ok(d) => d,
        Err(e) => {
            note!("libra-worker: {e}");
            return 1;
        }
    };
    match run_alone(&dir.path, section) {
        Ok(s) => {
            out!("{}", s.markdown.trim_end());
            if json {
                out!("{}", s.json);
            }
            0
        }
        Err(e) => {
            dir.keep = true;
            note!("libra-worker: bench {name}: {e}");
            note!("libra-worker: logs kept in {}", dir.path.display());
            1
        }
    }
}

fn run_alone<F>(dir: &Path, section: F) -> Result<Section, SectionError>
where
    F: FnOnce(&Env) -> Result<Section, String>,
{
    let binary: PathBuf = std::env::current_exe().map_err(SectionError::Binary)?;
    let gearmand = Gearmand::start(dir, 1)?;
    let env = Env {
        binary: &binary,
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
