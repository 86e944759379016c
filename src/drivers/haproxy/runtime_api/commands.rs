//! What the driver asks of HAProxy's runtime API, as methods of the client: the reads
//! (`show stat`, `show info`, `show servers state`) and the server changes (`set server
//! addr|weight`, `enable|disable server`, `enable health`, `add|del server`, `enable
//! dynamic-cookie`). Names and options are checked before they are written into a command
//! line, so that no value can smuggle in a second command.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::client::{StatsError, StatsSocket};
use super::quote;
use super::server_states::{parse_server_health, ServerHealth};
use super::stat_csv::{
    parse_info, parse_runtime_answer, parse_servers_state, parse_stat, AnswerError, StatRow,
};

/// What a backend or server name may hold (as HAProxy's configuration accepts it).
const NAME_RULE: &str =
    "backend and server names may hold only letters, digits, '-', '_', '.' and ':'";

impl StatsSocket {
    /// `show stat`: one row per frontend, backend and server.
    pub fn show_stat(&self) -> Result<Vec<StatRow>, StatsError> {
        self.read("show stat", parse_stat)
    }

    /// `show stat` of the backends' own rows only (`BACKEND`, no server): what billing
    /// reads, two rows instead of one per server.
    pub(crate) fn show_stat_backends(&self) -> Result<Vec<StatRow>, StatsError> {
        // `-1 <types> -1`: every proxy, type 2 = backends (1 frontends, 4 servers), every
        // server; the same on 2.2, 2.6 and 3.0.
        self.read("show stat -1 2 -1", parse_stat)
    }

    /// Whether each server takes traffic, from `show servers state`: what STATS reads
    /// (`server_states` says why not `show stat`).
    pub(crate) fn server_health(&self) -> Result<Vec<ServerHealth>, StatsError> {
        self.read("show servers state", parse_server_health)
    }

    /// `show info`: `Pid`, `Uptime_sec`, `CurrConns`, ... as text.
    pub fn show_info(&self) -> Result<BTreeMap<String, String>, StatsError> {
        self.read("show info", parse_info)
    }

    /// `show servers state`: the text to save into the `server-state-file` before a reload,
    /// so that server health and runtime changes survive it.
    pub fn show_servers_state(&self) -> Result<String, StatsError> {
        self.read("show servers state", parse_servers_state)
    }

    /// `set server <b>/<s> addr <ip> port <p>`.
    // One command per connection: the tests' way; the driver sends batches.
    #[cfg(test)]
    pub(crate) fn set_server_addr(
        &self,
        backend: &str,
        server: &str,
        addr: IpAddr,
        port: u16,
    ) -> Result<String, StatsError> {
        self.runtime(&line::set_server_addr(backend, server, addr, port)?)
    }

    /// `set server <b>/<s> weight <w>`; HAProxy refuses weights above 256.
    // One command per connection: the tests' way; the driver sends batches.
    #[cfg(test)]
    pub(crate) fn set_server_weight(
        &self,
        backend: &str,
        server: &str,
        weight: u16,
    ) -> Result<String, StatsError> {
        self.runtime(&line::set_server_weight(backend, server, weight)?)
    }

    /// `enable server <b>/<s>` (leaves maintenance).
    // One command per connection: the tests' way; the driver sends batches.
    #[cfg(test)]
    pub(crate) fn enable_server(&self, backend: &str, server: &str) -> Result<String, StatsError> {
        self.runtime(&line::enable_server(backend, server)?)
    }

    /// `disable server <b>/<s>` (enters maintenance).
    // One command per connection: the tests' way; the driver sends batches.
    #[cfg(test)]
    pub(crate) fn disable_server(&self, backend: &str, server: &str) -> Result<String, StatsError> {
        self.runtime(&line::disable_server(backend, server)?)
    }

    /// `enable health <b>/<s>`: a server added with `check` has its checks off until this.
    // One command per connection: the tests' way; the driver sends batches.
    #[cfg(test)]
    pub(crate) fn enable_health(&self, backend: &str, server: &str) -> Result<String, StatsError> {
        self.runtime(&line::enable_health(backend, server)?)
    }

    /// `enable dynamic-cookie backend <b>`: a server added at run time gets its cookie only
    /// once this is (re)enabled.
    // One command per connection: the tests' way; the driver sends batches.
    #[cfg(test)]
    pub(crate) fn enable_dynamic_cookie(&self, backend: &str) -> Result<String, StatsError> {
        self.runtime(&line::enable_dynamic_cookie(backend)?)
    }

    /// `add server <b>/<s> <addr>:<port> <options>`. HAProxy 2.6 creates it in maintenance
    /// (follow with `enable_server`) and refuses `cookie` on added servers.
    // One command per connection: the tests' way; the driver sends batches.
    #[cfg(test)]
    pub(crate) fn add_server(
        &self,
        backend: &str,
        server: &str,
        addr: IpAddr,
        port: u16,
        options: &[&str],
    ) -> Result<String, StatsError> {
        self.runtime(&line::add_server(backend, server, addr, port, options)?)
    }

    /// `del server <b>/<s>`; HAProxy deletes only servers in maintenance without connections.
    pub(crate) fn del_server(&self, backend: &str, server: &str) -> Result<String, StatsError> {
        self.runtime(&line::del_server(backend, server)?)
    }

    /// Runs `batch` in one pipelined session (see `StatsSocket::session`): one connection
    /// and one round trip for any number of commands. Each command's answer comes back
    /// parsed, in order; `Err` only when the session itself failed.
    pub(crate) fn run_batch(
        &self,
        batch: &Batch,
    ) -> Result<Vec<Result<String, StatsError>>, StatsError> {
        let mut lines = Vec::with_capacity(batch.lines.len() + 1);
        // Errors answer `[3]: ...` from here on, for the whole session.
        lines.push("set severity-output number".to_string());
        lines.extend(batch.lines.iter().cloned());
        let answers = self.session(&lines)?;
        Ok(batch
            .lines
            .iter()
            .zip(answers.iter().skip(1))
            .map(|(cmd, answer)| {
                parse_runtime_answer(answer).map_err(|source| StatsError::Refused {
                    command: cmd.clone(),
                    source,
                })
            })
            .collect())
    }

    /// Sends a read-only command and parses its answer.
    fn read<T>(
        &self,
        cmd: &'static str,
        parse: impl FnOnce(&str) -> Result<T, AnswerError>,
    ) -> Result<T, StatsError> {
        let answer = self.command(cmd)?;
        parse(&answer).map_err(|source| StatsError::Unexpected {
            command: cmd.into(),
            source,
        })
    }

    /// Runs a command with severity-tagged output, so HAProxy's errors become `Refused`.
    fn runtime(&self, cmd: &str) -> Result<String, StatsError> {
        let answer = self.command(&format!("set severity-output number; {cmd}"))?;
        parse_runtime_answer(&answer).map_err(|source| StatsError::Refused {
            command: cmd.to_string(),
            source,
        })
    }
}

/// Server changes to send in one pipelined session (`StatsSocket::run_batch`), each
/// line built and checked by `line`.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    lines: Vec<String>,
}

impl Batch {
    /// Appends a command line; returns its position among the batch's answers.
    pub(crate) fn push(&mut self, line: String) -> usize {
        self.lines.push(line);
        self.lines.len() - 1
    }

    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// The command lines of the server changes, names and options checked, for one command
/// (`StatsSocket::runtime`) or a batch alike.
pub(crate) mod line {
    use super::*;

    pub(crate) fn set_server_addr(
        backend: &str,
        server: &str,
        addr: IpAddr,
        port: u16,
    ) -> Result<String, StatsError> {
        Ok(format!(
            "set server {} addr {addr} port {port}",
            server_ref(backend, server)?
        ))
    }

    pub(crate) fn set_server_weight(
        backend: &str,
        server: &str,
        weight: u16,
    ) -> Result<String, StatsError> {
        Ok(format!(
            "set server {} weight {weight}",
            server_ref(backend, server)?
        ))
    }

    pub(crate) fn enable_server(backend: &str, server: &str) -> Result<String, StatsError> {
        Ok(format!("enable server {}", server_ref(backend, server)?))
    }

    pub(crate) fn disable_server(backend: &str, server: &str) -> Result<String, StatsError> {
        Ok(format!("disable server {}", server_ref(backend, server)?))
    }

    pub(crate) fn enable_health(backend: &str, server: &str) -> Result<String, StatsError> {
        Ok(format!("enable health {}", server_ref(backend, server)?))
    }

    pub(crate) fn enable_dynamic_cookie(backend: &str) -> Result<String, StatsError> {
        if !valid_name(backend) {
            return Err(StatsError::InvalidCommand {
                command: quote(backend),
                reason: NAME_RULE,
            });
        }
        Ok(format!("enable dynamic-cookie backend {backend}"))
    }

    pub(crate) fn add_server(
        backend: &str,
        server: &str,
        addr: IpAddr,
        port: u16,
        options: &[&str],
    ) -> Result<String, StatsError> {
        let mut cmd = format!(
            "add server {} {}",
            server_ref(backend, server)?,
            socket_addr(addr, port)
        );
        for option in options {
            if option.is_empty()
                || option
                    .chars()
                    .any(|c| !c.is_ascii_graphic() || matches!(c, ';' | '\\' | '#' | '"' | '\''))
            {
                return Err(StatsError::InvalidCommand {
                    command: quote(&cmd),
                    reason: "a server option is empty or not a plain word",
                });
            }
            cmd.push(' ');
            cmd.push_str(option);
        }
        Ok(cmd)
    }

    pub(crate) fn del_server(backend: &str, server: &str) -> Result<String, StatsError> {
        Ok(format!("del server {}", server_ref(backend, server)?))
    }
}

/// A name HAProxy would accept in its configuration (letters, digits, `-`, `_`, `.`, `:`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// `<backend>/<server>`, refusing names HAProxy would not accept in its configuration, so
/// no value can smuggle in a second command.
fn server_ref(backend: &str, server: &str) -> Result<String, StatsError> {
    if valid_name(backend) && valid_name(server) {
        Ok(format!("{backend}/{server}"))
    } else {
        Err(StatsError::InvalidCommand {
            command: quote(&format!("{backend}/{server}")),
            reason: NAME_RULE,
        })
    }
}

fn socket_addr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::haproxy::process::poll::poll_until;
    use crate::drivers::haproxy::process::Process;
    use crate::drivers::haproxy::test_support::*;
    use std::time::Duration;

    #[test]
    fn names_cannot_smuggle_commands() {
        let socket = StatsSocket::new("/nonexistent/stats.sock", Duration::from_secs(1));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for (backend, server) in [
            ("b; shutdown frontend x", "s"),
            ("b", "s x"),
            ("", "s"),
            ("b", "s/t"),
            ("b", "s\n"),
        ] {
            let err = socket.set_server_weight(backend, server, 1).unwrap_err();
            assert!(
                matches!(err, StatsError::InvalidCommand { .. }),
                "{backend:?}/{server:?}: {err:?}"
            );
        }
        let err = socket
            .add_server("b", "s", ip, 80, &["weight", "1;", "shutdown"])
            .unwrap_err();
        assert!(matches!(err, StatsError::InvalidCommand { .. }), "{err:?}");
        let err = socket
            .enable_dynamic_cookie("b; shutdown frontend x")
            .unwrap_err();
        assert!(matches!(err, StatsError::InvalidCommand { .. }), "{err:?}");
        assert_eq!(socket_addr("::1".parse().unwrap(), 80), "[::1]:80");
    }

    fn row<'a>(rows: &'a [StatRow], px: &str, sv: &str) -> &'a StatRow {
        rows.iter()
            .find(|r| r.pxname() == px && r.svname() == sv)
            .unwrap_or_else(|| panic!("no {px}/{sv} in {rows:?}"))
    }

    fn wait_status(socket: &StatsSocket, server: &str, want: &str) {
        let mut rows = Vec::new();
        let reached = poll_until(Duration::from_secs(15), Duration::from_millis(20), || {
            rows = socket.show_stat().unwrap();
            (row(&rows, "x-servers", server).status() == want).then_some(())
        });
        assert!(
            reached.is_some(),
            "{server} never {want}: {:?}",
            row(&rows, "x-servers", server)
        );
    }

    /// STATS reads `show servers state` (`server_states`); it must call a server up
    /// exactly when `show stat`'s status does.
    fn health_agrees(socket: &StatsSocket) {
        let by_stat: Vec<(String, bool)> = socket
            .show_stat()
            .unwrap()
            .iter()
            .filter(|r| r.get("pxname") == Some("x-servers") && r.svname() != "BACKEND")
            .map(|r| {
                let status = r.get("status").unwrap_or("");
                (
                    r.svname().to_string(),
                    crate::drivers::haproxy::serves(status),
                )
            })
            .collect();
        let by_state: Vec<(String, bool)> = socket
            .server_health()
            .unwrap()
            .into_iter()
            .filter(|h| h.backend == "x-servers")
            .map(|h| (h.server, h.serves))
            .collect();
        assert_eq!(by_state, by_stat);
    }

    #[test]
    fn real_haproxy_runtime_api() {
        let mut h = TestHaproxy::started();
        let socket = h.stats();
        let local: IpAddr = "127.0.0.1".parse().unwrap();

        let info = socket.show_info().unwrap();
        let worker = h.managed.show_proc().unwrap().workers[0].pid;
        assert_eq!(info.get("Pid"), Some(&worker.to_string()));
        assert!(
            info.get("Version").is_some_and(|v| v.starts_with("2.6")),
            "{info:?}"
        );

        let rows = socket.show_stat().unwrap();
        assert_eq!(row(&rows, "x-in", "FRONTEND").get("type"), Some("0"));
        assert_eq!(row(&rows, "x-servers", "BACKEND").get("type"), Some("1"));
        assert_eq!(
            row(&rows, "x-servers", "id-1").get("addr"),
            Some(format!("127.0.0.1:{}", h.backend).as_str())
        );
        wait_status(&socket, "id-1", "UP");
        health_agrees(&socket);
        let bout = || {
            row(&socket.show_stat().unwrap(), "x-servers", "BACKEND")
                .get_u64("bout")
                .unwrap()
        };
        let bout_before = bout();
        assert!(serves(h.port));
        assert!(
            poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
                (bout() >= bout_before + 4).then_some(())
            })
            .is_some(),
            "bout did not count the echoed bytes"
        );

        assert_eq!(
            socket.set_server_weight("x-servers", "id-1", 3).unwrap(),
            ""
        );
        let err = socket
            .set_server_weight("x-servers", "id-1", 300)
            .unwrap_err();
        assert_eq!(err.to_string(), "HAProxy refused `set server x-servers/id-1 weight 300`: Absolute weight can only be between 0 and 256 inclusive.");
        let err = socket
            .set_server_addr("x-servers", "id-9", local, 80)
            .unwrap_err();
        assert!(
            matches!(&err, StatsError::Refused { source: AnswerError::Error { message, .. }, .. } if message == "No such server."),
            "{err:?}"
        );
        let moved = socket
            .set_server_addr("x-servers", "id-1", "127.0.0.2".parse().unwrap(), 81)
            .unwrap();
        assert!(moved.contains("port changed from"), "{moved}");
        socket
            .set_server_addr("x-servers", "id-1", local, h.backend)
            .unwrap();

        // Maintenance set at run time (`disable server`, as the driver sets it) survives a
        // reload through the server-state file, written with the driver's atomic write.
        socket.disable_server("x-servers", "id-1").unwrap();
        wait_status(&socket, "id-1", "MAINT");
        health_agrees(&socket);
        let state = socket.show_servers_state().unwrap();
        crate::drivers::haproxy::files::write_atomic(
            &h.path("server-state"),
            state.as_bytes(),
            crate::drivers::haproxy::files::PRIVATE_MODE,
        )
        .unwrap();
        let saved = std::fs::read_to_string(h.path("server-state")).unwrap();
        assert!(
            saved.starts_with("1\n# be_id be_name srv_id srv_name"),
            "{saved}"
        );
        h.managed.reload().unwrap();
        let after = StatsSocket::new(h.path("stats.sock"), Duration::from_secs(2));
        wait_status(&after, "id-1", "MAINT");
        after.enable_server("x-servers", "id-1").unwrap();
        wait_status(&after, "id-1", "UP");

        // Servers added at run time start in maintenance; only those in maintenance go.
        assert_eq!(
            after
                .add_server(
                    "x-servers",
                    "id-2",
                    local,
                    h.backend,
                    &["weight", "2", "check"]
                )
                .unwrap(),
            "New server registered."
        );
        wait_status(&after, "id-2", "MAINT");
        health_agrees(&after);
        let err = after
            .add_server("x-servers", "id-3", local, h.backend, &["cookie", "id-3"])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("'cookie' option is not accepted for dynamic server"),
            "{err}"
        );
        after.enable_server("x-servers", "id-2").unwrap();
        // In rotation, its health checks still off: `no check`, not UP.
        health_agrees(&after);
        after.enable_health("x-servers", "id-2").unwrap();
        wait_status(&after, "id-2", "UP");
        health_agrees(&after);
        // A server whose checks fail: DOWN in both readings.
        let closed = free_port();
        after
            .add_server(
                "x-servers",
                "id-4",
                local,
                closed,
                &["check", "inter", "100"],
            )
            .unwrap();
        after.enable_server("x-servers", "id-4").unwrap();
        after.enable_health("x-servers", "id-4").unwrap();
        wait_status(&after, "id-4", "DOWN");
        health_agrees(&after);
        after.disable_server("x-servers", "id-4").unwrap();
        after.del_server("x-servers", "id-4").unwrap();
        let err = after.del_server("x-servers", "id-2").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("Only servers in maintenance mode can be deleted."),
            "{err}"
        );
        after.disable_server("x-servers", "id-2").unwrap();
        assert_eq!(
            after.del_server("x-servers", "id-2").unwrap(),
            "Server deleted."
        );
        assert!(after
            .show_stat()
            .unwrap()
            .iter()
            .all(|r| r.svname() != "id-2"));
        let err = after.command("bogus").map(|a| parse_runtime_answer(&a));
        assert!(matches!(err, Ok(Err(_))), "{err:?}");

        h.managed.stop().unwrap();
        assert!(after.show_stat().unwrap_err().is_not_running());
    }
}
