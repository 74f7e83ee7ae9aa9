#!/bin/bash
# run.sh: the whole benchmark comparison in one command (`make bench`, or
# `bash bench/run.sh` from a checkout). Installs the peers (Redis, NATS,
# beanstalkd, Go, gnuplot) from Debian packages, builds what is missing,
# then runs every workload of bench/README.md against chand and each peer,
# each broker started fresh per run on a free loopback port with its own
# temp dir and stopped after it. Writes bench/results/results.md (the
# tables), results.csv (medians), raw.csv (every run) and the PNG plots,
# and prints the tables.
#
# Environment:
#   BENCH_SCALE=0.1   multiply every message count (default 1, the full run)
#   BENCH_REPS=3      runs per throughput figure; the median is reported
#   BENCH_OUT=DIR     where results go (default bench/results in the source)
#   BUILD=DIR SRC=DIR build and source trees (default: SRC/build, built
#                     with deploy/build.sh when it has no chand)
#   BENCH_NO_INSTALL=1  do not run install-peers.sh
set -u

SRC=${SRC:-$(cd "$(dirname "$0")/.." && pwd)}
BUILD=${BUILD:-$SRC/build}
SCALE=${BENCH_SCALE:-1}
REPS=${BENCH_REPS:-3}
OUT=${BENCH_OUT:-$SRC/bench/results}
B=$BUILD/bench
START=$(date +%s)
LOAD_START=$(cut -d" " -f1-3 /proc/loadavg)

say() { printf '%s\n' "$*" >&2; }
die() { say "run.sh: $*"; exit 1; }

# ---- setup ---------------------------------------------------------------

if [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
    sh "$SRC/bench/install-peers.sh" || die "installing the peers failed"
fi
if [ ! -x "$BUILD/chand" ]; then
    sh "$SRC/deploy/install-deps.sh" && BUILDDIR=$BUILD sh "$SRC/deploy/build.sh" ||
        die "building chand failed"
fi
make -C "$BUILD" -s bench/relay bench/bench-chand bench/bench-relay bench/bench-beanstalk \
    bench/bench-local bench/bench-mem >/dev/null || die "building the bench programs failed"

WORK=$(mktemp -d /tmp/chand-bench.XXXXXX) || die "mktemp"
BPID=
cleanup() {
    if [ -n "$BPID" ]; then
        kill -TERM "$BPID" 2>/dev/null
        wait "$BPID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CFLAGS_BENCH="-std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror"
PEERS_C=""
if pkg-config --exists hiredis &&
    cc $CFLAGS_BENCH -o "$B/bench-redis" "$SRC/bench/peer_redis.c" "$SRC/bench/harness.c" \
        $(pkg-config --cflags --libs hiredis); then
    PEERS_C="$PEERS_C redis"
else
    say "run.sh: no hiredis, Redis is left out"
fi
if pkg-config --exists libnats &&
    cc $CFLAGS_BENCH -o "$B/bench-nats" "$SRC/bench/peer_nats.c" "$SRC/bench/harness.c" \
        $(pkg-config --cflags --libs libnats); then
    PEERS_C="$PEERS_C nats"
else
    say "run.sh: no libnats, NATS is left out"
fi
HAVE_GO=0
if command -v go >/dev/null 2>&1 &&
    GOCACHE=$WORK/gocache GOPATH=$WORK/gopath GO111MODULE=off GOFLAGS= \
        go build -o "$B/local-go" "$SRC/bench/go/local.go"; then
    HAVE_GO=1
else
    say "run.sh: no Go, the local comparison has no Go column"
fi
HAVE_MANY=0
grep -q BENCH_HAVE_MANY "$B/have_many.h" 2>/dev/null && HAVE_MANY=1

mkdir -p "$OUT" || die "cannot make $OUT"
RAW=$OUT/raw.csv
echo "workload,variant,peer,rep,n,size,metric,value,broker_rss_kb,broker_cpu_s,ok" > "$RAW"
rm -f "$OUT"/lat-*.dat

# Counts scaled by BENCH_SCALE, at least lo.
cnt() { awk -v v="$1" -v s="$SCALE" -v lo="${2:-1}" 'BEGIN { x = int(v * s); print (x < lo ? lo : x) }'; }

N_QUEUE=$(cnt 1000000 1000)        # workloads 1 and 2, batched
N_ONE=$(cnt 20000 1000)            # one op per call: latency-bound, 2-5 s per 20,000
N_SLOW=$(cnt 30000 1000)           # beanstalkd batched: it does ~20,000 msgs/s
N_RTT=$(cnt 20000 100)
N_WARM=$(cnt 2000 10)
N_64K=$(cnt 3000 50)
N_1M=$(cnt 300 10)
N_CHANS=$(cnt 100000 1000)
N_CONNS=$(cnt 10000 100)
N_HANDOFF=$(cnt 1000000 1000)
N_SPAWN=$(cnt 1000000 1000)
N_LOCALBUF=$(cnt 10000000 10000)
N_PARKED=$(cnt 100000 1000)
TLIM=$(awk -v s="$SCALE" 'BEGIN { t = int(240 * s); print (t < 60 ? 60 : t) }')

# ---- brokers -------------------------------------------------------------

# A port nothing listens on (bash's /dev/tcp connect fails); the broker's
# start is retried on another one if it still loses a race.
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}

wait_port() {
    local port=$1 i
    for i in $(seq 1 200); do
        kill -0 "$BPID" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# start_broker NAME: sets BPID and ADDR; each gets a fresh dir under WORK.
start_broker() {
    local name=$1 dir port try
    for try in 1 2 3; do
        dir=$WORK/$name.$try.$RANDOM
        mkdir -p "$dir"
        case $name in
        chand)
            "$BUILD/chand" --port 0 --port-file "$dir/port" --log-level warn \
                --max-conns 20000 >"$dir/out" 2>"$dir/log" &
            BPID=$!
            for _ in $(seq 1 200); do [ -s "$dir/port" ] && break; sleep 0.05; done
            port=$(cat "$dir/port" 2>/dev/null) ;;
        relay)
            "$B/relay" --port-file "$dir/port" >"$dir/out" 2>"$dir/log" &
            BPID=$!
            for _ in $(seq 1 200); do [ -s "$dir/port" ] && break; sleep 0.05; done
            port=$(cat "$dir/port" 2>/dev/null) ;;
        redis)
            port=$(free_port) || return 1
            redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
                --dir "$dir" --daemonize no --loglevel warning >"$dir/log" 2>&1 &
            BPID=$! ;;
        nats)
            port=$(free_port) || return 1
            # NATS core drops a subscriber that falls behind its server-side
            # buffer; raise it so that the exactly-once check can hold.
            printf 'listen: "127.0.0.1:%s"\nmax_payload: 2097152\nmax_pending: 2147483648\nwrite_deadline: "120s"\n' \
                "$port" > "$dir/nats.conf"
            nats-server -c "$dir/nats.conf" >"$dir/log" 2>&1 &
            BPID=$! ;;
        beanstalkd)
            port=$(free_port) || return 1
            beanstalkd -l 127.0.0.1 -p "$port" -z 2000000 >"$dir/log" 2>&1 &
            BPID=$! ;;
        esac
        ADDR=127.0.0.1:$port
        [ -n "$port" ] && wait_port "$port" && return 0
        kill -KILL "$BPID" 2>/dev/null
        wait "$BPID" 2>/dev/null
        BPID=
    done
    say "run.sh: $name did not start"
    return 1
}

# stop_broker: sets RSS_KB (peak, VmHWM) and CPU_S (user + system).
stop_broker() {
    local tick
    tick=$(getconf CLK_TCK)
    RSS_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$BPID/status" 2>/dev/null)
    # fields after the parenthesised command name: utime is 14, stime 15
    CPU_S=$(sed 's/.*) //' "/proc/$BPID/stat" 2>/dev/null |
        awk -v t="$tick" '{ printf "%.2f", ($12 + $13) / t }')
    kill -TERM "$BPID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$BPID" 2>/dev/null
    wait "$BPID" 2>/dev/null
    BPID=
}

# kv KEY LINE: the value of KEY in a key=value result line.
kv() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# record WORKLOAD VARIANT PEER REP N SIZE METRIC VALUE OK
record() {
    echo "$1,$2,$3,$4,$5,$6,$7,$8,${RSS_KB:-},${CPU_S:-},$9" >> "$RAW"
}

# run_load PEER WORKLOAD VARIANT REP ARGS...: one broker, one load run.
run_load() {
    local peer=$1 wl=$2 variant=$3 rep=$4 prog line ok rc n size
    shift 4
    prog=$B/bench-$peer
    [ "$peer" = beanstalkd ] && prog=$B/bench-beanstalk
    start_broker "$peer" || { record "$wl" "$variant" "$peer" "$rep" 0 0 none 0 0; return; }
    line=$(timeout $((TLIM + 30)) "$prog" --addr "$ADDR" --timeout "$TLIM" --label "$wl" \
        --variant "$variant" "$@" 2>"$WORK/err")
    rc=$?
    stop_broker
    ok=$(kv ok "$line")
    [ "$rc" -eq 0 ] && [ "$ok" = 1 ] || {
        ok=0
        say "run.sh: $peer $wl $variant failed (rc $rc): $(tail -n 3 "$WORK/err" | tr '\n' ' ')"
    }
    n=$(kv n "$line")
    size=$(kv size "$line")
    if [ "$wl" = rtt ]; then
        record "$wl" "$variant" "$peer" "$rep" "${n:-0}" "${size:-0}" p50_us "$(kv p50_us "$line")" "$ok"
        record "$wl" "$variant" "$peer" "$rep" "${n:-0}" "${size:-0}" p99_us "$(kv p99_us "$line")" "$ok"
        record "$wl" "$variant" "$peer" "$rep" "${n:-0}" "${size:-0}" p999_us "$(kv p999_us "$line")" "$ok"
    else
        record "$wl" "$variant" "$peer" "$rep" "${n:-0}" "${size:-0}" msgs_per_s "$(kv msgs_per_s "$line")" "$ok"
        record "$wl" "$variant" "$peer" "$rep" "${n:-0}" "${size:-0}" mb_per_s "$(kv mb_per_s "$line")" "$ok"
    fi
    say "  $wl/$variant $peer #$rep: $(echo "$line" | grep -o -E '(msgs_per_s|mb_per_s|p50_us|p99_us)=[0-9.]+' | tr '\n' ' ')rss ${RSS_KB:-?} kB cpu ${CPU_S:-?} s"
}

# ---- workloads 1-4 -------------------------------------------------------

PEERS="chand$PEERS_C beanstalkd"
say "run.sh: scale $SCALE, $REPS runs each; peers: $PEERS relay"

for rep in $(seq 1 "$REPS"); do
    say "== round $rep of $REPS"
    # 1 queue and 2 fan, one op per call: one request in flight per process
    for peer in $PEERS; do
        run_load "$peer" queue one "$rep" -n "$N_ONE" --producers 1 --consumers 1 --name q
        run_load "$peer" fan one "$rep" -n "$N_ONE" --producers 4 --consumers 4 --name q
    done
    # batched: 64 coroutines per process for chand, pipelines of 100 elsewhere
    for peer in $PEERS relay; do
        n=$N_QUEUE
        [ "$peer" = beanstalkd ] && n=$N_SLOW
        run_load "$peer" queue batch "$rep" -n "$n" --producers 1 --consumers 1 --conc 64 --batch 100 --name q
        run_load "$peer" fan batch "$rep" -n "$n" --producers 4 --consumers 4 --conc 64 --batch 100 --name q
    done
    if [ "$HAVE_MANY" = 1 ]; then
        run_load chand queue many "$rep" -n "$N_QUEUE" --producers 1 --consumers 1 --conc 4 --batch 100 --name q
        run_load chand fan many "$rep" -n "$N_QUEUE" --producers 4 --consumers 4 --conc 4 --batch 100 --name q
    fi
    # 4 large messages: a few in flight per process
    for peer in $PEERS relay; do
        run_load "$peer" large64k batch "$rep" -n "$N_64K" --size 65536 --conc 8 --cap 64 --batch 16 --name l
        run_load "$peer" large1m batch "$rep" -n "$N_1M" --size 1048576 --conc 4 --cap 16 --batch 4 --name l
    done
    # 3 round trip
    for peer in $PEERS relay; do
        run_load "$peer" rtt one "$rep" --workload rtt -n "$N_RTT" --warmup "$N_WARM" --name r \
            --latfile "$OUT/lat-$peer.dat"
    done
done

# ---- workloads 5 and 6: broker memory ------------------------------------

say "== memory"
for t in chans msgs conns; do
    n=$N_CHANS
    [ "$t" = conns ] && n=$N_CONNS
    start_broker chand || continue
    line=$(timeout 300 "$B/bench-mem" "$t" --addr "$ADDR" --pid "$BPID" -n "$n" 2>"$WORK/err")
    rc=$?
    stop_broker
    ok=$(kv ok "$line")
    [ "$rc" -eq 0 ] && [ "$ok" = 1 ] || { ok=0; say "run.sh: mem $t failed: $(cat "$WORK/err")"; }
    for m in empty_chan_bytes chan_with_msg_bytes msg_overhead_bytes conn_bytes; do
        v=$(kv "$m" "$line")
        [ -n "$v" ] && record "mem-$t" - chand 1 "$n" 64 "$m" "$v" "$ok"
    done
    say "  $line"
done

# ---- workload 7: local channels ------------------------------------------

say "== local"
RSS_KB= CPU_S=
for rep in $(seq 1 "$REPS"); do
    for t in "handoff $N_HANDOFF" "spawn $N_SPAWN" "buffered $N_LOCALBUF" "parked $N_PARKED"; do
        set -- $t
        progs="$B/bench-local"
        [ "$HAVE_GO" = 1 ] && progs="$progs go1 go2"
        for p in $progs; do
            case $p in
            go1) line=$(GOMAXPROCS=1 timeout 300 "$B/local-go" "$1" "$2") ;;
            go2) line=$(GOMAXPROCS=2 timeout 300 "$B/local-go" "$1" "$2") ;;
            *) line=$(timeout 300 "$p" "$1" "$2") ;;
            esac
            peer=$(kv peer "$line")
            for m in ns msgs_per_s bytes; do
                v=$(kv "$m" "$line")
                [ -n "$v" ] && record "local-$1" - "${peer:-$p}" "$rep" "$2" 64 "$m" "$v" "$(kv ok "$line")"
            done
        done
    done
done

# ---- results -------------------------------------------------------------

# results.csv: the median of the runs of each (workload, variant, peer, metric)
MED=$OUT/results.csv
echo "workload,variant,peer,metric,median,runs,failed_runs,broker_rss_kb,broker_cpu_s" > "$MED"
tail -n +2 "$RAW" | sort -t, -k1,1 -k2,2 -k3,3 -k7,7 -k4,4n | awk -F, '
function flush(   i, j, t, m, r, c) {
    if (key == "") return
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
        if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t; t = rs[i]; rs[i] = rs[j]; rs[j] = t; t = cp[i]; cp[i] = cp[j]; cp[j] = t }
    m = int((n + 1) / 2)
    print key "," v[m] "," n "," bad "," rs[m] "," cp[m]
}
{
    k = $1 "," $2 "," $3 "," $7
    if (k != key) { flush(); key = k; n = 0; bad = 0 }
    if ($11 != 1) { bad++; next }
    n++; v[n] = $8; rs[n] = $9; cp[n] = $10
}
END { flush() }' >> "$MED"

# get WORKLOAD VARIANT PEER METRIC [FIELD]: a median (or its RSS/CPU column)
get() {
    awk -F, -v w="$1" -v va="$2" -v p="$3" -v m="$4" -v f="${5:-5}" \
        '$1 == w && $2 == va && $3 == p && $4 == m && $6 > 0 { print $f; exit }' "$MED"
}
fmt() { [ -z "$1" ] && { echo "—"; return; }; awk -v x="$1" -v d="${2:-0}" 'BEGIN { printf "%.*f", d, x }'; }
kfmt() {
    [ -z "$1" ] && { echo "—"; return; }
    awk -v x="$1" 'BEGIN { if (x >= 1e6) printf "%.2fM", x / 1e6; else if (x >= 1e3) printf "%.0fk", x / 1e3; else printf "%.0f", x }'
}
ratio() {
    [ -z "$1" ] || [ -z "$2" ] && { echo "—"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "—"; else printf "%.2f", a / b }'
}
best_chand() { # the best chand batched figure and how it was made
    local a b
    a=$(get "$1" batch chand "$2")
    b=$(get "$1" many chand "$2")
    if [ -n "$b" ] && awk -v a="${a:-0}" -v b="$b" 'BEGIN { exit !(b > a) }'; then echo "$b"; else echo "$a"; fi
}

MD=$OUT/results.md
{
    echo "# chand benchmark results"
    echo
    echo "- command: \`BENCH_SCALE=$SCALE make bench\` (bench/run.sh), $REPS runs per figure, median shown"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d" " -f1-3 /proc/loadavg) (other jobs on the machine make every figure worse)"
    echo "- machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    echo "- peers: $(redis-server --version 2>/dev/null | awk '{ print "Redis " $3 }' | sed 's/v=//'), $(nats-server --version 2>/dev/null | sed 's/nats-server: v/NATS /'), $(beanstalkd -v 2>/dev/null), $(go version 2>/dev/null | awk '{ print $3 }')"
    rev=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?')
    # only code counts: the results and the docs do not change what was measured
    [ -n "$(git -C "$SRC" status --porcelain -uno -- . ':!bench/results' ':!*.md' 2>/dev/null)" ] &&
        rev="$rev with uncommitted changes"
    echo "- chand: $rev; batched calls (chan_send_many/chan_recv_many): $([ "$HAVE_MANY" = 1 ] && echo yes || echo 'not in the library yet')"
    echo
    echo "## Throughput (workloads 1, 2, 4)"
    echo
    echo "Messages per second (64 B) or MB/s (large); every run checked every message arrived exactly once."
    echo
    echo "| workload | n | chand | Redis | NATS | beanstalkd | raw relay | chand/Redis | chand/NATS | chand/beanstalkd | chand/relay |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for row in "queue one msgs_per_s" "queue batch msgs_per_s" "queue many msgs_per_s" \
        "fan one msgs_per_s" "fan batch msgs_per_s" "fan many msgs_per_s" \
        "large64k batch mb_per_s" "large1m batch mb_per_s"; do
        set -- $row
        c=$(get "$1" "$2" chand "$3")
        [ "$2" = many ] && [ -z "$c" ] && continue
        cmp=$2
        [ "$2" = many ] && cmp=batch
        r=$(get "$1" "$cmp" redis "$3"); na=$(get "$1" "$cmp" nats "$3")
        bs=$(get "$1" "$cmp" beanstalkd "$3"); re=$(get "$1" "$cmp" relay "$3")
        n=$(awk -F, -v w="$1" -v va="$2" '$1 == w && $2 == va && $3 == "chand" { print $5; exit }' "$RAW")
        case "$1/$2" in
        */one) label="$1, one op per call" ;;
        */batch) label="$1, batched (chand: 64 coroutines/process)" ;;
        */many) label="$1, batched (chand: send_many/recv_many of 100, 4 coroutines/process)" ;;
        esac
        [ "$3" = mb_per_s ] && label="$1 (MB/s)"
        if [ "$3" = mb_per_s ]; then F=fmt; else F=kfmt; fi
        echo "| $label | $n | $($F "$c") | $($F "$r") | $($F "$na") | $($F "$bs") | $($F "$re") | $(ratio "$c" "$r") | $(ratio "$c" "$na") | $(ratio "$c" "$bs") | $(ratio "$c" "$re") |"
    done
    echo
    echo "One op per call runs $N_ONE messages (latency-bound), beanstalkd batched $N_SLOW (it manages ~20k/s); the rest $N_QUEUE. NATS one op per call is publish + flush (a round trip). The raw relay has no one-op form (it sends no replies)."
    echo
    echo "## Round trip (workload 3): µs, $N_RTT round trips after $N_WARM warm-up"
    echo
    echo "| peer | p50 | p99 | p99.9 | chand p50 / peer p50 |"
    echo "|---|---|---|---|---|"
    cp50=$(get rtt one chand p50_us)
    for p in chand redis nats beanstalkd relay; do
        p50=$(get rtt one "$p" p50_us)
        echo "| $p | $(fmt "$p50" 1) | $(fmt "$(get rtt one "$p" p99_us)" 1) | $(fmt "$(get rtt one "$p" p999_us)" 1) | $(ratio "$cp50" "$p50") |"
    done
    echo
    echo "## Broker peak RSS (MB) and CPU seconds per run (median run)"
    echo
    echo "| workload | chand | Redis | NATS | beanstalkd | raw relay |"
    echo "|---|---|---|---|---|---|"
    for row in "queue one" "queue batch" "queue many" "fan one" "fan batch" "fan many" "large64k batch" "large1m batch" "rtt one"; do
        set -- $row
        metric=msgs_per_s
        [ "$1" = rtt ] && metric=p50_us
        [ "$2" = many ] && [ -z "$(get "$1" many chand "$metric")" ] && continue
        line="| $1 $2"
        for p in chand redis nats beanstalkd relay; do
            va=$2
            [ "$2" = many ] && [ "$p" != chand ] && { line="$line | —"; continue; }
            rs=$(get "$1" "$va" "$p" "$metric" 8); cpu=$(get "$1" "$va" "$p" "$metric" 9)
            if [ -n "$rs" ]; then line="$line | $(fmt "$(awk -v k="$rs" 'BEGIN { print k / 1024 }')" 1) MB, $cpu s"; else line="$line | —"; fi
        done
        echo "$line |"
    done
    echo
    echo "## Broker memory per object (workloads 5, 6)"
    echo
    echo "| what | bytes | target |"
    echo "|---|---|---|"
    echo "| empty channel ($N_CHANS channels) | $(fmt "$(get mem-chans - chand empty_chan_bytes)") | ≤ 1024 |"
    echo "| channel holding one 64 B message | $(fmt "$(get mem-chans - chand chan_with_msg_bytes)") | |"
    echo "| buffered message beyond its payload (one per channel) | $(fmt "$(get mem-chans - chand msg_overhead_bytes)") | ≤ 64 |"
    echo "| buffered message beyond its payload ($N_CHANS in one channel) | $(fmt "$(get mem-msgs - chand msg_overhead_bytes)") | ≤ 64 |"
    echo "| idle connection ($N_CONNS connections) | $(fmt "$(get mem-conns - chand conn_bytes)") | ≤ 16384 |"
    echo
    echo "## Local channels (workload 7): libchanclient vs Go's channels"
    echo
    echo "| test | chand | Go, GOMAXPROCS=1 | Go, GOMAXPROCS=2 | chand/Go(1) | chand/Go(2) |"
    echo "|---|---|---|---|---|---|"
    for row in "handoff ns ns_per_hand-off_(unbuffered_ping-pong)" "spawn ns ns_per_spawn+join" \
        "buffered msgs_per_s 64_B_msgs/s,_cap_1024" "parked bytes RSS_bytes_per_parked_coroutine"; do
        set -- $row
        c=$(get "local-$1" - chand "$2"); g1=$(get "local-$1" - go1 "$2"); g2=$(get "local-$1" - go2 "$2")
        if [ "$2" = msgs_per_s ]; then F=kfmt; else F=fmt; fi
        echo "| $(echo "$3" | tr '_' ' ') | $($F "$c") | $($F "$g1") | $($F "$g2") | $(ratio "$c" "$g1") | $(ratio "$c" "$g2") |"
    done
    echo
    echo "## Targets (issue 5)"
    echo
    yn() { awk "BEGIN { exit !($1) }" 2>/dev/null && echo "met" || echo "**not met**"; }
    qb=$(best_chand queue msgs_per_s); fb=$(best_chand fan msgs_per_s)
    for w in queue fan; do
        if [ "$w" = queue ]; then c=$qb; else c=$fb; fi
        r=$(get $w batch redis msgs_per_s); na=$(get $w batch nats msgs_per_s)
        bs=$(get $w batch beanstalkd msgs_per_s); re=$(get $w batch relay msgs_per_s)
        echo "- $w batched ahead of every peer: $(yn "${c:-0} > ${r:-0} && ${c:-0} > ${na:-0} && ${c:-0} > ${bs:-0}") (chand $(kfmt "$c"), Redis $(kfmt "$r"), NATS $(kfmt "$na"), beanstalkd $(kfmt "$bs"))"
        echo "- $w batched ≥ 2.5× NATS: $(yn "${c:-0} >= 2.5 * ${na:-1e18}") ($(ratio "$c" "$na")×)"
        echo "- $w batched ≥ 40% of the raw relay: $(yn "${c:-0} >= 0.4 * ${re:-1e18}") ($(awk -v a="${c:-0}" -v b="${re:-0}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "—" }'))"
    done
    c=$(get queue one chand msgs_per_s); r=$(get queue one redis msgs_per_s); bs=$(get queue one beanstalkd msgs_per_s)
    echo "- queue one op per call ahead of Redis and beanstalkd: $(yn "${c:-0} > ${r:-0} && ${c:-0} > ${bs:-0}") (chand $(kfmt "$c"), Redis $(kfmt "$r"), beanstalkd $(kfmt "$bs"))"
    re=$(get rtt one relay p50_us)
    minp=$(for p in redis nats beanstalkd; do get rtt one "$p" p50_us; done | sort -g | head -n 1)
    echo "- round trip p50 ≤ 1.5× the relay's: $(yn "${cp50:-1e18} <= 1.5 * ${re:-0}") ($(ratio "$cp50" "$re")×)"
    echo "- round trip p50 below every peer's: $(yn "${cp50:-1e18} < ${minp:-0}") (chand $(fmt "$cp50" 1) µs, best peer $(fmt "$minp" 1) µs)"
    h=$(get local-handoff - chand ns); hg=$(get local-handoff - go1 ns); hg2=$(get local-handoff - go2 ns)
    echo "- local hand-off < 100 ns and below Go's: $(yn "${h:-1e18} < 100 && ${h:-1e18} < ${hg:-0} && ${h:-1e18} < ${hg2:-0}") ($(fmt "$h" 1) ns; Go $(fmt "$hg" 1) / $(fmt "$hg2" 1) ns)"
    s=$(get local-spawn - chand ns); sg=$(get local-spawn - go1 ns); sg2=$(get local-spawn - go2 ns)
    echo "- spawn+join below a goroutine's: $(yn "${s:-1e18} < ${sg:-0} && ${s:-1e18} < ${sg2:-0}") ($(fmt "$s" 1) ns; Go $(fmt "$sg" 1) / $(fmt "$sg2" 1) ns)"
    b=$(get local-buffered - chand msgs_per_s); bg=$(get local-buffered - go1 msgs_per_s); bg2=$(get local-buffered - go2 msgs_per_s)
    echo "- local buffered ≥ Go's: $(yn "${b:-0} >= ${bg:-1e18} && ${b:-0} >= ${bg2:-1e18}") ($(kfmt "$b"); Go $(kfmt "$bg") / $(kfmt "$bg2") msgs/s)"
    m1=$(get mem-chans - chand msg_overhead_bytes); m2=$(get mem-msgs - chand msg_overhead_bytes)
    e=$(get mem-chans - chand empty_chan_bytes); k=$(get mem-conns - chand conn_bytes); pk=$(get local-parked - chand bytes)
    echo "- ≤ 64 B per buffered message beyond its payload: $(yn "${m1:-1e18} <= 64 && ${m2:-1e18} <= 64") ($(fmt "$m1") / $(fmt "$m2") B)"
    echo "- ≤ 1 KiB per empty channel: $(yn "${e:-1e18} <= 1024") ($(fmt "$e") B)"
    echo "- ≤ 16 KiB per idle connection: $(yn "${k:-1e18} <= 16384") ($(fmt "$k") B)"
    echo "- ≤ 8 KiB RSS per parked coroutine: $(yn "${pk:-1e18} <= 8192") ($(fmt "$pk") B)"
    echo
    fails=$(awk -F, 'NR > 1 && $11 != 1' "$RAW" | cut -d, -f1-4 | sort -u | tr '\n' ' ')
    echo "Failed runs (left out of the medians): ${fails:-none}"
    echo
    echo "Plots: throughput.png (workloads 1, 2), large.png (workload 4), latency.png (workload 3). Wall time of the whole run: $(( $(date +%s) - START )) s."
} > "$MD"

# ---- plots ---------------------------------------------------------------

if command -v gnuplot >/dev/null 2>&1; then
    {
        echo "workload chand Redis NATS beanstalkd relay"
        for row in "queue one" "queue batch" "fan one" "fan batch"; do
            set -- $row
            line="$1-$2"
            for p in chand redis nats beanstalkd relay; do
                v=$(get "$1" "$2" "$p" msgs_per_s)
                [ "$p" = chand ] && [ "$2" = batch ] && v=$(best_chand "$1" msgs_per_s)
                line="$line ${v:-0}"
            done
            echo "$line"
        done
    } > "$OUT/throughput.dat"
    {
        echo "workload chand Redis NATS beanstalkd relay"
        for w in large64k large1m; do
            line=$w
            for p in chand redis nats beanstalkd relay; do
                v=$(get "$w" batch "$p" mb_per_s)
                line="$line ${v:-0}"
            done
            echo "$line"
        done
    } > "$OUT/large.dat"
    gnuplot -e "outdir='$OUT'" "$SRC/bench/plot.gp" 2>"$WORK/gnuplot.err" ||
        say "run.sh: gnuplot failed: $(cat "$WORK/gnuplot.err")"
fi

cat "$MD"
say "run.sh: results in $OUT (wall time $(( $(date +%s) - START )) s)"
