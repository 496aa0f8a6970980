#!/usr/bin/env bash
# Measures the exporter against its own API simulator on 127.0.0.1 and
# prints every figure beside the command that produced it. BENCHMARKS.md
# holds the results of one run and says what they mean.
#
#   bash scripts/bench.sh         # about 7 minutes on 2 cores, build excluded
#
# What it measures, for 100, 1,000 and 10,000 instances in one region:
#
# - the first poll cycle at a limit of 200 requests a second (simulator and
#   exporter alike): the exporter's cycle_duration gauge, the wall clock from
#   start to /-/ready, the busiest one-second window of arrivals the
#   simulator saw (from its /-/stats) and its RequestLimitExceeded answers;
# - resident memory (VmRSS, and the peak VmHWM, from /proc/PID/status) after
#   the first cycle, after one scrape, after two scrapers for a while (a pair
#   of Prometheus servers), and after the load test;
# - one scrape after the snapshot changed (a reload marks it changed) and one
#   that reuses the prepared text, with curl;
# - /metrics under wrk (4 threads, 16 connections), beside nginx serving a
#   saved copy of the same body from a file;
# - CPU time per poll cycle (utime + stime from /proc/PID/stat) over several
#   back-to-back cycles. These runs use a limit of 1,000 a second so that the
#   10,000-instance cycles take 15 s rather than a minute; the work per cycle
#   is the same requests either way.
#
# It is a benchmark, not a test: it checks nothing and CI does not run it.
# Everything listens on and talks to 127.0.0.1 only; the exporter's config
# is the one the simulator writes, whose api.endpoint is the simulator. Every
# process it starts is stopped by PID when it ends, however it ends, and a
# watchdog stops the whole run after BENCH_DEADLINE seconds.
#
# Needs cargo, curl, python3, wrk and nginx; the Debian packages of the
# missing ones are installed when run as root (apt-get install -y curl
# python3 wrk nginx-light), with the packaged nginx service kept stopped.
#
# Settings (environment):
#   BENCH_SIZES="100 1000 10000"   instance counts
#   BENCH_WRK_DURATION=20          seconds of wrk at the largest size
#   BENCH_WRK_DURATION_SMALL=10    seconds of wrk at the other sizes
#   BENCH_WRK_THREADS=4 BENCH_WRK_CONNECTIONS=16
#   BENCH_CPU_CYCLES=4             back-to-back cycles timed for CPU, at
#   BENCH_CPU_SECONDS=60           least; more when they are shorter than this
#   BENCH_DEADLINE=900             the watchdog, in seconds
#   BENCH_OUT=target/bench/<time>  raw outputs and results.md
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

read -r -a sizes <<< "${BENCH_SIZES:-100 1000 10000}"
wrk_duration=${BENCH_WRK_DURATION:-20}
wrk_duration_small=${BENCH_WRK_DURATION_SMALL:-10}
wrk_threads=${BENCH_WRK_THREADS:-4}
wrk_connections=${BENCH_WRK_CONNECTIONS:-16}
cpu_cycles=${BENCH_CPU_CYCLES:-4}
cpu_seconds=${BENCH_CPU_SECONDS:-60}
deadline=${BENCH_DEADLINE:-900}
out=${BENCH_OUT:-target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
results=$out/results.md

# The limit of the first-cycle runs, and of the CPU runs.
cycle_limit=200
cpu_limit=1000

say() { printf '%s bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
note() { printf '%s\n' "$*" >> "$results"; }

# --- what this script starts, stopped by PID on every exit -----------------
pids=()
# Stops one of them, and forgets it, so that a later reuse of its PID by
# another process is never mistaken for it.
stop() {
    local pid=$1 kept=() p
    for p in "${pids[@]}"; do
        [[ $p == "$pid" ]] || kept+=("$p")
    done
    pids=("${kept[@]}")
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        stop "$pid"
    done 2>/dev/null
    rm -f "${policy_rc:-/nonexistent}"
}
trap cleanup EXIT
trap 'say "stopped"; exit 130' INT TERM

# The watchdog ends the whole run if it overstays; it is stopped like the
# rest, and then stops its own sleep.
(
    sleep "$deadline" &
    sleeper=$!
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    wait "$sleeper" && kill -TERM $$
) &
pids+=($!)

# --- tools -------------------------------------------------------------------
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
if ((${#missing[@]})); then
    [[ $EUID == 0 ]] || { say "missing ${missing[*]}; install: apt-get install -y ${missing[*]}"; exit 2; }
    # The nginx package would start its service on port 80; keep it stopped.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        policy_rc=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$policy_rc"
        chmod +x "$policy_rc"
    fi
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)

say "building: cargo build --release"
cargo build --release --quiet
binary=${CARGO_TARGET_DIR:-$PWD/target}/release/crs-backup-exporter

# --- helpers -----------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

status_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }

# utime + stime of a process, in clock ticks (fields 14 and 15; the name in
# field 2 has no spaces for this binary).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

metric() { awk -v name="$2" '$1 == name { print $2 }' "$1"; }

now() { date +%s.%N; }
minus() { python3 -c "print(f'{$1 - $2:.3f}')"; }
calc() { python3 -c "print(f'{$1:.${2:-3}f}')"; }

# Waits until URL answers 200, for at most SECONDS, while PID lives.
wait_ok() {
    local url=$1 seconds=$2 pid=$3 until=$((SECONDS + $2))
    until curl -fsS -m 5 -o /dev/null "$url" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { say "pid $pid exited while waiting for $url"; exit 1; }
        ((SECONDS < until)) || { say "$url not 200 within $seconds s"; exit 1; }
        sleep 0.1
    done
}

# Starts the simulator: SIZE LIMIT INTERVAL NAME. Sets sim_pid, sim_url, config.
start_simulator() {
    local size=$1 limit=$2 interval=$3 name=$4 address
    address=127.0.0.1:$(free_port)
    config=$out/$name.yaml
    sim_command=("$binary" simulator --simulator.listen-address "$address"
        --simulator.instances "$size" --simulator.regions 1 --simulator.rate-limit "$limit"
        --simulator.config-out "$config" --simulator.poll-interval "$interval")
    "${sim_command[@]}" 2>"$out/$name.simulator.log" &
    sim_pid=$!
    pids+=("$sim_pid")
    sim_url=http://$address
    wait_ok "$sim_url/-/stats" 30 "$sim_pid"
    # Only a config that sends the exporter to the local simulator is run.
    grep -qx "  endpoint: $sim_url" "$config" \
        || { say "$config does not point api.endpoint at $sim_url"; exit 1; }
}

# Starts the exporter on the last simulator's config. Sets exporter_pid,
# exporter_url, started_at.
start_exporter() {
    local name=$1 address
    address=127.0.0.1:$(free_port)
    exporter_command=("$binary" --config.file "$config" --web.listen-address "$address"
        --log.level warn)
    started_at=$(now)
    "${exporter_command[@]}" 2>"$out/$name.exporter.log" &
    exporter_pid=$!
    pids+=("$exporter_pid")
    exporter_url=http://$address
}

# Reads a field of the latency or throughput lines of a wrk report.
wrk_field() {
    case $2 in
        rps) awk '/^Requests\/sec:/ { print $2 }' "$1" ;;
        transfer) awk '/^Transfer\/sec:/ { print $2 }' "$1" ;;
        requests) awk '/requests in/ { print $1 }' "$1" ;;
        p50) awk '$1 == "50%" { print $2 }' "$1" ;;
        p99) awk '$1 == "99%" { print $2 }' "$1" ;;
        errors) grep -E 'Socket errors|Non-2xx' "$1" | tr '\n' ' ' || true ;;
    esac
}

# Serves FILE at /metrics with nginx; sets nginx_pid, nginx_url.
start_nginx() {
    local file=$1 dir=$out/nginx port
    port=$(free_port)
    mkdir -p "$dir/root"
    cp "$file" "$dir/root/metrics"
    # Workers run as nobody when started as root: let them read the file.
    chmod -R a+rX "$dir"
    cat > "$dir/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        root $dir/root;
        location = /metrics { default_type "text/plain; version=0.0.4; charset=utf-8"; }
    }
}
EOF
    nginx_command=("$nginx" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf")
    "${nginx_command[@]}" &
    nginx_pid=$!
    pids+=("$nginx_pid")
    nginx_url=http://127.0.0.1:$port/metrics
    wait_ok "$nginx_url" 10 "$nginx_pid"
}

# Runs wrk against URL for SECONDS into FILE, with THREADS and CONNECTIONS
# (by default those of the settings); sets wrk_command.
run_wrk() {
    local url=$1 seconds=$2 file=$3 threads=${4:-$wrk_threads} connections=${5:-$wrk_connections}
    wrk_command=(wrk "-t$threads" "-c$connections" "-d${seconds}s" --latency
        --timeout 30s "$url")
    "${wrk_command[@]}" > "$file"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# --- the first cycle, memory and scrapes at one size -----------------------
declare -A cycle wall rss_cycle hwm_cycle rss_scrape rss_pair rss_load hwm_load body fresh_ms reused_ms
declare -A exp_rps exp_p50 exp_p99 nginx_rps nginx_p50 nginx_p99 busiest throttled arrivals
declare -A cpu_cycle rss_steady

first_cycle() {
    local size=$1 name=first-$1 ready_at stats wrk_seconds
    say "$size instances: first cycle at $cycle_limit requests/s"
    # A long interval: after the first cycle, polls (each a change of the
    # snapshot) come seconds apart, so scrapes mostly reuse the prepared text.
    start_simulator "$size" "$cycle_limit" 24h "$name"
    start_exporter "$name"
    wait_ok "$exporter_url/-/ready" $((size * 3 / cycle_limit + 60)) "$exporter_pid"
    ready_at=$(now)
    wall[$size]=$(minus "$ready_at" "$started_at")
    rss_cycle[$size]=$(status_kib "$exporter_pid" VmRSS)
    hwm_cycle[$size]=$(status_kib "$exporter_pid" VmHWM)
    note "### $size instances"
    note ""
    note '```'
    note "\$ ${sim_command[*]}"
    note "\$ ${exporter_command[*]}"
    note "# curl -fsS -m 5 -o /dev/null $exporter_url/-/ready every 0.1 s until 200"
    note "# after /-/ready: wall clock from start ${wall[$size]} s; VmRSS ${rss_cycle[$size]} kB, VmHWM ${hwm_cycle[$size]} kB"

    # One scrape: the first one prepares the text.
    curl -fsS -m 60 "$exporter_url/metrics" > "$out/$name.metrics.txt"
    cycle[$size]=$(metric "$out/$name.metrics.txt" tencentcloud_redis_backup_exporter_cycle_duration_seconds)
    body[$size]=$(wc -c < "$out/$name.metrics.txt")
    rss_scrape[$size]=$(status_kib "$exporter_pid" VmRSS)
    note "\$ curl -fsS -m 60 $exporter_url/metrics > $name.metrics.txt   # cycle_duration_seconds ${cycle[$size]}, body ${body[$size]} bytes, then VmRSS ${rss_scrape[$size]} kB"

    stats=$(curl -fsS -m 60 "$sim_url/-/stats")
    echo "$stats" > "$out/$name.stats.json"
    arrivals[$size]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["arrivals"])' <<< "$stats")
    busiest[$size]=$(python3 -c 'import json,sys; print(max(b["busiest_second"] for b in json.load(sys.stdin)["budgets"]))' <<< "$stats")
    throttled[$size]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["errors"].get("RequestLimitExceeded", 0))' <<< "$stats")
    note "\$ curl -fsS -m 60 $sim_url/-/stats"
    note "$stats"

    # Scrapes after a change (a reload marks the snapshot changed) and
    # right after, reusing the text: five of each, the median.
    local fresh=() reused=()
    for _ in 1 2 3 4 5; do
        curl -fsS -m 60 -o /dev/null -X POST "$exporter_url/-/reload"
        fresh+=("$(curl -fsS -m 60 -o /dev/null -w '%{time_total}' "$exporter_url/metrics")")
        reused+=("$(curl -fsS -m 60 -o /dev/null -w '%{time_total}' "$exporter_url/metrics")")
    done
    fresh_ms[$size]=$(printf '%s\n' "${fresh[@]}" | median | awk '{ printf "%.1f", $1 * 1000 }')
    reused_ms[$size]=$(printf '%s\n' "${reused[@]}" | median | awk '{ printf "%.1f", $1 * 1000 }')
    note "\$ for _ in 1 2 3 4 5; do curl -fsS -m 60 -o /dev/null -X POST $exporter_url/-/reload; curl -fsS -m 60 -o /dev/null -w '%{time_total}' $exporter_url/metrics; curl -fsS -m 60 -o /dev/null -w '%{time_total}' $exporter_url/metrics; done"
    note "# after a change (s): ${fresh[*]}; median ${fresh_ms[$size]} ms"
    note "# reusing (s):        ${reused[*]}; median ${reused_ms[$size]} ms"

    # Two scrapers at once, as a pair of Prometheus servers would be at
    # worst: the memory that takes.
    say "$size instances: two scrapers for ${wrk_duration_small}s"
    run_wrk "$exporter_url/metrics" "$wrk_duration_small" "$out/$name.wrk-pair.txt" 2 2
    rss_pair[$size]=$(status_kib "$exporter_pid" VmRSS)
    note "\$ ${wrk_command[*]}"
    note "$(cat "$out/$name.wrk-pair.txt")"
    note "# then VmRSS ${rss_pair[$size]} kB"

    # Many concurrent scrapers, then the same bytes from nginx.
    wrk_seconds=$wrk_duration_small
    [[ $size == "${sizes[-1]}" ]] && wrk_seconds=$wrk_duration
    say "$size instances: wrk for ${wrk_seconds}s against the exporter, then nginx"
    run_wrk "$exporter_url/metrics" "$wrk_seconds" "$out/$name.wrk-exporter.txt"
    rss_load[$size]=$(status_kib "$exporter_pid" VmRSS)
    hwm_load[$size]=$(status_kib "$exporter_pid" VmHWM)
    note "\$ ${wrk_command[*]}"
    note "$(cat "$out/$name.wrk-exporter.txt")"
    note "# then VmRSS ${rss_load[$size]} kB, VmHWM ${hwm_load[$size]} kB"
    exp_rps[$size]=$(wrk_field "$out/$name.wrk-exporter.txt" rps)
    exp_p50[$size]=$(wrk_field "$out/$name.wrk-exporter.txt" p50)
    exp_p99[$size]=$(wrk_field "$out/$name.wrk-exporter.txt" p99)
    stop "$exporter_pid"
    stop "$sim_pid"

    start_nginx "$out/$name.metrics.txt"
    run_wrk "$nginx_url" "$wrk_seconds" "$out/$name.wrk-nginx.txt"
    note "\$ ${nginx_command[*]}   # serves $name.metrics.txt, saved above, at /metrics"
    note "\$ ${wrk_command[*]}"
    note "$(cat "$out/$name.wrk-nginx.txt")"
    note '```'
    note ""
    nginx_rps[$size]=$(wrk_field "$out/$name.wrk-nginx.txt" rps)
    nginx_p50[$size]=$(wrk_field "$out/$name.wrk-nginx.txt" p50)
    nginx_p99[$size]=$(wrk_field "$out/$name.wrk-nginx.txt" p99)
    stop "$nginx_pid"
}

# --- CPU per cycle at one size -----------------------------------------------
cpu_per_cycle() {
    local size=$1 name=cpu-$1 seconds interval cycles c1 c2 t1 t2 cpu1 cpu2 periods
    # The shortest interval the limit allows, with a margin, and at least 5 s;
    # enough cycles to make the clock ticks (10 ms each) a small error.
    seconds=$(((size * 3 / 2 + cpu_limit - 1) / cpu_limit))
    ((seconds >= 5)) || seconds=5
    interval=${seconds}s
    cycles=$(((cpu_seconds + seconds - 1) / seconds))
    ((cycles >= cpu_cycles)) || cycles=$cpu_cycles
    say "$size instances: CPU over $cycles cycles of $interval at $cpu_limit requests/s"
    start_simulator "$size" "$cpu_limit" "$interval" "$name"
    start_exporter "$name"
    wait_ok "$exporter_url/-/ready" $((size * 3 / cpu_limit + 60)) "$exporter_pid"
    c1=$(curl -fsS -m 60 "$exporter_url/metrics" | awk '$1 == "tencentcloud_redis_backup_exporter_cycles_total" { print $2 }')
    t1=$(now)
    cpu1=$(cpu_ticks "$exporter_pid")
    sleep $((seconds * cycles))
    cpu2=$(cpu_ticks "$exporter_pid")
    t2=$(now)
    rss_steady[$size]=$(status_kib "$exporter_pid" VmRSS)
    c2=$(curl -fsS -m 60 "$exporter_url/metrics" | awk '$1 == "tencentcloud_redis_backup_exporter_cycles_total" { print $2 }')
    periods=$(calc "($t2 - $t1) / $seconds" 2)
    cpu_cycle[$size]=$(calc "($cpu2 - $cpu1) / $ticks_per_second / (($t2 - $t1) / $seconds) * 1000" 0)
    note "### CPU per cycle, $size instances"
    note ""
    note '```'
    note "\$ ${sim_command[*]}"
    note "\$ ${exporter_command[*]}"
    note "# after /-/ready: cycles_total $c1; utime+stime $cpu1 ticks ($ticks_per_second a second)"
    note "\$ sleep $((seconds * cycles))   # nothing else touches the exporter meanwhile"
    note "# utime+stime $cpu2 ticks after $(minus "$t2" "$t1") s = $periods intervals; cycles_total then $c2"
    note "# CPU per cycle: ($cpu2 - $cpu1) ticks / $periods = ${cpu_cycle[$size]} ms; VmRSS ${rss_steady[$size]} kB"
    note '```'
    note ""
    stop "$exporter_pid"
    stop "$sim_pid"
}

# --- run -----------------------------------------------------------------------
{
    echo "# Benchmark run $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo ""
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory"
    echo "- binary: $binary ($(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ', with uncommitted changes'))"
    echo "- $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2), $("$nginx" -v 2>&1)"
    echo "- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo ""
} > "$results"

for size in "${sizes[@]}"; do
    first_cycle "$size"
done
for size in "${sizes[@]}"; do
    cpu_per_cycle "$size"
done

note "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
note ""
note "## Summary"
note ""
note "| instances | requests | first cycle (s) | ideal N/limit (s) | wall to ready (s) | busiest second | RequestLimitExceeded | VmRSS after cycle (MiB) | after one scrape (MiB) | after 2 scrapers (MiB) | after wrk (MiB) | VmHWM (MiB) | body (bytes) | scrape after change (ms) | scrape reusing (ms) | exporter req/s | p50 | p99 | nginx req/s | p50 | p99 | nginx/exporter | CPU per cycle (ms) |"
note "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
for size in "${sizes[@]}"; do
    ideal=$(calc "$size / $cycle_limit" 1)
    ratio=$(calc "${nginx_rps[$size]} / ${exp_rps[$size]}" 2)
    note "| $size | ${arrivals[$size]} | ${cycle[$size]} | $ideal | ${wall[$size]} | ${busiest[$size]} | ${throttled[$size]} | $(mb "${rss_cycle[$size]}") | $(mb "${rss_scrape[$size]}") | $(mb "${rss_pair[$size]}") | $(mb "${rss_load[$size]}") | $(mb "${hwm_load[$size]}") | ${body[$size]} | ${fresh_ms[$size]} | ${reused_ms[$size]} | ${exp_rps[$size]} | ${exp_p50[$size]} | ${exp_p99[$size]} | ${nginx_rps[$size]} | ${nginx_p50[$size]} | ${nginx_p99[$size]} | $ratio | ${cpu_cycle[$size]} |"
done
note ""
note "Raw outputs: $out"
cat "$results"
