#!/usr/bin/env bash
# The benchmark in one command: builds the release binaries, then `libra-bench --suite`,
# which starts its own gearmand on a free loopback port, the C worker (`gearman -w`)
# and the libra-worker beside it (null driver), measures both with the same load
# generator and prints the markdown tables of docs/performance.md. The STATS rows run
# against a second worker with the HAProxy driver (managed HAProxy on loopback), and the
# UPDATE latency and zero-drop (wrk) sections follow. Everything it writes lives in a
# temporary directory that is removed at the end; every process it starts is stopped,
# HAProxy included. About 5 minutes on 2 cores; about 1 minute with --quick.
#
#   scripts/bench.sh                         # the full run
#   scripts/bench.sh --quick                 # a quick look (1 rep, x0.2 jobs, 20 UPDATEs)
#   scripts/bench.sh --out perf.md --json    # also write the tables; print JSON too
#   scripts/bench.sh --no-haproxy            # only the Gearman path (null driver)
#   scripts/bench.sh --stats-config haproxy.toml --stats-setup update.json
#                                            # STATS rows against your own worker config
#   target/release/libra-bench --update-latency   # one section alone (its own gearmand)
#   target/release/libra-bench --zero-drop
set -euo pipefail
cd "$(dirname "$0")/.."
for cmd in gearmand gearman; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    echo "bench.sh: $cmd is missing; run scripts/install-deps.sh" >&2
    exit 2
  fi
done
export PATH="$PATH:/usr/sbin"
extra=()
if [[ " $* " != *" --no-haproxy "* ]] && ! command -v haproxy >/dev/null 2>&1; then
  echo "bench.sh: haproxy is missing (scripts/install-deps.sh); running with --no-haproxy" >&2
  extra+=(--no-haproxy)
fi
if ! command -v wrk >/dev/null 2>&1; then
  echo "bench.sh: wrk is missing (apt-get install wrk); the zero-drop section is skipped" >&2
fi
# The bench starts the worker binary beside its own: both from the same build.
cargo build --release --locked --quiet -p libra-worker -p libra-bench
bin="${CARGO_TARGET_DIR:-target}/release/libra-bench"
work="$(mktemp -d -t libra-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rc=0
TMPDIR="$work" "$bin" --suite "${extra[@]}" "$@" || rc=$?
if [ "$rc" -ne 0 ]; then
  trap - EXIT
  echo "bench.sh: failed; logs kept in $work" >&2
fi
exit "$rc"
