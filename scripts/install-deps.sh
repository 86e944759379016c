#!/usr/bin/env bash
# Installs the system packages the build, the demo and the tests need (Debian/Ubuntu), if missing.
set -euo pipefail
declare -A pkg_for=(
  [gearmand]=gearman-job-server [gearman]=gearman-tools [haproxy]=haproxy
  [promtool]=prometheus [wrk]=wrk [openssl]=openssl [curl]=curl
  # tests/service_sudo*.rs run the worker unprivileged through the real sudo.
  [sudo]=sudo [visudo]=sudo
  # scripts/test-package.sh: the Debian package checked with the real tools.
  [lintian]=lintian [man]=man-db [logrotate]=logrotate [systemd-analyze]=systemd
  [dpkg-deb]=dpkg [setpriv]=util-linux [python3]=python3
)
missing=()
for cmd in "${!pkg_for[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${pkg_for[$cmd]}")
  fi
done
# Building links Debian's libssl (TLS to job servers, the Swift archiver): its headers
# and pkg-config file come with libssl-dev, found through pkg-config.
if ! pkg-config --exists openssl 2>/dev/null; then
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  missing+=(libssl-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts packaged daemons on install; the tests start their own on free ports.
for svc in gearman-job-server haproxy prometheus; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
