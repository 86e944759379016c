#!/usr/bin/env bash
# Installs what the tests need, then runs every check of the workspace (the worker and
# `bench/`, libra-bench): format, clippy, unit, property and integration tests (real
# gearmand, real HAProxy, real backends on loopback). The `failpoints` feature (the
# worker's) builds the crash points the crash tests use; a release build never has them.
# Then the HAProxy-facing tests once more per HAProxy version (scripts/test-haproxy-versions.sh).
# A test whose prerequisite is missing fails under CI=true and is listed at the end
# otherwise (the test runner hides the output of passing tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
skipped=target/tmp/skipped.txt
mkdir -p target/tmp && rm -f "$skipped"
# The other HAProxy versions are fetched meanwhile (network, not CPU; cached for
# scripts/test-haproxy-versions.sh, which waits for this first).
(scripts/haproxy-versions.sh > target/tmp/haproxy-versions.log 2>&1 || true) &
versions_fetch=$!
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked --features failpoints -- -D warnings
status=0
started=$SECONDS
phase() { echo "==== $1 ($((SECONDS - started)) s since the tests began)"; }
as_root=false
[ "$(id -u)" -eq 0 ] && as_root=true
# One run for both packages: the bench's tests start the libra-worker binary it builds.
cargo test --locked --workspace --all-targets --features failpoints --no-run
# The Debian package builds meanwhile (its own profile directory, so no lock is shared
# with the tests): the tests mostly wait on sockets and processes, so the build uses
# the CPU they leave idle. scripts/test-package.sh tests it at the end.
if $as_root; then
  (PROFILE=package-ci scripts/package.sh > target/tmp/package-build.log 2>&1; echo $? > target/tmp/package-build.rc) &
  package_build=$!
fi
phase "the suite"
cargo test --locked --workspace --all-targets --features failpoints --no-fail-fast || status=$?
# The HAProxy-facing tests again on the other HAProxy versions distributions ship (2.2, 3.0).
phase "other HAProxy versions"
wait "$versions_fetch" || true
scripts/test-haproxy-versions.sh || status=$?
# The Debian package: built, linted, installed, exercised, upgraded to, removed (root only:
# it runs dpkg; elsewhere it is listed as not run, and fails under CI=true).
if $as_root; then
  phase "the package (waiting for its build)"
  wait "$package_build" || true
  if [ "$(cat target/tmp/package-build.rc 2>/dev/null)" != 0 ]; then
    cat target/tmp/package-build.log
    echo "scripts/package.sh failed" >&2
    status=1
  fi
  phase "the package"
  scripts/test-package.sh || status=$?
elif [ "${CI:-}" = true ]; then
  echo "test-package: CI must run as root (dpkg -i)" >&2
  status=1
else
  echo "scripts/test-package.sh: needs root (dpkg -i)" >> "$skipped"
fi
phase "done"
if [ -s "$skipped" ]; then
  echo
  echo "==== tests that did not run ===="
  cat "$skipped"
fi
exit "$status"
