#include "context/stack_pool.hpp"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <new>
#include <vector>

#include "context/sanitizer.hpp"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102  // Linux 6.13, newer than glibc 2.36's headers
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440  // Linux 5.10
#endif

namespace tendril::detail::stack_pool {
namespace {

constexpr std::size_t region_size = std::size_t{4} << 30;

// Stacks are carved in batches that double from one up to max_batch while a program keeps
// asking for new ones of the same size: a batch's guards are installed and the top page of
// each of its stacks is populated (MADV_POPULATE_WRITE) in one process_madvise() call each,
// where the kernel allows it for the calling process (Linux 6.14+: PIDFD_SELF_THREAD). The first
// touch of a stack then takes no page fault: on the virtual machine tendril is measured on, a fault
// costs 15-20 us and a populated page about 7 us, its first write included. The populated page is
// the one a greenlet touches first anyway (its first frames), so a stack costs no more memory
// than before.
constexpr std::size_t max_batch = 64;
constexpr int pidfd_self_thread = -10000;  // PIDFD_SELF_THREAD, Linux 6.14

// One size class: the stacks of one usable size, most recently released last.
struct size_class {
  std::size_t size;
  std::vector<stack> stacks;
  // How many stacks the next carve() of this size cuts (the shared list's classes only): per
  // size, so that a program making many default stacks does not carve a whole batch for each
  // other size it asks for once.
  std::size_t batch = 1;
};

size_class& class_for(std::vector<size_class>& classes, std::size_t size) {
  for (auto& c : classes) {
    if (c.size == size) return c;
  }
  classes.push_back(size_class{size, {}});
  return classes.back();
}

// The process-wide part: reservations and the stacks of threads that ended.
struct global_pool {
  std::mutex mu;
  std::byte* region_next = nullptr;  // first free byte of the current region
  std::byte* region_end = nullptr;
  std::size_t reserved = 0;
  std::size_t carved = 0;
  std::vector<size_class> free;
};

global_pool& global() {
  static auto* g = new global_pool;  // never destroyed: threads may release after exit
  return *g;
}

#if defined(TENDRIL_NO_GUARD_MARKERS)
std::atomic<int> g_guard_mode{2};  // built for mprotect guards (TENDRIL_GUARD_MARKERS=OFF)
#else
std::atomic<int> g_guard_mode{0};  // 0 unknown, 1 markers, 2 mprotect
#endif
// Whether process_madvise() takes the calling thread's own ranges (else: one call a range).
std::atomic<bool> g_vectored{true};
// Whether MADV_POPULATE_WRITE works (else stacks are faulted in when first touched).
std::atomic<bool> g_populate{true};

// The calling thread's cache, reached through a trivially destructible pointer so that a
// release during thread teardown, after the cache is gone, still finds out it is gone.
struct thread_cache;
thread_local thread_cache* t_cache = nullptr;
thread_local bool t_cache_gone = false;

struct thread_cache {
  std::vector<size_class> classes;
  ~thread_cache() {
    auto& g = global();
    std::lock_guard lock(g.mu);
    for (auto& c : classes) {
      auto& dst = class_for(g.free, c.size).stacks;
      dst.insert(dst.end(), c.stacks.begin(), c.stacks.end());
    }
    t_cache = nullptr;
    t_cache_gone = true;
  }
};

thread_cache* cache() noexcept {
  if (t_cache == nullptr && !t_cache_gone) {
    thread_local thread_cache storage;
    t_cache = &storage;
  }
  return t_cache;
}

// advise_all() gives the same advice for n ranges: one system call where it can, else one
// madvise() a range. Returns 0 or the errno of the first range that failed.
int advise_all(iovec* ranges, std::size_t n, int advice) noexcept {
  if (n > 1 && g_vectored.load(std::memory_order_relaxed) && !sanitizer::running_on_valgrind()) {
    std::size_t total = 0;
    for (std::size_t i = 0; i < n; ++i) total += ranges[i].iov_len;
    const long done = syscall(SYS_process_madvise, pidfd_self_thread, ranges, n, advice, 0u);
    if (done >= 0 && static_cast<std::size_t>(done) == total) return 0;
    // EBADF (no PIDFD_SELF_THREAD), EINVAL or EPERM (advice not allowed this way), ENOSYS:
    // this kernel cannot; anything else (a partial result, ENOMEM): redo the ranges one by
    // one below, which reports the failure precisely (advice on a range twice is harmless).
    if (done < 0 && (errno == EBADF || errno == EINVAL || errno == EPERM || errno == ENOSYS))
      g_vectored.store(false, std::memory_order_relaxed);
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (madvise(ranges[i].iov_base, ranges[i].iov_len, advice) != 0) return errno;
  }
  return 0;
}

int install_guards(iovec* guards, std::size_t n) noexcept {
  int mode = g_guard_mode.load(std::memory_order_relaxed);
  if (mode != 2) {
    const int err = advise_all(guards, n, MADV_GUARD_INSTALL);
    if (err == 0) {
      g_guard_mode.store(1, std::memory_order_relaxed);
      return 0;
    }
    if (err != EINVAL) return err;
    g_guard_mode.store(2, std::memory_order_relaxed);  // an older kernel
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (mprotect(guards[i].iov_base, guards[i].iov_len, PROT_NONE) != 0) return errno;
  }
  return 0;
}

// Cuts new stacks of cls's size from the current region, reserving a new one when it is used
// up: the first in out, the rest of the batch onto cls's shared list. Called with the global
// lock held.
int carve(global_pool& g, size_class& cls, stack& out) noexcept {
  const std::size_t size = cls.size;
  std::vector<stack>& shared = cls.stacks;
  const std::size_t slot = guard_size + size;
  if (g.region_next == nullptr || static_cast<std::size_t>(g.region_end - g.region_next) < slot) {
    // Reserve generously; under a tight RLIMIT_AS or strict overcommit fall back to smaller
    // reservations down to a single slot before giving up with ENOMEM.
    void* p = MAP_FAILED;
    std::size_t want = std::max(region_size, slot);
    // Under an RLIMIT_AS the reservation counts against the limit even unused: take at most
    // a sixteenth of it, so that the rest of the program keeps room to allocate.
    if (rlimit as{}; getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
      want = std::max(slot, std::min(want, static_cast<std::size_t>(as.rlim_cur / 16)));
    }
    while (true) {
      p = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
               -1, 0);
      if (p != MAP_FAILED || want == slot) break;
      want = std::max(slot, want / 16);
    }
    if (p == MAP_FAILED) return ENOMEM;
    sanitizer::stack_unused(p, want);
    g.region_next = static_cast<std::byte*>(p);
    g.region_end = g.region_next + want;
    g.reserved += want;
  }
  std::size_t n =
      std::min(cls.batch, static_cast<std::size_t>(g.region_end - g.region_next) / slot);
  // Room on the shared list first, so that nothing below can fail after the guards are in.
  try {
    shared.reserve(shared.size() + n - 1);
  } catch (const std::bad_alloc&) {
    n = 1;
  }
  iovec guards[max_batch];
  iovec tops[max_batch];
  const std::size_t page = page_size();
  for (std::size_t i = 0; i < n; ++i) {
    std::byte* lo = g.region_next + i * slot;
    guards[i] = {lo, guard_size};
    tops[i] = {lo + slot - page, page};
  }
  if (int err = install_guards(guards, n); err != 0) return err;
  // Only an optimisation: where it fails, the first touch faults the page in as before.
  if (g_populate.load(std::memory_order_relaxed) &&
      advise_all(tops, n, MADV_POPULATE_WRITE) == EINVAL) {
    g_populate.store(false, std::memory_order_relaxed);
  }
  // The rest go onto the list highest first, so that they come off it in address order, as
  // one at a time would have been carved.
  for (std::size_t i = n; i-- > 0;) {
    stack s;
    s.base = g.region_next + i * slot + guard_size;
    s.size = size;
    s.valgrind_id = sanitizer::valgrind_register(s.base, s.base + size);
    if (i == 0) {
      out = s;
      sanitizer::stack_reused(s.base, s.size);
    } else {
      shared.push_back(s);  // reserved above
    }
  }
  g.region_next += n * slot;
  g.carved += n;
  cls.batch = std::min(max_batch, cls.batch * 2);
  return 0;
}

}  // namespace

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

std::size_t rounded_size(std::size_t requested) noexcept {
  const std::size_t page = page_size();
  // A mask, not a division: the page size is a power of two, and a 64-bit division costs tens
  // of cycles on every greenlet made.
  return (std::max(requested, min_size) + page - 1) & ~(page - 1);
}

int allocate(std::size_t size, stack& out) noexcept {
  // Far beyond any address space (x86-64 and aarch64 users have 2^47 or 2^48 bytes): refused
  // before rounding it up to pages and adding the guard would wrap around.
  if (size > (std::size_t{1} << 56)) return ENOMEM;
  size = rounded_size(size);
  if (thread_cache* c = cache()) {
    // The default size class is first in practice: a linear scan of one or two classes.
    for (auto& cls : c->classes) {
      if (cls.size == size && !cls.stacks.empty()) {
        out = cls.stacks.back();
        cls.stacks.pop_back();
        sanitizer::stack_reused(out.base, out.size);
        return 0;
      }
    }
  }
  auto& g = global();
  std::lock_guard lock(g.mu);
  size_class* shared = nullptr;
  try {
    shared = &class_for(g.free, size);
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
  if (!shared->stacks.empty()) {
    out = shared->stacks.back();
    shared->stacks.pop_back();
    sanitizer::stack_reused(out.base, out.size);
    return 0;
  }
  return carve(g, *shared, out);
}

void release(const stack& s) noexcept {
  if (!s) return;
  sanitizer::stack_unused(s.base, s.size);
  if (thread_cache* c = cache()) {
    try {
      class_for(c->classes, s.size).stacks.push_back(s);
      return;
    } catch (const std::bad_alloc&) {
      // fall through to the global list, whose push may fail the same way
    }
  }
  auto& g = global();
  std::lock_guard lock(g.mu);
  try {
    class_for(g.free, s.size).stacks.push_back(s);
  } catch (const std::bad_alloc&) {
    // Out of memory for the bookkeeping: the stack's address space is lost, its memory is not.
    madvise(s.base, s.size, MADV_DONTNEED);
  }
}

std::size_t trim() noexcept {
  std::vector<stack> all;
  auto collect = [&all](std::vector<size_class>& classes) {
    for (auto& c : classes) all.insert(all.end(), c.stacks.begin(), c.stacks.end());
  };
  auto& g = global();
  std::lock_guard lock(g.mu);
  try {
    if (thread_cache* c = cache()) collect(c->classes);
    collect(g.free);
  } catch (const std::bad_alloc&) {
    return 0;
  }
  std::sort(all.begin(), all.end(), [](const stack& a, const stack& b) { return a.base < b.base; });
  // Neighbouring slots form one range [first base, last top); the guards inside it keep
  // their markers (MADV_DONTNEED leaves guard markers and PROT_NONE pages alone).
  std::size_t i = 0;
  while (i < all.size()) {
    std::byte* lo = all[i].base;
    std::byte* hi = all[i].top();
    std::size_t j = i + 1;
    while (j < all.size() && all[j].base == hi + guard_size) hi = all[j++].top();
    madvise(lo, static_cast<std::size_t>(hi - lo), MADV_DONTNEED);
    i = j;
  }
  return all.size();
}

bool uses_guard_markers() noexcept { return g_guard_mode.load(std::memory_order_relaxed) == 1; }

statistics stats() noexcept {
  auto& g = global();
  std::lock_guard lock(g.mu);
  statistics st{g.reserved, g.carved, 0, 0};
  for (auto& c : g.free) st.cached_global += c.stacks.size();
  if (thread_cache* c = cache()) {
    for (auto& cls : c->classes) st.cached_here += cls.stacks.size();
  }
  return st;
}

}  // namespace tendril::detail::stack_pool
