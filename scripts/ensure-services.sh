#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis servers the tests use are reachable,
# and that the tools they run are installed (espeak-ng and sox, for the
# prompts build; chromium, which the browser tests drive with Playwright). Prints `export VAR=...` lines for the caller to eval. Where
# a server is not up it starts a throwaway one from the installed binaries
# (installing the Debian packages if needed); it never lets the tests skip
# them silently.
set -euo pipefail
log() { echo "ensure-services: $*" >&2; }
PG_URL=${TELECOM_PAY_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${TELECOM_PAY_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
STATE=${TELECOM_PAY_SERVICES_DIR:-/tmp/telecom-pay-services}
mkdir -p "$STATE"

hostport() {  # URL -> "host port"
  python3 - "$1" "$2" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))
PY
}
reachable() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    log "cannot install $* (not root or no apt-get)"; return 1
  fi
}

tools=()
command -v espeak-ng >/dev/null || tools+=(espeak-ng)
command -v sox >/dev/null || tools+=(sox)
command -v chromium >/dev/null || tools+=(chromium)
# Chinese text in the browser tests' screenshots
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || tools+=(fonts-wqy-microhei)
# libfaketime: the statistics browser test runs the demo at 00:30 Shanghai time (tests/demokit.py clock_at)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || tools+=(faketime)
[ ${#tools[@]} = 0 ] || apt_install "${tools[@]}"

read -r pg_host pg_port < <(hostport "$PG_URL" 5432)
if ! reachable "$pg_host" "$pg_port"; then
  log "PostgreSQL not reachable at $pg_host:$pg_port; starting a throwaway server"
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
  pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")
  port=55432; dir="$STATE/pg"
  if ! reachable 127.0.0.1 $port; then
    rm -rf "$dir"; mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
      chown postgres "$dir" 2>/dev/null || { useradd -r postgres 2>/dev/null || true; chown postgres "$dir"; }
      as=(runuser -u postgres --)
    else as=(); fi
    "${as[@]}" "$pgbin/initdb" -D "$dir/data" -A trust -U postgres >&2
    "${as[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" -w start >&2
  fi
  PG_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
fi

read -r r_host r_port < <(hostport "$REDIS_URL" 6379)
if ! reachable "$r_host" "$r_port"; then
  log "Redis not reachable at $r_host:$r_port; starting a throwaway server"
  command -v redis-server >/dev/null || apt_install redis-server
  port=56379
  reachable 127.0.0.1 $port || redis-server --daemonize yes --bind 127.0.0.1 --port $port \
      --save "" --appendonly no --dir "$STATE" --logfile "$STATE/redis.log" >&2
  for _ in $(seq 50); do reachable 127.0.0.1 $port && break; sleep 0.1; done
  REDIS_URL="redis://127.0.0.1:$port/0"
fi

echo "export TELECOM_PAY_TEST_DATABASE_URL='$PG_URL'"
echo "export TELECOM_PAY_TEST_REDIS_URL='$REDIS_URL'"
