#!/usr/bin/env bash
# Fetches the HAProxy of Debian 11 (2.2) and Debian 13 (3.0) into a cache directory, without
# touching the system's apt state (private lists, cache and status; never adds bullseye or
# trixie to the system's sources, which would upgrade the machine's libc), and makes one
# wrapper per version that runs it:
#   <cache>/2.2/haproxy   Debian 11's 2.2 with bullseye's libssl1.1 etc., the system's libc
#   <cache>/3.0/haproxy   Debian 13's 3.0 through trixie's own loader and libc
# The worker takes a wrapper as `[haproxy] binary` (LIBRA_WORKER__HAPROXY__BINARY). A
# wrapper keeps itself as argv[0] (`--argv0`), so a master-worker reload re-executes the
# wrapper, not the bare binary.
#
#   scripts/haproxy-versions.sh [CACHE_DIR]     # default: target/haproxy-versions
#   prints "<version> <wrapper path>" for each version once it runs
set -euo pipefail
cd "$(dirname "$0")/.."
cache="$(realpath -m "${1:-target/haproxy-versions}")"
mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial"
cat > "$cache/apt/sources.list" <<EOF
deb http://deb.debian.org/debian bullseye main
deb http://security.debian.org/debian-security bullseye-security main
deb http://deb.debian.org/debian trixie main
deb http://deb.debian.org/debian-security trixie-security main
EOF
apt_opts=(
  -o "Dir::Etc::SourceList=$cache/apt/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$cache/apt/lists"
  -o "Dir::Cache=$cache/apt/cache"
  -o "Dir::State::status=/dev/null"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)

# The newest version of a package in one suite (bullseye or trixie), from the private lists.
version_in() {
  apt-cache "${apt_opts[@]}" madison "$1" | awk -v s="$2" '$0 ~ s {print $3; exit}'
}

# Downloads packages (name or name@suite) and unpacks them into a root directory.
unpack() {
  local root="$1" suite="$2"; shift 2
  local debs="$cache/debs/$suite"
  mkdir -p "$debs" "$root"
  local pkg ver
  for pkg in "$@"; do
    ver="$(version_in "$pkg" "$suite")"
    [ -n "$ver" ] || { echo "haproxy-versions: no $pkg in $suite" >&2; exit 1; }
    if ! ls "$debs/${pkg}_"*.deb >/dev/null 2>&1; then
      (cd "$debs" && apt-get "${apt_opts[@]}" -qq download "$pkg=$ver")
    fi
  done
  for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$root"
  done
}

lists_fresh="$cache/apt/lists/.fetched"
if [ ! -f "$lists_fresh" ] || [ -n "$(find "$lists_fresh" -mmin +1440)" ]; then
  apt-get "${apt_opts[@]}" -qq update
  touch "$lists_fresh"
fi

# 2.2: bullseye's HAProxy and the libraries it needs that the system no longer has; the
# system's libc and loader.
root22="$cache/2.2/root"
if [ ! -x "$root22/usr/sbin/haproxy" ]; then
  unpack "$root22" bullseye haproxy libssl1.1 liblua5.3-0 libpcre2-8-0 libpcre3
fi
cat > "$cache/2.2/haproxy" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$root22/usr/lib/x86_64-linux-gnu:$root22/lib/x86_64-linux-gnu" exec "$root22/usr/sbin/haproxy" "\$@"
EOF
chmod 755 "$cache/2.2/haproxy"

# 3.0: trixie's HAProxy needs trixie's libc (2.38 and later): run it through that libc's
# own loader, with `--argv0` so a reload re-executes this wrapper.
root30="$cache/3.0/root"
if [ ! -x "$root30/usr/sbin/haproxy" ]; then
  unpack "$root30" trixie haproxy libc6 libssl3t64 liblua5.4-0 libjemalloc2 libpcre2-8-0 \
    libcrypt1 libopentracing-c-wrapper0t64 libopentracing1 libstdc++6 libgcc-s1 libzstd1 \
    zlib1g libsystemd0 liblzma5 libcap2 libgcrypt20 libgpg-error0 liblz4-1
fi
lib30="$root30/usr/lib/x86_64-linux-gnu"
cat > "$cache/3.0/haproxy" <<EOF
#!/bin/sh
exec "$lib30/ld-linux-x86-64.so.2" --library-path "$lib30:$root30/lib/x86_64-linux-gnu" --argv0 "\$0" "$root30/usr/sbin/haproxy" "\$@"
EOF
chmod 755 "$cache/3.0/haproxy"

for v in 2.2 3.0; do
  if ! out="$("$cache/$v/haproxy" -v 2>&1)"; then
    echo "haproxy-versions: $v does not run: $out" >&2
    exit 1
  fi
  echo "$v $cache/$v/haproxy"
done
