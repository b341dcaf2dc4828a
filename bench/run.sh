#!/usr/bin/env bash
# bench/run.sh: run tendril's benchmarks beside their peers on this machine and print Markdown
# tables of medians and ratios (docs/benchmarks.md explains the method).
# Builds nothing of tendril's: `./dev bench` builds the release preset, then calls this.
#
#   bench/run.sh                 every group, about 13 minutes (echo alone: 5, monkey 4)
#   bench/run.sh hub sleepers    only some groups (see below)
#   REPS=9 bench/run.sh          more repetitions (Google Benchmark) and program rounds
#   PROCS=5 bench/run.sh         more Google Benchmark processes (default 3)
#   BENCH_CPU=1 bench/run.sh     pin to another CPU (default 0)
#
# Groups, every process pinned with taskset to one CPU:
#   greenlet  (issue 2) build/release/bench/greenlet_bench (Google Benchmark): tendril and
#             Boost.Context cases in one process, REPS repetitions interleaved at random; PROCS
#             such processes, and the median of all PROCS x REPS repetitions; then the
#             peer-contract programs, REPS rounds, each round running tendril's program and
#             Boost.Context's peer one after the other: switch_peer vs ../shared/peers/switch,
#             spawn_peer vs ../shared/peers/spawn, memory_bench vs ../shared/peers/memory.
#   hub       (issue 3) build/release/bench/hub_bench (Google Benchmark): sleep(0s) among
#             1,000 tasks, queue and event ping-pong, event broadcast, spawn+join, beside
#             Boost.Fiber; as greenlet_bench, PROCS processes of REPS repetitions.
#   spawn     (issue 3) task_spawn_peer vs Go (goroutine + WaitGroup) vs State Threads.
#   memory    (issue 3) task_memory_peer vs Go (100,000 blocked).
#   sleepers  (issue 3) sleepers_peer vs Asio vs Go (10,000 x 1 s).
#   echo      (issue 4) build/release/bench/echo_server on io_uring, epoll and poll
#             (TENDRIL_BACKEND) beside ../shared/peers' raw epoll (the reference), io_uring
#             and Go echo servers, driven by its load generator: 64-byte messages, 1, 100 and
#             1,000 connections, server on CPU 0, load generator on CPU 1, ECHO_ROUNDS rounds
#             (default 3) interleaved per connection count, ECHO_SECONDS measured (default 4)
#             after ECHO_WARMUP (default 1) per run: about 5-6 minutes. The figure that counts
#             is the server's CPU time per message (from /proc, read by the load generator);
#             its ratio to raw epoll is the median of the same-round ratios. ECHO_CONNS=1,100
#             picks the connection counts. The runner is ../shared/peers/tools/bench.py,
#             imported (never copied) with its root moved to build/release/bench/peers/, so
#             its logs land in the results folder and nothing is written to ../shared.
#   monkey    (issue 5) the hooks: monkey_bench (a hooked read beside libc's, in and outside a
#             greenlet; 100 concurrent libcurl GETs of 1 s pages, hooked and not), and
#             posix_echo_server (plain POSIX calls under the hooks) beside echo_server (the
#             net API) on epoll and io_uring, with the echo group's harness and load
#             generator at 1, 100 and 1,000 connections: about 4 minutes.
# The program groups run REPS rounds, interleaved: round 1 runs tendril then the peers, round 2
# the peers in reverse order then tendril, and so on; the ratio is the median of the ratios
# measured within one round (as ../shared/peers/tools/bench.py does), steadier than a ratio of
# medians on this shared machine. Go runs with GOMAXPROCS=1.
# The peers are compiled from ../shared/peers (its Makefile's flags: g++ -O2 -std=c++20,
# gcc -O2, go build) into build/release/bench/peers/ when missing or older than their source;
# a peer whose toolchain is missing is left out with a note (./dev deps bench installs them:
# golang-go, libst-dev, libasio-dev, libboost-fiber-dev).
# Results: build/release/bench/results/ (greenlet_bench.N.json, hub_bench.N.json,
# programs.txt, tasks.txt, greenlet.md, hub.md, echo.md, echo.json, echo-logs/, and table.md:
# the tables of this run).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD_DIR:-build/release}
bin=$build/bench
peers=${PEERS_DIR:-../shared/peers}
cpu=${BENCH_CPU:-0}
reps=${REPS:-5}
procs=${PROCS:-3}
out=$bin/results

all_groups=(greenlet hub spawn memory sleepers echo monkey)
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=("${all_groups[@]}")
for g in "${groups[@]}"; do
  case " ${all_groups[*]} " in
    *" $g "*) ;;
    *)
      echo "bench/run.sh: unknown group '$g' (groups: ${all_groups[*]})" >&2
      exit 2
      ;;
  esac
done
want() { case " ${groups[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac }

need=()
want greenlet && need+=(greenlet_bench memory_bench switch_peer spawn_peer)
want hub && need+=(hub_bench)
want spawn && need+=(task_spawn_peer)
want memory && need+=(task_memory_peer)
want sleepers && need+=(sleepers_peer)
want echo && need+=(echo_server)
want monkey && need+=(echo_server posix_echo_server monkey_bench)
for b in "${need[@]}"; do
  if [ ! -x "$bin/$b" ]; then
    echo "bench/run.sh: $bin/$b is missing; build it with ./dev bench (release preset)" >&2
    exit 1
  fi
done
if [ ! -d "$peers" ]; then
  echo "bench/run.sh: no peers folder at $peers (set PEERS_DIR)" >&2
  exit 1
fi
mkdir -p "$out" "$bin/peers"
abs_bin=$(cd "$bin" && pwd)

# peer_build EXE SOURCE: compiles one peer from the peers folder (never copied) if it is
# missing or older than its source, with the flags of the peers' Makefile. Returns 1 (and
# says why) when its toolchain is missing, so that the peer is left out of the run.
peer_build() {
  local exe=$bin/peers/$1 src=$peers/$2
  if [ -x "$exe" ] && [ ! "$src" -nt "$exe" ]; then return 0; fi
  echo "== building $exe from $src" >&2
  case "$src" in
    *.go)
      if ! command -v go >/dev/null; then
        echo "   (no go: apt-get install golang-go; $1 left out)" >&2
        return 1
      fi
      # Standard library only: builds offline. The build cache stays in the build tree.
      GOCACHE=${GOCACHE:-$abs_bin/peers/go-cache} GOPROXY=off GOFLAGS='' \
        go build -o "$exe" "$src" || return 1
      ;;
    *.c)
      if [[ " ${*:3} " == *" -lst "* ]] && [ ! -f /usr/include/st.h ]; then
        echo "   (no State Threads: apt-get install libst-dev; $1 left out)" >&2
        return 1
      fi
      gcc -O2 -Wall -I"$peers/common" -o "$exe" "$src" "${@:3}" ||
        { echo "   ($1 left out: see the error above)" >&2 && return 1; }
      ;;
    *.cpp)
      if [[ "$src" == */asio.cpp ]] && [ ! -f /usr/include/asio.hpp ]; then
        echo "   (no Asio: apt-get install libasio-dev; $1 left out)" >&2
        return 1
      fi
      g++ -O2 -Wall -std=c++20 -I"$peers/common" -o "$exe" "$src" "${@:3}" ||
        { echo "   ($1 left out: see the error above)" >&2 && return 1; }
      ;;
  esac
}

# The Boost.Context peers of the greenlet group.
if want greenlet; then
  for kind in switch spawn memory; do
    peer_build "${kind}_boost_context" "$kind/boost_context.cpp" -lboost_context
  done
fi

# The peers of issue 3's program groups: "group|name|exe|source|link flags", built if wanted.
peer_list=()
add_peer() {  # add_peer GROUP NAME EXE SOURCE [LINK...]
  local group=$1 name=$2 exe=$3 src=$4
  shift 4
  want "$group" || return 0
  if peer_build "$exe" "$src" "$@"; then peer_list+=("$group|$name|$exe"); fi
}
add_peer spawn go spawn_go spawn/go_spawn.go
add_peer spawn st spawn_st spawn/st.c -lst
add_peer memory go memory_go memory/go_mem.go
add_peer sleepers asio sleepers_asio sleepers/asio.cpp -pthread
add_peer sleepers go sleepers_go sleepers/go_sleep.go

# extra-peers.txt plugs tendril's peer-contract programs into the peers harness.
cat >"$out/extra-peers.txt" <<EOF
# tendril's peer-contract programs for ../shared/peers/run-all.sh (written by bench/run.sh):
#   EXTRA_PEERS=$abs_bin/results/extra-peers.txt ./run-all.sh switch spawn memory sleepers
#   EXTRA_PEERS=... ONLY='raw epoll|io_uring \(|Go net|tendril' CONNS=1,100,1000 ./run-all.sh echo
# (run-all.sh writes its report, logs and binaries into the peers folder; bench/run.sh echo
# runs the same echo comparison with everything kept under build/release/bench/.)
switch   | tendril greenlet::switch_to          | $abs_bin/switch_peer 10000000
spawn    | tendril greenlet, pooled stack       | $abs_bin/spawn_peer 100000 4
memory   | tendril greenlet, suspended          | $abs_bin/memory_bench 100000
spawn    | tendril spawn + joinall (tasks)      | $abs_bin/task_spawn_peer 100000 4
memory   | tendril task blocked on event        | $abs_bin/task_memory_peer 100000
sleepers | tendril task sleep(1s), joinall      | $abs_bin/sleepers_peer 10000 1000
echo     | tendril echo (io_uring)              | TENDRIL_BACKEND=io_uring $abs_bin/echo_server
echo     | tendril echo (epoll)                 | TENDRIL_BACKEND=epoll $abs_bin/echo_server
echo     | tendril echo (poll)                  | TENDRIL_BACKEND=poll $abs_bin/echo_server
EOF

pin=(taskset -c "$cpu")
start=$(date +%s)

# gbench NAME: PROCS processes of a Google Benchmark binary. Several processes: tendril's
# switch measured 5.4-8 ns from one process to the next while staying put within one
# (docs/benchmarks.md), so one process's repetitions are not enough.
gbench() {
  local name=$1
  rm -f "$out/$name".*.json
  for ((p = 1; p <= procs; ++p)); do
    echo "== $name, process $p/$procs: $reps repetitions, interleaved, CPU $cpu" >&2
    "${pin[@]}" "$bin/$name" \
      --benchmark_repetitions="$reps" \
      --benchmark_enable_random_interleaving=true \
      --benchmark_min_time=0.2 \
      --benchmark_display_aggregates_only=true \
      --benchmark_out="$out/$name.$p.json" --benchmark_out_format=json >&2
  done
}

if want greenlet; then
  gbench greenlet_bench

  # programs.txt: one "program key value" line per figure each program printed.
  echo "== peer-contract programs: $reps rounds, pinned to CPU $cpu" >&2
  : >"$out/programs.txt"
  run_program() {  # run_program NAME COMMAND...
    local name=$1
    shift
    "${pin[@]}" "$@" | awk -v n="$name" 'NF == 2 { print n, $1, $2 }' >>"$out/programs.txt"
  }
  for ((round = 1; round <= reps; ++round)); do
    run_program tendril_switch "$bin/switch_peer" 10000000
    run_program boost_switch "$bin/peers/switch_boost_context" 10000000
    run_program tendril_spawn "$bin/spawn_peer" 100000 4
    run_program boost_spawn "$bin/peers/spawn_boost_context" 100000 4
    run_program tendril_memory "$bin/memory_bench" 100000
    run_program boost_memory "$bin/peers/memory_boost_context" 100000
  done

python3 - "$out/programs.txt" "$out"/greenlet_bench.*.json >"$out/greenlet.md" <<'EOF'
import json, statistics, sys

runs = {}
for path in sys.argv[2:]:
    bench = json.load(open(path))
    for b in bench["benchmarks"]:
        if b.get("run_type") == "iteration":
            runs.setdefault(b["run_name"], []).append(b["time_per_op"] * 1e9)
progs = {}
for line in open(sys.argv[1]):
    name, key, value = line.split()
    try:
        progs.setdefault((name, key), []).append(float(value))
    except ValueError:  # a word, not a figure (guard_kind)
        pass

def gb(name):
    v = runs[name]
    return statistics.median(v), min(v), max(v)

def prog(name, key):
    v = progs[(name, key)]
    return statistics.median(v), min(v), max(v)

def fmt(m, digits):
    med, lo, hi = m
    f = "{:,.%df}" % digits
    if lo == hi:
        return f.format(med)
    return (f + " (" + f + "–" + f + ")").format(med, lo, hi)

rows = []
def row(what, unit, t, p, digits, goal="", met=""):
    ratio = "%.2f" % (t[0] / p[0]) if p and p[0] else "—"
    rows.append("| %s | %s | %s | %s | %s | %s | %s |"
                % (what, unit, fmt(t, digits), fmt(p, digits) if p else "—", ratio, goal, met))

def verdict(ok):
    return "**yes**" if ok else "**no**"

sw_t, sw_l0, sw_v, sw_b = (gb("switch/tendril_greenlet"), gb("switch/tendril_l0_jump"),
                           gb("switch/tendril_greenlet_int_value"), gb("switch/boost_fiber_resume"))
row("one switch: greenlet::switch_to() vs fiber::resume()", "ns/switch", sw_t, sw_b, 2,
    "≤ 0.45×", verdict(sw_t[0] / sw_b[0] <= 0.45))
row("one switch: raw L0 jump vs fiber::resume()", "ns/switch", sw_l0, sw_b, 2, "(L0 alone)", "")
row("one switch: switch_to(int) vs fiber::resume()", "ns/switch", sw_v, sw_b, 2, "", "")
sp_t = gb("spawn/tendril_greenlet_pooled")
sp_bp = gb("spawn/boost_fiber_pooled_fixedsize_stack")
sp_bf = gb("spawn/boost_fiber_fixedsize_stack")
row("create+run+destroy: pooled stack vs pooled_fixedsize_stack", "ns", sp_t, sp_bp, 1,
    "≤ 60 ns", verdict(sp_t[0] <= 60))
row("create+run+destroy: pooled stack vs fixedsize_stack", "ns", sp_t, sp_bf, 1, "", "")
gen_t, gen_b = gb("generator/tendril_generator_range_for"), gb("generator/boost_fiber_pooled")
row("generator<int> range-for vs fiber generator", "ns/item", gen_t, gen_b, 2, "≤ 0.5×",
    verdict(gen_t[0] / gen_b[0] <= 0.5))
mem_t, mem_b = prog("tendril_memory", "rss_bytes_per_coro"), prog("boost_memory", "rss_bytes_per_coro")
row("memory: 100,000 suspended, RSS (guard pages on)", "B/coro", mem_t, mem_b, 0, "≤ 4,600 B",
    verdict(mem_t[0] <= 4600))
row("memory: 100,000 suspended, VmSize", "B/coro", prog("tendril_memory", "vm_bytes_per_coro"),
    prog("boost_memory", "vm_bytes_per_coro"), 0)
row("memory: page tables (VmPTE), not in RSS", "B/coro",
    prog("tendril_memory", "pte_bytes_per_coro"), None, 0)
row("peer program switch (../shared/peers contract)", "ns/switch",
    prog("tendril_switch", "ns_per_switch"), prog("boost_switch", "ns_per_switch"), 2)
row("peer program spawn 100,000 then join, warm", "ns/spawn",
    prog("tendril_spawn", "ns_per_spawn"), prog("boost_spawn", "ns_per_spawn"), 1)
row("peer program spawn 100,000 then join, cold", "ns/spawn",
    prog("tendril_spawn", "ns_per_spawn_cold"), prog("boost_spawn", "ns_per_spawn_cold"), 1)

ctx = json.load(open(sys.argv[2])).get("context", {})
print("| case | unit | tendril median (min–max) | Boost.Context median (min–max) | ratio | goal | met |")
print("|---|---|---:|---:|---:|---|---|")
print("\n".join(rows))
print()
print("Medians of %d Google Benchmark repetitions (%d processes; CPU time per operation) or "
      "of %d program runs; ratio = tendril median / Boost.Context median. Started %s, %s CPUs, "
      "load average %s."
      % (len(runs["switch/tendril_greenlet"]), len(sys.argv) - 2,
         len(progs[("tendril_switch", "ns_per_switch")]), ctx.get("date", ""),
         ctx.get("num_cpus", "?"), ", ".join("%.2f" % x for x in ctx.get("load_avg", []))))
EOF
fi

want hub && gbench hub_bench

# tasks.txt: one "group round program key value" line per figure of issue 3's programs.
task_groups=()
for g in spawn memory sleepers; do want "$g" && task_groups+=("$g"); done
if [ ${#task_groups[@]} -gt 0 ]; then
  echo "== issue 3 programs (${task_groups[*]}): $reps rounds, interleaved, CPU $cpu" >&2
  : >"$out/tasks.txt"
  run_task() {  # run_task GROUP ROUND NAME COMMAND...
    local group=$1 round=$2 name=$3
    shift 3
    local env=()
    case "$name" in go) env=(env GOMAXPROCS=1) ;; esac
    local rc=0
    "${env[@]}" "${pin[@]}" "$@" >"$out/last.txt" || rc=$?
    [ "$rc" -eq 0 ] || echo "   $group/$name round $round failed (exit status $rc)" >&2
    awk -v g="$group" -v r="$round" -v n="$name" 'NF == 2 { print g, r, n, $1, $2 }' \
      "$out/last.txt" >>"$out/tasks.txt"
  }
  for g in "${task_groups[@]}"; do
    case "$g" in
      spawn) cmd=("$bin/task_spawn_peer" 100000 4) args=(100000 4) ;;
      memory) cmd=("$bin/task_memory_peer" 100000) args=(100000) ;;
      sleepers) cmd=("$bin/sleepers_peer" 10000 1000) args=(10000 1000) ;;
    esac
    # The runs of this group, tendril first; reversed on even rounds.
    names=(tendril)
    # A diagnostic beside the contract figure: the same run with the stack pool warmed
    # before the clocks start (sleepers_peer's third argument).
    [ "$g" = sleepers ] && names+=(tendril_prewarm)
    for entry in "${peer_list[@]}"; do
      IFS='|' read -r pg pn pe <<<"$entry"
      [ "$pg" = "$g" ] && names+=("$pn:$pe")
    done
    for ((round = 1; round <= reps; ++round)); do
      order=("${names[@]}")
      if ((round % 2 == 0)); then
        order=()
        for ((i = ${#names[@]} - 1; i >= 0; --i)); do order+=("${names[i]}"); done
      fi
      for n in "${order[@]}"; do
        if [ "$n" = tendril ]; then
          run_task "$g" "$round" tendril "${cmd[@]}"
        elif [ "$n" = tendril_prewarm ]; then
          run_task "$g" "$round" tendril_prewarm "${cmd[@]}" 1
        else
          run_task "$g" "$round" "${n%%:*}" "$bin/peers/${n#*:}" "${args[@]}"
        fi
      done
    done
  done
  rm -f "$out/last.txt"
fi

# hub.md: issue 3's table, from whatever of its groups ran.
hub_json=()
want hub && hub_json=("$out"/hub_bench.*.json)
if want hub || [ ${#task_groups[@]} -gt 0 ]; then
  tasks_file=/dev/null
  [ ${#task_groups[@]} -gt 0 ] && tasks_file=$out/tasks.txt
  python3 - "$tasks_file" "${hub_json[@]}" >"$out/hub.md" <<'EOF'
import json, statistics, sys

runs = {}
for path in sys.argv[2:]:
    for b in json.load(open(path))["benchmarks"]:
        if b.get("run_type") == "iteration":
            runs.setdefault(b["run_name"], []).append(b["time_per_op"] * 1e9)
# progs[(group, program, key)] = {round: value}; words: what the programs said in words
progs = {}
words = {}
for line in open(sys.argv[1]):
    group, rnd, name, key, value = line.split()
    try:
        progs.setdefault((group, name, key), {})[int(rnd)] = float(value)
    except ValueError:
        words.setdefault(key, set()).add(value)

def stats(v):
    return statistics.median(v), min(v), max(v)

def fmt(m, digits):
    if m is None:
        return "—"
    med, lo, hi = m
    f = "{:,.%df}" % digits
    if lo == hi:
        return f.format(med)
    return (f + " (" + f + "–" + f + ")").format(med, lo, hi)

def verdict(ok):
    return "**yes**" if ok else "**no**"

rows = []
def row(what, unit, t, peer, p, ratio, digits, goal="", met=""):
    rows.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
        what, unit, fmt(t, digits), peer, fmt(p, digits),
        "%.2f" % ratio if ratio is not None else "—", goal, met))

PEERS = {"go": "Go", "st": "State Threads", "asio": "Asio"}

def prog_rows(group, key, what, unit, digits, goal_fn=None, goal_text="", ratio_goal=None,
              tname="tendril"):
    t = progs.get((group, tname, key))
    if not t:
        return None
    ts = stats(list(t.values()))
    first = True
    met = ""
    if goal_fn is not None:
        met = verdict(goal_fn(ts[0]))
    peers = [n for (g, n, k) in progs
             if g == group and k == key and not n.startswith("tendril")]
    peers.sort(key=lambda n: list(PEERS).index(n) if n in PEERS else 99)
    if not peers:
        row(what, unit, ts, "—", None, None, digits, goal_text, met)
    for n in peers:
        p = progs[(group, n, key)]
        same = [t[r] / p[r] for r in t if r in p and p[r]]
        ratio = statistics.median(same) if same else None
        g, m = "", ""
        if first:
            g, m = goal_text, met
        if ratio_goal is not None and ratio_goal[0] == n:
            g, m = ratio_goal[1], verdict(ratio is not None and ratio <= ratio_goal[2])
        row(what if first else "″", unit, ts, PEERS.get(n, n), stats(list(p.values())),
            ratio, digits, g, m)
        first = False
    return ts

prog_rows("spawn", "ns_per_spawn", "spawn 100,000 tasks, then joinall, warm", "ns/task", 1,
          ratio_goal=("go", "≤ 0.2× Go", 0.2))
prog_rows("spawn", "ns_per_spawn_cold", "spawn 100,000 tasks, then joinall, cold (round 1)",
          "ns/task", 1)
prog_rows("memory", "rss_bytes_per_coro", "100,000 tasks blocked on an event, RSS", "B/task", 0,
          lambda v: v <= 4600, "≤ 4,600 B")
prog_rows("memory", "vm_bytes_per_coro", "100,000 tasks blocked, VmSize", "B/task", 0)
prog_rows("memory", "pte_bytes_per_coro", "100,000 tasks blocked, page tables (VmPTE)", "B/task", 0)
prog_rows("sleepers", "wall_s", "10,000 tasks sleep(1s), joinall: wall", "s", 4,
          lambda v: v <= 1.005, "≤ 1.005 s")
prog_rows("sleepers", "cpu_s", "10,000 tasks sleep(1s), joinall: CPU", "s", 4,
          lambda v: v <= 0.010, "≤ 0.010 s")
prog_rows("sleepers", "wall_s", "diagnostic: the same with the stack pool warmed first, wall",
          "s", 4, tname="tendril_prewarm")
prog_rows("sleepers", "cpu_s", "diagnostic: the same with the stack pool warmed first, CPU",
          "s", 4, tname="tendril_prewarm")

def gb_row(what, unit, tname, peer, pname, digits=1):
    if tname not in runs:
        return
    t = stats(runs[tname])
    p = stats(runs[pname]) if pname in runs else None
    row(what, unit, t, peer if p else "—", p, t[0] / p[0] if p else None, digits)

gb_row("sleep(0s) among 1,000 ready tasks", "ns/yield", "sleep0/tendril_1000_tasks",
       "Boost.Fiber yield, 1,000 fibers", "sleep0/boost_fiber_1000_fibers")
gb_row("queue<int> put/get pair, ping-pong of two tasks", "ns/pair", "queue/tendril_pingpong",
       "Boost.Fiber buffered_channel", "queue/boost_fiber_buffered_channel_pingpong")
gb_row("event wake (set → waiter runs), ping-pong", "ns/wake", "event/tendril_pingpong",
       "Boost.Fiber flag+mutex+condvar", "event/boost_fiber_condvar_pingpong")
gb_row("event set with 1,000 waiters", "ns/waiter", "event/tendril_broadcast_1000", "—", "")
gb_row("spawn + join, one task at a time", "ns", "spawn/tendril_task_join",
       "Boost.Fiber fiber + join", "spawn/boost_fiber_join")
gb_row("″", "ns", "spawn/tendril_task_join", "Boost.Fiber, pooled stack",
       "spawn/boost_fiber_join_pooled_stack")

print("| case | unit | tendril median (min–max) | peer | peer median (min–max) | ratio | goal | met |")
print("|---|---|---:|---|---:|---:|---|---|")
print("\n".join(rows))
print()
notes = []
if progs:
    n = max(len(v) for v in progs.values())
    notes.append("Programs: medians of %d rounds, interleaved; ratio = median of the "
                 "same-round ratios tendril / peer." % n)
backends = set(words.get("backend", set()))
if runs:
    ctx = json.load(open(sys.argv[2])).get("context", {})
    if "tendril_backend" in ctx:
        backends.add(ctx["tendril_backend"])
    notes.append("Google Benchmark (hub_bench): medians of %d repetitions (%d processes; CPU "
                 "time per operation), ratio = tendril median / peer median. Started %s, "
                 "load average %s." % (len(runs["sleep0/tendril_1000_tasks"]), len(sys.argv) - 2,
                 ctx.get("date", ""), ", ".join("%.2f" % x for x in ctx.get("load_avg", []))))
if backends:
    notes.append("tendril's hub backend: %s (the default)." % ", ".join(sorted(backends)))
print(" ".join(notes))
EOF
fi

# Issue 4's echo group. The peers' Makefile builds the load generator and the raw epoll,
# io_uring and Go servers into build/release/bench/peers/bin/ (make -f with VPATH: its own
# rules and flags, sources read from the peers folder, nothing written there). The runner is
# the peers' tools/bench.py, imported with its root moved to build/release/bench/peers/ (it
# runs bin/loadgen from there), so the echo figures come from the same code as
# ../shared/peers/results/baseline.md.
if want echo; then
  abs_peers=$(cd "$peers" && pwd)
  echo_servers=()
  echo_make() {  # echo_make TARGET: one target of the peers' Makefile, into $bin/peers/bin
    GOCACHE=${GOCACHE:-$abs_bin/peers/go-cache} GOPROXY=off GOFLAGS='' \
      make -s -C "$bin/peers" -f "$abs_peers/Makefile" VPATH="$abs_peers" CC=gcc \
      CPPFLAGS="-I$abs_peers/common" "bin/$1" >&2
  }
  if ! echo_make loadgen || ! echo_make echo_epoll; then
    echo "bench/run.sh: could not build the peers' loadgen and raw epoll server" >&2
    exit 1
  fi
  echo_servers+=("raw epoll (C, LT)")
  if [ ! -f /usr/include/liburing.h ]; then
    echo "   (no liburing-dev: the peers' io_uring server is left out)" >&2
  elif echo_make echo_uring; then
    echo_servers+=("io_uring (liburing)")
  fi
  if ! command -v go >/dev/null; then
    echo "   (no go: apt-get install golang-go; the Go server is left out)" >&2
  elif echo_make echo_go; then
    echo_servers+=("Go net")
  fi
  # 1,000 connections need more than 1,024 descriptors on both sides.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
  echo_rounds=${ECHO_ROUNDS:-3}
  echo_seconds=${ECHO_SECONDS:-4}
  echo_warmup=${ECHO_WARMUP:-1}
  echo_conns=${ECHO_CONNS:-${CONNS:-1,100,1000}}
  echo "== echo: ${echo_servers[*]} + tendril io_uring, epoll, poll; connections $echo_conns," \
    "$echo_rounds rounds of ${echo_warmup}+${echo_seconds} s; server CPU 0, loadgen CPU 1" >&2
  rm -rf "$out/echo-logs"
  mkdir -p "$out/echo-logs"
  python3 - "$abs_peers/tools/bench.py" "$abs_bin" "$out" "$echo_rounds" "$echo_seconds" \
    "$echo_warmup" "$echo_conns" "${echo_servers[@]}" <<'EOF' >&2
import datetime, importlib.util, json, os, statistics, subprocess, sys, time

harness, abs_bin, out, rounds, seconds, warmup, conns = sys.argv[1:8]
out = os.path.abspath(out)
wanted = sys.argv[8:]
spec = importlib.util.spec_from_file_location("peers_bench", harness)
b = importlib.util.module_from_spec(spec)
spec.loader.exec_module(b)
b.ROOT = os.path.join(abs_bin, "peers")  # bin/loadgen and bin/echo_* live there
b.SERVER_CPU, b.CLIENT_CPU = "0", "1"
srv = os.path.join(abs_bin, "echo_server")
peers = [p for p in b.ECHO if p.name in wanted]
for backend in ("io_uring", "epoll", "poll"):
    peers.append(b.Peer("tendril (%s)" % backend, [srv], {"TENDRIL_BACKEND": backend}))

def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

# Other load on the machine during each run: both CPUs' busy time over the load generator's
# life (warm-up + window), minus the server's and the load generator's own share. This is a
# shared machine; a run where others took CPU time is less trustworthy.
busy = {}  # (port, conns) -> [busy % of one CPU, summed over all CPUs, per run]

class _Sub:
    def __getattr__(self, name):
        return getattr(subprocess, name)

    def run(self, argv, *a, **k):
        s0 = b.cpu_stat()
        r = subprocess.run(argv, *a, **k)
        s1 = b.cpu_stat()
        d = [y - x for x, y in zip(s0, s1)]
        tot, idle = sum(d[:8]), d[3] + d[4]
        ncpu = os.cpu_count() or 1
        busy.setdefault((argv[5], argv[6]), []).append(100.0 * ncpu * (tot - idle) / tot if tot else 0)
        return r

b.subprocess = _Sub()

started = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S")
up0, stat0 = uptime(), b.cpu_stat()
os.chdir(b.ROOT)
res = {}
b.run_echo(peers, int(rounds), [int(c) for c in conns.split(",")], 64, float(seconds),
           float(warmup), res, os.path.join(out, "echo-logs"))
up1, stat1 = uptime(), b.cpu_stat()
finished = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S")
tot = sum(stat1) - sum(stat0)
steal = 100.0 * (stat1[7] - stat0[7]) / tot if tot > 0 and len(stat1) > 7 else float("nan")
for kind, d in res.items():
    for name, rec in d.items():
        port = rec["loadgen"].split()[5]
        for v, u in zip(rec["runs"], busy.get((port, kind[6:]), [])):
            if v:
                v["others_cpu_pct"] = max(0.0, u - v.get("server_cpu_pct", 0) - v.get("client_cpu_pct", 0))
json.dump({"started": started, "finished": finished, "uptime_start": up0, "uptime_end": up1,
           "steal_pct": steal, "rounds": int(rounds), "seconds": float(seconds),
           "warmup": float(warmup), "results": res},
          open(os.path.join(out, "echo.json"), "w"), indent=1)

def us_per_msg(v):
    if not v or "server_cpu_pct" not in v or not v.get("msgs_per_s"):
        return None
    return v["server_cpu_pct"] / 100.0 * 1e6 / v["msgs_per_s"]

def fmt(xs, nd):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    f = lambda x: "{:,.{}f}".format(x, nd)
    m = statistics.median(xs)
    if len(xs) == 1:
        return f(m)
    return "%s (%s–%s)" % (f(m), f(min(xs)), f(max(xs)))

REF = "raw epoll (C, LT)"
L = []
verdicts = {}
for kind in sorted(res, key=lambda k: int(k[6:])):
    d = res[kind]
    n = int(kind[6:])
    L.append("### %d connection%s" % (n, "" if n == 1 else "s"))
    L.append("")
    L.append("| server | msgs/s median (min–max) | p50 µs | p99 µs | srv CPU % | gen CPU % "
             "| others CPU % | srv µs/msg median (min–max) | µs/msg ÷ raw epoll | msgs/s ÷ raw epoll "
             "| runs |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    ref = d.get(REF, {}).get("runs", [])
    for name, rec in d.items():
        runs = rec["runs"]
        ok = [v for v in runs if v]
        cost = [us_per_msg(v) for v in ok]
        rc = [us_per_msg(x) / us_per_msg(y) for x, y in zip(runs, ref)
              if us_per_msg(x) and us_per_msg(y)]
        rm = [x["msgs_per_s"] / y["msgs_per_s"] for x, y in zip(runs, ref) if x and y]
        ratio_c = statistics.median(rc) if rc else None
        verdicts[(n, name)] = ratio_c
        st = "%d/%d" % (len(ok), len(runs))
        if rec["errors"]:
            st += " (" + "; ".join(sorted(set(e[:60] for e in rec["errors"]))) + ")"
        L.append("| %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, " *(ref)*" if name == REF else "",
            fmt([v["msgs_per_s"] for v in ok], 0),
            fmt([v["p50_us"] for v in ok], 0 if n > 1 else 1),
            fmt([v["p99_us"] for v in ok], 0 if n > 1 else 1),
            fmt([v.get("server_cpu_pct") for v in ok], 0),
            fmt([v.get("client_cpu_pct") for v in ok], 0),
            fmt([v.get("others_cpu_pct") for v in ok], 0),
            fmt(cost, 2), "%.2f" % ratio_c if ratio_c else "—",
            "%.2f" % statistics.median(rm) if rm else "—", st))
    L.append("")

L.append("Goals (server CPU µs per message, same-round ratio to raw epoll): tendril on epoll at most "
         "1.0×, tendril on its best backend at most 0.9×.")
L.append("")
L.append("| connections | tendril (epoll) | ≤ 1.0× | best tendril backend | ≤ 0.9× |")
L.append("|---:|---:|---|---|---|")
for n in sorted({k[0] for k in verdicts}):
    e = verdicts.get((n, "tendril (epoll)"))
    best = min(((verdicts.get((n, "tendril (%s)" % be)), be) for be in ("io_uring", "epoll", "poll")
                if verdicts.get((n, "tendril (%s)" % be))), default=(None, None))
    # Judged on the ratio as shown (two decimals).
    L.append("| %d | %s | %s | %s | %s |" % (
        n, "%.2f" % e if e else "—", ("**yes**" if round(e, 2) <= 1.0 else "**no**") if e else "—",
        "%s %.2f" % (best[1], best[0]) if best[0] else "—",
        ("**yes**" if round(best[0], 2) <= 0.9 else "**no**") if best[0] else "—"))
L.append("")
L.append("64-byte messages, one in flight per connection; %s rounds interleaved (order reversed every "
         "other round), %s s measured after %s s of warm-up; server `taskset -c 0`, loadgen "
         "`taskset -c 1`; medians. Ratios: median of the same-round ratios to raw epoll. "
         "`others CPU %%`: CPU time taken on the machine by other processes during the run (both "
         "CPUs, 100 = one core), a sign of interference from outside the benchmark. "
         "%s to %s UTC; load at the start: `%s`; at the end: `%s`; CPU steal %.2f%%."
         % (rounds, seconds, warmup, started, finished, up0, up1, steal))
open(os.path.join(out, "echo.md"), "w").write("\n".join(L) + "\n")
EOF
fi

# Issue 5's monkey group: the hooks' cost, each beside what it is compared with, in one run.
if want monkey; then
  abs_peers=$(cd "$peers" && pwd)
  make -s -C "$bin/peers" -f "$abs_peers/Makefile" VPATH="$abs_peers" CC=gcc \
    CPPFLAGS="-I$abs_peers/common" bin/loadgen >&2 || {
    echo "bench/run.sh: could not build the peers' load generator" >&2
    exit 1
  }
  echo "== monkey: hooked read vs libc read; 100 libcurl GETs; POSIX echo under hooks vs net API" >&2
  "${pin[@]}" "$bin/monkey_bench" "$reps" 100 >"$out/monkey_bench.txt"
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
  rm -rf "$out/monkey-echo-logs"
  mkdir -p "$out/monkey-echo-logs"
  python3 - "$abs_peers/tools/bench.py" "$abs_bin" "$out" "${ECHO_ROUNDS:-3}" \
    "${ECHO_SECONDS:-4}" "${ECHO_WARMUP:-1}" "${ECHO_CONNS:-1,100,1000}" <<'EOF' >&2
import datetime, importlib.util, os, statistics, subprocess, sys

harness, abs_bin, out, rounds, seconds, warmup, conns = sys.argv[1:8]
out = os.path.abspath(out)
spec = importlib.util.spec_from_file_location("peers_bench", harness)
b = importlib.util.module_from_spec(spec)
spec.loader.exec_module(b)
b.ROOT = os.path.join(abs_bin, "peers")
b.SERVER_CPU, b.CLIENT_CPU = "0", "1"
peers = []
for backend in ("epoll", "io_uring"):
    peers.append(b.Peer("net API (%s)" % backend, [os.path.join(abs_bin, "echo_server")],
                        {"TENDRIL_BACKEND": backend}))
    peers.append(b.Peer("POSIX + hooks (%s)" % backend,
                        [os.path.join(abs_bin, "posix_echo_server")], {"TENDRIL_BACKEND": backend}))
started = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")
up0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
os.chdir(b.ROOT)
res = {}
b.run_echo(peers, int(rounds), [int(c) for c in conns.split(",")], 64, float(seconds),
           float(warmup), res, os.path.join(out, "monkey-echo-logs"))


def cost(v):
    if not v or not v.get("msgs_per_s") or "server_cpu_pct" not in v:
        return None
    return v["server_cpu_pct"] / 100.0 * 1e6 / v["msgs_per_s"]


L = ["| connections | backend | net API µs/msg | POSIX + hooks µs/msg | ratio (median of rounds) | ≤ 1.1× |",
     "|---:|---|---:|---:|---:|---|"]
for kind in sorted(res, key=lambda k: int(k[6:])):
    d = res[kind]
    for backend in ("epoll", "io_uring"):
        a = d.get("net API (%s)" % backend, {}).get("runs", [])
        h = d.get("POSIX + hooks (%s)" % backend, {}).get("runs", [])
        ca = [cost(v) for v in a if cost(v)]
        ch = [cost(v) for v in h if cost(v)]
        rs = [cost(y) / cost(x) for x, y in zip(a, h) if cost(x) and cost(y)]
        r = statistics.median(rs) if rs else None
        L.append("| %s | %s | %s | %s | %s | %s |" % (
            kind[6:], backend, "%.2f" % statistics.median(ca) if ca else "—",
            "%.2f" % statistics.median(ch) if ch else "—", "%.2f" % r if r else "—",
            ("**yes**" if round(r, 2) <= 1.1 else "**no**") if r else "—"))
L.append("")
L.append("64-byte messages; %s rounds interleaved, %s s measured after %s s warm-up; server on CPU 0, "
         "the peers' loadgen on CPU 1; %s UTC; load at the start: `%s`." % (
             rounds, seconds, warmup, started, up0))
open(os.path.join(out, "monkey_echo.md"), "w").write("\n".join(L) + "\n")
EOF
  {
    echo "### The hooks (issue 5)"
    echo
    sed 's/^/    /' "$out/monkey_bench.txt"
    echo
    cat "$out/monkey_echo.md"
  } >"$out/monkey.md"
fi

: >"$out/table.md"
if want greenlet; then
  { echo "## Issue 2: greenlets beside Boost.Context"; echo; cat "$out/greenlet.md"; echo; } \
    >>"$out/table.md"
fi
if [ -f "$out/hub.md" ] && { want hub || [ ${#task_groups[@]} -gt 0 ]; }; then
  { echo "## Issue 3: tasks and the hub beside Go, State Threads, Asio, Boost.Fiber"; echo
    cat "$out/hub.md"; } >>"$out/table.md"
fi
if want echo && [ -f "$out/echo.md" ]; then
  { echo "## Issue 4: echo beside raw epoll, io_uring and Go"; echo; cat "$out/echo.md"; echo; } \
    >>"$out/table.md"
fi
if want monkey && [ -f "$out/monkey.md" ]; then
  { echo "## Issue 5: the hooks beside libc and beside the net API"; echo; cat "$out/monkey.md"
    echo; } >>"$out/table.md"
fi
cat "$out/table.md"
echo >&2
echo "== $(($(date +%s) - start)) s; results in $out/ (extra-peers.txt plugs tendril into $peers/run-all.sh)" >&2
