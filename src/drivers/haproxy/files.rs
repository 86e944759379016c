//! Crash-safe file replacement for the driver's configuration, its backup and its state
//! files: write a temporary file beside the target, fsync it, rename it over the target and
//! fsync the directory, so a reader (or a reboot) sees the old file or the new one, never a
//! mix. Small enough that a crate (tempfile's `persist`, atomicwrites) would add more than it saves.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of configuration and state files: they name the appliance's nodes.
pub const PRIVATE_MODE: u32 = 0o600;

/// Which step of a file operation failed, and on which path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot set the permissions of {path}: {source}")]
    Permissions { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot flush {path} to disk: {source}")]
    Sync { path: PathBuf, source: io::Error },
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("cannot flush directory {path} to disk: {source}")]
    SyncDir { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot keep {from} as {to}: {source}")]
    Link {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("cannot replace {path}: it has no file name")]
    NoFileName { path: PathBuf },
}

/// The temporary file `write_atomic` uses for `path`: `<path>.tmp`, in the same directory
/// so that the rename never crosses a file system.
pub fn tmp_path(path: &Path) -> Result<PathBuf, FileError> {
    let name = path.file_name().ok_or_else(|| FileError::NoFileName {
        path: path.to_path_buf(),
    })?;
    let mut tmp = name.to_os_string();
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}

/// Replaces `path` with `bytes`, permissions `mode`, atomically and durably. On error the
/// old file is untouched and no temporary file is left behind (as far as removal works).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let tmp = tmp_path(path)?;
    // A leftover from a crash is removed first; `create_new` then refuses to follow a link
    // someone may have planted under the temporary name.
    remove_file_if_exists(&tmp)?;
    let result = write_new(&tmp, bytes, mode).and_then(|()| {
        fs::rename(&tmp, path).map_err(|source| FileError::Rename {
            from: tmp.clone(),
            to: path.to_path_buf(),
            source,
        })
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)
}

/// Replaces `path` with `bytes` as `write_atomic` does, keeping the file it replaces as
/// `backup` (removed when there is none). The old file becomes the backup by a hard link:
/// its data was flushed when it was written and is never changed in place, so only names
/// change, and one directory flush covers both renames. Copying it instead cost a read,
/// a write, one more file fsync and one more directory flush on every node-only UPDATE.
/// Where no hard link can be made, the backup is a copy. Returns whether there was a file
/// to keep.
pub fn replace_keeping_backup(
    path: &Path,
    backup: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<bool, FileError> {
    let tmp = tmp_path(path)?;
    let backup_tmp = tmp_path(backup)?;
    remove_file_if_exists(&tmp)?;
    remove_file_if_exists(&backup_tmp)?;
    let cleanup = |e: FileError| {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(&backup_tmp);
        e
    };
    write_new(&tmp, bytes, mode).map_err(cleanup)?;
    let kept = match fs::hard_link(path, &backup_tmp) {
        Ok(()) => {
            fs::rename(&backup_tmp, backup)
                .map_err(|source| FileError::Rename {
                    from: backup_tmp.clone(),
                    to: backup.to_path_buf(),
                    source,
                })
                .map_err(cleanup)?;
            true
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            remove_file_if_exists(backup).map_err(cleanup)?;
            false
        }
        // A file system without hard links, or a link the kernel refuses
        // (`fs.protected_hardlinks`): the backup is a flushed copy, as before.
        Err(link_error) => {
            let old = fs::read(path).map_err(|_| {
                cleanup(FileError::Link {
                    from: path.to_path_buf(),
                    to: backup_tmp.clone(),
                    source: link_error,
                })
            })?;
            write_new(&backup_tmp, &old, mode)
                .and_then(|()| {
                    fs::rename(&backup_tmp, backup).map_err(|source| FileError::Rename {
                        from: backup_tmp.clone(),
                        to: backup.to_path_buf(),
                        source,
                    })
                })
                .map_err(cleanup)?;
            true
        }
    };
    fs::rename(&tmp, path)
        .map_err(|source| FileError::Rename {
            from: tmp.clone(),
            to: path.to_path_buf(),
            source,
        })
        .map_err(cleanup)?;
    sync_dir(path)?;
    if backup.parent() != path.parent() {
        sync_dir(backup)?;
    }
    Ok(kept)
}

/// Creates `path` empty (or leaves it, emptied), permissions `mode`, without fsync: for
/// marker files whose only reader is a later process on the same boot. A link planted
/// under the name is refused, not followed.
pub fn write_flag(path: &Path, mode: u32) -> Result<(), FileError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| FileError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|source| FileError::Permissions {
            path: path.to_path_buf(),
            source,
        })
}

fn write_new(tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(|source| FileError::Create {
            path: tmp.to_path_buf(),
            source,
        })?;
    // The umask may have narrowed the mode given to open; set it exactly.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|source| FileError::Permissions {
            path: tmp.to_path_buf(),
            source,
        })?;
    file.write_all(bytes).map_err(|source| FileError::Write {
        path: tmp.to_path_buf(),
        source,
    })?;
    file.sync_all().map_err(|source| FileError::Sync {
        path: tmp.to_path_buf(),
        source,
    })
}

/// Makes a rename or removal in `path`'s directory survive a crash.
fn sync_dir(path: &Path) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| FileError::SyncDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Removes `path` durably; a missing file is not an error. Returns whether it existed.
pub fn remove_if_exists(path: &Path) -> Result<bool, FileError> {
    let existed = remove_file_if_exists(path)?;
    if existed {
        sync_dir(path)?;
    }
    Ok(existed)
}

fn remove_file_if_exists(path: &Path) -> Result<bool, FileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(FileError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_creates_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        write_atomic(&path, b"first\n", PRIVATE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first\n");
        write_atomic(&path, b"second, longer\n", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer\n");
        assert_eq!(mode_of(&path), 0o640);
        write_atomic(&path, b"", PRIVATE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(entries(dir.path()), ["haproxy.cfg"]);
    }

    #[test]
    fn mode_is_exact_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // 0o666 would be narrowed by a typical umask of 022 if only given to open().
        write_atomic(&path, b"{}", 0o666).unwrap();
        assert_eq!(mode_of(&path), 0o666);
    }

    #[test]
    fn a_flag_is_created_private_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("applying");
        write_flag(&flag, PRIVATE_MODE).unwrap();
        write_flag(&flag, PRIVATE_MODE).unwrap();
        let meta = fs::metadata(&flag).unwrap();
        assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (0, 0o600));
        let target = dir.path().join("target");
        fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("linked");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_flag(&link, PRIVATE_MODE).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn a_stale_tmp_file_or_link_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, tmp_path(&path).unwrap()).unwrap();
        write_atomic(&path, b"new", PRIVATE_MODE).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(entries(dir.path()), ["haproxy.cfg", "victim"]);
    }

    #[test]
    fn replace_keeping_backup_links_the_old_file_as_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let (live, bkup) = (dir.path().join("h.cfg"), dir.path().join("h.cfg.BKUP"));
        fs::write(&bkup, "stale").unwrap();
        // No live file yet: nothing to keep, and a stale backup goes.
        assert!(!replace_keeping_backup(&live, &bkup, b"one", PRIVATE_MODE).unwrap());
        assert!(!bkup.exists());
        assert!(replace_keeping_backup(&live, &bkup, b"two", PRIVATE_MODE).unwrap());
        assert!(replace_keeping_backup(&live, &bkup, b"three", PRIVATE_MODE).unwrap());
        assert_eq!(fs::read_to_string(&live).unwrap(), "three");
        assert_eq!(fs::read_to_string(&bkup).unwrap(), "two");
        assert_eq!((mode_of(&live), mode_of(&bkup)), (0o600, 0o600));
        assert_eq!(entries(dir.path()), ["h.cfg", "h.cfg.BKUP"]);
    }

    #[test]
    fn remove_if_exists_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        fs::write(&path, b"x").unwrap();
        assert!(remove_if_exists(&path).unwrap());
        assert!(!remove_if_exists(&path).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn a_path_under_a_file_fails_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        fs::write(&file, b"keep").unwrap();
        let path = file.join("haproxy.cfg");
        let e = write_atomic(&path, b"x", PRIVATE_MODE).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&*file.join("haproxy.cfg.tmp").to_string_lossy()),
            "{text}"
        );
        assert_eq!(fs::read(&file).unwrap(), b"keep");
    }

    #[test]
    fn a_failed_create_leaves_the_old_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        write_atomic(&path, b"old", PRIVATE_MODE).unwrap();
        // A non-empty directory squatting on the temporary name makes the write fail even
        // for root, for whom a read-only directory is no obstacle.
        let tmp = tmp_path(&path).unwrap();
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("inside"), b"").unwrap();
        let e = write_atomic(&path, b"new", PRIVATE_MODE).unwrap_err();
        assert!(matches!(e, FileError::Remove { .. }), "{e:?}");
        assert!(e.to_string().contains(&*tmp.to_string_lossy()), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn a_failed_rename_leaves_no_tmp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the write succeeded.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"keep").unwrap();
        let e = write_atomic(&path, b"new", PRIVATE_MODE).unwrap_err();
        assert!(matches!(e, FileError::Rename { .. }), "{e:?}");
        assert!(
            e.to_string().contains("taken.tmp") && e.to_string().contains("cannot rename"),
            "{e}"
        );
        assert_eq!(entries(dir.path()), ["taken"]);
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"keep");
    }

    #[test]
    fn a_read_only_directory_is_refused_when_the_os_enforces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        write_atomic(&path, b"old", PRIVATE_MODE).unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o500)).unwrap();
        let probe = File::create(dir.path().join("probe"));
        let result = write_atomic(&path, b"new", PRIVATE_MODE);
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
        if probe.is_ok() {
            // Root ignores directory permissions; the squatting tests above cover this case.
            assert!(result.is_ok());
            return;
        }
        let e = result.unwrap_err();
        assert!(
            e.to_string()
                .contains(&*tmp_path(&path).unwrap().to_string_lossy()),
            "{e}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn no_file_name_is_an_error() {
        assert!(matches!(
            write_atomic(Path::new("/"), b"x", PRIVATE_MODE),
            Err(FileError::NoFileName { .. })
        ));
    }

    #[test]
    fn a_backup_on_another_file_system_is_a_flushed_copy() {
        use std::os::unix::fs::MetadataExt;
        // A hard link cannot cross file systems (EXDEV): the live file on tmpfs, its backup
        // on the disk, so the copy branch runs.
        let live_dir = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
        let bkup_dir = tempfile::tempdir().unwrap();
        let dev = |p: &Path| fs::metadata(p).unwrap().dev();
        assert_ne!(
            dev(live_dir.path()),
            dev(bkup_dir.path()),
            "the test needs two file systems"
        );
        let live = live_dir.path().join("haproxy.cfg");
        let backup = bkup_dir.path().join("haproxy.cfg.BKUP");
        fs::write(&live, b"old").unwrap();
        assert!(replace_keeping_backup(&live, &backup, b"new", 0o600).unwrap());
        assert_eq!(fs::read(&live).unwrap(), b"new");
        assert_eq!(fs::read(&backup).unwrap(), b"old");
        assert_eq!(mode_of(&backup), 0o600);
        assert_eq!(
            entries(bkup_dir.path()),
            ["haproxy.cfg.BKUP"],
            "no temporary left"
        );
        assert_eq!(entries(live_dir.path()), ["haproxy.cfg"]);
    }
}
