// switch / tendril: greenlet::switch_to() ping-pong between the main greenlet and one
// greenlet, the method of ../shared/peers/switch/boost_context.cpp, for
// ../shared/peers/run-all.sh (an extra peer, see bench/run.sh). One switch_to() = one switch;
// a round trip is 2. Does not pin itself: the runner does.
// Usage: switch_peer [switches=10000000]
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "tendril/greenlet/greenlet.hpp"

namespace {

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  const long switches = argc > 1 ? std::atol(argv[1]) : 10000000;
  const long rounds = switches / 2;
  if (rounds <= 0) return 2;
  tendril::greenlet main_g = tendril::greenlet::current();
  bool stop = false;
  long counter = 0;
  tendril::greenlet g([&] {
    while (!stop) {
      ++counter;
      main_g.switch_to();
    }
  });
  for (long i = 0; i < rounds / 10; ++i) g.switch_to();  // warm-up
  const std::uint64_t t0 = now_ns();
  for (long i = 0; i < rounds; ++i) g.switch_to();
  const std::uint64_t t1 = now_ns();
  stop = true;
  g.switch_to();  // let the greenlet return
  std::printf("switches %ld\n", 2 * rounds);
  std::printf("ns_per_switch %.2f\n",
              static_cast<double>(t1 - t0) / (2.0 * static_cast<double>(rounds)));
  return counter > 0 && g.dead() ? 0 : 1;
}
