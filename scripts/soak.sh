#!/usr/bin/env bash
# A bounded soak of the exporter: the release binary against the API
# simulator with hundreds of instances, every fault of the simulator switched
# on and off on a schedule, and concurrent scrapers the whole time.
#
#   bash scripts/soak.sh                # 5 minutes of faults (the default)
#   bash scripts/soak.sh --short        # 45 s of faults, for a quick check
#   bash scripts/soak.sh --duration 900 # any length, in seconds
#
# It records the exporter's resident memory (VmRSS from /proc) once warm and
# at the end, every scrape's status and time, and the poll outcomes on
# /metrics after each phase, in a results folder (printed at the end). It
# exits non-zero when a scrape failed, the exporter died or panicked, an
# instance did not recover once every fault was off, or memory grew more
# than the bound once warm.
#
# Everything runs on 127.0.0.1; nothing else is contacted. It stops what it
# started, by PID, however it ends. Needs cargo, curl and python3
# (apt-get install -y curl python3); installs nothing itself.
#
# Settings (environment):
#   SOAK_INSTANCES=500 SOAK_REGIONS=5     simulated instances and regions
#   SOAK_INTERVAL=10s                     the exporter's poll.interval
#   SOAK_SCRAPERS=8 SOAK_SCRAPE_PAUSE=0.05  scrape loops, and the pause
#                                         between one loop's scrapes (s)
#   SOAK_PHASE=20                         seconds each fault phase lasts
#   SOAK_WARMUP=30                        seconds of faults before the
#                                         first memory figure
#   SOAK_MAX_RSS_GROWTH_KIB=32768         allowed growth once warm
#   SOAK_OUT=target/soak/<time>           where the results go
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration=300
phase=${SOAK_PHASE:-20}
warmup=${SOAK_WARMUP:-30}
while (($#)); do
    case "$1" in
        --short) duration=45 phase=${SOAK_PHASE:-3} warmup=${SOAK_WARMUP:-10} ;;
        --duration) duration=$2; shift ;;
        *) echo "usage: $0 [--short] [--duration SECONDS]" >&2; exit 2 ;;
    esac
    shift
done
instances=${SOAK_INSTANCES:-500}
regions=${SOAK_REGIONS:-5}
interval=${SOAK_INTERVAL:-10s}
scrapers=${SOAK_SCRAPERS:-8}
scrape_pause=${SOAK_SCRAPE_PAUSE:-0.05}
max_growth_kib=${SOAK_MAX_RSS_GROWTH_KIB:-32768}
out=${SOAK_OUT:-target/soak/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
rm -f "$out/stop"

for tool in cargo curl python3; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is missing" >&2; exit 2; }
done

say() { printf '%s soak: %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$out/summary.txt"; }

# --- what this script starts, stopped by PID on every exit -----------------
pids=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

cpu_ticks() {  # user and system time of a process, in clock ticks
    # The command name in field 2 has no spaces here, so fields stay put.
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# --- build, simulator, exporter -------------------------------------------
revision=$(git describe --always --dirty 2>/dev/null || echo unknown)
say "building the release binary at revision $revision"
cargo build --release --quiet
binary=${CARGO_TARGET_DIR:-target}/release/crs-backup-exporter

sim_address=127.0.0.1:$(free_port)
"$binary" simulator \
    --simulator.listen-address "$sim_address" \
    --simulator.instances "$instances" \
    --simulator.regions "$regions" \
    --simulator.poll-interval "$interval" \
    --simulator.config-out "$out/exporter.yaml" \
    2>"$out/simulator.log" &
sim_pid=$!
pids+=("$sim_pid")
faults_url=http://$sim_address/-/faults
for _ in $(seq 100); do
    curl -fsS -o /dev/null "$faults_url" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null "$faults_url"

exporter_address=127.0.0.1:$(free_port)
metrics_url=http://$exporter_address/metrics
CRS_EXPORTER__API__TIMEOUT=2s CRS_EXPORTER__API__MAX_RETRIES=1 \
    "$binary" --config.file "$out/exporter.yaml" \
    --web.listen-address "$exporter_address" \
    2>"$out/exporter.log" >"$out/exporter.stdout" &
exporter_pid=$!
pids+=("$exporter_pid")
say "simulator pid $sim_pid on $sim_address, exporter pid $exporter_pid on $exporter_address"
say "$instances instances over $regions regions, poll.interval $interval, api.timeout 2s, api.max_retries 1"

ready_by=$((SECONDS + 120))
until curl -fsS -o /dev/null "http://$exporter_address/-/ready" 2>/dev/null; do
    ((SECONDS < ready_by)) || { say "FAIL: not ready within 120 s"; exit 1; }
    kill -0 "$exporter_pid" 2>/dev/null || { say "FAIL: the exporter exited"; exit 1; }
    sleep 0.5
done
say "ready: the first cycle is done"

# --- faults -----------------------------------------------------------------
switch() {  # switch INSTANCE|- FAULT_JSON|null
    local scope=""
    [[ $1 != - ]] && scope="\"instance_id\": \"$1\", "
    curl -fsS -o /dev/null -X POST "$faults_url" -d "{${scope}\"fault\": $2}"
}
all_off() { curl -fsS -o /dev/null -X DELETE "$faults_url"; }
instance_id() { printf 'crs-%08d' "$1"; }
# Faults of the schedule; "every" ones apply to every instance, the others
# to a spread of instances (IDs step by 7, so every region gets some).
kinds=(
    'every {"kind": "latency", "ms": 300}'
    'some {"kind": "latency", "ms": 5000}'
    'every {"kind": "http_status", "status": 503}'
    'some {"kind": "http_status", "status": 502}'
    'some {"kind": "reset"}'
    'some {"kind": "malformed_json"}'
    'some {"kind": "truncated_body"}'
    'few {"kind": "oversized_body", "bytes": 6291456}'
    'some {"kind": "wrong_types"}'
    'every {"kind": "wrong_field_types"}'
    'few {"kind": "lying_total", "total": 100000}'
    'every {"kind": "throttle", "share": 0.3}'
    'some {"kind": "clock_skew", "secs": 3600}'
    'some {"kind": "expired_token"}'
)
apply() {  # apply "SCOPE JSON": some = 25 instances, few = 5
    local scope=${1%% *} fault=${1#* } count n
    case "$scope" in
        every) switch - "$fault"; return ;;
        some) count=25 ;;
        few) count=5 ;;
    esac
    for ((n = 0; n < count; n++)); do
        switch "$(instance_id $(((n * 7 + phase_number) % instances)))" "$fault"
    done
}
# Every kind at once, each on a few instances of its own.
apply_mixed() {
    local k n fault
    for k in "${!kinds[@]}"; do
        fault=${kinds[$k]#* }
        for ((n = 0; n < 4; n++)); do
            switch "$(instance_id $(((k * 4 + n) * 7 % instances)))" "$fault"
        done
    done
}

outcomes() {  # outcomes LABEL: poll outcomes and request codes from /metrics
    local body
    body=$(curl -fsS --max-time 10 "$metrics_url") || { echo "$1 scrape failed" >>"$out/outcomes.txt"; return; }
    printf '%s\n' "$body" | awk -v label="$1" '
        /^tencentcloud_redis_backup_poll_success\{/ { if ($2 == 1) ok++; else failing++ }
        /^tencentcloud_redis_backup_poll_errors_total\{/ {
            match($0, /reason="[a-z_]+"/); r = substr($0, RSTART + 8, RLENGTH - 9); errors[r] += $2 }
        /^tencentcloud_redis_api_requests_total\{/ {
            match($0, /code="[^"]+"/); c = substr($0, RSTART + 6, RLENGTH - 7); codes[c] += $2 }
        /^tencentcloud_redis_backup_exporter_cycles_total / { cycles = $2 }
        END {
            printf "%s: polls ok=%d failing=%d cycles=%d errors{", label, ok, failing, cycles
            for (r in errors) if (errors[r] > 0) printf " %s=%d", r, errors[r]
            printf " } requests{"
            for (c in codes) printf " %s=%d", c, codes[c]
            print " }"
        }' >>"$out/outcomes.txt"
    tail -n 1 "$out/outcomes.txt"
}

# --- scrapers ---------------------------------------------------------------
# One line per scrape: status, total seconds, seconds to connect and to the
# first byte, and the Unix second it started.
# A loop ends at the deadline or once the stop file exists, never in the
# middle of a scrape.
scrape_loop() {  # scrape_loop N UNTIL
    local format
    while ((SECONDS < $2)) && [[ ! -e $out/stop ]]; do
        format="%{http_code} %{time_total} %{time_connect} %{time_starttransfer} $EPOCHSECONDS\n"
        curl -s -o /dev/null --max-time 10 -w "$format" "$metrics_url" \
            >>"$out/scrapes-$1.txt" || true
        sleep "$scrape_pause"
    done
}

phase_number=0
scrapes_end=$((SECONDS + warmup + duration + 60))
for ((n = 0; n < scrapers; n++)); do
    scrape_loop "$n" "$scrapes_end" &
    pids+=("$!")
done
say "$scrapers scrapers running, ${scrape_pause}s between one loop's scrapes"

# Warm-up: every fault at once, so the allocator has seen the peaks.
apply_mixed
sleep "$warmup"
all_off
rss_start=$(rss_kib "$exporter_pid")
cpu_start=$(cpu_ticks "$exporter_pid")
say "warm: VmRSS ${rss_start} KiB"
echo "seconds,rss_kib" >"$out/rss.csv"
soak_start=$SECONDS
echo "0,$rss_start" >>"$out/rss.csv"

# --- the schedule -----------------------------------------------------------
soak_end=$((SECONDS + duration))
# Each kind in turn, then all of them at once, then again from the start.
while ((SECONDS < soak_end)); do
    step=$((phase_number % (${#kinds[@]} + 1)))
    if ((step == ${#kinds[@]})); then
        entry="mixed (every kind at once)"
        apply_mixed
    else
        entry=${kinds[$step]}
        apply "$entry"
    fi
    echo "$EPOCHSECONDS $phase_number $entry" >>"$out/phases.txt"
    phase_end=$((SECONDS + phase))
    ((phase_end > soak_end)) && phase_end=$soak_end
    while ((SECONDS < phase_end)); do
        sleep 1
        kill -0 "$exporter_pid" 2>/dev/null || { say "FAIL: the exporter died"; exit 1; }
    done
    outcomes "phase $phase_number: $entry" >/dev/null
    all_off
    echo "$((SECONDS - soak_start)),$(rss_kib "$exporter_pid")" >>"$out/rss.csv"
    phase_number=$((phase_number + 1))
done
say "$phase_number fault phases done; every fault off, waiting for recovery"

# --- recovery and figures ---------------------------------------------------
recovered=no
recover_by=$((SECONDS + 60))
while ((SECONDS < recover_by)); do
    sleep 2
    body=$(curl -fsS --max-time 10 "$metrics_url") || continue
    if ! grep -q '^tencentcloud_redis_backup_poll_success{.*} 0$' <<<"$body"; then
        recovered=yes
        break
    fi
done
outcomes "end" >/dev/null
rss_end=$(rss_kib "$exporter_pid")
echo "$((SECONDS - soak_start)),$rss_end" >>"$out/rss.csv"
rss_peak=$(awk '/^VmHWM:/ { print $2 }' "/proc/$exporter_pid/status")
cpu_used=$(($(cpu_ticks "$exporter_pid") - cpu_start))
soak_seconds=$((SECONDS - soak_start))

# Let the scrapers finish their last scrape, then stop the exporter with
# SIGTERM, which must exit 0.
touch "$out/stop"
for pid in "${pids[@]:2}"; do wait "$pid" 2>/dev/null || true; done
kill -TERM "$exporter_pid"
exporter_status=0
wait "$exporter_pid" || exporter_status=$?

cat "$out"/scrapes-*.txt >"$out/scrapes.txt"
scrapes=$(wc -l <"$out/scrapes.txt")
failed=$(awk '$1 != 200' "$out/scrapes.txt" | wc -l)
times=$(awk '{ print $2 }' "$out/scrapes.txt" | sort -n)
percentile() { awk -v p="$1" '{ v[NR] = $1 } END { i = int(NR * p); if (i < 1) i = 1; print v[i] }'; }
p50=$(percentile 0.50 <<<"$times")
p99=$(percentile 0.99 <<<"$times")
slowest=$(tail -n 1 <<<"$times")
growth=$((rss_end - rss_start))
panics=$(grep -c 'panicked' "$out/exporter.log" || true)

say "scrapes: $scrapes, failed or not 200: $failed; seconds p50 $p50, p99 $p99, max $slowest"
say "exporter CPU once warm: $((cpu_used / $(getconf CLK_TCK))) s over ${soak_seconds} s"
say "VmRSS once warm ${rss_start} KiB, at the end ${rss_end} KiB (growth ${growth} KiB, bound ${max_growth_kib}); peak VmHWM ${rss_peak} KiB"
say "all instances recovered: $recovered; exporter exit status after SIGTERM: $exporter_status; panics logged: $panics"
say "poll outcomes by phase: $out/outcomes.txt"
tail -n 1 "$out/outcomes.txt" | tee -a "$out/summary.txt"
curl -fsS "http://$sim_address/-/stats" >"$out/simulator-stats.json" 2>/dev/null || true

verdict=0
((failed == 0)) || { say "FAIL: $failed scrapes failed"; verdict=1; }
((growth <= max_growth_kib)) || { say "FAIL: memory grew ${growth} KiB once warm"; verdict=1; }
[[ $recovered == yes ]] || { say "FAIL: instances still failing after every fault went off"; verdict=1; }
((exporter_status == 0)) || { say "FAIL: the exporter exited with $exporter_status"; verdict=1; }
((panics == 0)) || { say "FAIL: the exporter log has panics"; verdict=1; }
((scrapes > 0)) || { say "FAIL: no scrape ran"; verdict=1; }
((verdict == 0)) && say "PASS; results in $out"
exit "$verdict"
