//! The files HAProxy reads and writes outside the worker's state directory: the live
//! configuration, its backup and HAProxy's log. In managed mode they are the worker's own
//! and replaced with `files::write_atomic`. In service mode they sit where only root may
//! write (`/etc/haproxy`, `/var/log`), and each step goes through the configured privilege
//! prefix (`sudo -n`), as the reference worker did, without a shell and still atomic: the
//! content is written and flushed in the state directory, which the worker owns, then a
//! privileged `mv` renames it into place (`cp` to a temporary name beside the target
//! first when the two directories are on different file systems).

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command::{self, CommandError};
use super::files::{self, FileError};
use crate::config::resolve_program;

/// Mode of a configuration the worker writes into the distribution's directory, as the
/// distribution ships it (HAProxy starts as root and reads it before dropping privileges).
pub const SERVICE_CONFIG_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum LiveFileError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot stage {path} for a privileged move: {source}")]
    Stage { path: PathBuf, source: io::Error },
    #[error("privileged step failed: {0}")]
    Privileged(#[source] CommandError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// How the live files are reached.
#[derive(Debug, Clone)]
pub struct LiveFiles {
    /// The privilege prefix (`sudo -n`); empty: the worker does each step itself.
    sudo: Vec<String>,
    /// Where content is staged before a privileged move (the state directory).
    staging_dir: PathBuf,
    /// Mode of the files written.
    mode: u32,
    /// Bound on each privileged command.
    timeout: Duration,
}

impl LiveFiles {
    pub fn new(sudo: Vec<String>, staging_dir: PathBuf, mode: u32, timeout: Duration) -> Self {
        LiveFiles {
            sudo,
            staging_dir,
            mode,
            timeout,
        }
    }

    fn privileged(&self) -> bool {
        !self.sudo.is_empty()
    }

    /// Runs `program [-f] -- paths...` behind the privilege prefix.
    fn run(&self, program: &str, force: bool, paths: &[&Path]) -> Result<(), LiveFileError> {
        let argv = self.argv(program, force, paths);
        command::run(&argv, self.timeout)
            .map(|_| ())
            .map_err(LiveFileError::Privileged)
    }

    fn argv(&self, program: &str, force: bool, paths: &[&Path]) -> Vec<String> {
        let mut argv = self.sudo.clone();
        argv.push(resolve_program(Path::new(program)).display().to_string());
        if force {
            argv.push("-f".to_string());
        }
        // No path can be taken for an option.
        argv.push("--".to_string());
        argv.extend(paths.iter().map(|p| p.display().to_string()));
        argv
    }

    /// Replaces `live` with `bytes`, atomically.
    pub fn install(&self, live: &Path, bytes: &[u8]) -> Result<(), LiveFileError> {
        if !self.privileged() {
            return Ok(files::write_atomic(live, bytes, self.mode)?);
        }
        let name = live.file_name().ok_or_else(|| FileError::NoFileName {
            path: live.to_path_buf(),
        })?;
        let mut staged_name = name.to_os_string();
        staged_name.push(".staged");
        let staged = self.staging_dir.join(staged_name);
        files::write_atomic(&staged, bytes, self.mode)?;
        let result = if same_file_system(&self.staging_dir, live) {
            self.run("mv", true, &[&staged, live])
        } else {
            // `mv` across file systems copies in place: copy beside the target first.
            let tmp = files::tmp_path(live)?;
            self.run("cp", false, &[&staged, &tmp])
                .and_then(|()| self.run("mv", true, &[&tmp, live]))
        };
        let _ = files::remove_if_exists(&staged);
        result?;
        // The rename is durable once the directory is; reading it is enough to sync it.
        sync_dir(live);
        Ok(())
    }

    /// Saves `live` as `bkup`; without a live file the backup is removed instead. Returns
    /// whether a live file was saved.
    pub fn backup(&self, live: &Path, bkup: &Path) -> Result<bool, LiveFileError> {
        match self.read(live) {
            Ok(bytes) => {
                self.install(bkup, &bytes)?;
                Ok(true)
            }
            Err(LiveFileError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => {
                self.remove(bkup)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Puts the file saved by `backup` back; without a backup the live file is removed.
    /// Returns whether a backup was restored.
    pub fn restore(&self, bkup: &Path, live: &Path) -> Result<bool, LiveFileError> {
        match self.read(bkup) {
            Ok(bytes) => {
                self.install(live, &bytes)?;
                Ok(true)
            }
            Err(LiveFileError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => {
                self.remove(live)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes `path`; a missing file is not an error. Returns whether it existed.
    pub fn remove(&self, path: &Path) -> Result<bool, LiveFileError> {
        if !self.privileged() {
            return Ok(files::remove_if_exists(path)?);
        }
        if fs::symlink_metadata(path).is_err() {
            return Ok(false);
        }
        self.run("rm", true, &[path])?;
        Ok(true)
    }

    /// Empties `path` in place, keeping the file a logging daemon has open (a removed log
    /// would go on growing unseen until the daemon reopens it). Missing is not an error.
    pub fn truncate(&self, path: &Path) -> Result<(), LiveFileError> {
        if fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        if !self.privileged() {
            return OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map(drop)
                .map_err(|source| LiveFileError::Read {
                    path: path.to_path_buf(),
                    source,
                });
        }
        self.run("cp", false, &[Path::new("/dev/null"), path])
    }

    /// The content of `path`, read through the privilege prefix when the worker may not.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, LiveFileError> {
        let read_error = |source| LiveFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        match fs::read(path) {
            Err(e) if e.kind() == ErrorKind::PermissionDenied && self.privileged() => {
                let mut file = self.open_privileged(path)?;
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut file, &mut bytes).map_err(read_error)?;
                Ok(bytes)
            }
            other => other.map_err(read_error),
        }
    }

    /// `path` opened for reading; through the privilege prefix (a copy the worker owns,
    /// already unlinked) when the worker may not open it.
    pub fn open(&self, path: &Path) -> Result<File, LiveFileError> {
        match File::open(path) {
            Err(e) if e.kind() == ErrorKind::PermissionDenied && self.privileged() => {
                self.open_privileged(path)
            }
            other => other.map_err(|source| LiveFileError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn open_privileged(&self, path: &Path) -> Result<File, LiveFileError> {
        let stage = |source| LiveFileError::Stage {
            path: path.to_path_buf(),
            source,
        };
        let mut copy = command::unlinked_file(&self.staging_dir).map_err(stage)?;
        let out = copy.try_clone().map_err(stage)?;
        command::run_into(&self.argv("cat", false, &[path]), self.timeout, out)
            .map_err(LiveFileError::Privileged)?;
        copy.seek(SeekFrom::Start(0)).map_err(stage)?;
        Ok(copy)
    }
}

/// Whether `dir` and the directory of `path` are on one file system (a rename between
/// them is atomic).
fn same_file_system(dir: &Path, path: &Path) -> bool {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (fs::metadata(dir), fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

/// Flushes the directory of `path` (best effort: a read-only open is enough to sync it).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY)
            .open(dir)
        {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
    }

    fn direct(dir: &Path) -> LiveFiles {
        LiveFiles::new(
            Vec::new(),
            dir.to_path_buf(),
            files::PRIVATE_MODE,
            Duration::from_secs(5),
        )
    }

    /// A "privilege prefix" that runs the command as is: the privileged code path, without
    /// needing root (the real sudo is tested end to end in tests/service_sudo.rs).
    fn through(dir: &Path, prefix: &str) -> LiveFiles {
        LiveFiles::new(
            vec![prefix.to_string()],
            dir.join("state"),
            SERVICE_CONFIG_MODE,
            Duration::from_secs(5),
        )
    }

    #[test]
    fn direct_steps_replace_back_up_restore_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("haproxy.cfg");
        let bkup = dir.path().join("haproxy.cfg.BKUP");
        let files = direct(dir.path());
        assert!(!files.backup(&live, &bkup).unwrap());
        files.install(&live, b"one").unwrap();
        assert!(files.backup(&live, &bkup).unwrap());
        files.install(&live, b"two").unwrap();
        assert!(files.restore(&bkup, &live).unwrap());
        assert_eq!(fs::read(&live).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&live).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(files.remove(&live).unwrap());
        assert!(!files.remove(&live).unwrap());
    }

    #[test]
    fn privileged_steps_stage_in_the_state_dir_and_run_through_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("state")).unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        // `env` runs its arguments: the steps go through the prefix and still work.
        let files = through(dir.path(), "/usr/bin/env");
        let live = dir.path().join("etc/haproxy.cfg");
        let bkup = dir.path().join("etc/haproxy.cfg.BKUP");
        files.install(&live, b"global\n").unwrap();
        assert_eq!(fs::read(&live).unwrap(), b"global\n");
        assert_eq!(
            fs::metadata(&live).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(files.backup(&live, &bkup).unwrap());
        files.install(&live, b"new\n").unwrap();
        assert!(files.restore(&bkup, &live).unwrap());
        assert_eq!(fs::read(&live).unwrap(), b"global\n");
        // Nothing is left staged.
        assert_eq!(fs::read_dir(dir.path().join("state")).unwrap().count(), 0);
        let log = dir.path().join("etc/haproxy.log");
        write(&log, b"lines\n");
        files.truncate(&log).unwrap();
        assert_eq!(fs::read(&log).unwrap(), b"");
        assert!(files.remove(&bkup).unwrap());
        assert!(!bkup.exists());
    }

    #[test]
    fn a_refused_privileged_step_names_the_command_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("state")).unwrap();
        let live = dir.path().join("haproxy.cfg");
        write(&live, b"old");
        // `false` refuses every step, as `sudo -n` without a rule does.
        let files = through(dir.path(), "/bin/false");
        let err = files.install(&live, b"new").unwrap_err().to_string();
        assert!(err.contains("/bin/false") && err.contains("mv"), "{err}");
        assert_eq!(fs::read(&live).unwrap(), b"old");
        assert!(files.remove(&live).is_err());
        assert!(live.exists());
    }
}
