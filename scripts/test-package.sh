#!/usr/bin/env bash
# The Debian package, tested with the real tools (run as root; CI runs it from
# scripts/test.sh): build it (scripts/package.sh), lintian with no error, dpkg -i,
# the unit through systemd-analyze verify, the man page through man -l, the installed
# binary as user libra with the installed default configuration answering DISCOVER
# through a test gearmand, a managed HAProxy whose log logrotate rotates while it serves,
# the upgrade notes' dry run (tests/package_upgrade.rs), a reinstall keeping a changed
# conffile, then dpkg -r and dpkg --purge leaving no worker and no state, and HAProxy
# still serving (no maintainer script stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "test-package: run as root (dpkg -i)" >&2; exit 1; }

fail() { echo "test-package: FAILED: $*" >&2; exit 1; }
step() { echo "test-package: $*" >&2; }

work=$(mktemp -d /tmp/libra-package-test.XXXXXX)
chmod 755 "$work"
cleanup() {
  [ -n "${worker_pid:-}" ] && kill "$worker_pid" 2>/dev/null || true
  [ -n "${gearmand_pid:-}" ] && kill "$gearmand_pid" 2>/dev/null || true
  [ -n "${backend_pid:-}" ] && kill "$backend_pid" 2>/dev/null || true
  if [ -r /var/lib/libra-worker/haproxy.pid ]; then kill "$(cat /var/lib/libra-worker/haproxy.pid)" 2>/dev/null || true; fi
  [ -n "${haproxy_master:-}" ] && kill "$haproxy_master" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step "building the package (PROFILE=${PROFILE:=package-ci})"
deb=$(PROFILE="$PROFILE" scripts/package.sh)
[ -f "$deb" ] || fail "no package at '$deb'"
step "package: $deb"

step "lintian"
lintian --fail-on error "$deb" | tee "$work/lintian.txt" || fail "lintian reports errors"

if dpkg -s libra-worker >/dev/null 2>&1; then dpkg --purge libra-worker >/dev/null; fi
step "dpkg -i"
dpkg -i "$deb" || fail "dpkg -i"

getent passwd libra >/dev/null || fail "no user libra"
[ "$(stat -c '%U:%G %a' /var/lib/libra-worker)" = "libra:libra 750" ] || fail "state dir: $(stat -c '%U:%G %a' /var/lib/libra-worker)"
[ "$(stat -c '%U:%G %a' /etc/libra/libra-worker.toml)" = "root:libra 640" ] || fail "conffile: $(stat -c '%U:%G %a' /etc/libra/libra-worker.toml)"
grep -qx /etc/libra/libra-worker.toml /var/lib/dpkg/info/libra-worker.conffiles || fail "the configuration is not a conffile"
for f in /usr/share/bash-completion/completions/libra-worker /usr/share/zsh/vendor-completions/_libra-worker \
         /usr/share/fish/vendor_completions.d/libra-worker.fish /etc/logrotate.d/libra-worker \
         /usr/share/doc/libra-worker/upgrade.md /usr/share/doc/libra-worker/compatibility.md; do
  [ -s "$f" ] || fail "missing $f"
done
bash -n /usr/share/bash-completion/completions/libra-worker || fail "bash completion does not parse"
# Every page build.rs generated is in the package (Cargo.toml names them one by one).
for page in target/"$PROFILE"/libra-worker-assets/man/*.1.gz; do
  [ -f "/usr/share/man/man1/$(basename "$page")" ] || fail "the package lacks $(basename "$page")"
done

step "systemd-analyze verify"
systemd-analyze verify /usr/lib/systemd/system/libra-worker.service 2>&1 | tee "$work/verify.txt"
# Without systemd as PID 1 verify still parses every directive; any complaint is an error.
if grep -v -e "^$" "$work/verify.txt" | grep -q .; then fail "systemd-analyze verify complained"; fi
grep -qx "KillMode=process" /usr/lib/systemd/system/libra-worker.service || fail "KillMode"
grep -qx "Type=notify" /usr/lib/systemd/system/libra-worker.service || fail "Type"

step "man -l"
man -l /usr/share/man/man1/libra-worker.1.gz > "$work/man.txt" 2>"$work/man.err" || fail "man -l: $(cat "$work/man.err")"
grep -q "SIGHUP" "$work/man.txt" || fail "the man page lacks the signals"
man -l /usr/share/man/man1/libra-worker-run.1.gz | grep -q -- "--config" || fail "libra-worker-run(1)"
# Generated from the same definitions as --help: every subcommand is in both.
for sub in run check-config sudoers submit haproxy; do
  /usr/bin/libra-worker --help | grep -q "^  $sub" || fail "--help lacks $sub"
  grep -q "libra-worker-$sub" "$work/man.txt" || fail "the man page lacks $sub"
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "the installed binary as libra with the installed configuration"
gport=$(free_port)
gearmand --listen=127.0.0.1 --port="$gport" --log-file=none --threads=1 &
gearmand_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$gport") 2>/dev/null && break; sleep 0.1; done
# As the unit runs it: user libra, no new privileges, CAP_NET_BIND_SERVICE as the only
# (ambient) capability, so the managed HAProxy can listen below 1024. (ProtectSystem and
# the other namespace settings need systemd as PID 1, which CI does not have.)
setpriv --reuid=libra --regid=libra --init-groups --no-new-privs \
  --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service --bounding-set=-all,+net_bind_service \
  -- env LIBRA_WORKER__GEARMAN__SERVERS="127.0.0.1:$gport" \
  LIBRA_WORKER__WORKER__FUNCTION=package-test LIBRA_WORKER__HAPROXY__BIND_ADDRESS=127.0.0.1 \
  /usr/bin/libra-worker run --config /etc/libra/libra-worker.toml 2>"$work/worker.log" &
worker_pid=$!
answer=""
for _ in $(seq 50); do
  answer=$(/usr/bin/libra-worker submit --server "127.0.0.1:$gport" --function package-test --timeout 5 --compact DISCOVER 2>/dev/null) && break
  sleep 0.2
done
echo "$answer" | grep -q '"hpcs_response":"PASS"' || fail "DISCOVER: '$answer'; log: $(cat "$work/worker.log")"
[ "$(ps -o user= -p "$worker_pid")" = "libra" ] || fail "the worker does not run as libra"

step "managed HAProxy as libra, and its log rotated while it serves"
bport=$(free_port)
# A privileged port, as load balancers use (80, 443): bindable only through the capability.
lport=$(python3 -c 'import socket
for p in range(900, 1000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass')
mkdir -p "$work/www" && echo backend-ok > "$work/www/index.html"
python3 -m http.server "$bport" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
backend_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$bport") 2>/dev/null && break; sleep 0.1; done
update=$(printf '{"hpcs_action":"UPDATE","loadBalancers":[{"name":"web","protocol":"HTTP","port":%s,"nodes":[{"id":1,"address":"127.0.0.1","port":%s}]}]}' "$lport" "$bport")
answer=$(/usr/bin/libra-worker submit --server "127.0.0.1:$gport" --function package-test --timeout 60 --compact --json "$update")
echo "$answer" | grep -q '"hpcs_response":"PASS"' || fail "UPDATE: $answer; log: $(cat "$work/worker.log")"
haproxy_master=$(cat /var/lib/libra-worker/haproxy.pid)
[ "$(ps -o user= -p "$haproxy_master")" = "libra" ] || fail "HAProxy does not run as libra"
grep -q "^NoNewPrivs:[[:space:]]*1" "/proc/$haproxy_master/status" || fail "HAProxy runs without no_new_privs"
log=/var/lib/libra-worker/haproxy.log
for i in $(seq 5); do curl -fsS "http://127.0.0.1:$lport/?before-rotation-$i" >/dev/null || fail "traffic"; done
for _ in $(seq 50); do grep -q before-rotation-5 "$log" && break; sleep 0.1; done
grep -q before-rotation-5 "$log" || fail "HAProxy does not log traffic to $log"
logrotate -s "$work/logrotate.status" -f /etc/logrotate.d/libra-worker || fail "logrotate"
[ -f "$log.1" ] || fail "no rotated log"
grep -q before-rotation-5 "$log.1" || fail "the rotated log lacks the old lines"
for i in $(seq 5); do curl -fsS "http://127.0.0.1:$lport/?after-rotation-$i" >/dev/null || fail "traffic after rotation"; done
for _ in $(seq 50); do grep -q after-rotation-5 "$log" && break; sleep 0.1; done
grep -q after-rotation-5 "$log" || fail "HAProxy's lines after rotation are lost"
grep -q before-rotation "$log" && fail "the current log still has the rotated lines"
# copytruncate with O_APPEND: no hole of NULs where the old content was.
if tr -d '\000' < "$log" | cmp -s - "$log"; then :; else fail "the log has NUL bytes after rotation"; fi
answer=$(/usr/bin/libra-worker submit --server "127.0.0.1:$gport" --function package-test --timeout 30 --compact STATS)
echo "$answer" | grep -q '"hpcs_response":"PASS"' || fail "STATS after rotation: $answer"
kill "$worker_pid"; wait "$worker_pid" || true; worker_pid=""

step "the upgrade notes' dry run (tests/package_upgrade.rs)"
LIBRA_WORKER_BIN=/usr/bin/libra-worker cargo test --locked --features failpoints --test package_upgrade -- --ignored --nocapture \
  || fail "the upgrade dry run"

step "a reinstall keeps a changed conffile"
echo "# changed by the operator" >> /etc/libra/libra-worker.toml
dpkg -i "$deb" >/dev/null || fail "reinstall"
tail -n 1 /etc/libra/libra-worker.toml | grep -qx "# changed by the operator" || fail "the changed conffile was replaced"

step "dpkg -r stops the worker, not HAProxy"
setpriv --reuid=libra --regid=libra --init-groups -- env LIBRA_WORKER__GEARMAN__SERVERS="127.0.0.1:$gport" LIBRA_WORKER__WORKER__FUNCTION=package-test \
  /usr/bin/libra-worker run --config /etc/libra/libra-worker.toml 2>>"$work/worker.log" &
worker_pid=$!
for _ in $(seq 50); do grep -q "connected to job server" "$work/worker.log" && break; sleep 0.2; done
dpkg -r libra-worker >/dev/null || fail "dpkg -r"
for _ in $(seq 100); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$worker_pid" 2>/dev/null && fail "dpkg -r left the worker running"
worker_pid=""
kill -0 "$haproxy_master" 2>/dev/null || fail "dpkg -r stopped the managed HAProxy"
curl -fsS "http://127.0.0.1:$lport/?after-removal" >/dev/null || fail "HAProxy stopped serving after dpkg -r"
[ -e /usr/bin/libra-worker ] && fail "dpkg -r left the binary"
[ -f /etc/libra/libra-worker.toml ] || fail "dpkg -r removed the conffile (purge does that)"

step "dpkg --purge removes the state, leaves HAProxy running and says so"
dpkg --purge libra-worker 2>"$work/purge.err" >/dev/null || fail "dpkg --purge"
grep -q "still serving" "$work/purge.err" || fail "purge did not name the running HAProxy: $(cat "$work/purge.err")"
[ -e /var/lib/libra-worker ] && fail "purge left /var/lib/libra-worker"
[ -e /etc/libra/libra-worker.toml ] && fail "purge left the conffile"
[ -e /etc/logrotate.d/libra-worker ] && fail "purge left the logrotate rule"
# Only the package's binary counts (a developer's machine may run other builds).
for p in $(pgrep -x libra-worker || true); do
  case "$(readlink "/proc/$p/exe" 2>/dev/null)" in
    /usr/bin/libra-worker*) fail "a libra-worker process of the package is left (pid $p)" ;;
  esac
done
kill -0 "$haproxy_master" 2>/dev/null || fail "purge stopped HAProxy"
kill -USR1 "$haproxy_master"; haproxy_master=""
step "passed"
