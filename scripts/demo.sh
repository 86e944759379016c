#!/usr/bin/env bash
# The worker's main job end to end on loopback: installs what it needs, starts gearmand,
# the worker (which runs its own HAProxy) and two small HTTP backends, then drives a real
# load balancer with `libra-worker submit`, as the API server would: UPDATE, traffic
# through it, STATS, METRICS, then DELETE.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked
bin="$PWD/target/release/libra-worker"
work="$(mktemp -d /tmp/libra-demo.XXXXXX)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gm_port="$(port)"; lb_port="$(port)"; be1_port="$(port)"; be2_port="$(port)"
cleanup() {
  set +e
  [ -n "${worker_pid:-}" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
  "$bin" haproxy stop --config "$work/worker.toml" >/dev/null 2>&1
  [ -n "${gm_pid:-}" ] && kill "$gm_pid" 2>/dev/null
  [ -n "${be1_pid:-}" ] && kill "$be1_pid" 2>/dev/null
  [ -n "${be2_pid:-}" ] && kill "$be2_pid" 2>/dev/null
  echo "demo files kept in $work"
}
trap cleanup EXIT

echo "== gearmand on 127.0.0.1:$gm_port"
gearmand --listen=127.0.0.1 --port="$gm_port" --log-file="$work/gearmand.log" --verbose=ERROR &
gm_pid=$!

cat >"$work/worker.toml" <<TOML
[gearman]
servers = ["127.0.0.1:$gm_port"]
reconnect_sleep = 5
[worker]
function = "demo-appliance"
[haproxy]
state_dir = "$work/state"
bind_address = "127.0.0.1"
[metrics]
listen = ""
TOML
echo "== worker (log: $work/worker.log)"
"$bin" run --config "$work/worker.toml" >"$work/worker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 100); do grep -q "connected to job server" "$work/worker.log" && break; sleep 0.1; done

submit() { "$bin" submit --server "127.0.0.1:$gm_port" --function demo-appliance "$@"; }
echo "== DISCOVER";    submit DISCOVER
echo "== DIAGNOSTICS"; submit DIAGNOSTICS

echo "== two HTTP backends on 127.0.0.1:$be1_port and :$be2_port"
for n in 1 2; do mkdir -p "$work/backend$n"; echo "hello from backend $n" >"$work/backend$n/index.html"; done
python3 -m http.server "$be1_port" --bind 127.0.0.1 --directory "$work/backend1" >/dev/null 2>&1 &
be1_pid=$!
python3 -m http.server "$be2_port" --bind 127.0.0.1 --directory "$work/backend2" >/dev/null 2>&1 &
be2_pid=$!
sleep 0.5

cat >"$work/update.json" <<JSON
{"hpcs_action": "UPDATE",
 "loadBalancers": [{"name": "demo", "protocol": "HTTP", "port": $lb_port, "algorithm": "ROUND_ROBIN",
   "nodes": [{"id": 101, "address": "127.0.0.1", "port": $be1_port, "weight": 1},
             {"id": 102, "address": "127.0.0.1", "port": $be2_port, "weight": 1}],
   "monitor": {"type": "HTTP", "delay": 2, "timeout": 2, "attempts": 1, "path": "/"}}]}
JSON
echo "== UPDATE (an HTTP load balancer on 127.0.0.1:$lb_port)"; submit --file "$work/update.json"
echo "== six requests through the load balancer"
for _ in 1 2 3 4 5 6; do curl -s "http://127.0.0.1:$lb_port/"; done
echo "== the same client with its SERVERID cookie stays on one backend"
cookie="$(curl -s -D - -o /dev/null "http://127.0.0.1:$lb_port/" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')"
echo "cookie: $cookie"
for _ in 1 2 3; do curl -s -H "Cookie: $cookie" "http://127.0.0.1:$lb_port/"; done
echo "== STATS";   submit STATS
echo "== METRICS"; submit METRICS
echo "== DELETE";  submit DELETE
