#!/usr/bin/env bash
# Install what citysense needs on a Debian 12 or 13 machine, as root. Idempotent: when everything is
# present it only checks, in about a second.
#
#   - PostgreSQL with the TimescaleDB extension (Apache edition).
#       Debian 13 ships postgresql-17-timescaledb: install it with its server.
#       Debian 12 ships none: build Debian 13's own timescaledb source package against the installed
#       server, from a deb-src line for trixie that reuses the mirror already in the apt sources.
#   - Mosquitto broker and its C clients (the tests and benchmarks use both).
#   - Every other program the test suite calls: wrk (the benchmarks' smoke test), promtool (Debian's
#     prometheus package: the alerting rules), systemd-analyze (the unit files), openssl, and libfaketime
#     (an ingestor with a skewed clock).
#   - The dashboard's JavaScript libraries, with npm (Debian's nodejs and npm when missing).
#   - Chromium and its WebDriver (Debian's chromium, chromium-driver): the dashboard's browser tests.
#   - Patroni, etcd and pgBackRest (Debian): the failover test (make test-ha) and the restore test.
#   - A Python virtual environment in .venv with the project and its test extras.
#
# Packages that carry a daemon (mosquitto, prometheus, etcd, patroni) are installed without starting it, and left
# disabled when this script installed them: citysense runs its own broker on its own ports. A system
# broker that was already there is left alone, unless `make run` needs a port it holds
# (CITYSENSE_INSTALL_FOR_RUN=1, set by `make run`): then it is stopped (not disabled), and this says so.
#
# The local stack's services (ingestor, API, simulator) run as the unprivileged system user `citysense`,
# which this script creates.
#
# Environment: CITYSENSE_VENV (default: <repo>/.venv), CITYSENSE_PYTHON (default: python3),
# CITYSENSE_EXTRAS (default: test; `make bench` adds bench).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${CITYSENSE_VENV:-$repo/.venv}"
python="${CITYSENSE_PYTHON:-python3}"
state="$repo/.citysense"
mkdir -p "$state"

log() { printf '[install] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "run as root (apt-get and the TimescaleDB build install into system paths)"
  exit 1
fi

. /etc/os-release
codename="${VERSION_CODENAME:-}"

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  # No daemon starts during the install (policy-rc.d 101: "action forbidden"), unless a policy exists.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { [ $own_policy = 1 ] && rm -f "$policy"; return 1; }
  [ $own_policy = 1 ] && rm -f "$policy"
  # Daemons this run installed stay off: citysense starts its own instances on its own ports.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for p in "${missing[@]}"; do
      case "$p" in
        mosquitto|prometheus|patroni) systemctl disable --now "$p" >/dev/null 2>&1 || true ;;
        etcd-server) systemctl disable --now etcd >/dev/null 2>&1 || true ;;
      esac
    done
  fi
}

# The Debian mirror this machine already uses (deb822 or one-line sources), never a host of our own.
debian_mirror() {
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri=$(awk '/^URIs:/ {for (i=2;i<=NF;i++) print $i}' /etc/apt/sources.list.d/*.sources \
          | grep -v -- '-security' | grep -m1 'debian' || true)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^(https?|ftp|file):/) {print $i; exit}}' \
          /etc/apt/sources.list || true)
  fi
  [ -n "$uri" ] || uri="http://deb.debian.org/debian"
  printf '%s\n' "${uri%/}"
}

install_postgres_debian13() {
  local nn=17
  apt_install "postgresql-$nn" "postgresql-$nn-timescaledb" postgresql-client-$nn
  echo "$nn" > "$state/pg_version"
}

install_postgres_debian12() {
  local nn=15
  apt_install "postgresql-$nn" "postgresql-client-$nn" "postgresql-server-dev-$nn"
  echo "$nn" > "$state/pg_version"
  local sharedir="/usr/share/postgresql/$nn/extension"
  if ls "$sharedir"/timescaledb--*.sql >/dev/null 2>&1 && [ -f "/usr/lib/postgresql/$nn/lib/timescaledb.so" ]; then
    return 0
  fi
  apt_install cmake gcc make dpkg-dev libssl-dev libkrb5-dev
  local mirror list=/etc/apt/sources.list.d/citysense-trixie-src.list
  mirror=$(debian_mirror)
  if [ ! -f "$list" ]; then
    log "adding deb-src $mirror trixie main (source only: no binary package comes from it)"
    echo "deb-src $mirror trixie main" > "$list"
    apt_updated=0
  fi
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  local build="$state/build/timescaledb"
  rm -rf "$build"; mkdir -p "$build"
  log "building TimescaleDB (Apache edition) from Debian 13's source package against PostgreSQL $nn"
  (cd "$build" && apt-get source -qq timescaledb >/dev/null 2>&1)
  local src
  src=$(find "$build" -maxdepth 1 -mindepth 1 -type d -name 'timescaledb-*' | head -n1)
  [ -n "$src" ] || { log "apt-get source timescaledb found nothing"; exit 1; }
  (
    cd "$src"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DAPACHE_ONLY=ON \
      -DPG_CONFIG="/usr/lib/postgresql/$nn/bin/pg_config" \
      -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
      -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF >/dev/null
    cmake --build build -j"$(nproc)" >/dev/null
    cmake --install build >/dev/null
  )
  log "TimescaleDB installed into PostgreSQL $nn"
}

case "$codename" in
  trixie|forky|sid) install_postgres_debian13 ;;
  bookworm) install_postgres_debian12 ;;
  *) log "unsupported release '$codename' (Debian 12 bookworm or 13 trixie)"; exit 1 ;;
esac

# python3-etcd: Patroni's etcd3 store imports it; Debian lists it as one alternative of several (consul,
# kazoo, kubernetes, pysyncobj), so name it rather than leave apt to choose.
apt_install mosquitto mosquitto-clients wrk prometheus systemd openssl faketime iproute2 chromium chromium-driver \
  patroni python3-etcd etcd-server pgbackrest

# The user the local stack's services run as (no login, no home).
if ! id -u citysense >/dev/null 2>&1; then
  log "creating the system user citysense"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin citysense
fi

# `make run` needs the broker ports: a system Mosquitto holding one of them is stopped, and only then.
if [ "${CITYSENSE_INSTALL_FOR_RUN:-0}" = 1 ] && command -v ss >/dev/null 2>&1; then
  for port in "${CITYSENSE_MQTT_PORT:-1883}" "${CITYSENSE_MQTT_TLS_PORT:-8883}"; do
    [ "$port" = 0 ] && continue
    holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
    if [ -n "$holder" ] && [ "$(cat "/proc/$holder/comm" 2>/dev/null)" = mosquitto ] \
       && ! grep -qa citysense "/proc/$holder/cmdline" 2>/dev/null; then
      log "stopping the system Mosquitto: it holds port $port, which citysense up needs (systemctl start mosquitto brings it back)"
      systemctl stop mosquitto >/dev/null 2>&1 || kill "$holder"
    fi
  done
fi
extras="${CITYSENSE_EXTRAS:-test}"

# The dashboard's map and chart libraries (Leaflet, uPlot), from npm's registry at the versions and
# checksums services/api/dashboard/package-lock.json pins, copied into the package's static/vendor/ (which
# the wheel then carries; never committed, never loaded from a CDN). Redone only when the lockfile changes.
dash="$repo/services/api/dashboard"
vendor="$dash/static/vendor"
assets="$(sha256sum "$dash/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$vendor/.lock-sha256" ] || [ "$(cat "$vendor/.lock-sha256")" != "$assets" ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  log "npm ci (the dashboard's Leaflet and uPlot)"
  (cd "$dash" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
  rm -rf "$vendor"; mkdir -p "$vendor/images"
  cp "$dash/node_modules/leaflet/dist/leaflet.js" "$dash/node_modules/leaflet/dist/leaflet.css" "$vendor/"
  cp "$dash/node_modules/leaflet/dist/images/"*.png "$vendor/images/"
  cp "$dash/node_modules/leaflet/LICENSE" "$vendor/LICENSE.leaflet"
  cp "$dash/node_modules/uplot/dist/uPlot.iife.min.js" "$dash/node_modules/uplot/dist/uPlot.min.css" "$vendor/"
  cp "$dash/node_modules/uplot/LICENSE" "$vendor/LICENSE.uplot"
  echo "$assets" > "$vendor/.lock-sha256"
fi

# Python: a virtual environment with the project installed (editable) and its test extras. Reinstalled
# only when pyproject.toml changes.
stamp="$venv/.citysense-installed"
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1) $extras"
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "pip install -e .[$extras]"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e "$repo[$extras]"
  echo "$want" > "$stamp"
fi
log "ready"
