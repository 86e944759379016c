//! HAProxy's own messages: picking its `[ALERT]`/`[WARNING]` lines out of `haproxy -c`
//! output or its log, and saying the gist of them in a few words for `hpcs_error`, whose
//! column holds 128 characters: `could not resolve address 'x.invalid' (node 9)` instead of
//! `[ALERT]    (6087) : config : [/var/lib/.../haproxy.cfg.new:45] : 'server
//! http-servers/id-9' : could not resolve address 'x.invalid'.` The full lines go with the
//! error, for the log.

use super::render::SERVER_PREFIX;

/// HAProxy's message lines of the given levels (`[ALERT]`), of process `pid` only if given,
/// trimmed. The header before the first ` : ` holds the pid: `[ALERT]    (6087)` (2.4+) or
/// `[ALERT] 334/220431 (6087)` (2.2, with a date).
pub fn messages(text: &str, pid: Option<u32>, levels: &[&str]) -> Vec<String> {
    let pid_tag = pid.map(|p| format!("({p})"));
    text.lines()
        .map(str::trim)
        .filter(|line| {
            levels.iter().any(|level| {
                line.strip_prefix(level).is_some_and(|rest| {
                    pid_tag.as_deref().is_none_or(|tag| {
                        let header = rest.split(" : ").next().unwrap_or("");
                        header.split_whitespace().any(|word| word == tag)
                    })
                })
            })
        })
        .map(String::from)
        .collect()
}

/// The gist of HAProxy's message lines: each without its level, pid, `config` and
/// `[file:line]` parts, a server named as the node it is, duplicates dropped, joined
/// with `; `. Lines that are not HAProxy messages are kept as they are.
pub fn summarize(lines: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in lines.split("; ").flat_map(str::lines).map(str::trim) {
        if line.is_empty() {
            continue;
        }
        let gist = gist(line);
        if !gist.is_empty() && !out.contains(&gist) {
            out.push(gist);
        }
    }
    out.join("; ")
}

fn gist(line: &str) -> String {
    let is_message = ["[ALERT]", "[WARNING]", "[NOTICE]"]
        .iter()
        .any(|level| line.starts_with(level));
    if !is_message {
        return line.to_string();
    }
    let mut parts = line.split(" : ");
    // `[ALERT]    (6087)`: the level and the pid.
    parts.next();
    let mut node = None;
    let mut kept = Vec::new();
    for part in parts.map(str::trim) {
        if part == "config" || part.is_empty() || is_location(part) {
            continue;
        }
        if let Some(id) = node_of_server(part) {
            node = Some(id);
            continue;
        }
        kept.push(part);
    }
    let mut gist = kept.join(": ");
    if let Some(stripped) = gist.strip_suffix('.') {
        gist = stripped.to_string();
    }
    match node {
        Some(id) => format!("{gist} (node {id})"),
        None => gist,
    }
}

/// `[haproxy.cfg:13]` or `parsing [haproxy.cfg:13]`.
fn is_location(part: &str) -> bool {
    let part = part.strip_prefix("parsing ").unwrap_or(part);
    part.starts_with('[') && part.ends_with(']') && part.contains(':')
}

/// The node id in `'server http-servers/id-9'`, `'server id-9'` or `server 'id-9'`.
fn node_of_server(part: &str) -> Option<&str> {
    let name = part
        .strip_prefix("'server ")
        .and_then(|p| p.strip_suffix('\''))
        .or_else(|| {
            part.strip_prefix("server '")
                .and_then(|p| p.strip_suffix('\''))
        })?;
    let name = name.rsplit('/').next().unwrap_or(name);
    name.strip_prefix(SERVER_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_pick_alerts_of_a_pid() {
        let log = "[NOTICE]   (14050) : Reloading HAProxy\n\
                   [WARNING]  (32097) : Paused frontend tcp-in.\n\
                   Paused frontend tcp-in.\n\
                   [ALERT]    (14050) : Binding [haproxy.cfg:18] for frontend tcp-in: cannot bind socket (Address already in use) for [127.0.0.1:18090]\n\
                   [ALERT]    (32097) : backend 'tcp-servers' has no server available!\n\
                   [WARNING]  (14050) : Loading failure!\n";
        assert_eq!(
            messages(log, Some(14050), &["[ALERT]"]),
            vec!["[ALERT]    (14050) : Binding [haproxy.cfg:18] for frontend tcp-in: cannot bind socket (Address already in use) for [127.0.0.1:18090]"]
        );
        assert_eq!(messages(log, None, &["[ALERT]"]).len(), 2);
        assert_eq!(
            messages(log, Some(14050), &["[WARNING]"]),
            vec!["[WARNING]  (14050) : Loading failure!"]
        );
        // HAProxy 2.2 puts a date between the level and the pid.
        let old = "[ALERT] 334/220431 (77) : parsing [x.cfg:3] : unknown keyword 'y' in 'global' section\n";
        assert_eq!(messages(old, Some(77), &["[ALERT]"]).len(), 1);
        assert!(messages(old, Some(7), &["[ALERT]"]).is_empty());
    }

    #[test]
    fn summaries_name_the_node_and_drop_the_noise() {
        let check = "[ALERT]    (6087) : config : [/var/lib/libra-worker/haproxy.cfg.new:13] : 'server http-servers/id-9' : could not resolve address 'no-such-host.invalid'.; \
                     [ALERT]    (6087) : config : [/var/lib/libra-worker/haproxy.cfg.new:14] : 'server http-servers/id-10' : could not resolve address 'other.invalid'.; \
                     [ALERT]    (6087) : config : Failed to initialize server(s) addr.";
        assert_eq!(
            summarize(check),
            "could not resolve address 'no-such-host.invalid' (node 9); \
             could not resolve address 'other.invalid' (node 10); \
             Failed to initialize server(s) addr"
        );
        let old = "[ALERT] 334/220431 (77) : parsing [/etc/haproxy/haproxy.cfg:40] : 'server id-db-1' : could not resolve address 'db'.";
        assert_eq!(summarize(old), "could not resolve address 'db' (node db-1)");
        let keyword = "[ALERT]    (1) : config : parsing [x.cfg:20] : unknown keyword 'bogusline' in 'backend' section";
        assert_eq!(
            summarize(keyword),
            "unknown keyword 'bogusline' in 'backend' section"
        );
        let bind = "[ALERT]    (9) : Binding [haproxy.cfg:18] for frontend tcp-in: cannot bind socket (Address already in use) for [127.0.0.1:18090]";
        assert_eq!(
            summarize(bind),
            "Binding [haproxy.cfg:18] for frontend tcp-in: cannot bind socket (Address already in use) for [127.0.0.1:18090]"
        );
        assert_eq!(
            summarize("nothing in /x/haproxy.log"),
            "nothing in /x/haproxy.log"
        );
        assert_eq!(summarize("[ALERT] (1) : a.; [ALERT] (2) : a."), "a");
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*(\n\\PC*){0,6}") {
            let _ = messages(&text, Some(1), &["[ALERT]"]);
            let _ = summarize(&text);
        }
    }
}
