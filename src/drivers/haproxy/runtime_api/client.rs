//! The Unix-socket client of HAProxy's runtime API, for the stats socket and the master CLI
//! alike: one command per connection, the answer read to EOF and bounded in size, every
//! step (connect, send, the whole read) bounded by one timeout; or many commands pipelined
//! in one interactive session (`session`), for batches of server changes. Hand-written: the protocol
//! is a line of text each way, and no crate speaks it (people use socat, which we do not
//! want to depend on).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::super::command::Secs;
use super::quote;
use super::stat_csv::AnswerError;

/// Largest answer accepted (`show stat` of 512 servers is about 400 KiB).
pub(super) const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// What HAProxy writes after every answer in interactive mode (`prompt`), the same on
/// 2.2, 2.6 and 3.0: the boundary between the answers of a pipelined session.
pub(super) const PROMPT: &str = "\n> ";
/// Time a pipelined session may take per command, on top of the socket's timeout: HAProxy
/// runs a server change in tens of microseconds, so this is a bound, not an estimate.
const SESSION_TIME_PER_COMMAND: Duration = Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("HAProxy is not running (nothing answers on {}: {source})", path.display())]
    NotRunning { path: PathBuf, source: io::Error },
    #[error("cannot connect to the HAProxy socket {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("`{command}` is not a valid HAProxy runtime command: {reason}")]
    InvalidCommand {
        command: String,
        reason: &'static str,
    },
    #[error("sending `{command}` to HAProxy ({}) failed: {source}", path.display())]
    Send {
        command: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("reading HAProxy's answer to `{command}` ({}) failed: {source}", path.display())]
    Receive {
        command: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("HAProxy did not answer `{command}` within {} s ({})", Secs(*.timeout), path.display())]
    Timeout {
        command: String,
        path: PathBuf,
        timeout: Duration,
    },
    #[error("HAProxy's answer to `{command}` is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge { command: String },
    /// HAProxy answered a runtime command with an error (`AnswerError::Error` or
    /// `AnswerError::UnknownCommand`).
    #[error("HAProxy refused `{command}`: {source}")]
    Refused {
        command: String,
        source: AnswerError,
    },
    #[error("cannot understand HAProxy's answer to `{command}`: {source}")]
    Unexpected {
        command: String,
        source: AnswerError,
    },
}

impl StatsError {
    /// True when nothing listens on the socket: HAProxy is stopped (or never started).
    pub(crate) fn is_not_running(&self) -> bool {
        matches!(self, StatsError::NotRunning { .. })
    }
}

/// A HAProxy runtime API socket (`stats socket` or the master CLI `-S`).
#[derive(Debug, Clone)]
pub struct StatsSocket {
    path: PathBuf,
    timeout: Duration,
}

impl StatsSocket {
    /// `timeout` bounds connect, send and the whole read of each answer.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> Self {
        StatsSocket {
            path: path.into(),
            timeout,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one command line and returns HAProxy's whole answer. HAProxy's own error texts
    /// come back as `Ok` here; the typed commands (`commands`) tell them apart.
    pub fn command(&self, cmd: &str) -> Result<String, StatsError> {
        if cmd.contains(['\n', '\r', '\0']) {
            return Err(StatsError::InvalidCommand {
                command: quote(cmd),
                reason: "it contains a line break",
            });
        }
        let deadline = Instant::now() + self.timeout;
        let mut stream = self.connect()?;
        let send_err = |source| StatsError::Send {
            command: cmd.to_string(),
            path: self.path.clone(),
            source,
        };
        stream
            .set_write_timeout(Some(self.timeout.max(Duration::from_millis(1))))
            .map_err(send_err)?;
        stream
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(send_err)?;
        // Without this the master CLI waits for a next command instead of closing.
        stream.shutdown(Shutdown::Write).map_err(send_err)?;
        self.read_answer(&mut stream, cmd, deadline)
    }

    /// Sends `lines` in one interactive session (`prompt`, the lines, `quit`) and returns
    /// each line's answer, in order. HAProxy runs them one after another; they are written
    /// by a second thread while this one reads, so neither side's buffer can fill up and
    /// stall the other however many lines there are. The `;`-separated form of one line
    /// would do the same on every version but is bounded by HAProxy's buffer (16 KiB).
    pub(crate) fn session(&self, lines: &[String]) -> Result<Vec<String>, StatsError> {
        let label = || format!("a session of {} commands", lines.len());
        if let Some(bad) = lines.iter().find(|l| l.contains(['\n', '\r', '\0'])) {
            return Err(StatsError::InvalidCommand {
                command: quote(bad),
                reason: "it contains a line break",
            });
        }
        let count = u32::try_from(lines.len()).unwrap_or(u32::MAX);
        let budget = self.timeout + SESSION_TIME_PER_COMMAND.saturating_mul(count);
        let deadline = Instant::now() + budget;
        let mut stream = self.connect()?;
        let send_err = |source| StatsError::Send {
            command: label(),
            path: self.path.clone(),
            source,
        };
        let mut writer = stream.try_clone().map_err(send_err)?;
        writer
            .set_write_timeout(Some(budget.max(Duration::from_millis(1))))
            .map_err(send_err)?;
        let answer = std::thread::scope(|scope| {
            let sent = scope.spawn(move || -> io::Result<()> {
                let mut text = String::from("prompt\n");
                for (i, line) in lines.iter().enumerate() {
                    if i == 1 {
                        // The first command is on its way; the worker may die with the
                        // rest unsent (the crash tests stop it exactly here).
                        writer.write_all(text.as_bytes())?;
                        text.clear();
                        crash_point!("runtime-between-commands");
                    }
                    text.push_str(line);
                    text.push('\n');
                }
                text.push_str("quit\n");
                writer.write_all(text.as_bytes())
            });
            let answer = self.read_answer(&mut stream, &label(), deadline);
            // A writer stuck on a peer that stopped reading ends with its write timeout.
            let sent = sent.join();
            (answer, sent)
        });
        let (answer, sent) = answer;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(send_err(e)),
            Err(_) => {
                return Err(send_err(io::Error::other(
                    "the thread writing the commands panicked",
                )))
            }
        }
        let answer = answer?;
        // "" (the prompt's own answer), one answer per line, then "" after `quit`.
        let mut parts: Vec<String> = answer.split(PROMPT).map(str::to_string).collect();
        if parts.len() != lines.len() + 2 {
            return Err(StatsError::Receive {
                command: label(),
                path: self.path.clone(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} answers to {} commands: {}",
                        parts.len().saturating_sub(2),
                        lines.len(),
                        quote(&answer)
                    ),
                ),
            });
        }
        parts.pop();
        parts.remove(0);
        Ok(parts)
    }

    /// Sends a command whose answer may never come because the peer goes away (the master
    /// CLI `reload` re-executes the master). Only connecting and sending can fail.
    pub fn send_only(&self, cmd: &str) -> Result<(), StatsError> {
        match self.command(cmd) {
            Ok(_) | Err(StatsError::Receive { .. }) | Err(StatsError::Timeout { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn connect(&self) -> Result<UnixStream, StatsError> {
        let connect_err = |source: io::Error| {
            if matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) {
                StatsError::NotRunning {
                    path: self.path.clone(),
                    source,
                }
            } else {
                StatsError::Connect {
                    path: self.path.clone(),
                    source,
                }
            }
        };
        let addr = SockAddr::unix(&self.path).map_err(connect_err)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(connect_err)?;
        // std's UnixStream::connect could block on a full backlog (a stuck HAProxy).
        socket
            .connect_timeout(&addr, self.timeout.max(Duration::from_millis(1)))
            .map_err(connect_err)?;
        Ok(UnixStream::from(socket))
    }

    fn read_answer(
        &self,
        stream: &mut UnixStream,
        cmd: &str,
        deadline: Instant,
    ) -> Result<String, StatsError> {
        let mut answer = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = || StatsError::Timeout {
                command: cmd.to_string(),
                path: self.path.clone(),
                timeout: self.timeout,
            };
            if left.is_zero() {
                return Err(timeout());
            }
            let receive_err = |source| StatsError::Receive {
                command: cmd.to_string(),
                path: self.path.clone(),
                source,
            };
            stream.set_read_timeout(Some(left)).map_err(receive_err)?;
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.len() > MAX_ANSWER_BYTES {
                        return Err(StatsError::TooLarge {
                            command: cmd.to_string(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timeout())
                }
                Err(e) => return Err(receive_err(e)),
            }
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn missing_socket_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = StatsSocket::new(dir.path().join("stats.sock"), Duration::from_secs(1))
            .command("show info")
            .unwrap_err();
        assert!(err.is_not_running(), "{err:?}");
        assert!(
            err.to_string().starts_with("HAProxy is not running"),
            "{err}"
        );
        // A stale socket file with nobody listening: refused, also "not running".
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).unwrap());
        // A process another test forks in the meantime holds a copy of the listener until
        // it execs; until then connections queue on it instead of being refused.
        let refused = (0..500).any(|_| {
            let gone = std::os::unix::net::UnixStream::connect(&path).is_err();
            if !gone {
                std::thread::sleep(Duration::from_millis(10));
            }
            gone
        });
        assert!(refused, "the dropped listener still accepts");
        let err = StatsSocket::new(&path, Duration::from_secs(1))
            .command("show info")
            .unwrap_err();
        assert!(err.is_not_running(), "{err:?}");
    }

    #[test]
    fn silent_peer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let holder = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(2));
            drop(conn);
        });
        let started = Instant::now();
        let err = StatsSocket::new(&path, Duration::from_millis(200))
            .command("show stat")
            .unwrap_err();
        assert!(matches!(err, StatsError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        holder.join().unwrap();
    }

    #[test]
    fn answer_is_read_to_eof_and_the_command_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let answer: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let sent = answer.clone();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = String::new();
            conn.read_to_string(&mut request).unwrap(); // ends because the client shuts its write side
            for chunk in sent.as_bytes().chunks(100) {
                conn.write_all(chunk).unwrap();
            }
            request
        });
        let got = StatsSocket::new(&path, Duration::from_secs(5))
            .command("show stat")
            .unwrap();
        assert_eq!(got, answer);
        assert_eq!(server.join().unwrap(), "show stat\n");
    }

    #[test]
    fn a_command_is_one_line() {
        let socket = StatsSocket::new("/nonexistent/stats.sock", Duration::from_secs(1));
        assert!(matches!(
            socket.command("show info\nshutdown frontend x"),
            Err(StatsError::InvalidCommand { .. })
        ));
    }
}
