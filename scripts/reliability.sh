#!/usr/bin/env bash
# Runs exactly the tests the README's Reliability table names (its last column, read from
# the README so the two cannot drift), with real processes (gearmand, HAProxy, the worker
# binary built with its crash points, fake job servers):
#   scripts/reliability.sh                          # the counts in the README
#   LIBRA_FAULT_ROUNDS=200 scripts/reliability.sh   # more random worker kills
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# `file::function` pairs from the table's rows.
tests=$(sed -n '/^## Reliability/,/^## /p' README.md | grep '^| ' \
  | grep -o '`[a-z_]*::[a-z0-9_]*`' | tr -d '`' | sort -u)
[ -n "$tests" ] || { echo "no tests found in the README's Reliability table" >&2; exit 1; }
status=0
for file in $(echo "$tests" | cut -d: -f1 | sort -u); do
  names=$(echo "$tests" | grep "^$file::" | sed 's/^[a-z_]*:://')
  echo "== tests/$file.rs: $(echo $names)"
  # shellcheck disable=SC2086
  cargo test --locked --features failpoints --test "$file" -- --exact $names --test-threads 2 \
    || status=$?
done
exit "$status"
