#!/usr/bin/env python3
"""What HAProxy itself takes per runtime-API command and per read, with N servers in one
backend: the batch and STATS rows of `libra-bench scale` at 10,000 nodes are bounded by
these, whatever the worker does.

Starts a standalone HAProxy (`haproxy` on PATH) on a backend shaped like the worker's HTTP
one (`cookie ... dynamic`, `check inter 2s` per server, every server a distinct 127.x.y.z
address on one listening socket, so checks pass), then sends each kind of command the
worker's batch sends as one pipelined session (`prompt` mode, as the worker does) and times
the session to its last answer; then `show stat` (servers only, what STATS used to read)
against `show servers state` (what it reads now).

    scripts/haproxy-cli-costs.py [N] [BATCH]      # defaults: 10000 servers, 334 per kind
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
BATCH = int(sys.argv[2]) if len(sys.argv) > 2 else 334
BASE = 1_000_000


def addr(i):
    return f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listen_forever(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(4096)

    def loop():
        while True:
            conn, _ = srv.accept()
            conn.close()

    threading.Thread(target=loop, daemon=True).start()


def session(sock_path, lines):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    data = ("prompt\n" + "".join(line + "\n" for line in lines) + "quit\n").encode()
    started = time.monotonic()
    s.sendall(data)
    buf = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    elapsed = time.monotonic() - started
    s.close()
    return elapsed, buf.decode(errors="replace")


def read(sock_path, cmd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    started = time.monotonic()
    s.sendall((cmd + "\n").encode())
    s.shutdown(socket.SHUT_WR)
    size = 0
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        size += len(chunk)
    return time.monotonic() - started, size


def main():
    work = tempfile.mkdtemp(prefix="haproxy-cli-costs-")
    sock = os.path.join(work, "stats.sock")
    backend_port, front_port = free_port(), free_port()
    listen_forever(backend_port)
    cfg = [
        "global",
        f"  stats socket {sock} mode 600 level admin",
        "  maxconn 4000",
        "defaults",
        "  mode http",
        "  timeout client 30s",
        "  timeout server 30s",
        "  timeout connect 30s",
        "frontend f",
        f"  bind 127.0.0.1:{front_port}",
        "  default_backend b",
        "backend b",
        "  balance roundrobin",
        "  cookie SERVERID insert indirect nocache dynamic",
        "  dynamic-cookie-key k",
    ]
    cfg += [
        f"  server id-{i} {addr(i)}:{backend_port} weight 1 cookie id-{i} check inter 2s"
        for i in range(1, N + 1)
    ]
    path = os.path.join(work, "h.cfg")
    with open(path, "w") as f:
        f.write("\n".join(cfg) + "\n")
    pidfile = os.path.join(work, "pid")
    subprocess.run(["haproxy", "-f", path, "-D", "-p", pidfile], check=True)
    try:
        time.sleep(3)
        print(f"HAProxy: {subprocess.run(['haproxy', '-v'], capture_output=True, text=True).stdout.splitlines()[0]}")
        print(f"servers: {N} in one backend; {BATCH} commands per kind, one pipelined session each")
        print(f"load average before: {open('/proc/loadavg').read().strip()}")
        added = [BASE + k for k in range(1, BATCH + 1)]
        kinds = [
            ("add server (weight, check inter 2s)",
             [f"add server b/id-{s} {addr(2 * N + k)}:{backend_port} weight 1 check inter 2s"
              for k, s in enumerate(added, 1)]),
            ("enable dynamic-cookie backend (once)", ["enable dynamic-cookie backend b"]),
            ("enable health", [f"enable health b/id-{s}" for s in added]),
            ("enable server", [f"enable server b/id-{s}" for s in added]),
            ("set server weight", [f"set server b/id-{i} weight 2" for i in range(BATCH + 1, 2 * BATCH + 1)]),
            ("disable server", [f"disable server b/id-{i}" for i in range(1, BATCH + 1)]),
            ("del server", [f"del server b/id-{i}" for i in range(1, BATCH + 1)]),
        ]
        print("| command | commands | session ms | ms per command |")
        print("|---|---:|---:|---:|")
        for name, lines in kinds:
            elapsed, _ = session(sock, lines)
            print(f"| {name} | {len(lines)} | {elapsed * 1000:.1f} | {elapsed * 1000 / len(lines):.3f} |")
        print()
        print("| read | bytes | ms (3 runs) |")
        print("|---|---:|---|")
        for cmd in ["show stat -1 4 -1", "show servers state"]:
            runs = [read(sock, cmd) for _ in range(3)]
            times = ", ".join(f"{t * 1000:.1f}" for t, _ in runs)
            print(f"| `{cmd}` | {runs[-1][1]} | {times} |")
        print(f"load average after: {open('/proc/loadavg').read().strip()}")
    finally:
        with open(pidfile) as f:
            os.kill(int(f.read().split()[0]), 15)


if __name__ == "__main__":
    main()
