//! Client for HAProxy's runtime API (the stats socket, and the master CLI, which speaks the
//! same text protocol): one command per connection, answer read to EOF, every step bounded
//! by a timeout. Parses `show stat` (CSV, by header names), `show info` and the answers of
//! the runtime server commands. Hand-written: the protocol is a line of text each way, and
//! no crate speaks it (people use socat, which we do not want to depend on).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::super::command::Secs;

/// Largest answer accepted (`show stat` of 512 servers is about 400 KiB).
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Longest answer quoted in an error text.
const MAX_QUOTED: usize = 300;

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
    #[error("HAProxy refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    #[error("cannot understand HAProxy's answer to `{command}`: {reason}")]
    Unexpected { command: String, reason: String },
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
    /// come back as `Ok` here; the typed helpers below tell them apart.
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

    /// Sends a command whose answer may never come because the peer goes away (the master
    /// CLI `reload` re-executes the master). Only connecting and sending can fail.
    pub fn send_only(&self, cmd: &str) -> Result<(), StatsError> {
        match self.command(cmd) {
            Ok(_) | Err(StatsError::Receive { .. }) | Err(StatsError::Timeout { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `show stat`: one row per frontend, backend and server.
    pub fn show_stat(&self) -> Result<Vec<StatRow>, StatsError> {
        let answer = self.command("show stat")?;
        parse_stat(&answer).map_err(|reason| StatsError::Unexpected {
            command: "show stat".into(),
            reason,
        })
    }

    /// `show info`: `Pid`, `Uptime_sec`, `CurrConns`, ... as text.
    pub fn show_info(&self) -> Result<BTreeMap<String, String>, StatsError> {
        let answer = self.command("show info")?;
        let info = parse_info(&answer);
        if info.contains_key("Pid") {
            Ok(info)
        } else {
            Err(StatsError::Unexpected {
                command: "show info".into(),
                reason: format!("no Pid in {}", quote(&answer)),
            })
        }
    }

    /// `show servers state`: the text to save into the `server-state-file` before a reload,
    /// so that server health and runtime changes survive it.
    pub fn show_servers_state(&self) -> Result<String, StatsError> {
        let answer = self.command("show servers state")?;
        let mut lines = answer.lines();
        let version = lines.next().unwrap_or("").trim();
        let header = lines.next().unwrap_or("");
        if version.parse::<u32>().is_err() || !header.starts_with('#') {
            return Err(StatsError::Unexpected {
                command: "show servers state".into(),
                reason: format!("not a server state dump: {}", quote(&answer)),
            });
        }
        Ok(format!("{}\n", answer.trim_end()))
    }

    /// `set server <b>/<s> addr <ip> port <p>`.
    pub(crate) fn set_server_addr(
        &self,
        backend: &str,
        server: &str,
        addr: IpAddr,
        port: u16,
    ) -> Result<String, StatsError> {
        self.runtime(&format!(
            "set server {} addr {addr} port {port}",
            server_ref(backend, server)?
        ))
    }

    /// `set server <b>/<s> weight <w>`; HAProxy refuses weights above 256.
    pub(crate) fn set_server_weight(
        &self,
        backend: &str,
        server: &str,
        weight: u16,
    ) -> Result<String, StatsError> {
        self.runtime(&format!(
            "set server {} weight {weight}",
            server_ref(backend, server)?
        ))
    }

    /// `enable server <b>/<s>` (leaves maintenance).
    pub(crate) fn enable_server(&self, backend: &str, server: &str) -> Result<String, StatsError> {
        self.runtime(&format!("enable server {}", server_ref(backend, server)?))
    }

    /// `disable server <b>/<s>` (enters maintenance).
    pub(crate) fn disable_server(&self, backend: &str, server: &str) -> Result<String, StatsError> {
        self.runtime(&format!("disable server {}", server_ref(backend, server)?))
    }

    /// `enable health <b>/<s>`: a server added with `check` has its checks off until this.
    pub(crate) fn enable_health(&self, backend: &str, server: &str) -> Result<String, StatsError> {
        self.runtime(&format!("enable health {}", server_ref(backend, server)?))
    }

    /// `add server <b>/<s> <addr>:<port> <options>`. HAProxy 2.6 creates it in maintenance
    /// (follow with `enable_server`) and refuses `cookie` on added servers.
    pub(crate) fn add_server(
        &self,
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
        self.runtime(&cmd)
    }

    /// `del server <b>/<s>`; HAProxy deletes only servers in maintenance without connections.
    pub(crate) fn del_server(&self, backend: &str, server: &str) -> Result<String, StatsError> {
        self.runtime(&format!("del server {}", server_ref(backend, server)?))
    }

    /// Runs a command with severity-tagged output, so HAProxy's errors become `Refused`.
    fn runtime(&self, cmd: &str) -> Result<String, StatsError> {
        let answer = self.command(&format!("set severity-output number; {cmd}"))?;
        parse_runtime_answer(&answer).map_err(|answer| StatsError::Refused {
            command: cmd.to_string(),
            answer,
        })
    }

    fn connect(&self) -> Result<UnixStream, StatsError> {
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

/// `<backend>/<server>`, refusing names HAProxy would not accept in its configuration
/// (letters, digits, `-`, `_`, `.`, `:`), so no value can smuggle in a second command.
fn server_ref(backend: &str, server: &str) -> Result<String, StatsError> {
    let valid = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    };
    if valid(backend) && valid(server) {
        Ok(format!("{backend}/{server}"))
    } else {
        Err(StatsError::InvalidCommand {
            command: quote(&format!("{backend}/{server}")),
            reason: "backend and server names may hold only letters, digits, '-', '_', '.' and ':'",
        })
    }
}

fn socket_addr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// A text for an error message: one line, at most `MAX_QUOTED` characters.
fn quote(text: &str) -> String {
    let one_line = text.trim().replace(['\n', '\r'], " ");
    match one_line.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}

/// Reads the answer of `set severity-output number; <cmd>`: `Ok(message)` (possibly
/// empty) unless HAProxy tagged it as an error (`[0]`..`[3]`) or did not know the command.
pub fn parse_runtime_answer(answer: &str) -> Result<String, String> {
    let text = answer.trim();
    let (severity, message) = match text
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]: "))
    {
        Some((level, message)) => match level.parse::<u8>() {
            Ok(level) => (Some(level), message.trim()),
            Err(_) => (None, text),
        },
        None => (None, text),
    };
    let message = message.to_string();
    if severity.is_some_and(|level| level <= 3) || message.starts_with("Unknown command") {
        Err(quote(&message))
    } else {
        Ok(message)
    }
}

/// Parses `show info` (`Name: value` lines); lines without a colon are skipped.
pub fn parse_info(answer: &str) -> BTreeMap<String, String> {
    answer
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| !key.trim().is_empty())
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect()
}

/// Column names of one `show stat` answer, shared by its rows.
#[derive(Debug)]
struct StatHeader {
    index: HashMap<String, usize>,
}

/// One line of `show stat`: a frontend, a backend or a server, read by column name.
#[derive(Clone)]
pub struct StatRow {
    header: Arc<StatHeader>,
    values: Vec<String>,
}

impl StatRow {
    /// The value of column `name`; `None` if HAProxy has no such column, `Some("")` when
    /// the column does not apply to this row.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        let i = *self.header.index.get(name)?;
        Some(self.values.get(i).map_or("", String::as_str))
    }

    /// A counter column; `None` when absent, empty or not a number.
    pub(crate) fn get_u64(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }

    pub(crate) fn pxname(&self) -> &str {
        self.get("pxname").unwrap_or("")
    }

    /// Server name, or `FRONTEND` / `BACKEND`.
    pub(crate) fn svname(&self) -> &str {
        self.get("svname").unwrap_or("")
    }

    /// `UP`, `DOWN`, `MAINT`, `no check`, `UP 1/2`, `OPEN`, ...
    pub(crate) fn status(&self) -> &str {
        self.get("status").unwrap_or("")
    }
}

impl fmt::Debug for StatRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatRow")
            .field("pxname", &self.pxname())
            .field("svname", &self.svname())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// Parses `show stat` CSV. The first line (`# pxname,svname,...`) names the columns; rows
/// are read through those names, so columns HAProxy adds or moves do not matter.
pub fn parse_stat(answer: &str) -> Result<Vec<StatRow>, String> {
    let mut lines = answer.lines().filter(|line| !line.trim().is_empty());
    let first = lines.next().ok_or_else(|| "empty answer".to_string())?;
    let Some(names) = first.strip_prefix('#') else {
        return Err(format!("no CSV header: {}", quote(first)));
    };
    let mut index = HashMap::new();
    for (i, name) in split_csv(names.trim_start()).into_iter().enumerate() {
        let name = name.trim().to_string();
        if !name.is_empty() {
            index.entry(name).or_insert(i);
        }
    }
    for required in ["pxname", "svname"] {
        if !index.contains_key(required) {
            return Err(format!("no '{required}' column in the header"));
        }
    }
    let header = Arc::new(StatHeader { index });
    Ok(lines
        .map(|line| StatRow {
            header: header.clone(),
            values: split_csv(line),
        })
        .collect())
}

/// Splits one CSV line; HAProxy quotes a field with `"` (doubling inner quotes) when it
/// holds a comma or a quote.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => in_quotes = false,
            ('"', false) if field.is_empty() => in_quotes = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::net::UnixListener;

    /// `show stat` from HAProxy 2.6.12 (Debian 2.6.12-1+deb12u4): an HTTP load balancer
    /// with one server UP, one DOWN and a DOWN backup; a TCP one with an unchecked server.
    const SHOW_STAT_2_6_12: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
http-in,FRONTEND,,,0,1,256,1,82,574,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,1,0,1,,,,0,1,0,0,0,0,,1,1,1,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,1,1,1,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,79,635,0,0,
http-servers,id-11,0,0,0,1,,1,82,574,,0,,0,0,0,0,UP,1,1,0,1,1,1,2,,1,3,1,,1,,2,1,,1,L7OK,200,9,0,1,0,0,0,0,,,,1,0,0,,,,,1,,,0,0,1,1,,,,Layer7 check passed,,2,2,3,,,,127.0.0.1:18182,id-11,http,,,,,,,,0,1,0,,,0,,0,0,1,1,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
http-servers,id-12,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,3,3,,1,3,2,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,2,0,,,,127.0.0.1:18183,id-12,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
http-servers,id-13,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,2,0,1,1,1,3,3,,1,3,3,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,3,0,,,,127.0.0.1:18184,id-13,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,2,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
http-servers,BACKEND,0,0,0,1,26,1,82,574,0,0,,0,0,0,0,UP,1,1,0,,1,1,2,,1,3,0,,1,,1,1,,1,,,,0,1,0,0,0,0,,,,1,0,0,0,0,0,0,1,,,0,0,1,1,,,,,,,,,,,,,SERVERID,http,roundrobin,,,,,,,0,1,0,0,0,,,0,0,1,1,0,,,,,1,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,11,11,1040,133,0,0,
tcp-in,FRONTEND,,,0,1,256,1,79,575,0,0,0,,,,,OPEN,,,,,,,,,1,4,0,,,,0,1,0,1,,,,,,,,,,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,tcp,,1,1,1,,0,0,0,,,,,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
tcp-servers,id-21,0,0,0,1,,1,79,575,,0,,0,0,0,0,UP,1,1,0,0,0,4,0,,1,5,1,,1,,2,1,,1,L4OK,,0,,,,,,,,,,,0,0,,,,,1,,,0,0,0,8,,,,Layer4 check passed,,2,3,4,,,,127.0.0.1:18182,,tcp,,,,,,,,0,1,0,,,0,,0,0,0,8,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
tcp-servers,id-22,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1,1,0,,,4,,,1,5,2,,0,,2,0,,0,,,,,,,,,,,,,,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:18186,,tcp,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
tcp-servers,BACKEND,0,0,0,1,26,1,79,575,0,0,,0,0,0,0,UP,2,2,0,,0,4,0,,1,5,0,,1,,1,1,,1,,,,,,,,,,,,,,0,0,0,0,0,0,1,,,0,0,0,8,,,,,,,,,,,,,,tcp,leastconn,,,,,,,0,1,0,,,,,0,0,0,8,0,,,,,2,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,

";

    /// `show info` of HAProxy 2.6.12 (first lines).
    const SHOW_INFO_2_6_12: &str = "Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nRelease_date: 2026/10/17\nNbthread: 2\nNbproc: 1\nProcess_num: 1\nPid: 14053\nUptime: 0d 0h10m28s\nUptime_sec: 628\nMemmax_MB: 0\nCurrConns: 0\nBuild info: 2.6.12-1+deb12u4\n\n";

    #[test]
    fn show_stat_is_read_by_column_name() {
        let rows = parse_stat(SHOW_STAT_2_6_12).unwrap();
        assert_eq!(rows.len(), 9);
        let names: Vec<_> = rows
            .iter()
            .map(|r| format!("{}/{}", r.pxname(), r.svname()))
            .collect();
        assert_eq!(names[0], "http-in/FRONTEND");
        assert_eq!(names[4], "http-servers/BACKEND");
        let id11 = &rows[1];
        assert_eq!(
            (id11.status(), id11.get("check_status"), id11.get("type")),
            ("UP", Some("L7OK"), Some("2"))
        );
        assert_eq!(
            (
                id11.get_u64("bin"),
                id11.get_u64("bout"),
                id11.get_u64("scur")
            ),
            (Some(82), Some(574), Some(0))
        );
        assert_eq!(id11.get("addr"), Some("127.0.0.1:18182"));
        assert_eq!(id11.get("check_desc"), Some("Layer7 check passed"));
        assert_eq!(rows[2].status(), "DOWN");
        assert_eq!(rows[2].get("last_chk"), Some("Connection refused"));
        assert_eq!(rows[7].status(), "no check");
        assert_eq!(rows[7].get("check_status"), Some(""));
        let backend = &rows[8];
        assert_eq!(
            (
                backend.get("type"),
                backend.get_u64("bout"),
                backend.get("algo")
            ),
            (Some("1"), Some(575), Some("leastconn"))
        );
        assert_eq!(rows[5].get("type"), Some("0"));
        assert_eq!(rows[0].get("no-such-column"), None);
        assert_eq!(rows[0].get("check_status"), Some(""));
    }

    #[test]
    fn show_stat_columns_may_move() {
        let moved = "# status,bout,svname,pxname\nUP,7,id-1,tcp-servers\n";
        let rows = parse_stat(moved).unwrap();
        assert_eq!(
            (
                rows[0].pxname(),
                rows[0].svname(),
                rows[0].status(),
                rows[0].get_u64("bout")
            ),
            ("tcp-servers", "id-1", "UP", Some(7))
        );
        // A short row: missing trailing columns read as empty, never panic.
        let short = parse_stat("# pxname,svname,status\nb,s\n").unwrap();
        assert_eq!(short[0].status(), "");
    }

    #[test]
    fn show_stat_rejects_what_is_not_csv() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat(
            "Unknown command, but maybe one of the following ones is a better match:\n"
        )
        .is_err());
        assert!(parse_stat("# a,b,c\n1,2,3\n")
            .unwrap_err()
            .contains("pxname"));
    }

    #[test]
    fn quoted_csv_fields() {
        assert_eq!(
            split_csv(r#"a,"b,c","say ""hi""",,"#),
            vec!["a", "b,c", r#"say "hi""#, "", ""]
        );
    }

    #[test]
    fn show_info_map() {
        let info = parse_info(SHOW_INFO_2_6_12);
        assert_eq!(info.get("Pid").map(String::as_str), Some("14053"));
        assert_eq!(info.get("Uptime_sec").map(String::as_str), Some("628"));
        assert_eq!(info.get("Uptime").map(String::as_str), Some("0d 0h10m28s"));
        assert_eq!(
            info.get("Build info").map(String::as_str),
            Some("2.6.12-1+deb12u4")
        );
    }

    #[test]
    fn runtime_answers_from_2_6_12() {
        // Answers captured with `set severity-output number; <command>`.
        assert_eq!(parse_runtime_answer("\n\n"), Ok(String::new()));
        assert_eq!(
            parse_runtime_answer("\n[4]: IP changed from '::1' to '127.0.0.5', no need to change the port by 'stats socket command'\n\n"),
            Ok("IP changed from '::1' to '127.0.0.5', no need to change the port by 'stats socket command'".into())
        );
        assert_eq!(
            parse_runtime_answer("\n[6]: New server registered.\n\n"),
            Ok("New server registered.".into())
        );
        assert_eq!(
            parse_runtime_answer("\n[3]: No such server.\n\n"),
            Err("No such server.".into())
        );
        assert_eq!(
            parse_runtime_answer(
                "\n[3]: Absolute weight can only be between 0 and 256 inclusive.\n\n"
            ),
            Err("Absolute weight can only be between 0 and 256 inclusive.".into())
        );
        assert!(parse_runtime_answer("\n[6]: Unknown command, but maybe one of the following ones is a better match:\n  help\n").is_err());
        assert_eq!(parse_runtime_answer("[x]: odd"), Ok("[x]: odd".into()));
    }

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
        assert!(matches!(
            socket.command("show info\nshutdown frontend x"),
            Err(StatsError::InvalidCommand { .. })
        ));
        assert_eq!(socket_addr("::1".parse().unwrap(), 80), "[::1]:80");
    }

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
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = String::new();
            conn.read_to_string(&mut request).unwrap(); // ends because the client shuts its write side
            for chunk in SHOW_STAT_2_6_12.as_bytes().chunks(100) {
                conn.write_all(chunk).unwrap();
            }
            request
        });
        let rows = StatsSocket::new(&path, Duration::from_secs(5))
            .show_stat()
            .unwrap();
        assert_eq!(rows.len(), 9);
        assert_eq!(server.join().unwrap(), "show stat\n");
    }

    fn row<'a>(rows: &'a [StatRow], px: &str, sv: &str) -> &'a StatRow {
        rows.iter()
            .find(|r| r.pxname() == px && r.svname() == sv)
            .unwrap_or_else(|| panic!("no {px}/{sv} in {rows:?}"))
    }

    fn wait_status(socket: &StatsSocket, server: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let rows = socket.show_stat().unwrap();
            if row(&rows, "x-servers", server).status() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{server} never {want}: {:?}",
                row(&rows, "x-servers", server)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn real_haproxy_runtime_api() {
        use crate::drivers::haproxy::process::{test_support::*, Process};
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
        let bout_before = row(&socket.show_stat().unwrap(), "x-servers", "BACKEND")
            .get_u64("bout")
            .unwrap();
        assert!(serves(h.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while row(&socket.show_stat().unwrap(), "x-servers", "BACKEND")
            .get_u64("bout")
            .unwrap()
            < bout_before + 4
        {
            assert!(
                Instant::now() < deadline,
                "bout did not count the echoed bytes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

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
            matches!(&err, StatsError::Refused { answer, .. } if answer == "No such server."),
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
        let err = after
            .add_server("x-servers", "id-3", local, h.backend, &["cookie", "id-3"])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("'cookie' option is not accepted for dynamic server"),
            "{err}"
        );
        after.enable_server("x-servers", "id-2").unwrap();
        after.enable_health("x-servers", "id-2").unwrap();
        wait_status(&after, "id-2", "UP");
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

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC*(\n\\PC*){0,6}") {
            let _ = parse_stat(&text);
            let _ = parse_stat(&format!("# pxname,svname\n{text}"));
            let _ = parse_info(&text);
            let _ = parse_runtime_answer(&text);
            let _ = split_csv(&text);
        }

        #[test]
        fn quoted_fields_round_trip(fields in proptest::collection::vec("[a-z ,\"]{0,8}", 1..6)) {
            let line: Vec<String> = fields.iter().map(|f| {
                if f.contains([',', '"']) { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.clone() }
            }).collect();
            prop_assert_eq!(split_csv(&line.join(",")), fields);
        }
    }
}
