# Shared helpers for the hack/ scripts. Source it; do not run it.

SUMMIT_ENV_ROOT="${SUMMIT_ENV_ROOT:-/tmp/summit-config}"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The directory of environment $1 ("test", "demo", ...).
env_dir() { printf '%s/%s' "$SUMMIT_ENV_ROOT" "$1"; }

# A TCP port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2s until it succeeds.
wait_until() {
  local limit="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "$what did not come up within ${limit}s"
    fi
    sleep 0.2
  done
}

# tested LOG COMMAND...: runs the test COMMAND with its output kept in LOG as well, so
# that what failed can be told again after every other log was printed.
tested() {
  local kept="$1"
  shift
  "$@" 2>&1 | tee "$kept"
}

# failures LOG: each failed test of LOG and how it failed, for the last lines of a run,
# which are the lines CI shows.
failures() {
  [[ -s $1 ]] || return 0
  grep -qE '^test .* FAILED$' "$1" || return 0
  {
    echo "==> what failed"
    grep -E '^test .* FAILED$' "$1"
    # A test that returns an error panics nowhere: nothing more to show is no failure.
    grep -E -A6 'panicked at' "$1" | head -n 120 || true
  } >&2
}

# start NAME COMMAND...: runs COMMAND in its own session with output to $dir/NAME.log,
# records its pid so env-down.sh can stop it, and its command line in $dir/NAME.cmd so
# env-ctl.sh can start it again after a fault test stopped it.
start() {
  local name="$1"
  shift
  printf '%q ' "$@" >"$dir/$name.cmd"
  setsid "$@" >>"$dir/$name.log" 2>&1 </dev/null &
  echo "$! $name" >>"$dir/pids"
}

# The PostgreSQL server binaries of Debian's newest installed major version.
pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [[ -x "$dir/initdb" ]] || die "PostgreSQL server not installed: apt-get install postgresql (.ci/run does)"
  printf '%s' "$dir"
}

# The command prefix that runs PostgreSQL as the postgres user when we are root
# (PostgreSQL refuses to run as root): use as "${pg_user[@]}" COMMAND...
if [[ $(id -u) -eq 0 ]]; then
  pg_user=(runuser -u postgres --)
else
  pg_user=()
fi
