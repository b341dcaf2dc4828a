// The hub's micro benchmarks (issue 3), tendril's tasks beside Boost.Fiber's fibers doing the
// same work in the same process, so that bench/run.sh can report both from one run (pinned,
// repetitions interleaved, medians). Every case reports time_per_op: CPU time per operation,
// the operation being named by the case. Everything runs on the one thread (tendril's hub
// and Boost.Fiber's round_robin scheduler alike), so thread CPU time is all of it.
//
//   sleep0/*   1,000 tasks (fibers) and the main greenlet each yield in turn: sleep(0s)
//              (this_fiber::yield()); one operation = one yield, which hands the CPU from one
//              ready task to the next (through the hub: two machine switches).
//   queue/*    two tasks ping-pong an int through two queue<int>s (buffered_channel<int>s):
//              one operation = one put/get pair, the getter parked when the item comes.
//   event/*    two tasks ping-pong through two events (set, then wait and clear); Boost.Fiber
//              has no event, its peer is the usual flag + mutex + condition_variable. One
//              operation = one wake: set() until the waiter runs again.
//              broadcast: 1,000 tasks parked on one event, set() wakes them all; one
//              operation = one waiter woken and run up to its next wait.
//   spawn/*    spawn a task with an empty body and join it, one at a time (the stack pool is
//              warm); Boost.Fiber: fiber + join, default and pooled stacks.
#include <benchmark/benchmark.h>

#include <boost/context/pooled_fixedsize_stack.hpp>
#include <boost/fiber/all.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "tendril/tendril.hpp"

namespace {

namespace bf = boost::fibers;
using namespace std::chrono_literals;

constexpr int ready_tasks = 1000;
constexpr int broadcast_waiters = 1000;

// report() sets time_per_op: the CPU time of the run divided by the operations it made (an
// inverted rate, in seconds: the console shows "52ns", the JSON 5.2e-08).
void report(benchmark::State& state, std::int64_t ops_per_iteration) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * ops_per_iteration);
  state.counters["time_per_op"] = benchmark::Counter(
      static_cast<double>(ops_per_iteration),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// --- sleep(0s) among 1,000 ready tasks -----------------------------------------------------

void sleep0_tendril(benchmark::State& state) {
  bool stop = false;
  long yields = 0;
  std::vector<tendril::task<void>> tasks;
  tasks.reserve(ready_tasks);
  for (int i = 0; i < ready_tasks; ++i) {
    tasks.push_back(tendril::spawn([&] {
      while (!stop) {
        tendril::sleep(0s);
        ++yields;
      }
    }));
  }
  tendril::sleep(0s);  // every task has started and sits in its sleep(0s)
  for (auto _ : state) tendril::sleep(0s);
  stop = true;
  tendril::joinall(tasks);
  benchmark::DoNotOptimize(yields);
  report(state, ready_tasks + 1);
}
BENCHMARK(sleep0_tendril)->Name("sleep0/tendril_1000_tasks");

void sleep0_boost_fiber(benchmark::State& state) {
  bool stop = false;
  long yields = 0;
  std::vector<bf::fiber> fibers;
  fibers.reserve(ready_tasks);
  for (int i = 0; i < ready_tasks; ++i) {
    fibers.emplace_back([&] {
      while (!stop) {
        boost::this_fiber::yield();
        ++yields;
      }
    });
  }
  boost::this_fiber::yield();
  for (auto _ : state) boost::this_fiber::yield();
  stop = true;
  for (auto& f : fibers) f.join();
  benchmark::DoNotOptimize(yields);
  report(state, ready_tasks + 1);
}
BENCHMARK(sleep0_boost_fiber)->Name("sleep0/boost_fiber_1000_fibers");

// --- queue<int> put/get pair between two tasks ----------------------------------------------

// Task a runs the benchmark loop: puts into q1, gets the answer from q2; task b answers.
void queue_tendril(benchmark::State& state) {
  tendril::queue<int> q1;
  tendril::queue<int> q2;
  auto b = tendril::spawn([&] {
    for (;;) {
      int v = q1.get();
      if (v < 0) return;
      q2.put(v + 1);
    }
  });
  auto a = tendril::spawn([&] {
    int v = 0;
    for (auto _ : state) {
      q1.put(v);
      v = q2.get();
    }
    q1.put(-1);
    benchmark::DoNotOptimize(v);
  });
  tendril::joinall(a, b);
  report(state, 2);
}
BENCHMARK(queue_tendril)->Name("queue/tendril_pingpong");

void queue_boost_fiber(benchmark::State& state) {
  bf::buffered_channel<int> q1(2);  // capacity: a power of two; one item is ever in it
  bf::buffered_channel<int> q2(2);
  bf::fiber b([&] {
    int v = 0;
    while (q1.pop(v) == bf::channel_op_status::success && v >= 0) q2.push(v + 1);
  });
  bf::fiber a([&] {
    int v = 0;
    for (auto _ : state) {
      q1.push(v);
      q2.pop(v);
    }
    q1.push(-1);
    benchmark::DoNotOptimize(v);
  });
  a.join();
  b.join();
  report(state, 2);
}
BENCHMARK(queue_boost_fiber)->Name("queue/boost_fiber_buffered_channel_pingpong");

// --- event wake ------------------------------------------------------------------------------

void event_tendril(benchmark::State& state) {
  tendril::event e1;
  tendril::event e2;
  bool stop = false;
  auto b = tendril::spawn([&] {
    for (;;) {
      e1.wait();
      e1.clear();
      if (stop) return;
      e2.set();
    }
  });
  auto a = tendril::spawn([&] {
    for (auto _ : state) {
      e1.set();
      e2.wait();
      e2.clear();
    }
    stop = true;
    e1.set();
  });
  tendril::joinall(a, b);
  report(state, 2);
}
BENCHMARK(event_tendril)->Name("event/tendril_pingpong");

// A gevent-style event made of Boost.Fiber's parts.
struct fiber_event {
  bf::mutex mu;
  bf::condition_variable cv;
  bool flag = false;
  void set() {
    {
      std::lock_guard lock(mu);
      flag = true;
    }
    cv.notify_all();
  }
  void wait_and_clear() {
    std::unique_lock lock(mu);
    cv.wait(lock, [this] { return flag; });
    flag = false;
  }
};

void event_boost_fiber(benchmark::State& state) {
  fiber_event e1;
  fiber_event e2;
  bool stop = false;
  bf::fiber b([&] {
    for (;;) {
      e1.wait_and_clear();
      if (stop) return;
      e2.set();
    }
  });
  bf::fiber a([&] {
    for (auto _ : state) {
      e1.set();
      e2.wait_and_clear();
    }
    stop = true;
    e1.set();
  });
  a.join();
  b.join();
  report(state, 2);
}
BENCHMARK(event_boost_fiber)->Name("event/boost_fiber_condvar_pingpong");

// 1,000 tasks wait on one event; the main greenlet sets and clears it, and waits until the
// last of them has run and come back to its wait.
void event_broadcast_tendril(benchmark::State& state) {
  tendril::event go;
  tendril::event done;
  bool stop = false;
  int arrived = 0;
  std::vector<tendril::task<void>> tasks;
  tasks.reserve(broadcast_waiters);
  for (int i = 0; i < broadcast_waiters; ++i) {
    tasks.push_back(tendril::spawn([&] {
      for (;;) {
        go.wait();
        if (stop) return;
        if (++arrived == broadcast_waiters) {
          arrived = 0;
          done.set();
        }
      }
    }));
  }
  tendril::sleep(0s);  // all of them wait now
  for (auto _ : state) {
    go.set();
    go.clear();
    done.wait();
    done.clear();
  }
  stop = true;
  go.set();
  tendril::joinall(tasks);
  report(state, broadcast_waiters);
}
BENCHMARK(event_broadcast_tendril)->Name("event/tendril_broadcast_1000");

// --- spawn + join, one task at a time ------------------------------------------------------

void spawn_tendril(benchmark::State& state) {
  long runs = 0;
  for (auto _ : state) {
    auto t = tendril::spawn([&runs] { ++runs; });
    t.join();
  }
  if (runs != static_cast<long>(state.iterations())) state.SkipWithError("a body did not run");
  report(state, 1);
}
BENCHMARK(spawn_tendril)->Name("spawn/tendril_task_join");

void spawn_boost_fiber(benchmark::State& state) {
  long runs = 0;
  for (auto _ : state) {
    bf::fiber f([&runs] { ++runs; });
    f.join();
  }
  if (runs != static_cast<long>(state.iterations())) state.SkipWithError("a body did not run");
  report(state, 1);
}
BENCHMARK(spawn_boost_fiber)->Name("spawn/boost_fiber_join");

void spawn_boost_fiber_pooled(benchmark::State& state) {
  long runs = 0;
  boost::context::pooled_fixedsize_stack salloc;
  for (auto _ : state) {
    bf::fiber f(std::allocator_arg, salloc, [&runs] { ++runs; });
    f.join();
  }
  if (runs != static_cast<long>(state.iterations())) state.SkipWithError("a body did not run");
  report(state, 1);
}
BENCHMARK(spawn_boost_fiber_pooled)->Name("spawn/boost_fiber_join_pooled_stack");

}  // namespace

// main() is BENCHMARK_MAIN()'s, plus the hub's backend in the JSON context.
int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("tendril_backend", tendril::hub::current().backend_name());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
