#!/usr/bin/env bash
# The proxbalance demo: everything on this machine, nothing left behind.
#
#   deploy/demo.sh           recommendations table, then live overload events until Ctrl-C
#   deploy/demo.sh --once    the recommendations as JSON once the picture is complete, then exit 0
#   deploy/demo.sh --once --options 601
#                            the same, followed by a second JSON document: guest 601 scored on
#                            every node (`proxbalance options --format json`), gate reasons included
#
# It needs a Rust toolchain and nats-server (installed with apt-get when missing and possible).
# In a temporary directory it starts, each on a free loopback port:
#   1. nats-server with JetStream;
#   2. pvesim, the Proxmox VE API simulator, playing deploy/demo-scenario.toml in real time;
#   3. proxbalance-recommender, reading the snapshots and serving gRPC and the web dashboard;
#   4. proxbalance-collector, polling pvesim every 5 s and publishing to NATS.
# Then it asks the recommender through the `proxbalance` CLI. Ctrl-C (or the end of --once) stops
# every process it started and removes the temporary directory.
#
# Environment:
#   PROXBALANCE_BIN_DIR    directory holding prebuilt pvesim, proxbalance-collector,
#                          proxbalance-recommender and proxbalance (default: cargo build them)
#   NATS_SERVER_BIN        the nats-server binary (default: PATH, then /usr/sbin/nats-server)
#   PROXBALANCE_DEMO_TIMEOUT_S
#                          longest wait for a complete recommendation set, seconds (default 90)
#   PROXBALANCE_DEMO_INTERVAL_S
#                          the collector's cycle interval, seconds (default 5)
#   PROXBALANCE_DEMO_KEEP  set to 1 to keep the temporary directory (configs and logs)
#   PROXBALANCE_DEMO_HTTP  the dashboard's address (default 127.0.0.1:0, a free port; the URL
#                          is printed)
set -euo pipefail

ONCE=0
OPTIONS_VMID=""
while [ $# -gt 0 ]; do
    arg="$1"
    shift
    case "$arg" in
        --once) ONCE=1 ;;
        --options)
            [ $# -gt 0 ] || { echo "demo.sh: --options needs a vmid" >&2; exit 2; }
            OPTIONS_VMID="$1"
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "demo.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done
if [ -n "$OPTIONS_VMID" ] && [ "$ONCE" = 0 ]; then
    echo "demo.sh: --options goes with --once" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCENARIO="$ROOT/deploy/demo-scenario.toml"
TIMEOUT_S="${PROXBALANCE_DEMO_TIMEOUT_S:-90}"
INTERVAL_S="${PROXBALANCE_DEMO_INTERVAL_S:-5}"
HTTP_LISTEN="${PROXBALANCE_DEMO_HTTP:-127.0.0.1:0}"
CLUSTER=demo

say() { echo "demo: $*" >&2; }
die() {
    echo "demo: error: $*" >&2
    exit 1
}

# ------------------------------------------------------------------ cleanup
WORK=""
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Stop in reverse start order: CLI watchers, collector, recommender, pvesim, NATS.
    local i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[$i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each up to 5 s to finish cleanly, then insist.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${PROXBALANCE_DEMO_KEEP:-0}" = 1 ]; then
            say "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the log of a process that failed, so the reason is on screen.
show_log() {
    [ -f "$1" ] && { echo "---- $1" >&2; tail -n 40 "$1" >&2; } || true
}

# Waits until "$2" (a command) succeeds, at most $1 seconds; fails if pid $3 has exited.
wait_for() {
    local limit=$1 cond=$2 pid=$3 what=$4 log=$5
    local deadline=$((SECONDS + limit))
    until eval "$cond"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log "$log"
            die "$what exited during start-up"
        fi
        if ((SECONDS >= deadline)); then
            show_log "$log"
            die "$what not ready within ${limit} s"
        fi
        sleep 0.2
    done
}

# ------------------------------------------------------------------ nats-server
find_nats() {
    if [ -n "${NATS_SERVER_BIN:-}" ]; then
        [ -x "$NATS_SERVER_BIN" ] || die "NATS_SERVER_BIN=$NATS_SERVER_BIN is not an executable"
        echo "$NATS_SERVER_BIN"
        return
    fi
    if command -v nats-server >/dev/null 2>&1; then
        command -v nats-server
        return
    fi
    if [ -x /usr/sbin/nats-server ]; then
        echo /usr/sbin/nats-server
        return
    fi
    return 1
}

install_nats() {
    command -v apt-get >/dev/null 2>&1 || return 1
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || return 1
        sudo=(sudo)
    fi
    say "nats-server not found; installing it with apt-get (package nats-server)"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq >&2 &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nats-server >&2
}

NATS_BIN="$(find_nats)" || {
    install_nats || true
    NATS_BIN="$(find_nats)" || die "nats-server is needed and could not be installed.
  On Debian 12+ or Ubuntu 22.04+:   sudo apt-get install nats-server
  Elsewhere: download a release from https://github.com/nats-io/nats-server/releases,
  unpack it and run this script with NATS_SERVER_BIN=/path/to/nats-server"
}

# ------------------------------------------------------------------ binaries
if [ -n "${PROXBALANCE_BIN_DIR:-}" ]; then
    BIN="$PROXBALANCE_BIN_DIR"
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) or set PROXBALANCE_BIN_DIR"
    say "building pvesim, proxbalance-collector, proxbalance-recommender and proxbalance (cargo build)"
    (cd "$ROOT" && cargo build -q -p pvesim -p proxbalance-collector -p proxbalance-recommender --bins) ||
        die "cargo build failed"
    target_dir="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        grep -o '"target_directory":"[^"]*"' | head -n 1 | cut -d'"' -f4)"
    BIN="${target_dir:-$ROOT/target}/debug"
fi
for b in pvesim proxbalance-collector proxbalance-recommender proxbalance; do
    [ -x "$BIN/$b" ] || die "$BIN/$b not found (build with cargo build, or fix PROXBALANCE_BIN_DIR)"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/proxbalance-demo.XXXXXX")"
say "working directory $WORK"

# ------------------------------------------------------------------ start NATS
mkdir -p "$WORK/nats"
"$NATS_BIN" -js -sd "$WORK/nats/store" -a 127.0.0.1 -p -1 --ports_file_dir "$WORK/nats" \
    >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
wait_for 15 "[ -s '$WORK/nats/nats-server_$NATS_PID.ports' ]" "$NATS_PID" nats-server "$WORK/nats.log"
NATS_URL="$(grep -o 'nats://[^"]*' "$WORK/nats/nats-server_$NATS_PID.ports" | head -n 1)"
[ -n "$NATS_URL" ] || die "cannot read the NATS port from $WORK/nats"
say "nats-server (JetStream) at $NATS_URL"

# ------------------------------------------------------------------ start pvesim
"$BIN/pvesim" --scenario "$SCENARIO" --listen 127.0.0.1:0 --ca-out "$WORK/pve-root-ca.pem" \
    >"$WORK/pvesim.log" 2>&1 &
PVESIM_PID=$!
PIDS+=("$PVESIM_PID")
wait_for 30 "grep -q '^fingerprint ' '$WORK/pvesim.log'" "$PVESIM_PID" pvesim "$WORK/pvesim.log"
PVE_URL="$(sed -n 's#^listening on \(https://[^/]*\)/api2/json$#\1#p' "$WORK/pvesim.log" | head -n 1)"
[ -n "$PVE_URL" ] || die "cannot read pvesim's address from $WORK/pvesim.log"
say "pvesim (cluster '$CLUSTER') at $PVE_URL"

# The demo scenario's collector token (not a real secret).
TOKEN_ID="$(sed -n 's/^id = "\(.*\)"$/\1/p' "$SCENARIO" | head -n 1)"
sed -n 's/^secret = "\(.*\)"$/\1/p' "$SCENARIO" | head -n 1 >"$WORK/pve-token"
[ -n "$TOKEN_ID" ] && [ -s "$WORK/pve-token" ] || die "no token in $SCENARIO"

# ------------------------------------------------------------------ start the recommender
cat >"$WORK/recommender.toml" <<EOF
# Written by deploy/demo.sh; see deploy/recommender.example.toml for every key.
[nats]
url = "$NATS_URL"

[grpc]
listen = "127.0.0.1:0"
shutdown_timeout_ms = 2000

[http]
listen = "$HTTP_LISTEN"
EOF
"$BIN/proxbalance-recommender" --config "$WORK/recommender.toml" --json-logs \
    >"$WORK/recommender.log" 2>&1 &
REC_PID=$!
PIDS+=("$REC_PID")
wait_for 30 "grep -q '\"grpc_addr\"' '$WORK/recommender.log'" "$REC_PID" proxbalance-recommender "$WORK/recommender.log"
GRPC_ADDR="$(grep -o '"grpc_addr":"[^"]*"' "$WORK/recommender.log" | head -n 1 | cut -d'"' -f4)"
SERVER="http://$GRPC_ADDR"
say "proxbalance-recommender: gRPC at $SERVER"
wait_for 10 "grep -q '\"dashboard\"' '$WORK/recommender.log'" "$REC_PID" proxbalance-recommender "$WORK/recommender.log"
DASHBOARD="$(grep -o '"dashboard":"[^"]*"' "$WORK/recommender.log" | head -n 1 | cut -d'"' -f4)"
say "dashboard at $DASHBOARD"

# Overload events are live only: subscribe before the first cycle, so none is missed.
if [ "$ONCE" = 0 ]; then
    "$BIN/proxbalance" events --server "$SERVER" --cluster "$CLUSTER" >"$WORK/events.log" 2>&1 &
    PIDS+=("$!")
fi

# ------------------------------------------------------------------ start the collector
cat >"$WORK/collector.toml" <<EOF
# Written by deploy/demo.sh; see deploy/collector.example.toml for every key.
[nats]
url = "$NATS_URL"

[[clusters]]
name = "$CLUSTER"
endpoints = ["$PVE_URL"]
token_id = "$TOKEN_ID"
token_secret_file = "$WORK/pve-token"
ca_file = "$WORK/pve-root-ca.pem"
interval_s = $INTERVAL_S
EOF
"$BIN/proxbalance-collector" --config "$WORK/collector.toml" >"$WORK/collector.log" 2>&1 &
COL_PID=$!
PIDS+=("$COL_PID")
say "proxbalance-collector polling every ${INTERVAL_S} s"

# ------------------------------------------------------------------ wait for a complete set
# A set exists after the first complete cycle. Guests' disk rates are differences of counters,
# so they are known from the second cycle on: the demo waits until the set shows the IOWait
# relief that the scenario's pve6 calls for.
say "waiting for a complete recommendation set (at most ${TIMEOUT_S} s)"
deadline=$((SECONDS + TIMEOUT_S))
SET=""
first_seen=""
while :; do
    for p in "$COL_PID" "$REC_PID" "$PVESIM_PID" "$NATS_PID"; do
        if ! kill -0 "$p" 2>/dev/null; then
            show_log "$WORK/collector.log"
            show_log "$WORK/recommender.log"
            die "a service exited (pid $p); logs above"
        fi
    done
    if out="$("$BIN/proxbalance" recommendations --server "$SERVER" --cluster "$CLUSTER" --format json 2>/dev/null)"; then
        SET="$out"
        if [ -z "$first_seen" ]; then
            first_seen=1
            say "first complete cycle: a recommendation set exists"
        fi
        if grep -q '"iowait_relief"' <<<"$SET"; then
            break
        fi
    fi
    if ((SECONDS >= deadline)); then
        show_log "$WORK/collector.log"
        show_log "$WORK/recommender.log"
        [ -n "$SET" ] && printf '%s\n' "$SET"
        die "no complete recommendation set within ${TIMEOUT_S} s"
    fi
    sleep 1
done

if [ "$ONCE" = 1 ]; then
    printf '%s\n' "$SET"
    if [ -n "$OPTIONS_VMID" ]; then
        "$BIN/proxbalance" options --server "$SERVER" --cluster "$CLUSTER" --vmid "$OPTIONS_VMID" --format json ||
            die "proxbalance options --vmid $OPTIONS_VMID failed"
    fi
    exit 0
fi

echo
"$BIN/proxbalance" recommendations --server "$SERVER" --cluster "$CLUSTER"
echo
cat <<EOF
Open the dashboard: $DASHBOARD
Try, in another terminal:
  curl -s ${DASHBOARD}api/v1/clusters | jq .
  $BIN/proxbalance state   --server $SERVER --cluster $CLUSTER
  $BIN/proxbalance options --server $SERVER --cluster $CLUSTER --vmid 601
  $BIN/proxbalance watch   --server $SERVER --cluster $CLUSTER
NATS is at $NATS_URL (subjects proxbalance.v1.>); logs are in $WORK.

Live overload events (Ctrl-C stops everything):
EOF
tail -n +1 -f "$WORK/events.log" &
PIDS+=("$!")
# Wait until Ctrl-C or until a service exits.
while kill -0 "$COL_PID" 2>/dev/null && kill -0 "$REC_PID" 2>/dev/null; do
    sleep 1
done
show_log "$WORK/collector.log"
show_log "$WORK/recommender.log"
die "a service exited; logs above"
