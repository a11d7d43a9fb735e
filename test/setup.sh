#!/usr/bin/env bash
# Makes a checkout ready to run: Debian packages for the dump tools and the
# throwaway test servers, npm dependencies, and the TypeScript build.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# binary -> Debian package
declare -A PKG=(
  [zstd]=zstd [pigz]=pigz
  [mariadbd]=mariadb-server [mariadb-install-db]=mariadb-server [mariadb]=mariadb-client [mariadb-dump]=mariadb-client
  [psql]=postgresql-client [pg_dump]=postgresql-client [pg_restore]=postgresql-client
  [redis-server]=redis-server [redis-cli]=redis-tools
  [promtool]=prometheus [systemd-analyze]=systemd [runuser]=util-linux [age]=age [age-keygen]=age
  # systemd readiness test: systemd-notify, a notify-socket listener, a pseudo-terminal
  [systemd-notify]=systemd [python3]=python3 [script]=util-linux
  # doctor test: a controller with a shifted clock
  [faketime]=faketime
  # npm run bench: data generators and the raw tools it compares envsnap with
  [sysbench]=sysbench [mydumper]=mydumper [restic]=restic [borg]=borgbackup
)
missing=()
for bin in "${!PKG[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("${PKG[$bin]}")
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# GNU time (the bench's measurements); `command -v time` finds the shell keyword instead.
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: $pkgs" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  else
    echo "setup: missing Debian packages: $pkgs" >&2
    echo "setup: run: sudo apt-get install -y $pkgs" >&2
    exit 1
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund >&2
fi
npm run --silent build >&2
