//! Which servers take traffic, read from `show servers state` instead of `show stat`: at
//! 10,000 servers HAProxy 2.6 writes `show stat -1 4 -1` (2.6 MB, about 90 columns) in
//! 150-310 ms and `show servers state` (0.7 MB, 25 columns) in 40-50 ms, measured on the
//! same process (`scripts/haproxy-cli-costs.py`). STATS needs one bit per server, which
//! the state columns give.

use super::quote;
use super::stat_csv::AnswerError;

/// `srv_op_state` of a server that is up (`SRV_ST_STARTING`, `SRV_ST_RUNNING`).
const OP_STARTING: u32 = 1;
const OP_RUNNING: u32 = 2;
/// `CHK_ST_ENABLED` in `srv_check_state`: health checks on. `show stat` says `no check`,
/// not `UP`, for a running server without them (one added at run time before `enable
/// health`).
const CHECK_ENABLED: u32 = 0x4;

/// One server of the dump: its backend, its name, and whether `show stat` would call it
/// `UP` (or `UP n/m`, a check transition pending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHealth {
    pub backend: String,
    pub server: String,
    pub serves: bool,
}

/// The servers of a `show servers state` answer (format 1: a version line, a `# be_id
/// be_name ...` header, one line of space-separated columns per server). `UP` in `show
/// stat` is: no administrative flag set (every `srv_admin_state` bit is a kind of
/// maintenance or drain, each shown as `MAINT` or `DRAIN`), operationally running or
/// starting, and health checks enabled. The HAProxy tests compare the two readings.
pub fn parse_server_health(answer: &str) -> Result<Vec<ServerHealth>, AnswerError> {
    let no_dump = || AnswerError::NoServerState {
        answer: quote(answer),
    };
    let mut lines = answer.lines();
    let version = lines.next().unwrap_or("").trim();
    if version.parse::<u32>().is_err() {
        return Err(no_dump());
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or_else(no_dump)?;
    let names: Vec<&str> = header.split_whitespace().collect();
    let column = |name: &'static str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or(AnswerError::NoColumn { column: name })
    };
    let backend = column("be_name")?;
    let server = column("srv_name")?;
    let op = column("srv_op_state")?;
    let admin = column("srv_admin_state")?;
    let check = column("srv_check_state")?;
    let last = backend.max(server).max(op).max(admin).max(check);
    let mut out = Vec::new();
    let mut fields: Vec<&str> = Vec::with_capacity(names.len());
    for line in lines {
        fields.clear();
        fields.extend(line.split_whitespace());
        if fields.len() <= last {
            // A blank line or one cut short: no server to report.
            continue;
        }
        let number = |i: usize| fields[i].parse::<u32>().ok();
        let serves = matches!(number(op), Some(OP_STARTING | OP_RUNNING))
            && number(admin) == Some(0)
            && number(check).is_some_and(|c| c & CHECK_ENABLED != 0);
        out.push(ServerHealth {
            backend: fields[backend].to_string(),
            server: fields[server].to_string(),
            serves,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n";

    fn row(name: &str, op: u32, admin: u32, check: u32) -> String {
        format!("3 http-servers 1 {name} 127.0.0.1 {op} {admin} 1 1 4 8 2 0 {check} 0 0 0 - 19000 - 0 0 - - 0\n")
    }

    #[test]
    fn up_is_running_without_admin_flags_with_checks_on() {
        let answer = [
            HEADER.to_string(),
            row("id-up", 2, 0, 6),
            row("id-starting", 1, 0, 6),
            row("id-down", 0, 0, 6),
            row("id-stopping", 3, 0, 6),
            row("id-maint", 2, 1, 6),
            row("id-drain", 2, 8, 6),
            row("id-no-check", 2, 0, 2),
            "\n".to_string(),
        ]
        .concat();
        let got: Vec<(String, bool)> = parse_server_health(&answer)
            .unwrap()
            .into_iter()
            .map(|h| (h.server, h.serves))
            .collect();
        let want = [
            ("id-up", true),
            ("id-starting", true),
            ("id-down", false),
            ("id-stopping", false),
            ("id-maint", false),
            ("id-drain", false),
            ("id-no-check", false),
        ];
        assert_eq!(
            got,
            want.map(|(n, s)| (n.to_string(), s)).to_vec(),
            "one row per server, in order"
        );
    }

    #[test]
    fn an_answer_without_the_dump_format_is_refused() {
        assert!(parse_server_health("Unknown command.\n").is_err());
        assert!(parse_server_health("1\nno header\n").is_err());
        assert_eq!(
            parse_server_health("1\n# be_id be_name srv_id\n"),
            Err(AnswerError::NoColumn { column: "srv_name" })
        );
        assert_eq!(parse_server_health(HEADER), Ok(Vec::new()));
    }
}
