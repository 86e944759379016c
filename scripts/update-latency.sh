#!/usr/bin/env bash
# UPDATE end to end, as an operator sees it: `libra-worker submit` of an UPDATE through a
# real gearmand to the release worker with its managed HAProxy, 20 times each for a
# structural change (alternating client timeout: validate + reload) and a nodes-only
# change (runtime API), on a 2-load-balancer, 10-node appliance. Prints medians in us;
# the DISCOVER line is the submit CLI's own cost (process start, connect), included above.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked --quiet
B="$PWD/target/release/libra-worker"
work="$(mktemp -d /tmp/libra-latency.XXXXXX)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GP="$(port)"; LB="$(port)"
cleanup() { set +e; "$B" haproxy stop --config "$work/w.toml" >/dev/null 2>&1; kill "$wp" "$gp" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
gearmand --listen=127.0.0.1 --port="$GP" --log-file="$work/gm.log" --verbose=ERROR & gp=$!
printf '[gearman]\nservers = ["127.0.0.1:%s"]\n[worker]\nfunction = "lat"\n[log]\nlevel = "warning"\n[haproxy]\nstate_dir = "%s/state"\nbind_address = "127.0.0.1"\n[metrics]\nlisten = ""\n' "$GP" "$work" >"$work/w.toml"
"$B" run --config "$work/w.toml" >"$work/w.log" 2>&1 & wp=$!
sleep 0.5
python3 - "$LB" "$work" <<'PY'
import json, sys
port, work = int(sys.argv[1]), sys.argv[2]
def job(timeout, moved):
    http = [{"id": i, "address": "127.0.0.%d" % (i % 5 + 1), "port": 8000 + i} for i in range(1, 6)]
    tcp = [{"id": 100 + i, "address": "127.0.0.%d" % (i % 5 + 1), "port": 9000 + i} for i in range(1, 6)]
    if moved:
        http[0]["port"] = 8500
        http[1]["weight"] = 3
    return {"hpcs_action": "UPDATE", "loadBalancers": [
        {"protocol": "HTTP", "port": port, "nodes": http, "options": {"client_timeout": timeout}},
        {"protocol": "TCP", "port": port + 1, "nodes": tcp}]}
for name, j in {"s0": job(20000, False), "s1": job(20001, False), "n1": job(20000, True)}.items():
    json.dump(j, open("%s/%s.json" % (work, name), "w"))
PY
t() { local s; s=$(date +%s%N); "$B" submit --server "127.0.0.1:$GP" --function lat --compact "$@" | grep -q '"PASS"' || echo "FAILED $*" >&2; echo $(( ($(date +%s%N) - s) / 1000 )); }
med() { sort -n | awk '{a[NR]=$1} END {printf "n=%d median_us=%d max_us=%d\n", NR, a[int((NR+1)/2)], a[NR]}'; }
t --file "$work/s0.json" >/dev/null
echo -n "structural (validate + reload): "; for _ in $(seq 10); do t --file "$work/s1.json"; t --file "$work/s0.json"; done | med
echo -n "nodes only (runtime API):       "; for _ in $(seq 10); do t --file "$work/n1.json"; t --file "$work/s0.json"; done | med
echo -n "DISCOVER (the CLI's own cost):  "; for _ in $(seq 20); do t DISCOVER; done | med
