// The greenlet layer's micro benchmarks (issue 2), each tendril case beside Boost.Context's
// fiber doing the same work in the same process, so that bench/run.sh can report both from
// one run (pinned, repetitions interleaved, medians). Every case reports time_per_op: CPU
// time per operation, the operation being named by the case (one switch, one
// create+run+destroy, one generated item).
//
//   switch/*       one switch = one transfer of control; a round trip is two.
//   spawn/*        make a coroutine, run its empty body to completion, destroy it, one at a
//                  time, so that a pooled stack is always warm.
//   generator/*    one item of a 1,000-item generator drained by a loop; the generator is
//                  made and destroyed once per 1,000 items.
#include <benchmark/benchmark.h>

#include <any>
#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>
#include <boost/context/pooled_fixedsize_stack.hpp>
#include <cstdint>
#include <memory>
#include <utility>

#include "context/context.hpp"
#include "context/stack_pool.hpp"
#include "tendril/greenlet/generator.hpp"
#include "tendril/greenlet/greenlet.hpp"

namespace {

namespace bctx = boost::context;
namespace l0 = tendril::detail::context;
namespace pool = tendril::detail::stack_pool;

// report() sets time_per_op: the CPU time of the run divided by the operations it made (an
// inverted rate, in seconds: the console shows "2.1ns", the JSON 2.1e-09).
void report(benchmark::State& state, std::int64_t ops_per_iteration) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * ops_per_iteration);
  state.counters["time_per_op"] = benchmark::Counter(
      static_cast<double>(ops_per_iteration),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// --- one switch ----------------------------------------------------------------------------

// greenlet::switch_to() main <-> one greenlet, no value: the public switch, with its checks,
// errno and the C++ exception state saved per greenlet.
void switch_tendril_greenlet(benchmark::State& state) {
  tendril::greenlet main_g = tendril::greenlet::current();
  bool stop = false;
  tendril::greenlet g([&] {
    while (!stop) main_g.switch_to();
  });
  g.switch_to();  // started: it now waits in its own switch_to()
  for (auto _ : state) g.switch_to();
  stop = true;
  g.switch_to();  // let it return
  report(state, 2);
}
BENCHMARK(switch_tendril_greenlet)->Name("switch/tendril_greenlet");

// The same with an int handed over both ways in the std::any (no allocation: small buffer).
void switch_tendril_greenlet_value(benchmark::State& state) {
  tendril::greenlet main_g = tendril::greenlet::current();
  bool stop = false;
  tendril::greenlet g([&](std::any v) {
    while (!stop) v = main_g.switch_to(std::any_cast<int>(v) + 1);
  });
  int n = std::any_cast<int>(g.switch_to(0));
  for (auto _ : state) n = std::any_cast<int>(g.switch_to(n));
  stop = true;
  g.switch_to(n);
  benchmark::DoNotOptimize(n);
  report(state, 2);
}
BENCHMARK(switch_tendril_greenlet_value)->Name("switch/tendril_greenlet_int_value");

// The raw L0 jump between two made contexts: what the machine switch alone costs.
l0::handle g_l0_main = nullptr;
l0::handle g_l0_co = nullptr;

[[noreturn]] void l0_entry(void*) {
  for (;;) l0::jump(&g_l0_co, g_l0_main, nullptr);
}

void switch_tendril_l0_jump(benchmark::State& state) {
  tendril::detail::stack s;
  if (pool::allocate(64 * 1024, s) != 0) {
    state.SkipWithError("no stack");
    return;
  }
  g_l0_co = l0::make(s.top(), s.size, &l0_entry);
  for (auto _ : state) l0::jump(&g_l0_main, g_l0_co, nullptr);
  // The context is left suspended in its endless loop; nothing on its stack needs unwinding.
  pool::release(s);
  report(state, 2);
}
BENCHMARK(switch_tendril_l0_jump)->Name("switch/tendril_l0_jump");

// Boost.Context fiber::resume() main <-> one fiber, as ../shared/peers/switch/boost_context.cpp.
void switch_boost_fiber(benchmark::State& state) {
  bool stop = false;
  bctx::fiber f{[&](bctx::fiber&& m) {
    while (!stop) m = std::move(m).resume();
    return std::move(m);
  }};
  f = std::move(f).resume();
  for (auto _ : state) f = std::move(f).resume();
  stop = true;
  f = std::move(f).resume();
  report(state, 2);
}
BENCHMARK(switch_boost_fiber)->Name("switch/boost_fiber_resume");

// --- create + run to completion + destroy ---------------------------------------------------

// A greenlet with the default stack, which comes from the calling thread's pool: after the
// first iteration no system call and no page fault.
void spawn_tendril_greenlet(benchmark::State& state) {
  long runs = 0;
  for (auto _ : state) {
    tendril::greenlet g([&runs] { ++runs; });
    g.switch_to();
  }
  if (runs != static_cast<long>(state.iterations())) state.SkipWithError("a body did not run");
  report(state, 1);
}
BENCHMARK(spawn_tendril_greenlet)->Name("spawn/tendril_greenlet_pooled");

template <class StackAllocator>
void spawn_boost_fiber(benchmark::State& state, StackAllocator salloc) {
  long runs = 0;
  for (auto _ : state) {
    bctx::fiber f{std::allocator_arg, salloc, [&runs](bctx::fiber&& c) {
                    ++runs;
                    return std::move(c);
                  }};
    f = std::move(f).resume();  // runs to completion: the stack is freed here
  }
  if (runs != static_cast<long>(state.iterations())) state.SkipWithError("a body did not run");
  report(state, 1);
}

void spawn_boost_fiber_pooled(benchmark::State& state) {
  spawn_boost_fiber(state, bctx::pooled_fixedsize_stack());
}
BENCHMARK(spawn_boost_fiber_pooled)->Name("spawn/boost_fiber_pooled_fixedsize_stack");

void spawn_boost_fiber_fixedsize(benchmark::State& state) {
  spawn_boost_fiber(state, bctx::fixedsize_stack());
}
BENCHMARK(spawn_boost_fiber_fixedsize)->Name("spawn/boost_fiber_fixedsize_stack");

// --- generator ------------------------------------------------------------------------------

constexpr int generator_items = 1000;

// tendril::generator<int> drained by range-for.
void generator_tendril(benchmark::State& state) {
  long sum = 0;
  for (auto _ : state) {
    tendril::generator<int> gen([](auto& y) {
      for (int i = 0; i < generator_items; ++i) y.yield(i);
    });
    for (int v : gen) sum += v;
  }
  benchmark::DoNotOptimize(sum);
  report(state, generator_items);
}
BENCHMARK(generator_tendril)->Name("generator/tendril_generator_range_for");

// A generator made of a Boost.Context fiber that resumes its consumer with each value (one
// round trip per item, as tendril's). Its stack is pooled too, so that both amortise the
// same kind of creation over the 1,000 items.
void generator_boost_fiber(benchmark::State& state) {
  long sum = 0;
  bctx::pooled_fixedsize_stack salloc;
  for (auto _ : state) {
    int value = 0;
    bctx::fiber f{std::allocator_arg, salloc, [&value](bctx::fiber&& c) {
                    for (int i = 0; i < generator_items; ++i) {
                      value = i;
                      c = std::move(c).resume();
                    }
                    return std::move(c);
                  }};
    while ((f = std::move(f).resume())) sum += value;
  }
  benchmark::DoNotOptimize(sum);
  report(state, generator_items);
}
BENCHMARK(generator_boost_fiber)->Name("generator/boost_fiber_pooled");

}  // namespace

BENCHMARK_MAIN();
