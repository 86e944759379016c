#!/usr/bin/env bash
# Installs what the tests need, then runs every check: format, clippy, unit, property
# and integration tests (real gearmand, real HAProxy, real backends on loopback). The
# `failpoints` feature builds the crash points the crash tests use; a release build never
# has them. A test whose prerequisite is missing fails under CI=true and is listed at the
# end otherwise (the test runner hides the output of passing tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
skipped=target/tmp/skipped.txt
mkdir -p target/tmp && rm -f "$skipped"
cargo fmt --all -- --check
cargo clippy --all-targets --locked --features failpoints -- -D warnings
status=0
cargo test --locked --all-targets --features failpoints --no-fail-fast || status=$?
if [ -s "$skipped" ]; then
  echo
  echo "==== tests that did not run ===="
  cat "$skipped"
fi
exit "$status"
