//! The master CLI's `show proc`: the master, the workers of the current configuration and
//! the old workers still finishing their connections, with reload counts. `show_proc` asks
//! and `parse_show_proc` reads the answer; `ShowProcError` says which of the two failed.

use super::super::runtime_api::{StatsError, StatsSocket};

/// Why the master's processes are not known.
#[derive(Debug, thiserror::Error)]
pub enum ShowProcError {
    /// The master CLI did not answer.
    #[error(transparent)]
    Ask(#[from] StatsError),
    /// The answer names no master: not `show proc`'s.
    #[error(
        "cannot understand HAProxy's answer to `show proc`: no master in `show proc`: {answer}"
    )]
    NoMaster { answer: String },
    /// The master answers but runs no worker of the current configuration.
    #[error("cannot understand HAProxy's answer to `show proc`: the master has no worker")]
    NoWorker,
}

/// `show proc` on the master CLI.
pub fn show_proc(master_cli: &StatsSocket) -> Result<ProcList, ShowProcError> {
    parse_show_proc(&master_cli.command("show proc")?)
}

/// One line of `show proc` for the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterProc {
    pub(crate) pid: u32,
    /// Reloads since the master started, failed ones included.
    pub reloads: u32,
    /// Consecutive failed reloads (0 after a successful one); None where HAProxy does not
    /// count them (2.2 to 2.4: see [`ProcList::last_load_refused`]).
    pub failed_reloads: Option<u32>,
}

/// One line of `show proc` for a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProc {
    pub pid: u32,
    /// Reloads this worker has lived through.
    pub(crate) reloads: u32,
}

/// The master CLI's `show proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcList {
    pub master: MasterProc,
    /// Workers running the current configuration.
    pub workers: Vec<WorkerProc>,
    /// Workers of earlier configurations, finishing their connections.
    pub(crate) old_workers: Vec<WorkerProc>,
}

impl ProcList {
    /// Whether the master's last load of the configuration was refused. HAProxy 2.5 and
    /// later count failures (`[failed: n]`); 2.2 to 2.4 do not, and show a refused load as
    /// a master with no current worker (the previous one is listed among the old workers,
    /// and keeps serving).
    pub fn last_load_refused(&self) -> bool {
        match self.master.failed_reloads {
            Some(n) => n > 0,
            None => self.workers.is_empty(),
        }
    }

    /// Whether some worker serves new connections: a current worker or, after a refused
    /// load on HAProxy that lists the previous worker among the old ones (2.2 to 2.4),
    /// that one.
    pub fn serving(&self) -> bool {
        !self.workers.is_empty()
            || (self.master.failed_reloads.is_none() && !self.old_workers.is_empty())
    }
}

/// Parses `show proc` of HAProxy 2.2 to 3.x. The header names the columns: 2.2 to 2.4
/// have a `<relative PID>` column before `<reloads>` (`[was: 1]` for an old worker), 2.5
/// and later drop it and follow the master's reloads with `[failed: n]`.
pub fn parse_show_proc(text: &str) -> Result<ProcList, ShowProcError> {
    #[derive(PartialEq)]
    enum Section {
        Current,
        Old,
        Other,
    }
    let mut section = Section::Current;
    let mut relative_pid_column = false;
    let mut master = None;
    let (mut workers, mut old_workers) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            section = match comment.trim() {
                "workers" => Section::Current,
                "old workers" => Section::Old,
                c if c.starts_with("<PID>") => {
                    relative_pid_column = c.contains("<relative PID>");
                    Section::Current
                }
                _ => Section::Other,
            };
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(pid), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        if relative_pid_column {
            // `1`, or `[was: 1]` in two words.
            match words.next() {
                Some(w) if w.starts_with('[') && !w.ends_with(']') => {
                    words.next();
                }
                Some(_) => {}
                None => continue,
            }
        }
        let Some(reloads) = words.next() else {
            continue;
        };
        let (Ok(pid), Ok(reloads)) = (pid.parse::<u32>(), reloads.parse::<u32>()) else {
            continue;
        };
        match kind {
            "master" => {
                let failed_reloads = line
                    .split_once("[failed:")
                    .and_then(|(_, rest)| rest.split(']').next())
                    .and_then(|n| n.trim().parse().ok());
                master = Some(MasterProc {
                    pid,
                    reloads,
                    failed_reloads,
                });
            }
            "worker" if section == Section::Current => workers.push(WorkerProc { pid, reloads }),
            "worker" if section == Section::Old => old_workers.push(WorkerProc { pid, reloads }),
            _ => {}
        }
    }
    let master = master.ok_or_else(|| ShowProcError::NoMaster {
        answer: text.trim().to_string(),
    })?;
    Ok(ProcList {
        master,
        workers,
        old_workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `show proc` of HAProxy 2.6.12 while an old worker still holds a connection.
    const SHOW_PROC_RELOADED: &str =
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
        1405            master          2 [failed: 0]   0d00h05m09s     2.6.12-1+deb12u4\n\
        # workers\n\
        8790            worker          0               0d00h00m00s     2.6.12-1+deb12u4\n\
        # old workers\n\
        8704            worker          1               0d00h00m08s     2.6.12-1+deb12u4\n\
        # programs\n\n";

    /// `show proc` of HAProxy 2.6.12 after a failed reload (master in wait mode).
    const SHOW_PROC_FAILED: &str =
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
        14050           master          2 [failed: 1]   0d00h10m44s     2.6.12-1+deb12u4\n\
        # workers\n\
        32097           worker          1               0d00h00m10s     2.6.12-1+deb12u4\n\
        # programs\n\n";

    #[test]
    fn show_proc_parses() {
        let p = parse_show_proc(SHOW_PROC_RELOADED).unwrap();
        assert_eq!(
            p.master,
            MasterProc {
                pid: 1405,
                reloads: 2,
                failed_reloads: Some(0)
            }
        );
        assert_eq!(
            p.workers,
            vec![WorkerProc {
                pid: 8790,
                reloads: 0
            }]
        );
        assert_eq!(
            p.old_workers,
            vec![WorkerProc {
                pid: 8704,
                reloads: 1
            }]
        );
        let p = parse_show_proc(SHOW_PROC_FAILED).unwrap();
        assert_eq!(
            p.master,
            MasterProc {
                pid: 14050,
                reloads: 2,
                failed_reloads: Some(1)
            }
        );
        assert_eq!(
            p.workers,
            vec![WorkerProc {
                pid: 32097,
                reloads: 1
            }]
        );
        assert!(p.old_workers.is_empty());
        assert!(matches!(
            parse_show_proc(""),
            Err(ShowProcError::NoMaster { .. })
        ));
        assert!(matches!(
            parse_show_proc("Unknown command.\n"),
            Err(ShowProcError::NoMaster { .. })
        ));
    }

    /// `show proc` of HAProxy 2.2.9 (Debian 11) after one good reload.
    const SHOW_PROC_2_2: &str =
        "#<PID>          <type>          <relative PID>  <reloads>       <uptime>        <version>      \n\
        6554            master          0               1               0d00h00m03s     2.2.9-2+deb11u7\n\
        # workers\n\
        6659            worker          1               0               0d00h00m01s     2.2.9-2+deb11u7\n\
        # programs\n\n";

    /// The same master after a refused reload: no current worker, the previous one among
    /// the old workers with its relative pid as `[was: 1]`, still serving.
    const SHOW_PROC_2_2_REFUSED: &str =
        "#<PID>          <type>          <relative PID>  <reloads>       <uptime>        <version>      \n\
        6554            master          0               2               0d00h00m05s     2.2.9-2+deb11u7\n\
        # workers\n\
        # old workers\n\
        6659            worker          [was: 1]        1               0d00h00m03s     2.2.9-2+deb11u7\n\
        # programs\n\n";

    /// HAProxy 3.0.11 (Debian 13) after a refused reload.
    const SHOW_PROC_3_0_REFUSED: &str =
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
        7163            master          2 [failed: 1]   0d00h00m05s     3.0.11-1+deb13u5\n\
        # workers\n\
        7313            worker          1               0d00h00m03s     3.0.11-1+deb13u5\n\
        # programs\n\n";

    #[test]
    fn show_proc_of_2_2_has_a_relative_pid_column_and_no_failure_count() {
        let p = parse_show_proc(SHOW_PROC_2_2).unwrap();
        assert_eq!(
            p.master,
            MasterProc {
                pid: 6554,
                reloads: 1,
                failed_reloads: None
            }
        );
        assert_eq!(
            p.workers,
            vec![WorkerProc {
                pid: 6659,
                reloads: 0
            }]
        );
        assert!(!p.last_load_refused() && p.serving());
        let p = parse_show_proc(SHOW_PROC_2_2_REFUSED).unwrap();
        assert_eq!(p.master.reloads, 2);
        assert!(p.workers.is_empty());
        assert_eq!(
            p.old_workers,
            vec![WorkerProc {
                pid: 6659,
                reloads: 1
            }]
        );
        assert!(p.last_load_refused() && p.serving());
    }

    #[test]
    fn a_refusal_is_read_from_the_failure_count_where_there_is_one() {
        let p = parse_show_proc(SHOW_PROC_3_0_REFUSED).unwrap();
        assert_eq!(p.master.failed_reloads, Some(1));
        assert!(p.last_load_refused() && p.serving());
        let p = parse_show_proc(SHOW_PROC_RELOADED).unwrap();
        assert!(!p.last_load_refused() && p.serving());
        // 2.6 lists old workers that are only draining: they do not serve.
        let draining = "#<PID> <type> <reloads> <uptime> <version>\n1 master 3 [failed: 0] 0 x\n# workers\n# old workers\n5 worker 1 0 x\n";
        let p = parse_show_proc(draining).unwrap();
        assert!(!p.last_load_refused() && !p.serving());
    }

    proptest! {
        #[test]
        fn show_proc_parser_never_panics(text in "\\PC*(\n\\PC*){0,6}") {
            let _ = parse_show_proc(&text);
            let _ = parse_show_proc(&format!("1 master {text}"));
        }
    }
}
