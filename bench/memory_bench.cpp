// memory / tendril: N greenlets with the default stack (guard pages on: tendril has no way to
// turn them off), each switched into once and suspended inside its body, as
// ../shared/peers/memory/boost_context.cpp does with Boost.Context fibers. Prints the growth
// of VmRSS and VmSize per greenlet (from /proc/self/status), following the peers' contract
// (../shared/peers/README.md), plus the growth of the page tables (VmPTE), which VmRSS does
// not count.
// Usage: memory_bench [n=100000]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "context/stack_pool.hpp"
#include "tendril/greenlet/greenlet.hpp"

namespace {

// status_kb() is a field of /proc/self/status in kB (VmRSS, VmSize, ...), or -1.
long status_kb(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long v = -1;
  const std::size_t kl = std::strlen(key);
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, key, kl) == 0 && line[kl] == ':') {
      v = std::atol(line + kl + 1);
      break;
    }
  }
  std::fclose(f);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 100000;
  if (n <= 0) return 2;
  tendril::greenlet main_g = tendril::greenlet::current();  // the thread's state exists now
  std::vector<tendril::greenlet> v;
  v.reserve(static_cast<std::size_t>(n));
  long started = 0;
  long finished = 0;
  const long rss0 = status_kb("VmRSS");
  const long vm0 = status_kb("VmSize");
  const long pte0 = status_kb("VmPTE");
  for (long i = 0; i < n; ++i) {
    v.emplace_back([&] {
      ++started;
      main_g.switch_to();  // suspended here
      ++finished;
    });
    v.back().switch_to();
  }
  const long rss1 = status_kb("VmRSS");
  const long vm1 = status_kb("VmSize");
  const long pte1 = status_kb("VmPTE");
  const bool markers = tendril::detail::stack_pool::uses_guard_markers();
  for (auto& g : v) g.switch_to();  // release and finish
  const double per = 1024.0 / static_cast<double>(n);
  std::printf("n %ld\n", n);
  std::printf("stack_bytes %zu\n", tendril::default_stack_size);
  std::printf("guard_bytes %zu\n", tendril::detail::stack_pool::guard_size);
  std::printf("guard_kind %s\n", markers ? "madvise_guard_install" : "mprotect");
  std::printf("rss_bytes_per_coro %.0f\n", static_cast<double>(rss1 - rss0) * per);
  std::printf("vm_bytes_per_coro %.0f\n", static_cast<double>(vm1 - vm0) * per);
  std::printf("pte_bytes_per_coro %.0f\n", static_cast<double>(pte1 - pte0) * per);
  return started == n && finished == n ? 0 : 1;
}
