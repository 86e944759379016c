//! What the driver reads about a process from Linux's /proc: whether it is alive (exists
//! and is not a zombie), whether it was started with a given argument, and which pid a pid
//! file names. The bench reads liveness through this one definition too.

use std::path::Path;

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// True while `pid` exists and is not a zombie (an exited process nobody reaped yet).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which ends at the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => kill(Pid::from_raw(pid as i32), None).is_ok(),
    }
}

/// True if process `pid` was started with `arg` among its arguments.
pub(crate) fn cmdline_has(pid: u32, arg: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let arg = arg.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|a| a == arg)
}

/// The pid in a pid file; `None` if it is missing, unreadable or not a pid another process
/// could have (0, 1, or beyond what `kill` takes).
pub(crate) fn read_pid_file(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 1 && pid <= i32::MAX as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_zombie_is_not_alive() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(cmdline_has(
            me,
            Path::new(&std::env::args().next().unwrap())
        ));
        assert!(!cmdline_has(me, Path::new("--no-such-argument")));
        let mut child = Command::new("sleep").arg("0").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie until `wait`.
        let zombie = crate::drivers::haproxy::process::poll::poll_until(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(5),
            || (!alive(pid)).then_some(()),
        );
        assert!(zombie.is_some(), "an exited child still counts as alive");
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        assert_eq!(read_pid_file(&path), None);
        for (text, pid) in [
            ("1234\n", Some(1234)),
            ("1\n", None),
            ("0", None),
            ("x", None),
        ] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(read_pid_file(&path), pid, "{text:?}");
        }
        std::fs::write(&path, format!("{}", u32::MAX)).unwrap();
        assert_eq!(read_pid_file(&path), None);
    }
}
