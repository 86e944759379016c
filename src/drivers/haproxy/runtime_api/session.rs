//! An interactive session on a HAProxy process's stats socket (`prompt` mode) held open
//! between commands, each answer ending at the `> ` prompt (`StatsSocket::session` sends
//! a batch at once instead). The driver holds one
//! across a reload: an open CLI session keeps the retiring process alive (it lists as an
//! old worker) and answering after its successor took over, so its counters can be read
//! once it no longer serves new connections (HAProxy 2.2, 2.6 and 3.0 checked).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::client::{StatsError, StatsSocket, MAX_ANSWER_BYTES, PROMPT};

/// An open session; closed (`quit`) when dropped.
pub struct CliSession {
    stream: UnixStream,
    socket: StatsSocket,
    timeout: Duration,
}

impl CliSession {
    /// Connects to `socket` and enters prompt mode.
    pub fn open(socket: &StatsSocket, timeout: Duration) -> Result<CliSession, StatsError> {
        let stream = socket.connect()?;
        let mut session = CliSession {
            stream,
            socket: socket.clone(),
            timeout,
        };
        session.command("prompt")?;
        Ok(session)
    }

    /// Sends one command and returns its answer (without the prompt).
    pub fn command(&mut self, cmd: &str) -> Result<String, StatsError> {
        if cmd.contains(['\n', '\r', '\0', ';']) {
            return Err(StatsError::InvalidCommand {
                command: super::quote(cmd),
                reason: "it contains a line break or a command separator",
            });
        }
        let path = self.socket.path().to_path_buf();
        let send_err = |source| StatsError::Send {
            command: cmd.to_string(),
            path: path.clone(),
            source,
        };
        let limit = Some(self.timeout.max(Duration::from_millis(1)));
        self.stream.set_write_timeout(limit).map_err(send_err)?;
        self.stream
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(send_err)?;
        let deadline = Instant::now() + self.timeout;
        let mut answer = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while !(answer.ends_with(PROMPT.as_bytes()) || answer == b"> ") {
            let left = deadline.saturating_duration_since(Instant::now());
            let receive_err = |source| StatsError::Receive {
                command: cmd.to_string(),
                path: path.clone(),
                source,
            };
            if left.is_zero() {
                return Err(self.timed_out(cmd));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(receive_err)?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(receive_err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the session closed before the prompt",
                    )))
                }
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.len() > MAX_ANSWER_BYTES {
                        return Err(StatsError::TooLarge {
                            command: cmd.to_string(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(self.timed_out(cmd))
                }
                Err(e) => return Err(receive_err(e)),
            }
        }
        let body = &answer[..answer.len().saturating_sub(2)];
        Ok(String::from_utf8_lossy(body).into_owned())
    }

    fn timed_out(&self, cmd: &str) -> StatsError {
        StatsError::Timeout {
            command: cmd.to_string(),
            path: self.socket.path().to_path_buf(),
            timeout: self.timeout,
        }
    }
}

impl Drop for CliSession {
    fn drop(&mut self) {
        let _ = self.stream.write_all(b"quit\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::haproxy::process::Process;
    use crate::drivers::haproxy::test_support::*;

    #[test]
    fn a_held_session_reads_the_retired_process_after_a_reload() {
        let mut h = TestHaproxy::started();
        let socket = h.stats();
        let mut session = CliSession::open(&socket, Duration::from_secs(5)).unwrap();
        let pid_of = |info: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix("Pid: "))
                .map(str::to_string)
        };
        let before = pid_of(&session.command("show info").unwrap()).unwrap();
        // Two commands on one connection, each up to its prompt.
        assert!(session
            .command("show stat")
            .unwrap()
            .starts_with("# pxname"));
        h.write_config(&[h.port]);
        h.managed.reload().unwrap();
        // The new process answers on the socket path; the session is still the old one's.
        let now = pid_of(&socket.command("show info").unwrap()).unwrap();
        assert_ne!(now, before);
        let info = session.command("show info").unwrap();
        assert_eq!(pid_of(&info).as_deref(), Some(before.as_str()));
        assert!(info.contains("Stopping: 1"), "{info}");
        assert!(session.command("bad;command").is_err());
    }
}
