#!/usr/bin/env bash
# Runs the HAProxy-facing integration tests against each HAProxy a supported distribution
# ships and this machine can run beside its own (the system's, 2.6 on Debian 12, is what
# `cargo test` used): Debian 11's 2.2 and Debian 13's 3.0, fetched by
# scripts/haproxy-versions.sh. The worker and the tests take the HAProxy to use from
# LIBRA_WORKER__HAPROXY__BINARY.
#
# The tests: every test of the driver (tests/haproxy*.rs), the drop-in contract with the
# reference callers (callers, dropin: keep-alive across reload storms, long TCP sessions,
# old processes bounded), the crash points and faults that involve HAProxy, metrics, and
# the job-to-configuration property (the renderer writes only what that HAProxy reads).
# Not here: the sudo/service-mode and TLS tests (they test the system's packaging and
# OpenSSL, not HAProxy's version), the bench's (2.6 only).
#
#   scripts/test-haproxy-versions.sh [VERSION...]     # default: 2.2 3.0
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(2.2 3.0)
skipped=target/tmp/skipped.txt
mkdir -p target/tmp
if ! list="$(scripts/haproxy-versions.sh)"; then
  if [ "${CI:-}" = true ]; then
    echo "test-haproxy-versions: cannot fetch the HAProxy versions" >&2
    exit 1
  fi
  echo "SKIPPED: HAProxy ${versions[*]} tests: scripts/haproxy-versions.sh failed (no network?)" | tee -a "$skipped"
  exit 0
fi
tests=(haproxy haproxy_reload haproxy_batch haproxy_versions callers dropin crash_points faults recovery metrics job_to_config)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
status=0
for v in "${versions[@]}"; do
  binary="$(awk -v v="$v" '$1 == v {print $2}' <<<"$list")"
  [ -n "$binary" ] || { echo "test-haproxy-versions: no HAProxy $v" >&2; exit 1; }
  echo "==== HAProxy $v ($("$binary" -v | head -1)) ===="
  LIBRA_WORKER__HAPROXY__BINARY="$binary" \
    cargo test --locked --features failpoints --no-fail-fast "${args[@]}" || status=$?
done
exit "$status"
