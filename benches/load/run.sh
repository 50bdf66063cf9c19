#!/usr/bin/env bash
# Load-benchmark harness: the edge next to its peers, on one machine, in one run.
#
# Every server is pinned to core $SERVER_CPU and every load generator to core
# $LOAD_CPU. For each peer: saturation with wrk (req/s, p50, p99), then a fixed-rate
# run with our coordinated-omission-corrected loadgen at $LOAD_PCT% of that peer's own
# saturation (p50, p99), the server's CPU time per request over each run (utime+stime
# from /proc/PID/stat) and its RSS afterwards. Then the edge under fixed-rate load while
# delta_pusher applies snapshot deltas. Writes a markdown table to benches/RESULTS.md.
#
# Usage: benches/load/run.sh            (about 5 minutes: the machine's stalls, every peer,
#                                        CPU per GET side by side, the delta scenario)
#        QUICK=1 benches/load/run.sh    (smoke test, about 1 minute; results go to
#                                        the work directory, not benches/RESULTS.md)
#        DELTA_ONLY=1 benches/load/run.sh  (the edge's spread rows and the delta scenario
#                                        only, about 1 minute; results go to the work
#                                        directory unless RESULTS is set)
# Settings (environment): EDGE_TRANSPORT (uring, the default, or hyper: the edge's
# transport in every edge row; with uring the hyper edge gets a row and a side-by-side
# pair of its own), DURATION (s, wrk and loadgen), CONNECTIONS, LOAD_PCT, SKUS,
# STORES, CHANNELS, DELTA_ENTRIES, DELTA_INTERVAL_MS, INTERLEAVE_ROUNDS, INTERLEAVE_SECONDS,
# SERVER_CPU, LOAD_CPU, BASE_PORT,
# CARGO_TARGET_DIR, NO_BUILD=1 (use existing binaries), KEEP=1 (keep the work dir),
# RESULTS (output file).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMMAND="$0 $*"
ENV_SHOWN=$(env | grep -E '^(EDGE_TRANSPORT|QUICK|DELTA_ONLY|INTERLEAVE_ROUNDS|INTERLEAVE_SECONDS|DURATION|CONNECTIONS|LOAD_PCT|SKUS|STORES|CHANNELS|DELTA_ENTRIES|DELTA_INTERVAL_MS|SERVER_CPU|LOAD_CPU|BASE_PORT|NO_BUILD)=' | sort | tr '\n' ' ' || true)
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
QUICK=${QUICK:-0}
DELTA_ONLY=${DELTA_ONLY:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-2}
    SKUS=${SKUS:-20000}
    DELTA_ENTRIES=${DELTA_ENTRIES:-2000}
    INTERLEAVE_ROUNDS=${INTERLEAVE_ROUNDS:-1}
    INTERLEAVE_SECONDS=${INTERLEAVE_SECONDS:-2}
fi
DURATION=${DURATION:-10}
EDGE_TRANSPORT=${EDGE_TRANSPORT:-uring}
CONNECTIONS=${CONNECTIONS:-64}
LOAD_PCT=${LOAD_PCT:-80}
SKUS=${SKUS:-125000}
STORES=${STORES:-4}
CHANNELS=${CHANNELS:-2}
DELTA_ENTRIES=${DELTA_ENTRIES:-10000}
DELTA_INTERVAL_MS=${DELTA_INTERVAL_MS:-100}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18400}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
WARMUP=1
CLK_TCK=$(getconf CLK_TCK)
TOKEN="bench-admin-token-$RANDOM$RANDOM$RANDOM"

EDGE_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
HYPER_PORT=$((BASE_PORT + 2))
REDIS_PORT=$((BASE_PORT + 3))
SEED_PORT=$((BASE_PORT + 4))
EDGE_HYPER_PORT=$((BASE_PORT + 5))
PRICE_PATH="/v1/prices/SKU-0000042?store=store-1&channel=web"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

WORK=$(mktemp -d /tmp/edgeprice-bench.XXXXXX)
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 || $QUICK == 1 || $DELTA_ONLY == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -----------------------------------------------------------------------

missing=()
for tool in wrk nginx redis-server redis-cli redis-benchmark curl jq taskset; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    log "installing peers (missing: ${missing[*]})"
    apt-get update -qq
    apt-get install -y -qq wrk nginx-light redis-server redis-tools curl jq util-linux >/dev/null
fi
NGINX=$(command -v nginx)

if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "building release binaries into $TARGET_DIR"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p edgeprice -p edgeprice-bench)
fi
for bin in edgeprice peer_hyper peer_redis_http loadgen delta_pusher stall_probe; do
    [[ -x $BIN/$bin ]] || die "$BIN/$bin is missing (build failed?)"
done

# --- the machine's own stalls ----------------------------------------------------

# A busy loop on each core, both at once: the time the host (or the guest) took away
# from a thread that never sleeps. Where they add up to about 1% of the time, a p99
# is about as long as they are, whatever the server does.
log "probing the machine's stalls on cores $SERVER_CPU and $LOAD_CPU (5 s)"
taskset -c "$SERVER_CPU" "$BIN/stall_probe" --seconds 5 --json >"$WORK/stall.server.json" &
PROBE_PID=$!
taskset -c "$LOAD_CPU" "$BIN/stall_probe" --seconds 5 --json >"$WORK/stall.load.json"
wait "$PROBE_PID"
stall_line() {
    jq -r '"\(.lost_pct)% of the time lost in \(.stalls) stalls over 50 µs (\(.stalls_over_1ms) over 1 ms), longest \(.max_ms) ms"' "$1"
}
STALLS="core $SERVER_CPU: $(stall_line "$WORK/stall.server.json"); core $LOAD_CPU: $(stall_line "$WORK/stall.load.json")"
log "stalls: $STALLS"

# --- process helpers -------------------------------------------------------------

# Starts a server pinned to the server core; its pid is in $STARTED.
start_server() {
    local name=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

# Waits until $1 answers 200, or fails with the server's log.
wait_http() {
    local url=$1 log_file=$2 pid=$3
    for _ in $(seq 1 600); do
        if curl -sf -o /dev/null "$url"; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { cat "$log_file" >&2; die "server for $url exited"; }
        sleep 0.1
    done
    cat "$log_file" >&2
    die "$url not ready after 60 s"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A process and its children (nginx workers), space-separated.
with_children() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }

# Sum of utime+stime of the given pids, in microseconds.
cpu_us() {
    local ticks=0 pid stat
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat")
        stat=${stat##*) }
        read -r -a fields <<<"$stat"
        ticks=$((ticks + fields[11] + fields[12]))
    done
    echo $((ticks * 1000000 / CLK_TCK))
}

# Sum of VmRSS of the given pids, in MiB (one decimal).
# Busy and total jiffies of core $1 so far (busy: all but idle and iowait).
core_ticks() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# How busy (%) a core was between two core_ticks readings.
busy_pct() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2];
        printf "%d", (d > 0 ? (y[1] - x[1]) * 100 / d : 0) }'
}

# A load generator whose core is nearly always busy cannot keep its schedule: the
# latencies it reports are then its own queueing as much as the server's.
GEN_BUSY_LIMIT=85

rss_mib() {
    local kib=0 pid
    for pid in "$@"; do
        kib=$((kib + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
    done
    awk -v k="$kib" 'BEGIN { printf "%.1f", k / 1024 }'
}

# wrk latency ("612.00us", "1.23ms", "1.01s") in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) u = n; else if (v ~ /ms$/) u = n * 1000; else if (v ~ /s$/) u = n * 1000000; else u = n
        printf "%.0f", u }'
}

# a ÷ b to two places, or – without both.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "–"; else printf "%.2f", a / b }'; }

# --- measurements ----------------------------------------------------------------

# Result rows, one associative array per field, keyed by row name.
ROWS=()
declare -A SAT_RPS SAT_P50 SAT_P99 SAT_CPU FIX_RATE FIX_RPS FIX_P50 FIX_P99 FIX_CPU RSS NOTE

# measure_http NAME URL "PIDS" [PATHS_FILE]: wrk saturation, then loadgen at LOAD_PCT%.
measure_http() {
    local name=$1 url=$2 pids=$3 paths=${4:-}
    local wrk_args=(-t1 "-c$CONNECTIONS" "-d${DURATION}s" --latency)
    local loadgen_args=()
    if [[ -n $paths ]]; then
        wrk_args+=(-s "$WORK/paths.lua")
        loadgen_args+=(--paths-file "$paths")
    fi
    log "$name: saturation (wrk ${DURATION}s, $CONNECTIONS connections)"
    local cpu_before cpu_after out requests
    # shellcheck disable=SC2086
    cpu_before=$(cpu_us $pids)
    out=$(PATHS_FILE=$paths taskset -c "$LOAD_CPU" wrk "${wrk_args[@]}" "$url")
    # shellcheck disable=SC2086
    cpu_after=$(cpu_us $pids)
    echo "$out" >"$WORK/$name.wrk.txt"
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    SAT_RPS[$name]=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    SAT_P50[$name]=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    SAT_P99[$name]=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    SAT_CPU[$name]=$(awk -v c=$((cpu_after - cpu_before)) -v n="$requests" 'BEGIN { printf "%.1f", c / n }')
    if grep -q "Non-2xx" <<<"$out"; then
        NOTE[$name]="wrk: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | tr '\n' ';')"
    fi
    local rate=$((SAT_RPS[$name] * LOAD_PCT / 100))
    log "$name: ${SAT_RPS[$name]} req/s; fixed rate $rate req/s (loadgen ${DURATION}s)"
    # shellcheck disable=SC2086
    cpu_before=$(cpu_us $pids)
    local gen_before gen_busy
    gen_before=$(core_ticks "$LOAD_CPU")
    out=$(taskset -c "$LOAD_CPU" "$BIN/loadgen" --url "$url" --rate "$rate" \
        --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --timeline-ms 100 --json "${loadgen_args[@]}")
    # shellcheck disable=SC2086
    cpu_after=$(cpu_us $pids)
    gen_busy=$(busy_pct "$gen_before" "$(core_ticks "$LOAD_CPU")")
    if ((gen_busy > GEN_BUSY_LIMIT)); then
        NOTE[$name]="${NOTE[$name]:-} load generator's core ${gen_busy}% busy: the fixed-rate latencies are partly its own"
    fi
    echo "$out" >"$WORK/$name.loadgen.json"
    FIX_RATE[$name]=$rate
    FIX_RPS[$name]=$(jq -r '.achieved_rps' <<<"$out")
    FIX_P50[$name]=$(jq -r '.p50_us' <<<"$out")
    FIX_P99[$name]=$(jq -r '.p99_us' <<<"$out")
    FIX_CPU[$name]=$(jq -r --argjson c $((cpu_after - cpu_before)) '($c / .total_responses * 10 | round) / 10' <<<"$out")
    local bad
    bad=$(jq -r 'select(.errors + .non_2xx + .timeouts > 0) | "loadgen: \(.errors) errors, \(.non_2xx) non-2xx, \(.timeouts) timeouts"' <<<"$out")
    if [[ -n $bad ]]; then NOTE[$name]="${NOTE[$name]:-} $bad"; fi
    # Requests leaving late mean connections were still waiting for earlier answers
    # (or the generator lost its core): the rate was not sustained throughout the run.
    bad=$(jq -r 'select(.send_lag_p99_us > 10000 or .achieved_rps < 0.98 * .target_rps)
        | "fell behind the schedule (send lag p99 \(.send_lag_p99_us / 1000 | floor) ms)"' <<<"$out")
    if [[ -n $bad ]]; then NOTE[$name]="${NOTE[$name]:-} $bad"; fi
    # shellcheck disable=SC2086
    RSS[$name]=$(rss_mib $pids)
    ROWS+=("$name")
}

# measure_redis NAME PIPELINE: redis-benchmark GET of the price key.
measure_redis() {
    local name=$1 pipeline=$2 pid=$3
    local n=$((DURATION * (pipeline > 1 ? 500000 : 50000)))
    log "$name: redis-benchmark -P $pipeline, $n GETs"
    local cpu_before cpu_after out
    cpu_before=$(cpu_us "$pid")
    out=$(taskset -c "$LOAD_CPU" redis-benchmark -p "$REDIS_PORT" -c "$CONNECTIONS" -n "$n" -P "$pipeline" --csv GET price:SKU-0000042 | tail -1)
    cpu_after=$(cpu_us "$pid")
    echo "$out" >"$WORK/$name.csv"
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"${out//\"/}"
    SAT_RPS[$name]=$(printf '%.0f' "$rps")
    SAT_P50[$name]=$(awk -v v="$p50" 'BEGIN { printf "%.0f", v * 1000 }')
    SAT_P99[$name]=$(awk -v v="$p99" 'BEGIN { printf "%.0f", v * 1000 }')
    SAT_CPU[$name]=$(awk -v c=$((cpu_after - cpu_before)) -v n="$n" 'BEGIN { printf "%.1f", c / n }')
    RSS[$name]=$(rss_mib "$pid")
    NOTE[$name]="not HTTP; latency from redis-benchmark"
    ROWS+=("$name")
}

# --- the run ---------------------------------------------------------------------

for port in "$EDGE_PORT" "$NGINX_PORT" "$HYPER_PORT" "$REDIS_PORT" "$SEED_PORT" "$EDGE_HYPER_PORT"; do
    port_free "$port" || die "port $port is in use (set BASE_PORT)"
done
SNAPSHOT=$WORK/snapshot.fb
log "generating a snapshot: $SKUS SKUs × (1 + $STORES stores × $CHANNELS channels)"
"$BIN/edgeprice" snapshot generate --skus "$SKUS" --stores "$STORES" --channels "$CHANNELS" --out "$SNAPSHOT" >"$WORK/generate.log"
SNAPSHOT_INFO=$(cat "$WORK/generate.log")
log "$SNAPSHOT_INFO"

# Request paths spread over SKUs, stores and channels, for the "spread" rows.
awk -v skus="$SKUS" -v stores="$STORES" -v channels="$CHANNELS" 'BEGIN {
    srand(42); split("web app pos marketplace kiosk phone", names, " ")
    for (i = 0; i < 100000; i++) {
        c = int(rand() * channels) + 1
        printf "/v1/prices/SKU-%07d?store=store-%d&channel=%s\n", int(rand() * skus) + 1, int(rand() * stores) + 1, (c <= 6 ? names[c] : "channel-" c)
    } }' >"$WORK/paths.txt"
cat >"$WORK/paths.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
local i = 0
request = function()
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
end
LUA

log "starting edgeprice ($EDGE_TRANSPORT) on core $SERVER_CPU"
start_server edgeprice "$BIN/edgeprice" server --snapshot "$SNAPSHOT" --listen "127.0.0.1:$EDGE_PORT" \
    --workers 1 --data-dir "$WORK/edge-data" --admin-token "$TOKEN" --transport "$EDGE_TRANSPORT"
EDGE_PID=$STARTED
wait_http "http://127.0.0.1:$EDGE_PORT/readyz" "$WORK/edgeprice.log" "$EDGE_PID"
curl -sf -o "$WORK/body.json" "http://127.0.0.1:$EDGE_PORT$PRICE_PATH" || die "edge did not answer $PRICE_PATH"
BODY_BYTES=$(wc -c <"$WORK/body.json")
log "body ($BODY_BYTES bytes): $(cat "$WORK/body.json")"
jq -e . "$WORK/body.json" >/dev/null || die "the edge's answer is not JSON"
EDGE_URL="http://127.0.0.1:$EDGE_PORT$PRICE_PATH"
if [[ $DELTA_ONLY != 1 ]]; then
    measure_http edgeprice "$EDGE_URL" "$EDGE_PID"
fi
measure_http edgeprice-spread "http://127.0.0.1:$EDGE_PORT/" "$EDGE_PID" "$WORK/paths.txt"
NOTE[edgeprice-spread]="${NOTE[edgeprice-spread]:-} 100k paths over all SKUs, stores, channels"

# The delta scenario: the spread load at LOAD_PCT% of its saturation, deltas pushed
# from the load core meanwhile.
DELTA_RATE=${FIX_RATE[edgeprice-spread]}
DELTA_SECONDS=$((DURATION + WARMUP + 1))
log "edgeprice under $DELTA_RATE req/s with ${DELTA_ENTRIES}-entry deltas every ${DELTA_INTERVAL_MS} ms"
taskset -c "$LOAD_CPU" "$BIN/delta_pusher" --url "http://127.0.0.1:$EDGE_PORT" --token "$TOKEN" \
    --interval-ms "$DELTA_INTERVAL_MS" --entries "$DELTA_ENTRIES" --skus "$SKUS" --stores "$STORES" \
    --channels "$CHANNELS" --duration "$DELTA_SECONDS" --ready-file "$WORK/delta.ready" \
    --json >"$WORK/delta.json" 2>"$WORK/delta.log" &
PUSHER_PID=$!
PIDS+=("$PUSHER_PID")
# The pusher encodes its deltas first; the load starts once they are ready.
until [[ -e $WORK/delta.ready ]]; do
    kill -0 "$PUSHER_PID" 2>/dev/null || { cat "$WORK/delta.log" >&2; die "delta_pusher exited before pushing"; }
    sleep 0.1
done
DELTA_CPU_BEFORE=$(cpu_us "$EDGE_PID")
DELTA_GEN_BEFORE=$(core_ticks "$LOAD_CPU")
taskset -c "$LOAD_CPU" "$BIN/loadgen" --url "http://127.0.0.1:$EDGE_PORT/" --paths-file "$WORK/paths.txt" \
    --rate "$DELTA_RATE" --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" \
    --timeline-ms 100 --json >"$WORK/delta.loadgen.json"
wait "$PUSHER_PID" || { cat "$WORK/delta.log" >&2; die "delta_pusher failed"; }
DELTA_CPU_AFTER=$(cpu_us "$EDGE_PID")
DELTA_GEN_BUSY=$(busy_pct "$DELTA_GEN_BEFORE" "$(core_ticks "$LOAD_CPU")")
DELTA_RSS=$(rss_mib "$EDGE_PID")
# The edge persists after it answers: how far its disk got, in how many fsync groups.
DELTA_PERSIST=$(curl -fsS "http://127.0.0.1:$EDGE_PORT/metrics" | awk '
    /^edgeprice_snapshot_persisted_version / { v = $2 }
    /^edgeprice_snapshot_persist_seconds_sum / { s = $2 }
    /^edgeprice_snapshot_persist_seconds_count / { n = $2 }
    END { printf "%s / %s / %.1f", v, n, (n > 0 ? s / n * 1000 : 0) }')
kill "$EDGE_PID"
wait "$EDGE_PID" 2>/dev/null || true

if [[ $DELTA_ONLY != 1 ]]; then
# The same edge on the portable transport, for what io_uring changes.
if [[ $EDGE_TRANSPORT != hyper ]]; then
    log "starting edgeprice (hyper) on core $SERVER_CPU"
    start_server edgeprice-hyper "$BIN/edgeprice" server --snapshot "$SNAPSHOT" --listen "127.0.0.1:$EDGE_PORT" \
        --workers 1 --data-dir "$WORK/edge-data-hyper" --admin-token "$TOKEN" --transport hyper
    EDGE_HYPER_PID=$STARTED
    wait_http "http://127.0.0.1:$EDGE_PORT/readyz" "$WORK/edgeprice-hyper.log" "$EDGE_HYPER_PID"
    cmp -s <(curl -sf "$EDGE_URL") "$WORK/body.json" || die "the hyper edge does not answer the same body"
    measure_http edgeprice-hyper "$EDGE_URL" "$EDGE_HYPER_PID"
    NOTE[edgeprice-hyper]="${NOTE[edgeprice-hyper]:-} the edge with --transport hyper"
    kill "$EDGE_HYPER_PID"
    wait "$EDGE_HYPER_PID" 2>/dev/null || true
fi

log "starting nginx (one worker) on core $SERVER_CPU"
mkdir -p "$WORK/nginx/logs"
if grep -q '\$' "$WORK/body.json"; then die "the body contains \$, which nginx would expand"; fi
# Inside nginx's single quotes, backslash and quote are escaped with a backslash.
NGINX_BODY=$(sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" "$WORK/body.json")
{
    # As root, nginx would hand its worker to "nobody"; keep the current user.
    if [[ $(id -u) == 0 ]]; then echo "user $(id -un);"; fi
    cat <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/nginx/body;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            return 200 '$NGINX_BODY';
        }
    }
}
NGINX
} >"$WORK/nginx/nginx.conf"
start_server nginx "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
NGINX_PID=$STARTED
wait_http "http://127.0.0.1:$NGINX_PORT$PRICE_PATH" "$WORK/nginx.log" "$NGINX_PID"
cmp -s <(curl -sf "http://127.0.0.1:$NGINX_PORT$PRICE_PATH") "$WORK/body.json" || die "nginx does not answer the same body"
measure_http nginx "http://127.0.0.1:$NGINX_PORT$PRICE_PATH" "$(with_children "$NGINX_PID")"
kill "$NGINX_PID"
wait "$NGINX_PID" 2>/dev/null || true

log "starting bare hyper on core $SERVER_CPU"
start_server peer_hyper "$BIN/peer_hyper" --listen "127.0.0.1:$HYPER_PORT" --workers 1 --body-file "$WORK/body.json"
HYPER_PID=$STARTED
wait_http "http://127.0.0.1:$HYPER_PORT$PRICE_PATH" "$WORK/peer_hyper.log" "$HYPER_PID"
measure_http bare-hyper "http://127.0.0.1:$HYPER_PORT$PRICE_PATH" "$HYPER_PID"
kill "$HYPER_PID"
wait "$HYPER_PID" 2>/dev/null || true

log "starting redis on core $SERVER_CPU"
start_server redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK"
REDIS_PID=$STARTED
for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$REDIS_PORT" -x SET price:SKU-0000042 <"$WORK/body.json" >/dev/null
measure_redis "redis GET -P 1" 1 "$REDIS_PID"
measure_redis "redis GET -P 16" 16 "$REDIS_PID"

log "starting the seed design (HTTP handler + Redis) on core $SERVER_CPU"
start_server peer_redis_http "$BIN/peer_redis_http" --listen "127.0.0.1:$SEED_PORT" --workers 1 --redis "127.0.0.1:$REDIS_PORT"
SEED_PID=$STARTED
SEED_URL="http://127.0.0.1:$SEED_PORT$PRICE_PATH"
wait_http "$SEED_URL" "$WORK/peer_redis_http.log" "$SEED_PID"
cmp -s <(curl -sf "$SEED_URL") "$WORK/body.json" || die "the seed design does not answer the same body"
measure_http seed-redis-http "$SEED_URL" "$SEED_PID $REDIS_PID"
NOTE[seed-redis-http]="${NOTE[seed-redis-http]:-} CPU and RSS: handler + redis-server"
fi

# --- CPU per GET, side by side ---------------------------------------------------

# On a shared host the machine's speed drifts by tens of percent from one minute, or
# one second, to the next: more than the difference between the HTTP servers, so runs
# of each in turn can rank them either way. Here the edge and one peer run on the
# server core at the same time, each under its own wrk on the load core, so both see
# the same machine; each server's CPU per GET is its own CPU over the GETs it served.
# INTERLEAVE_ROUNDS rounds of INTERLEAVE_SECONDS, against nginx, against bare hyper and
# (with the edge on io_uring) against the same edge on hyper; the medians of the
# per-round ratios are the figures.
INTERLEAVE_ROUNDS=${INTERLEAVE_ROUNDS:-5}
INTERLEAVE_SECONDS=${INTERLEAVE_SECONDS:-3}
declare -A TURN_URL TURN_PIDS
declare -a TURN_ROWS=()
if [[ $DELTA_ONLY != 1 ]]; then
TURN_PEERS=(edgeprice nginx bare-hyper)
[[ $EDGE_TRANSPORT != hyper ]] && TURN_PEERS+=(edgeprice-hyper)
log "CPU per GET side by side: $INTERLEAVE_ROUNDS rounds of ${INTERLEAVE_SECONDS}s, the edge with each of ${TURN_PEERS[*]:1}"
start_server edgeprice-turns "$BIN/edgeprice" server --snapshot "$SNAPSHOT" --listen "127.0.0.1:$EDGE_PORT" \
    --workers 1 --data-dir "$WORK/edge-data-turns" --admin-token "$TOKEN" --transport "$EDGE_TRANSPORT"
TURN_URL[edgeprice]="http://127.0.0.1:$EDGE_PORT$PRICE_PATH"
TURN_PIDS[edgeprice]=$STARTED
wait_http "${TURN_URL[edgeprice]}" "$WORK/edgeprice-turns.log" "$STARTED"
if [[ $EDGE_TRANSPORT != hyper ]]; then
    start_server edgeprice-hyper-turns "$BIN/edgeprice" server --snapshot "$SNAPSHOT" --listen "127.0.0.1:$EDGE_HYPER_PORT" \
        --workers 1 --data-dir "$WORK/edge-data-hyper-turns" --admin-token "$TOKEN" --transport hyper
    TURN_URL[edgeprice-hyper]="http://127.0.0.1:$EDGE_HYPER_PORT$PRICE_PATH"
    TURN_PIDS[edgeprice-hyper]=$STARTED
    wait_http "${TURN_URL[edgeprice-hyper]}" "$WORK/edgeprice-hyper-turns.log" "$STARTED"
fi
start_server nginx-turns "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
TURN_URL[nginx]="http://127.0.0.1:$NGINX_PORT$PRICE_PATH"
wait_http "${TURN_URL[nginx]}" "$WORK/nginx-turns.log" "$STARTED"
TURN_PIDS[nginx]=$(with_children "$STARTED")
start_server peer_hyper-turns "$BIN/peer_hyper" --listen "127.0.0.1:$HYPER_PORT" --workers 1 --body-file "$WORK/body.json"
TURN_URL[bare-hyper]="http://127.0.0.1:$HYPER_PORT$PRICE_PATH"
TURN_PIDS[bare-hyper]=$STARTED
wait_http "${TURN_URL[bare-hyper]}" "$WORK/peer_hyper-turns.log" "$STARTED"
for peer in "${TURN_PEERS[@]}"; do
    cmp -s <(curl -sf "${TURN_URL[$peer]}") "$WORK/body.json" || die "$peer does not answer the same body"
done
# A new edge writes its snapshot to its data directory after it starts serving; the
# rounds start once that is on disk, and after a warm-up of each server.
for port in "$EDGE_PORT" "$EDGE_HYPER_PORT"; do
    [[ $port == "$EDGE_HYPER_PORT" && $EDGE_TRANSPORT == hyper ]] && continue
    persisted=0
    for _ in $(seq 1 600); do
        if curl -fsS "http://127.0.0.1:$port/metrics" | awk '
            /^edgeprice_snapshot_version / { v = $2 } /^edgeprice_snapshot_persisted_version / { p = $2 }
            END { exit !(v > 0 && v == p) }'; then
            persisted=1
            break
        fi
        sleep 0.1
    done
    ((persisted)) || die "the side-by-side edge on port $port did not persist its snapshot within 60 s: see $WORK/edgeprice*-turns.log"
done
for peer in "${TURN_PEERS[@]}"; do
    taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNECTIONS" -d1s "${TURN_URL[$peer]}" >/dev/null
done
# Both servers' CPU per GET (µs, two places) while one wrk loads each at once.
side_by_side() {
    local a=$1 b=$2 a0 b0 a1 b1
    # shellcheck disable=SC2086
    a0=$(cpu_us ${TURN_PIDS[$a]}) b0=$(cpu_us ${TURN_PIDS[$b]})
    taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNECTIONS" "-d${INTERLEAVE_SECONDS}s" "${TURN_URL[$a]}" >"$WORK/side.$a.txt" &
    local wrk_a=$!
    taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNECTIONS" "-d${INTERLEAVE_SECONDS}s" "${TURN_URL[$b]}" >"$WORK/side.$b.txt"
    wait "$wrk_a"
    # shellcheck disable=SC2086
    a1=$(cpu_us ${TURN_PIDS[$a]}) b1=$(cpu_us ${TURN_PIDS[$b]})
    local per_get='BEGIN { if (n > 0) printf "%.2f", c / n; else exit 1 }'
    awk -v c=$((a1 - a0)) -v n="$(awk '/requests in/ {print $1}' "$WORK/side.$a.txt")" "$per_get"
    printf ' '
    awk -v c=$((b1 - b0)) -v n="$(awk '/requests in/ {print $1}' "$WORK/side.$b.txt")" "$per_get"
}
# "A B", or the run stops with what went wrong.
side_by_side_checked() {
    local line
    line=$(side_by_side "$1" "$2") && [[ $line =~ ^[0-9.]+\ [0-9.]+$ ]] ||
        die "side-by-side round of $1 and $2 failed (got '${line:-}'): see $WORK/side.$1.txt, $WORK/side.$2.txt"
    echo "$line"
}
for round in $(seq 1 "$INTERLEAVE_ROUNDS"); do
    # (An assignment, so a failed round stops the run: `set -e` sees its status.)
    pair=$(side_by_side_checked edgeprice nginx)
    read -r edge_n nginx_cpu <<<"$pair"
    pair=$(side_by_side_checked edgeprice bare-hyper)
    read -r edge_h hyper_cpu <<<"$pair"
    row="| $round | $edge_n | $nginx_cpu | $(ratio "$edge_n" "$nginx_cpu") | $edge_h | $hyper_cpu | $(ratio "$edge_h" "$hyper_cpu") |"
    versus_hyper_edge=""
    if [[ $EDGE_TRANSPORT != hyper ]]; then
        pair=$(side_by_side_checked edgeprice edgeprice-hyper)
        read -r edge_e edge_hyper_cpu <<<"$pair"
        row+=" $edge_e | $edge_hyper_cpu | $(ratio "$edge_e" "$edge_hyper_cpu") |"
        versus_hyper_edge="; edgeprice $edge_e vs edgeprice-hyper $edge_hyper_cpu"
    fi
    TURN_ROWS+=("$row")
    log "round $round: CPU µs/GET edgeprice $edge_n vs nginx $nginx_cpu; edgeprice $edge_h vs bare-hyper $hyper_cpu$versus_hyper_edge"
done
fi

# --- report ----------------------------------------------------------------------

cell() { local v=${1:-}; echo "${v:-–}"; }

table() {
    echo "| peer | sat. req/s | sat. p50 µs | sat. p99 µs | sat. CPU µs/req | fixed rate req/s | fixed p50 µs | fixed p99 µs | fixed CPU µs/req | RSS MiB | req/s edge÷peer | CPU/req edge÷peer (sat.) | CPU/req edge÷peer (fixed) | notes |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    local row edge
    for row in "${ROWS[@]}"; do
        edge=edgeprice
        [[ $row == edgeprice* || -z ${SAT_RPS[edgeprice]:-} ]] && edge=$row
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$row" "$(cell "${SAT_RPS[$row]:-}")" "$(cell "${SAT_P50[$row]:-}")" "$(cell "${SAT_P99[$row]:-}")" \
            "$(cell "${SAT_CPU[$row]:-}")" "$(cell "${FIX_RPS[$row]:-}")" "$(cell "${FIX_P50[$row]:-}")" \
            "$(cell "${FIX_P99[$row]:-}")" "$(cell "${FIX_CPU[$row]:-}")" "$(cell "${RSS[$row]:-}")" \
            "$(ratio "${SAT_RPS[$edge]}" "${SAT_RPS[$row]}")" \
            "$(ratio "${SAT_CPU[$edge]}" "${SAT_CPU[$row]}")" \
            "$(ratio "${FIX_CPU[$edge]:-}" "${FIX_CPU[$row]:-}")" \
            "$(cell "${NOTE[$row]:-}")"
    done
}

# "N of M" 100-ms windows of a loadgen --timeline-ms 100 run whose slowest GET took
# over 5 ms or failed: a tail spread over the whole run, or a few stalls.
slow_windows() {
    jq -r '"\([.timeline[] | select(.max_us > 5000 or .failed > 0)] | length) of \(.timeline | length)"' "$1"
}

# Median of column $1 (1-based, as the table shows it) of the side-by-side rows.
turns_median() {
    printf '%s\n' "${TURN_ROWS[@]}" | awk -F'|' -v c="$(($1 + 1))" '{ gsub(/ /, "", $c); print $c }' | sort -n |
        awk '{ v[NR] = $1 } END { printf "%.2f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# The side-by-side rounds, and the medians of their per-round ratios.
turns_section() {
    echo "Server CPU µs per GET, the edge ($EDGE_TRANSPORT) and one peer on core $SERVER_CPU at the same time, each under its own"
    echo "\`wrk -t1 -c$CONNECTIONS -d${INTERLEAVE_SECONDS}s\` on core $LOAD_CPU (single-key path, same body): both see the same machine."
    echo
    if [[ $EDGE_TRANSPORT != hyper ]]; then
        echo "| round | edgeprice | nginx | edge÷nginx | edgeprice | bare-hyper | edge÷hyper | edgeprice | edgeprice-hyper | edge÷hyper edge |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    else
        echo "| round | edgeprice | nginx | edge÷nginx | edgeprice | bare-hyper | edge÷hyper |"
        echo "|---:|---:|---:|---:|---:|---:|---:|"
    fi
    printf '%s\n' "${TURN_ROWS[@]}"
    echo
    local medians="edge÷nginx $(turns_median 4), edge÷hyper $(turns_median 7)"
    if [[ $EDGE_TRANSPORT != hyper ]]; then
        medians+=", the edge on io_uring ÷ the edge on hyper $(turns_median 10)"
    fi
    echo "Median of the rounds: $medians (below 1 favours the edge)."
}

delta_section() {
    local d=$WORK/delta.json l=$WORK/delta.loadgen.json
    local total
    total=$(jq -r '.total_responses' "$l")
    echo "Edge under ${DELTA_RATE} req/s (spread paths, ${LOAD_PCT}% of its saturation) while delta_pusher applies"
    echo "${DELTA_ENTRIES}-entry deltas every ${DELTA_INTERVAL_MS} ms (pusher on the load core, deltas encoded before the load starts):"
    echo
    echo "| what | value |"
    echo "|---|---|"
    echo "| GET achieved req/s | $(jq -r '.achieved_rps' "$l") |"
    echo "| GET p50 / p99 / p99.9 / max µs | $(jq -r '"\(.p50_us) / \(.p99_us) / \(.p999_us) / \(.max_us)"' "$l") |"
    echo "| GET p99 µs without deltas (same rate) | ${FIX_P99[edgeprice-spread]} |"
    echo "| 100-ms windows whose slowest GET took over 5 ms (or failed), without / with deltas | $(slow_windows "$WORK/edgeprice-spread.loadgen.json") / $(slow_windows "$l") |"
    echo "| GET send lag p99 / max µs (late sends: the edge held connections) | $(jq -r '"\(.send_lag_p99_us) / \(.send_lag_max_us)"' "$l") |"
    echo "| GET errors / non-2xx / timeouts | $(jq -r '"\(.errors) / \(.non_2xx) / \(.timeouts)"' "$l") |"
    echo "| deltas applied / conflicts / errors | $(jq -r '"\(.applied) / \(.conflicts) / \(.errors)"' "$d") |"
    echo "| versions | $(jq -r '"\(.first_version) → \(.last_version)"' "$d") |"
    echo "| delta size | $(jq -r '.delta_bytes' "$d") bytes |"
    echo "| apply_us (edge: build + swap) p50 / p99 / max | $(jq -r '.apply_us | "\(.p50_us) / \(.p99_us) / \(.max_us)"' "$d") |"
    echo "| edge persisted version / fsync groups / mean ms per group (after answering) | $DELTA_PERSIST |"
    echo "| round trip µs p50 / p99 / max | $(jq -r '.round_trip_us | "\(.p50_us) / \(.p99_us) / \(.max_us)"' "$d") |"
    echo "| edge CPU µs per GET, deltas included | $(awk -v c=$((DELTA_CPU_AFTER - DELTA_CPU_BEFORE)) -v n="$total" 'BEGIN { printf "%.1f", c / n }') |"
    echo "| edge RSS after | ${DELTA_RSS} MiB |"
    echo "| load generator's core busy (loadgen and delta_pusher) | ${DELTA_GEN_BUSY}%$( ((DELTA_GEN_BUSY > GEN_BUSY_LIMIT)) && echo ": above ${GEN_BUSY_LIMIT}%, the GET latencies are partly the generator's") |"
}

MODEL=$(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }')
REPORT=$WORK/RESULTS.md
{
    echo "# Load benchmark results"
    echo
    echo "Written by \`benches/load/run.sh\`; see \`benches/README.md\` for what each peer is."
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: ${MODEL}, $(nproc) cores, kernel $(uname -r); load average before the run: ${LOADAVG_BEFORE:-$(cut -d' ' -f1-3 /proc/loadavg)}"
    echo "- command: \`${ENV_SHOWN}${COMMAND}\` (commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo "- snapshot: \`edgeprice snapshot generate --skus $SKUS --stores $STORES --channels $CHANNELS\`: $(sed -E 's/^wrote ([0-9]+ entries).*\(([0-9]+ bytes)\)$/\1, \2/' <<<"$SNAPSHOT_INFO")"
    echo "- load average after the run: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: compare ratios within one run, not figures across runs)"
    echo "- the machine's own stalls, \`stall_probe --seconds 5\` spinning on both cores at once before the run: $STALLS"
    echo "- server on core $SERVER_CPU, load generator on core $LOAD_CPU; $CONNECTIONS keep-alive connections;"
    echo "  saturation: \`wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency\`; fixed rate: \`loadgen\` at ${LOAD_PCT}% of each peer's"
    echo "  saturation for ${DURATION}s after ${WARMUP}s warm-up, latency from the scheduled send time;"
    echo "  CPU µs/req: Δ(utime+stime) of the server over the run ÷ requests served (CLK_TCK $CLK_TCK)"
    echo "- body: ${BODY_BYTES} bytes, the edge's answer to \`GET $PRICE_PATH\`, served as is by every peer"
    echo
    table
    echo
    echo "Ratios compare edgeprice (the spread row with itself) to each row: req/s above 1 and CPU below 1 favour the edge."
    echo "Req/s at saturation is the share of core $SERVER_CPU a server got while other work ran on the machine (the seed"
    echo "design runs two processes there, so it gets two shares) and partly wrk's own limit: CPU µs/req is the figure to compare."
    echo "\"fell behind the schedule\": at that fixed rate requests left late, so its latencies include queueing behind stalls."
    echo
    if ((${#TURN_ROWS[@]})); then
        echo "## CPU per GET, side by side"
        echo
        turns_section
        echo
    fi
    echo "## Snapshot deltas under load"
    echo
    delta_section
} >"$REPORT"
cat "$REPORT"
if [[ -n ${RESULTS:-} ]]; then
    cp "$REPORT" "$RESULTS"
elif [[ $QUICK != 1 && $DELTA_ONLY != 1 ]]; then
    cp "$REPORT" "$ROOT/benches/RESULTS.md"
    log "written to benches/RESULTS.md"
fi
