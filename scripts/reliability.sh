#!/usr/bin/env bash
# Every fault and hostile input of the README's Reliability section, in one run, with
# real processes (gearmand, HAProxy, the worker binary, fake job servers):
#   scripts/reliability.sh              # the counts in the README
#   LIBRA_FAULT_ROUNDS=200 scripts/reliability.sh   # more worker kills mid-UPDATE
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --locked --test faults --test hostile_job_server --test tls --test secrets \
  --test job_to_config --test haproxy -- --nocapture --test-threads 2 2>&1 \
  | grep -E '^test |test result|SKIPPED|generated jobs'
