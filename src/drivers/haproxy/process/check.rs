//! What can be known about a configuration before HAProxy runs it: `haproxy -c` (syntax,
//! names that do not resolve, ...), and whether its listen addresses can be bound, which
//! `haproxy -c` cannot see.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::super::alerts::messages;
use super::super::command;
use super::ProcessError;

/// Bound on `haproxy -c` (it resolves server host names, which can be slow).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks `config` with `haproxy -c -f`. On failure the error carries HAProxy's own
/// `[ALERT]` and `[WARNING]` lines, trimmed and joined with `; `.
pub fn validate(binary: &Path, config: &Path) -> Result<(), ProcessError> {
    validate_with_timeout(binary, config, DEFAULT_CHECK_TIMEOUT)
}

/// `validate`, bounded by `timeout`.
pub fn validate_with_timeout(
    binary: &Path,
    config: &Path,
    timeout: Duration,
) -> Result<(), ProcessError> {
    check_config(binary, config, timeout).map(drop)
}

/// `haproxy -c -f config`: on success HAProxy's `[ALERT]` and `[WARNING]` lines about a
/// configuration it accepts (the driver does not act on them; tests hold rendered
/// configurations to none), on failure `ProcessError::Invalid` with those lines.
pub(crate) fn check_config(
    binary: &Path,
    config: &Path,
    timeout: Duration,
) -> Result<Vec<String>, ProcessError> {
    let argv = [
        binary.as_os_str(),
        "-c".as_ref(),
        "-f".as_ref(),
        config.as_os_str(),
    ]
    .iter()
    .map(|a| a.to_string_lossy().into_owned())
    .collect::<Vec<_>>();
    let out = command::run_unchecked(&argv, timeout).map_err(ProcessError::Check)?;
    // The alerts say why; warnings (a timeout of 0, say) come after them.
    let mut lines = messages(&out.output, None, &["[ALERT]"]);
    lines.extend(messages(&out.output, None, &["[WARNING]"]));
    if out.status.success() {
        return Ok(lines);
    }
    let messages = if lines.is_empty() {
        format!(
            "`{}` failed ({}): {}",
            command::display(&argv),
            out.status,
            out.output
        )
    } else {
        lines.join("; ")
    };
    Err(ProcessError::Invalid { messages })
}

/// Checks that HAProxy could bind each of `addrs`, binding them the way it does
/// (SO_REUSEADDR and SO_REUSEPORT). Ports the running HAProxy holds pass (it listens with
/// SO_REUSEPORT as the same user), so every listen address of a new configuration can be
/// given. A reload that fails to bind leaves the old frontends refusing connections for
/// ~2 s, so a port taken by another process is better refused before reloading.
pub fn check_bindable(addrs: &[SocketAddr]) -> Result<(), ProcessError> {
    use socket2::{Domain, Socket, Type};
    for &addr in addrs {
        let bind = || -> std::io::Result<()> {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.bind(&addr.into())
        };
        bind().map_err(|source| ProcessError::PortUnavailable { addr, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::haproxy::command::CommandError;
    use crate::drivers::haproxy::process::Process;
    use crate::drivers::haproxy::render::EMPTY_SERVER_STATE;
    use crate::drivers::haproxy::test_support::*;
    use std::net::TcpListener;

    #[test]
    fn validate_passes_haproxy_alerts_through() {
        let h = TestHaproxy::new();
        validate(&haproxy(), &h.path("haproxy.cfg")).unwrap();
        let bad = h.path("bad.cfg");
        std::fs::write(
            &bad,
            config_text(h.dir.path(), &[h.port], h.backend)
                .replace("balance roundrobin", "balance bogus")
                + "    bogusline here\n",
        )
        .unwrap();
        let err = validate(&haproxy(), &bad).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProcessError::Invalid { .. }), "{err:?}");
        assert!(
            text.starts_with("HAProxy rejected the configuration: balance only supports"),
            "{text}"
        );
        assert!(text.contains("[HAProxy said: [ALERT]"), "{text}");
        assert!(
            text.contains("balance only supports 'roundrobin'"),
            "{text}"
        );
        assert!(
            text.contains("unknown keyword 'bogusline' in 'backend' section"),
            "{text}"
        );
        assert!(!text.contains("[NOTICE]"), "{text}");
        let err = validate(Path::new("/nonexistent/haproxy"), &bad).unwrap_err();
        assert!(
            matches!(err, ProcessError::Check(CommandError::Spawn { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn check_config_reports_warnings_of_an_accepted_configuration() {
        let h = TestHaproxy::new();
        // Without it HAProxy warns that it cannot load the server state.
        std::fs::write(h.path("server-state"), EMPTY_SERVER_STATE).unwrap();
        let said = check_config(&haproxy(), &h.path("haproxy.cfg"), DEFAULT_CHECK_TIMEOUT);
        assert_eq!(said.unwrap(), Vec::<String>::new());
        let warned = h.path("warned.cfg");
        let text = config_text(h.dir.path(), &[h.port], h.backend)
            .replace("timeout client 30s", "timeout client 0");
        std::fs::write(&warned, text).unwrap();
        let said = check_config(&haproxy(), &warned, DEFAULT_CHECK_TIMEOUT).unwrap();
        assert!(
            !said.is_empty() && said.iter().all(|l| l.starts_with("[WARNING]")),
            "{said:?}"
        );
        assert!(said.iter().any(|l| l.contains("timeout")), "{said:?}");
    }

    #[test]
    fn check_bindable_sees_ports_of_other_processes() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = taken.local_addr().unwrap();
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        check_bindable(&[free]).unwrap();
        let err = check_bindable(&[free, taken_addr]).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot listen on {taken_addr}: Address already in use"
            )),
            "{err}"
        );
        // A port our own HAProxy listens on passes: HAProxy shares it (SO_REUSEPORT).
        let mut h = TestHaproxy::started();
        let ours = ([127, 0, 0, 1], h.port).into();
        check_bindable(&[ours]).unwrap();
        h.write_config(&[h.port, free.port()]);
        h.managed.reload().unwrap();
        assert!(serves(free.port()));
    }
}
