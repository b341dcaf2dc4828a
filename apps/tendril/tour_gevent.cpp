// The tour's second part: the seed's gevent examples, on tendril's hub.
#include <chrono>
#include <cstdio>
#include <string>

#include "tendril/tendril.hpp"
#include "tour.hpp"

namespace tendril::app {
namespace {

using clock_type = std::chrono::steady_clock;

// The seed's worker: says who it is (gevent's DummyThread name), sleeps, returns its input.
int sleepy(const tour_options& o, int seconds) {
  std::printf("[%s] sleeping %d s\n", this_greenlet::name().c_str(), seconds);
  std::fflush(stdout);
  tendril::sleep(o.seconds(seconds));
  std::printf("[%s] woke up after %d s\n", this_greenlet::name().c_str(), seconds);
  return seconds;
}

}  // namespace

void tour_gevent(const tour_options& o) {
  heading("5. gevent: spawn, joinall and value");
  std::printf("(two tasks sleep 2 s and 3 s at the same time: together they take 3 s, not 5)\n");
  auto t0 = clock_type::now();
  // One task spawned with an argument, one without.
  auto g1 = spawn(sleepy, o, 2);
  auto g2 = spawn([&o] { return sleepy(o, 3); });
  joinall(g1, g2);
  const double elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::printf("values: %d and %d\n", *g1.value(), *g2.value());
  std::printf("elapsed: %.2f s%s\n", elapsed, o.quick ? " (x0.05)" : "");
}

}  // namespace tendril::app
