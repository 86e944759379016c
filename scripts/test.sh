#!/usr/bin/env bash
# Installs what the tests need, then runs every check: format, clippy, unit, property
# and integration tests (real gearmand, real HAProxy, real backends on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets --no-fail-fast
