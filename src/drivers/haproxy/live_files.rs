//! The files HAProxy reads and writes outside the worker's state directory: the live
//! configuration, its backup and HAProxy's log. In managed mode they are the worker's own
//! and replaced with `files::write_atomic`. In service mode they sit where only root may
//! write (`/etc/haproxy`, `/var/log`), and each step goes through the configured privilege
//! prefix (`sudo -n`), as the reference worker did, without a shell and still atomic: the
//! content is written and flushed in the state directory, which the worker owns, then a
//! privileged `cp` puts a root-owned copy beside the target and a privileged `mv` renames
//! it into place. `privileged_commands` lists those commands for the sudoers rule.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command::{self, CommandError};
use super::files::{self, FileError};

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
    /// sudo itself refused: the text says so first (see `command::sudo_refusal`).
    #[error("{0}")]
    SudoRefused(String),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

impl LiveFileError {
    fn from_command(e: CommandError) -> Self {
        match command::sudo_refusal(&e) {
            Some(text) => LiveFileError::SudoRefused(text),
            None => LiveFileError::Privileged(e),
        }
    }
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

    /// Runs `command` behind the privilege prefix.
    fn run(&self, command: &[String]) -> Result<(), LiveFileError> {
        let argv: Vec<String> = self.sudo.iter().chain(command).cloned().collect();
        command::run(&argv, self.timeout)
            .map(|_| ())
            .map_err(LiveFileError::from_command)
    }

    /// The file `install` stages the content of `live` in: the state directory, which the
    /// worker owns.
    fn staged_path(&self, live: &Path) -> Result<PathBuf, LiveFileError> {
        let name = live.file_name().ok_or_else(|| FileError::NoFileName {
            path: live.to_path_buf(),
        })?;
        let mut staged_name = name.to_os_string();
        staged_name.push(".staged");
        Ok(self.staging_dir.join(staged_name))
    }

    /// The privileged commands that put the staged content on `live`, in order: a copy
    /// beside it, which root creates and so owns, renamed onto it. Moving the staged file
    /// itself would put a file of the worker's, writable by it, on the live path; the
    /// copy also makes the commands the same whatever file systems the two directories
    /// are on, so the sudoers rule does not depend on mounts.
    fn install_commands(
        &self,
        staged: &Path,
        live: &Path,
    ) -> Result<Vec<Vec<String>>, LiveFileError> {
        let tmp = files::tmp_path(live)?;
        Ok(vec![
            helper_argv("cp", false, &[staged, &tmp]),
            helper_argv("mv", true, &[&tmp, live]),
        ])
    }

    /// The commands `step` runs behind the privilege prefix, the prefix left out: what a
    /// sudoers rule must allow, built by the same code the steps run. Empty when the
    /// worker does the step itself.
    pub fn privileged_commands(&self, step: Step<'_>) -> Result<Vec<Vec<String>>, LiveFileError> {
        if !self.privileged() {
            return Ok(Vec::new());
        }
        Ok(match step {
            Step::Install(live) => self.install_commands(&self.staged_path(live)?, live)?,
            Step::Remove(path) => vec![remove_command(path)],
            Step::Truncate(path) => vec![truncate_command(path)],
            Step::Read(path) => vec![read_command(path)],
        })
    }

    /// Replaces `live` with `bytes`, atomically.
    pub fn install(&self, live: &Path, bytes: &[u8]) -> Result<(), LiveFileError> {
        if !self.privileged() {
            return Ok(files::write_atomic(live, bytes, self.mode)?);
        }
        let staged = self.staged_path(live)?;
        let commands = self.install_commands(&staged, live)?;
        files::write_atomic(&staged, bytes, self.mode)?;
        let result = commands.iter().try_for_each(|c| self.run(c));
        let _ = files::remove_if_exists(&staged);
        result?;
        // `cp` does not flush: flush the copy (same inode) and the rename, best effort
        // (a read-only descriptor is enough, when the mode lets the worker open it).
        if let Ok(file) = File::open(live) {
            let _ = file.sync_all();
        }
        sync_dir(live);
        Ok(())
    }

    /// `backup` then `install`: the file that served is kept as `bkup`, `bytes` replace it.
    /// Directly, the old file becomes the backup by a hard link (`files`); through the
    /// privilege prefix, by the copies `backup` makes.
    pub fn replace_keeping_backup(
        &self,
        live: &Path,
        bkup: &Path,
        bytes: &[u8],
    ) -> Result<bool, LiveFileError> {
        if !self.privileged() {
            return Ok(files::replace_keeping_backup(live, bkup, bytes, self.mode)?);
        }
        let kept = self.backup(live, bkup)?;
        self.install(live, bytes)?;
        Ok(kept)
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
        self.run(&remove_command(path))?;
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
        self.run(&truncate_command(path))
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
        let argv: Vec<String> = self
            .sudo
            .iter()
            .cloned()
            .chain(read_command(path))
            .collect();
        command::run_into(&argv, self.timeout, out).map_err(LiveFileError::from_command)?;
        copy.seek(SeekFrom::Start(0)).map_err(stage)?;
        Ok(copy)
    }
}

/// A privileged step on a live file, for listing the commands it runs.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// `install` (and so `backup` and `restore`) onto this path.
    Install(&'a Path),
    /// `remove` of this path.
    Remove(&'a Path),
    /// `truncate` of this path.
    Truncate(&'a Path),
    /// `read` or `open` of this path when the worker may not read it.
    Read(&'a Path),
}

fn remove_command(path: &Path) -> Vec<String> {
    helper_argv("rm", true, &[path])
}

/// Copying the empty device over a file truncates it in place (same inode).
fn truncate_command(path: &Path) -> Vec<String> {
    helper_argv("cp", false, &[Path::new("/dev/null"), path])
}

fn read_command(path: &Path) -> Vec<String> {
    helper_argv("cat", false, &[path])
}

/// `program [-f] -- paths...`, the program an absolute path found the same way whoever
/// asks: the worker running the step and `libra-worker sudoers` writing its rule (run by
/// another user, with another `PATH`) must name the same file.
fn helper_argv(program: &str, force: bool, paths: &[&Path]) -> Vec<String> {
    let mut argv = vec![helper_program(program)];
    if force {
        argv.push("-f".to_string());
    }
    // No path can be taken for an option.
    argv.push("--".to_string());
    argv.extend(paths.iter().map(|p| p.display().to_string()));
    argv
}

/// Where coreutils lives, not looked up on `PATH`: a step run as root must not depend on
/// the worker's environment.
fn helper_program(name: &str) -> String {
    HELPER_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .map_or_else(|| name.to_string(), |p| p.display().to_string())
}

/// Directories the helper programs (`cp`, `mv`, `rm`, `cat`) are taken from, in order.
const HELPER_DIRS: &[&str] = &["/usr/bin", "/bin"];

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
    fn the_listed_commands_copy_beside_the_live_file_then_rename() {
        let dir = tempfile::tempdir().unwrap();
        let files = through(dir.path(), "/usr/bin/sudo");
        let live = Path::new("/etc/haproxy/haproxy.cfg");
        let state = dir.path().join("state").display().to_string();
        let words = |c: &Vec<String>| -> Vec<String> {
            // The program by name: /usr/bin or /bin, whichever this system has.
            let mut c = c.clone();
            c[0] = Path::new(&c[0])
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into();
            c
        };
        let listed: Vec<Vec<String>> = files
            .privileged_commands(Step::Install(live))
            .unwrap()
            .iter()
            .map(words)
            .collect();
        let staged = format!("{state}/haproxy.cfg.staged");
        assert_eq!(
            listed,
            vec![
                vec!["cp", "--", &staged, "/etc/haproxy/haproxy.cfg.tmp"],
                vec![
                    "mv",
                    "-f",
                    "--",
                    "/etc/haproxy/haproxy.cfg.tmp",
                    "/etc/haproxy/haproxy.cfg"
                ],
            ]
        );
        for (step, program) in [
            (Step::Remove(live), "rm"),
            (Step::Truncate(live), "cp"),
            (Step::Read(live), "cat"),
        ] {
            let c = files.privileged_commands(step).unwrap();
            assert_eq!(c.len(), 1);
            assert!(c[0][0].starts_with('/'), "{c:?}");
            assert_eq!(words(&c[0])[0], program);
        }
        // Done directly: nothing to list.
        let direct = direct(dir.path());
        assert!(direct
            .privileged_commands(Step::Install(live))
            .unwrap()
            .is_empty());
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
        assert!(
            err.contains("/bin/false") && err.contains("cp -- "),
            "{err}"
        );
        assert_eq!(fs::read(&live).unwrap(), b"old");
        assert!(files.remove(&live).is_err());
        assert!(live.exists());
    }
}
