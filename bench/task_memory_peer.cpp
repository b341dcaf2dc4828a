// memory / tendril tasks: N tasks spawned with the default stack, each blocked in
// event::wait() on one tendril::event, as ../shared/peers/memory/go_mem.go blocks N
// goroutines on one channel (and ../shared/peers/memory/gevent_mem.py N greenlets on a
// gevent Event). Prints the growth of VmRSS and VmSize per task (from /proc/self/status),
// following the peers' contract (../shared/peers/README.md), plus the growth of the page
// tables (VmPTE), which VmRSS does not count. The N task handles (8 bytes each) are part of
// the figure, as the vector of fibers is in the Boost peers. Does not pin itself.
// Usage: task_memory_peer [n=100000]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tendril/tendril.hpp"

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
  (void)tendril::hub::current();  // the hub exists before the first reading
  tendril::event gate;
  std::vector<tendril::task<void>> v;
  v.reserve(static_cast<std::size_t>(n));
  long started = 0;
  long finished = 0;
  const long rss0 = status_kb("VmRSS");
  const long vm0 = status_kb("VmSize");
  const long pte0 = status_kb("VmPTE");
  for (long i = 0; i < n; ++i) {
    v.push_back(tendril::spawn([&] {
      ++started;
      gate.wait();  // blocked here
      ++finished;
    }));
  }
  tendril::sleep(std::chrono::seconds(0));  // every task runs once, up to its wait()
  const long rss1 = status_kb("VmRSS");
  const long vm1 = status_kb("VmSize");
  const long pte1 = status_kb("VmPTE");
  const bool all_blocked = started == n && finished == 0;
  gate.set();
  tendril::joinall(v);
  const double per = 1024.0 / static_cast<double>(n);
  std::printf("n %ld\n", n);
  std::printf("backend %s\n", tendril::hub::current().backend_name());
  std::printf("stack_bytes %zu\n", tendril::default_stack_size);
  std::printf("rss_bytes_per_coro %.0f\n", static_cast<double>(rss1 - rss0) * per);
  std::printf("vm_bytes_per_coro %.0f\n", static_cast<double>(vm1 - vm0) * per);
  std::printf("pte_bytes_per_coro %.0f\n", static_cast<double>(pte1 - pte0) * per);
  return all_blocked && finished == n ? 0 : 1;
}
