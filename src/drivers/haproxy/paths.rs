//! Where the driver's files are: the live configuration and its backup where the settings
//! put them, and the driver's own bookkeeping in the state directory under the names of
//! `config::state_files`.

use std::path::{Path, PathBuf};

use crate::config::state_files;
use crate::config::HaproxySettings;

#[derive(Debug, Clone)]
pub(super) struct Paths {
    pub(super) config: PathBuf,
    pub(super) backup: PathBuf,
    pub(super) candidate: PathBuf,
    pub(super) model: PathBuf,
    pub(super) suspended: PathBuf,
    pub(super) server_state: PathBuf,
    pub(super) cookie_key: PathBuf,
    pub(super) applying: PathBuf,
}

impl Paths {
    pub(super) fn new(s: &HaproxySettings) -> Paths {
        let with_suffix = |p: &Path, suffix: &str| {
            let mut os = p.as_os_str().to_owned();
            os.push(suffix);
            PathBuf::from(os)
        };
        let state = |name: &str| s.state_dir.join(name);
        Paths {
            backup: with_suffix(&s.config_file, ".BKUP"),
            // Checked where the worker may write, whoever owns the live file's directory.
            candidate: state(state_files::CANDIDATE),
            config: s.config_file.clone(),
            model: state(state_files::MODEL),
            suspended: state(state_files::SUSPENDED),
            server_state: state(state_files::SERVER_STATE),
            cookie_key: state(state_files::COOKIE_KEY),
            applying: state(state_files::APPLYING),
        }
    }
}
