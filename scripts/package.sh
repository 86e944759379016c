#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installed with `cargo install` when missing):
#   scripts/package.sh            -> target/debian/libra-worker_<version>-1_<arch>.deb
# PROFILE=<cargo profile> picks the build profile (default `release`; CI packages the
# faster-to-build `package-ci` profile: same code, no LTO). Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: installing cargo-deb (cargo install --locked cargo-deb)" >&2
  cargo install --locked --quiet cargo-deb
fi
out=$(cargo deb --locked --profile "$profile" "$@" | tail -n 1)
echo "$out"
