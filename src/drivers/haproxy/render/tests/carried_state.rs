//! Node health and counters carried across a reload: which servers keep theirs, and what
//! a restart with carried state does to a moved node.

use super::*;

#[test]
fn carried_state_keeps_only_unchanged_servers() {
    let live = Model::from_load_balancers(&http_and_tcp()).unwrap();
    let mut lbs = http_and_tcp();
    lbs[0].nodes = vec![
        node("11", "10.0.0.1", 80, 7, true), // same place: weight and backup may change
        node("12", "2001:db8::1", 8081, 256, false), // moved to another port
        node("14", "10.0.0.4", 80, 1, false), // new
    ];
    lbs[1].monitor = Some(monitor(MonitorType::Connect, 5, 5, 1, "/")); // a new check
    let next = Model::from_load_balancers(&lbs).unwrap();
    let header =
        "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight";
    let dump = format!(
        "1\n{header}\n\
             3 http-servers 1 id-11 10.0.0.1 0 0 1 1 5 8 2 0 6 0 0 0 - 80 - 0 0 - - 0\n\
             3 http-servers 2 id-12 2001:db8::1 2 0 256 256 5 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n\
             3 http-servers 3 id-13 127.0.0.1 2 0 5 5 5 6 3 4 6 0 0 0 localhost 80 - 0 0 - - 0\n\
             5 tcp-servers 1 id-db-1 10.0.0.2 0 0 1 1 5 8 2 0 6 0 0 0 - 3306 - 0 0 - - 0\n\
             7 other 1 id-11 10.0.0.1 0 0 1 1 5 8 2 0 6 0 0 0 - 80 - 0 0 - - 0\n\n"
    );
    let carried = carry_server_state(&dump, &live, &next);
    assert_eq!(
            carried,
            format!("1\n{header}\n3 http-servers 1 id-11 10.0.0.1 0 0 1 1 5 8 2 0 6 0 0 0 - 80 - 0 0 - - 0\n")
        );
    // Nothing carries into a model that has no such load balancer, or from a bad dump.
    assert_eq!(
        carry_server_state(&dump, &live, &Model::new()),
        format!("1\n{header}\n")
    );
    assert_eq!(
        carry_server_state(&dump, &Model::new(), &next),
        format!("1\n{header}\n")
    );
    assert_eq!(carry_server_state("", &live, &next), EMPTY_SERVER_STATE);
    assert_eq!(
        carry_server_state("2\nx\n", &live, &live),
        EMPTY_SERVER_STATE
    );
    assert_eq!(
        carry_server_state("Unknown command\n", &live, &live),
        EMPTY_SERVER_STATE
    );
}

/// Sends `hello` through the frontend and tells which listener it reached. Health
/// checks also connect, but they send nothing and are skipped.
fn hello_reaches(frontend: u16, listeners: &[&std::net::TcpListener]) -> Option<usize> {
    use std::io::{ErrorKind, Read, Write};
    let mut client = std::net::TcpStream::connect(("127.0.0.1", frontend)).unwrap();
    client.write_all(b"hello").unwrap();
    for l in listeners {
        l.set_nonblocking(true).unwrap();
    }
    poll_until(Duration::from_secs(10), Duration::from_millis(10), || {
        listeners
            .iter()
            .enumerate()
            .find_map(|(i, l)| match l.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    let mut buf = [0u8; 5];
                    (conn.read_exact(&mut buf).is_ok() && &buf == b"hello").then_some(i)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                Err(e) => panic!("accept: {e}"),
            })
    })
}

#[test]
fn a_moved_node_gets_its_new_port_after_a_restart_with_carried_state() {
    let old = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let new = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let frontend = free_port();
    let model_at = |port: u16| {
        let tcp = lb(
            Protocol::Tcp,
            frontend,
            vec![node("1", "127.0.0.1", port, 1, false)],
        );
        Model::from_load_balancers(&[tcp]).unwrap()
    };
    let (live, next) = (
        model_at(old.local_addr().unwrap().port()),
        model_at(new.local_addr().unwrap().port()),
    );
    let mut h = TestHaproxy::empty();
    let mut env = env_in(h.dir.path(), LogTarget::Stdout, false);
    env.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let state = h.path("server-state");

    fs::write(&state, EMPTY_SERVER_STATE).unwrap();
    h.write_config_text(&render(&live, &env).unwrap());
    h.start();
    let dump = h.stats().show_servers_state().unwrap();
    h.stop();
    assert!(
        dump.starts_with("1\n") && dump.contains(" tcp-servers 1 id-1 127.0.0.1 "),
        "{dump}"
    );

    // Why the state is filtered: HAProxy 2.6 restores the saved port over the new one.
    fs::write(&state, &dump).unwrap();
    h.write_config_text(&render(&next, &env).unwrap());
    h.start();
    assert_eq!(
        hello_reaches(frontend, &[&old, &new]),
        Some(0),
        "HAProxy no longer restores saved ports"
    );
    h.stop();

    fs::write(&state, carry_server_state(&dump, &live, &next)).unwrap();
    h.write_config_text(&render(&next, &env).unwrap());
    h.start();
    assert_eq!(hello_reaches(frontend, &[&old, &new]), Some(1));
}

// ---- property test: random valid models always render to accepted, allow-listed text
