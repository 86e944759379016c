//! The command line: `run`, `check-config`, `sudoers` (the sudoers rule service mode
//! needs), `submit` (a Gearman client that submits one job and prints the answer) and
//! `haproxy stop`. The load generator and bench suite are `libra-bench` (`bench/`), not
//! part of this binary. Exit codes: 0 success, 1 a runtime failure, 2 a usage or
//! configuration error.

use std::time::Duration;

use clap::Parser;

pub use args::{Cli, Cmd, HaproxyCmd};

mod args;

use crate::config::Settings;
use crate::gearman::client::{Client, JobOutcome};

/// Parses the command line and runs it; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run { config } => match Settings::load(&config) {
            Ok(settings) => match crate::worker::run(settings, Some(config)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("libra-worker: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("libra-worker: configuration error: {e}");
                2
            }
        },
        Cmd::CheckConfig { config } => check_config(&config),
        Cmd::Sudoers { config, user } => sudoers(&config, user),
        Cmd::Submit {
            server,
            function,
            file,
            json,
            timeout,
            compact,
            action,
        } => {
            let body = match (file, json, action) {
                (Some(path), _, _) => match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("libra-worker: cannot read {}: {e}", path.display());
                        return 2;
                    }
                },
                (None, Some(text), _) => text.into_bytes(),
                (None, None, Some(action)) => serde_json::json!({ "hpcs_action": action })
                    .to_string()
                    .into_bytes(),
                (None, None, None) => {
                    eprintln!("libra-worker: give an ACTION, --file or --json");
                    return 2;
                }
            };
            let function = function
                .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
            submit(
                &server,
                &function,
                body,
                Duration::from_secs(timeout),
                compact,
            )
        }
        Cmd::Haproxy {
            command: HaproxyCmd::Stop { config },
        } => match Settings::load(&config) {
            Ok(settings) => match crate::drivers::haproxy::stop_managed(&settings.haproxy) {
                Ok(msg) => {
                    println!("{msg}");
                    0
                }
                Err(e) => {
                    eprintln!("libra-worker: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("libra-worker: configuration error: {e}");
                2
            }
        },
    }
}

fn check_config(path: &std::path::Path) -> i32 {
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("libra-worker: configuration error: {e}");
            return 2;
        }
    };
    if let Some(files) = &settings.gearman.tls {
        if let Err(e) = crate::transport::tls_connector(files) {
            eprintln!("libra-worker: configuration error: {e}");
            return 2;
        }
    }
    for w in &settings.warnings {
        eprintln!("note: {w}");
    }
    // What the HAProxy driver will use, as comments above the configuration (which stays
    // valid TOML).
    let mut haproxy = String::new();
    if settings.worker.driver == crate::config::DriverKind::Haproxy {
        use crate::drivers::haproxy::capabilities::Capabilities;
        match Capabilities::ask(&settings.haproxy.binary) {
            Ok(caps) => {
                haproxy.push_str(&format!(
                    "# HAProxy {} at {}\n",
                    caps.release,
                    settings.haproxy.binary.display()
                ));
                for (what, has) in caps.describe() {
                    let yes = if has { "yes" } else { "no" };
                    haproxy.push_str(&format!("# {what}: {yes}\n"));
                }
            }
            Err(e) => {
                eprintln!("libra-worker: configuration error: haproxy.binary: {e}");
                return 2;
            }
        }
    }
    match toml::to_string(&settings.effective()) {
        Ok(text) => {
            print!("{haproxy}{text}");
            0
        }
        Err(e) => {
            eprintln!("libra-worker: cannot print the configuration: {e}");
            1
        }
    }
}

fn sudoers(path: &std::path::Path, user: Option<String>) -> i32 {
    use crate::drivers::haproxy::sudoers::{rule, Rule};
    use nix::unistd::{geteuid, User};
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("libra-worker: configuration error: {e}");
            return 2;
        }
    };
    let (name, is_root) = match user {
        Some(name) => {
            // A user not created yet is not root.
            let root = name == "root"
                || User::from_name(&name)
                    .ok()
                    .flatten()
                    .is_some_and(|u| u.uid.is_root());
            (name, root)
        }
        None => match User::from_uid(geteuid()) {
            Ok(Some(u)) => (u.name, u.uid.is_root()),
            _ => {
                eprintln!("libra-worker: cannot tell the current user's name; give --user NAME");
                return 2;
            }
        },
    };
    match rule(&settings.haproxy, path, &name, is_root) {
        Ok(Rule::Needed(text)) => {
            print!("{text}");
            0
        }
        Ok(Rule::NotNeeded(why)) => {
            println!("# {why}");
            0
        }
        Err(e) => {
            eprintln!("libra-worker: {e}");
            2
        }
    }
}

fn submit(server: &str, function: &str, body: Vec<u8>, timeout: Duration, compact: bool) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("libra-worker: {e}");
            return 1;
        }
    };
    let outcome = rt.block_on(async {
        let mut client = Client::connect(server).await?;
        client.submit(function, body, timeout).await
    });
    match outcome {
        Ok(JobOutcome::Complete(data)) => {
            let text = match serde_json::from_slice::<serde_json::Value>(&data) {
                Ok(v) if compact => v.to_string(),
                Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
                Err(_) => String::from_utf8_lossy(&data).into_owned(),
            };
            println!("{text}");
            0
        }
        Ok(JobOutcome::Fail) => {
            eprintln!("libra-worker: the job failed (WORK_FAIL)");
            1
        }
        Ok(JobOutcome::Exception(data)) => {
            eprintln!(
                "libra-worker: the job raised an exception: {}",
                String::from_utf8_lossy(&data)
            );
            1
        }
        Err(e) => {
            eprintln!("libra-worker: {e}");
            1
        }
    }
}
