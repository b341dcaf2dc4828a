// sleepers / tendril tasks: spawn N tasks that each tendril::sleep() for ms milliseconds,
// then joinall(). Wall time (CLOCK_MONOTONIC) and process CPU time (CLOCK_PROCESS_CPUTIME_ID:
// user + system, all threads) from the first spawn to the last join, as
// ../shared/peers/sleepers/asio.cpp measures them, for ../shared/peers/run-all.sh (an extra
// peer, see bench/run.sh). The hub is started before the clocks, as Asio's io_context is made
// before its. Does not pin itself.
// With prewarm=1 (not the peers' method: a diagnostic), N tasks that each yield once
// (sleep(0s)) are spawned and joined before the clocks start, so that the N stacks come warm
// from the pool instead of being carved (guard installed, first page faulted in) inside the
// timing. They must all be alive at once: a task takes its stack when it first runs, so N
// empty tasks would run one after the other on the same pooled stack.
// Usage: sleepers_peer [n=10000] [sleep_ms=1000] [prewarm=0]
#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tendril/tendril.hpp"

namespace {

std::uint64_t clock_ns(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

long g_done = 0;

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 10000;
  const long ms = argc > 2 ? std::atol(argv[2]) : 1000;
  const bool prewarm = argc > 3 && std::atoi(argv[3]) != 0;
  if (n <= 0 || ms < 0) return 2;
  (void)tendril::hub::current();
  std::vector<tendril::task<void>> v;
  v.reserve(static_cast<std::size_t>(n));
  if (prewarm) {
    for (long i = 0; i < n; ++i) {
      v.push_back(tendril::spawn([] { tendril::sleep(std::chrono::seconds(0)); }));
    }
    tendril::joinall(v);
    v.clear();
  }
  const std::uint64_t w0 = clock_ns(CLOCK_MONOTONIC);
  const std::uint64_t c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
  for (long i = 0; i < n; ++i) {
    v.push_back(tendril::spawn([ms] {
      tendril::sleep(std::chrono::milliseconds(ms));
      ++g_done;
    }));
  }
  tendril::joinall(v);
  v.clear();  // the records go inside the timing, as Asio frees its frames inside run()
  const std::uint64_t w1 = clock_ns(CLOCK_MONOTONIC);
  const std::uint64_t c1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
  std::printf("n %ld\n", n);
  std::printf("backend %s\n", tendril::hub::current().backend_name());
  std::printf("prewarm %d\n", prewarm ? 1 : 0);
  std::printf("wall_s %.4f\n", static_cast<double>(w1 - w0) / 1e9);
  std::printf("cpu_s %.4f\n", static_cast<double>(c1 - c0) / 1e9);
  return g_done == n ? 0 : 1;
}
