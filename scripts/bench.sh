#!/usr/bin/env bash
# The benchmark in one command: builds the release binary, then `libra-worker bench
# --suite`, which starts its own gearmand on a free loopback port, the C worker
# (`gearman -w`) and this worker (null driver), measures both with the same load
# generator and prints the markdown table of docs/performance.md. Everything it writes
# lives in a temporary directory that is removed at the end; every process it starts is
# stopped. Takes 2-4 minutes on 2 cores.
#
#   scripts/bench.sh                         # the full run
#   scripts/bench.sh --scale 0.2 --reps 1    # a quick look
#   scripts/bench.sh --out perf.md --json    # also write the table; print JSON too
#   scripts/bench.sh --stats-config haproxy.toml --stats-setup update.json
#                                            # STATS rows against a HAProxy-driver worker
set -euo pipefail
cd "$(dirname "$0")/.."
for cmd in gearmand gearman; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    echo "bench.sh: $cmd is missing; run scripts/install-deps.sh" >&2
    exit 2
  fi
done
export PATH="$PATH:/usr/sbin"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/libra-worker"
work="$(mktemp -d -t libra-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rc=0
TMPDIR="$work" "$bin" bench --suite "$@" || rc=$?
if [ "$rc" -ne 0 ]; then
  trap - EXIT
  echo "bench.sh: failed; logs kept in $work" >&2
fi
exit "$rc"
