// spawn / tendril: create N greenlets (default stack, from the pool), then switch to each
// once; the body returns at once, so the greenlet ends and its stack goes back to the pool.
// The method of ../shared/peers/spawn/boost_context.cpp, for ../shared/peers/run-all.sh (an
// extra peer, see bench/run.sh), except that the timed part also destroys the N handles:
// Boost.Context's fiber keeps its record on its stack and frees both when it completes,
// while a greenlet's record lives until its last handle goes.
// Prints the first (cold: stacks carved and touched for the first time) round and the
// median of the following (warm) rounds. Does not pin itself: the runner does.
// Usage: spawn_peer [n=100000] [rounds=4]
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tendril/greenlet/greenlet.hpp"

namespace {

long g_done = 0;

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

double round_ns(long n) {
  std::vector<tendril::greenlet> v;
  v.reserve(static_cast<std::size_t>(n));
  const std::uint64_t t0 = now_ns();
  for (long i = 0; i < n; ++i) v.emplace_back([] { ++g_done; });
  for (auto& g : v) g.switch_to();
  v.clear();
  const std::uint64_t t1 = now_ns();
  return static_cast<double>(t1 - t0) / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 100000;
  const long rounds = argc > 2 ? std::atol(argv[2]) : 4;
  if (n <= 0 || rounds < 2) return 2;
  (void)tendril::greenlet::current();  // the thread's greenlet state, outside the timing
  std::vector<double> r;
  for (long i = 0; i < rounds; ++i) r.push_back(round_ns(n));
  std::vector<double> warm(r.begin() + 1, r.end());
  std::sort(warm.begin(), warm.end());
  std::printf("n %ld\n", n);
  std::printf("stack_bytes %zu\n", tendril::default_stack_size);
  std::printf("ns_per_spawn_cold %.1f\n", r[0]);
  std::printf("ns_per_spawn %.1f\n", warm[warm.size() / 2]);
  return g_done == n * rounds ? 0 : 1;
}
