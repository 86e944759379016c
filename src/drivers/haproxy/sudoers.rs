//! The sudoers rule service mode needs (`libra-worker sudoers`): every command the worker
//! runs through the privilege prefix for one configuration, fully specified, no wildcards.
//! The list is built by the code that runs the steps (`LiveFiles`'s commands for the live
//! configuration, its backup, the log and the reference METRICS state; the start, stop
//! and reload commands as `process` runs them), so the rule and the worker cannot drift.

use std::path::Path;
use std::time::Duration;

use super::live_files::{LiveFileError, Step};
use super::{live_files_for, Paths};
use crate::config::{resolve_program, HaproxyMode, HaproxySettings};

/// What `libra-worker sudoers` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// No privileged step: the reason, for a person.
    NotNeeded(String),
    /// The sudoers text (a comment line, then the rule), ending in a newline.
    Needed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SudoersError {
    #[error(
        "haproxy.sudo is `{prefix}`, which is not sudo: this command writes sudo's rules only; \
         allow these commands in its own terms: {commands}"
    )]
    NotSudo { prefix: String, commands: String },
    #[error(
        "haproxy.sudo `{prefix}` runs the commands as another user or group; this command \
         writes rules for commands run as root only"
    )]
    NotRoot { prefix: String },
    #[error(
        "cannot tell which command `{command}` runs behind sudo (options other than the \
         haproxy.sudo prefix); write its rule by hand"
    )]
    Opaque { command: String },
    #[error(
        "'{0}' is not a user name this command writes into a sudoers rule (letters, digits, \
         '.', '_' and '-', not starting with '-')"
    )]
    BadUser(String),
    #[error(
        "`{program}` of `{command}` is found nowhere; a sudoers rule names commands by \
         absolute path: write it so in the configuration"
    )]
    NotFound { program: String, command: String },
    #[error("`{word}` cannot be written into a sudoers rule (it holds a control character)")]
    Unwritable { word: String },
    #[error(transparent)]
    Live(#[from] LiveFileError),
}

/// Options of sudo that take no value: a command written as `sudo -n -E cmd` runs `cmd`.
const SUDO_FLAGS: &[&str] = &["-n", "-E", "-H", "-S", "-k", "-P", "--non-interactive"];
/// Options that make sudo run the command as someone other than root.
const SUDO_RUNAS: &[&str] = &["-u", "-g", "--user", "--group"];

/// The rule `user` needs to run the worker on `settings` (loaded from `source`).
/// `user_is_root`: the worker will run as root, so the default prefix is none.
pub fn rule(
    settings: &HaproxySettings,
    source: &Path,
    user: &str,
    user_is_root: bool,
) -> Result<Rule, SudoersError> {
    if user.is_empty()
        || user.starts_with('-')
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(SudoersError::BadUser(user.to_string()));
    }
    let config = source.display().to_string().escape_debug().to_string();
    if settings.mode == HaproxyMode::Managed {
        return Ok(Rule::NotNeeded(format!(
            "{config}: managed mode runs HAProxy as the worker's own user; no sudoers rule is needed"
        )));
    }
    // The prefix as the worker will resolve it when `user` runs it.
    let mut settings = settings.clone();
    settings.sudo = settings.sudo_for(user_is_root);
    if settings.sudo.is_empty() {
        let why = if settings.sudo_setting.is_some() {
            "haproxy.sudo is empty"
        } else {
            "the worker runs as root"
        };
        return Ok(Rule::NotNeeded(format!(
            "{config}: {why}, so no step goes through sudo; no sudoers rule is needed"
        )));
    }
    let commands = commands(&settings)?;
    let program = Path::new(&settings.sudo[0]);
    if program.file_name().and_then(|n| n.to_str()) != Some("sudo") {
        return Err(SudoersError::NotSudo {
            prefix: settings.sudo.join(" "),
            commands: commands
                .iter()
                .map(|c| c.join(" "))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    if settings.sudo[1..].iter().any(|w| {
        SUDO_RUNAS.contains(&w.as_str()) || w.starts_with("--user=") || w.starts_with("--group=")
    }) {
        return Err(SudoersError::NotRoot {
            prefix: settings.sudo.join(" "),
        });
    }
    let written = commands
        .iter()
        .map(|c| {
            c.iter()
                .map(|w| escape(w))
                .collect::<Result<Vec<_>, _>>()
                .map(|words| words.join(" "))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule::Needed(format!(
        "# libra-worker {}: the privileged steps of service mode for {config}\n\
         {user} ALL=(root) NOPASSWD: {}\n",
        env!("CARGO_PKG_VERSION"),
        written.join(", \\\n    ")
    )))
}

/// Every command the worker of `settings` runs through `settings.sudo`, the prefix left
/// out, each once, in the order the steps first run them.
pub fn commands(settings: &HaproxySettings) -> Result<Vec<Vec<String>>, SudoersError> {
    // The timeout plays no part in the commands.
    let live = live_files_for(settings, Duration::from_secs(1));
    let paths = Paths::new(settings);
    let mut steps = vec![
        Step::Install(&paths.config),
        Step::Install(&paths.backup),
        Step::Remove(&paths.config),
        Step::Remove(&paths.backup),
        // The driver empties the service-mode log on DELETE (syslog keeps it open).
        Step::Truncate(&settings.logfile),
        Step::Read(&paths.config),
        Step::Read(&paths.backup),
        Step::Read(&settings.logfile),
    ];
    if let Some(reference) = &settings.reference_statsfile {
        steps.push(Step::Read(reference));
    }
    let mut out: Vec<Vec<String>> = Vec::new();
    for step in steps {
        out.extend(live.privileged_commands(step)?);
    }
    // As `process::from_settings` runs them.
    for command in [
        &settings.start_cmd,
        &settings.stop_cmd,
        &settings.reload_cmd,
    ] {
        let argv = settings.privileged(command);
        let mut run = behind_sudo(&settings.sudo, &argv)?;
        // `sudo -n service ...` written in the command: sudo finds `service` on its
        // secure path; the rule needs it absolute.
        if let Some(program) = run.first_mut() {
            let path = resolve_program(Path::new(program.as_str()));
            if !path.is_absolute() {
                return Err(SudoersError::NotFound {
                    program: program.clone(),
                    command: argv.join(" "),
                });
            }
            *program = path.display().to_string();
        }
        out.push(run);
    }
    let mut unique = Vec::new();
    for c in out {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    Ok(unique)
}

/// The command sudo runs for `argv` (which starts with the sudo program).
fn behind_sudo(prefix: &[String], argv: &[String]) -> Result<Vec<String>, SudoersError> {
    if let Some(rest) = argv.strip_prefix(prefix) {
        return Ok(rest.to_vec());
    }
    // Written with sudo already, with options of its own.
    let opaque = || SudoersError::Opaque {
        command: argv.join(" "),
    };
    let mut rest = argv.get(1..).ok_or_else(opaque)?;
    while let Some(word) = rest.first().filter(|w| w.starts_with('-')) {
        rest = &rest[1..];
        if word == "--" {
            break;
        }
        if !SUDO_FLAGS.contains(&word.as_str()) {
            return Err(opaque());
        }
    }
    if rest.is_empty() {
        return Err(opaque());
    }
    Ok(rest.to_vec())
}

/// `word` as a sudoers command or argument: sudoers' special characters and the
/// wildcard characters (which would match more than themselves) behind a backslash.
pub fn escape(word: &str) -> Result<String, SudoersError> {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if c.is_control() {
            return Err(SudoersError::Unwritable {
                word: word.escape_debug().to_string(),
            });
        }
        if matches!(
            c,
            '\\' | ',' | ':' | '=' | '#' | ' ' | '*' | '?' | '[' | ']' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::path::PathBuf;

    fn settings(dir: &Path, haproxy: &str) -> (Settings, PathBuf) {
        let path = dir.join("w.toml");
        std::fs::write(&path, format!("[haproxy]\n{haproxy}")).unwrap();
        (Settings::load_with_env(&path, &[]).unwrap(), path)
    }

    fn service(dir: &Path, extra: &str) -> String {
        let d = dir.display();
        format!(
            "mode = \"service\"\nstate_dir = \"{d}/state\"\nconfig_file = \"{d}/etc/haproxy.cfg\"\n\
             logfile = \"{d}/log/haproxy.log\"\nstart_cmd = \"/etc/init.d/haproxy start\"\n\
             stop_cmd = \"/etc/init.d/haproxy stop\"\nreload_cmd = \"/etc/init.d/haproxy reload\"\n{extra}"
        )
    }

    #[test]
    fn escapes_sudoers_special_characters() {
        assert_eq!(escape("/a/b.cfg").unwrap(), "/a/b.cfg");
        assert_eq!(
            escape(r"/x,y:z=w\v#*?[]! ").unwrap(),
            r"/x\,y\:z\=w\\v\#\*\?\[\]\!\ "
        );
        assert!(escape("a\nb").is_err());
    }

    #[test]
    fn service_mode_lists_every_step_fully_specified() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let (s, path) = settings(dir.path(), &service(dir.path(), ""));
        let Rule::Needed(text) = rule(&s.haproxy, &path, "libra", false).unwrap() else {
            panic!("a rule is needed");
        };
        let d = dir.path().display();
        assert!(text.starts_with("# libra-worker "), "{text}");
        assert!(text.contains("\nlibra ALL=(root) NOPASSWD: "), "{text}");
        for needed in [
            format!("-- {d}/state/haproxy.cfg.staged "),
            format!("-- {d}/state/haproxy.cfg.BKUP.staged "),
            format!("rm -f -- {d}/etc/haproxy.cfg,"),
            format!("rm -f -- {d}/etc/haproxy.cfg.BKUP,"),
            format!("cp -- /dev/null {d}/log/haproxy.log,"),
            format!("cat -- {d}/etc/haproxy.cfg,"),
            format!("cat -- {d}/log/haproxy.log,"),
            "/etc/init.d/haproxy start,".to_string(),
            "/etc/init.d/haproxy stop,".to_string(),
        ] {
            assert!(text.contains(&needed), "{needed} in:\n{text}");
        }
        assert!(text.ends_with("/etc/init.d/haproxy reload\n"), "{text}");
        assert!(!text.contains('*'), "no wildcard: {text}");
        // The rule for root, or with an empty prefix: none.
        assert!(matches!(
            rule(&s.haproxy, &path, "root", true).unwrap(),
            Rule::NotNeeded(_)
        ));
        let (s, path) = settings(dir.path(), &service(dir.path(), "sudo = \"\"\n"));
        let Rule::NotNeeded(why) = rule(&s.haproxy, &path, "libra", false).unwrap() else {
            panic!("no rule with an empty prefix");
        };
        assert!(why.contains("haproxy.sudo is empty"), "{why}");
    }

    #[test]
    fn the_listed_commands_are_the_ones_the_steps_run() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = settings(
            dir.path(),
            &service(dir.path(), "sudo = \"/usr/bin/sudo -n\"\n"),
        );
        let listed = commands(&s.haproxy).unwrap();
        let live = live_files_for(&s.haproxy, Duration::from_secs(1));
        let config = &s.haproxy.config_file;
        let install = live.privileged_commands(Step::Install(config)).unwrap();
        assert!(!install.is_empty());
        for c in install {
            assert!(listed.contains(&c), "{c:?} in {listed:?}");
        }
        // A command written with sudo already is listed without it.
        let mut s2 = s.haproxy.clone();
        s2.reload_cmd = [
            "/usr/bin/sudo",
            "-n",
            "/usr/sbin/service",
            "haproxy",
            "reload",
        ]
        .map(String::from)
        .to_vec();
        let listed = commands(&s2).unwrap();
        assert!(listed.contains(
            &["/usr/sbin/service", "haproxy", "reload"]
                .map(String::from)
                .to_vec()
        ));
        // Written bare after sudo: listed by absolute path, or refused when found nowhere.
        s2.reload_cmd = ["/usr/bin/sudo", "-n", "sh", "-c", "x"]
            .map(String::from)
            .to_vec();
        let listed = commands(&s2).unwrap();
        assert!(
            listed
                .iter()
                .any(|c| c[0].ends_with("/sh") && c[0].starts_with('/')),
            "{listed:?}"
        );
        s2.reload_cmd = ["/usr/bin/sudo", "-n", "no-such-program-x"]
            .map(String::from)
            .to_vec();
        assert!(matches!(commands(&s2), Err(SudoersError::NotFound { .. })));
        s2.reload_cmd = ["/usr/bin/sudo", "-u", "haproxy", "x"]
            .map(String::from)
            .to_vec();
        assert!(matches!(commands(&s2), Err(SudoersError::Opaque { .. })));
    }

    #[test]
    fn managed_mode_and_odd_prefixes_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let (s, path) = settings(dir.path(), "mode = \"managed\"\n");
        let Rule::NotNeeded(why) = rule(&s.haproxy, &path, "libra", false).unwrap() else {
            panic!("managed mode needs no rule");
        };
        assert!(why.contains("managed mode"), "{why}");
        let (s, path) = settings(dir.path(), &service(dir.path(), "sudo = \"doas\"\n"));
        let err = rule(&s.haproxy, &path, "libra", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not sudo") && err.contains("rm -f"), "{err}");
        let (s, path) = settings(
            dir.path(),
            &service(dir.path(), "sudo = \"sudo -n -u haproxy\"\n"),
        );
        assert!(matches!(
            rule(&s.haproxy, &path, "libra", false),
            Err(SudoersError::NotRoot { .. })
        ));
        let (s, path) = settings(dir.path(), &service(dir.path(), ""));
        for bad in ["", "-x", "%admin", "a b", "a,b"] {
            assert!(matches!(
                rule(&s.haproxy, &path, bad, false),
                Err(SudoersError::BadUser(_))
            ));
        }
    }
}
