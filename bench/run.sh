#!/usr/bin/env bash
# bench/run.sh: run tendril's benchmarks beside Boost.Context's fiber on this machine and
# print a Markdown table of medians and ratios (docs/benchmarks.md explains the method).
# Builds nothing of tendril's: `./dev bench` builds the release preset, then calls this.
#
#   bench/run.sh                 everything, about 1.5 minutes
#   REPS=9 bench/run.sh          more repetitions (Google Benchmark) and program runs
#   PROCS=5 bench/run.sh         more Google Benchmark processes (default 3)
#   BENCH_CPU=1 bench/run.sh     pin to another CPU (default 0)
#
# What runs, every process pinned with taskset to one CPU:
#   1. build/release/bench/greenlet_bench (Google Benchmark): tendril and Boost.Context cases
#      in one process, REPS repetitions interleaved at random; PROCS such processes, and the
#      median of all PROCS x REPS repetitions;
#   2. the peer-contract programs, REPS rounds, each round running tendril's program and
#      Boost.Context's peer one after the other: switch_peer vs ../shared/peers/switch,
#      spawn_peer vs ../shared/peers/spawn, memory_bench vs ../shared/peers/memory.
# The Boost.Context peers are compiled from ../shared/peers (g++ -O2, as its Makefile does)
# into build/release/bench/peers/ when missing or older than their source.
# Results: build/release/bench/results/ (greenlet_bench.N.json, programs.txt, table.md).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD_DIR:-build/release}
bin=$build/bench
peers=${PEERS_DIR:-../shared/peers}
cpu=${BENCH_CPU:-0}
reps=${REPS:-5}
procs=${PROCS:-3}
out=$bin/results

for b in greenlet_bench memory_bench switch_peer spawn_peer; do
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

# The Boost.Context peers, built from their sources in the peers folder (never copied).
for kind in switch spawn memory; do
  src=$peers/$kind/boost_context.cpp
  exe=$bin/peers/${kind}_boost_context
  if [ ! -x "$exe" ] || [ "$src" -nt "$exe" ]; then
    echo "== g++ -O2 $src" >&2
    g++ -O2 -Wall -std=c++20 -I"$peers/common" "$src" -o "$exe" -lboost_context
  fi
done

# extra-peers.txt plugs tendril's peer-contract programs into the peers harness.
abs_bin=$(cd "$bin" && pwd)
cat >"$out/extra-peers.txt" <<EOF
# tendril's peer-contract programs for ../shared/peers/run-all.sh (written by bench/run.sh):
#   EXTRA_PEERS=$abs_bin/results/extra-peers.txt ./run-all.sh switch spawn memory
switch | tendril greenlet::switch_to | $abs_bin/switch_peer 10000000
spawn  | tendril greenlet, pooled stack | $abs_bin/spawn_peer 100000 4
memory | tendril greenlet, suspended | $abs_bin/memory_bench 100000
EOF

pin=(taskset -c "$cpu")
start=$(date +%s)

# Several processes: tendril's switch measured 5.4-8 ns from one process to the next while
# staying put within one (docs/benchmarks.md), so one process's repetitions are not enough.
rm -f "$out"/greenlet_bench.*.json
for ((p = 1; p <= procs; ++p)); do
  echo "== greenlet_bench, process $p/$procs: $reps repetitions, interleaved, CPU $cpu" >&2
  "${pin[@]}" "$bin/greenlet_bench" \
    --benchmark_repetitions="$reps" \
    --benchmark_enable_random_interleaving=true \
    --benchmark_min_time=0.2 \
    --benchmark_display_aggregates_only=true \
    --benchmark_out="$out/greenlet_bench.$p.json" --benchmark_out_format=json >&2
done

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

python3 - "$out/programs.txt" "$out"/greenlet_bench.*.json >"$out/table.md" <<'EOF'
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

cat "$out/table.md"
echo >&2
echo "== $(($(date +%s) - start)) s; results in $out/ (extra-peers.txt plugs tendril into $peers/run-all.sh)" >&2
