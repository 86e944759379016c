#!/usr/bin/env bash
# The worker's main job end to end on loopback: installs what it needs, starts gearmand,
# starts the worker, and submits jobs with `libra-worker submit` as the API server would.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked
bin="$PWD/target/release/libra-worker"
work="$(mktemp -d /tmp/libra-demo.XXXXXX)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gm_port="$(port)"
cleanup() {
  set +e
  [ -n "${worker_pid:-}" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
  "$bin" haproxy stop --config "$work/worker.toml" >/dev/null 2>&1
  [ -n "${gm_pid:-}" ] && kill "$gm_pid" 2>/dev/null
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
