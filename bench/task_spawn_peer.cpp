// spawn / tendril tasks: spawn() N tasks with an empty body, then joinall(); 4 rounds in one
// process. The method of ../shared/peers/spawn/go_spawn.go (N goroutines that call
// wg.Done(), then wg.Wait()) and ../shared/peers/spawn/st.c, for ../shared/peers/run-all.sh
// (an extra peer, see bench/run.sh): all N tasks exist before the first one runs, so each
// has its own stack from the pool. The timed part also drops the N handles, so that each
// task's record is freed inside it, as Go's and State Threads' are by the time they return.
// Prints the first (cold: stacks carved and touched for the first time) round and the
// median of the following (warm) rounds. Does not pin itself: the runner does.
// Usage: task_spawn_peer [n=100000] [rounds=4]
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tendril/tendril.hpp"

namespace {

long g_done = 0;

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

double round_ns(long n) {
  std::vector<tendril::task<void>> v;
  v.reserve(static_cast<std::size_t>(n));
  const std::uint64_t t0 = now_ns();
  for (long i = 0; i < n; ++i) v.push_back(tendril::spawn([] { ++g_done; }));
  tendril::joinall(v);
  v.clear();
  const std::uint64_t t1 = now_ns();
  return static_cast<double>(t1 - t0) / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 100000;
  const long rounds = argc > 2 ? std::atol(argv[2]) : 4;
  if (n <= 0 || rounds < 2) return 2;
  (void)tendril::hub::current();  // the thread's hub exists before the timing, as Go's runtime
  std::vector<double> r;
  for (long i = 0; i < rounds; ++i) r.push_back(round_ns(n));
  std::vector<double> warm(r.begin() + 1, r.end());
  std::sort(warm.begin(), warm.end());
  std::printf("n %ld\n", n);
  std::printf("backend %s\n", tendril::hub::current().backend_name());
  std::printf("stack_bytes %zu\n", tendril::default_stack_size);
  std::printf("ns_per_spawn_cold %.1f\n", r[0]);
  std::printf("ns_per_spawn %.1f\n", warm[warm.size() / 2]);
  return g_done == n * rounds ? 0 : 1;
}
