// The tour's monkey part: the seed's gevent.monkey examples. Plain libc sleep() blocks the
// whole thread until patch_all(), then only the greenlet that calls it; and the crawler,
// libcurl's blocking fetches run concurrently.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "crawl.hpp"
#include "slow_http.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"
#include "tour.hpp"

namespace tendril::app {
namespace {

using clock_type = std::chrono::steady_clock;

// libc's own sleep(seconds); with --quick, usleep() of the scaled time (sleep() counts whole
// seconds only).
void libc_sleep(const tour_options& o, unsigned seconds) {
  if (o.quick) {
    ::usleep(static_cast<useconds_t>(o.seconds(seconds).count() * 1e6));
  } else {
    ::sleep(seconds);
  }
}

double two_sleepers(const tour_options& o) {
  const char* call = o.quick ? "usleep" : "sleep";
  auto t0 = clock_type::now();
  auto a = spawn([&] {
    std::printf("[%s] libc %s(2)\n", this_greenlet::name().c_str(), call);
    libc_sleep(o, 2);
    std::printf("[%s] back from %s(2)\n", this_greenlet::name().c_str(), call);
  });
  auto b = spawn([&] {
    std::printf("[%s] libc %s(3)\n", this_greenlet::name().c_str(), call);
    libc_sleep(o, 3);
    std::printf("[%s] back from %s(3)\n", this_greenlet::name().c_str(), call);
  });
  joinall(a, b);
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

}  // namespace

void tour_monkey(const tour_options& o) {
  heading("7. monkey: plain libc sleep, before and after patch_all()");
  const char* scaled = o.quick ? " (x0.05)" : "";
  if (monkey::is_patched()) {
    std::printf("(already patched: the unpatched run is skipped)\n");
  } else {
    std::printf("without patch_all(): each libc sleep blocks the whole thread\n");
    std::printf("unpatched elapsed: %.2f s%s\n", two_sleepers(o), scaled);
  }
  monkey::patch_all();
  std::printf("after patch_all(): a libc sleep parks only the greenlet that calls it\n");
  std::printf("patched elapsed: %.2f s%s\n", two_sleepers(o), scaled);

  heading("8. monkey: the crawler (libcurl's blocking easy interface in greenlets)");
  const auto delay = std::chrono::milliseconds(o.quick ? 50 : 1000);
  demo::slow_http_server server(delay);
  std::printf("a local server whose pages answer after %lld ms; five fetches at once\n",
              static_cast<long long>(delay.count()));
  std::vector<std::string> urls;
  for (const char* p : {"/python", "/yahoo", "/github", "/gevent", "/greenlet"})
    urls.push_back(server.url(p));
  auto t0 = clock_type::now();
  const auto results = crawl(urls, 30'000);
  std::size_t ok = 0;
  for (const auto& r : results) ok += r.ok ? 1 : 0;
  std::printf("%zu of %zu fetched in %.2f s (one page takes %.2f s)\n", ok, results.size(),
              std::chrono::duration<double>(clock_type::now() - t0).count(),
              delay.count() / 1000.0);
}

}  // namespace tendril::app
