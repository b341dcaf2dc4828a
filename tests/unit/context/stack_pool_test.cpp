// Greenlet stacks: sizes, reuse, guards, trimming, and the reservation staying one mapping.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "context/sanitizer.hpp"
#include "context/stack_pool.hpp"

namespace pool = tendril::detail::stack_pool;
using tendril::detail::stack;

namespace {
// The mappings that overlap [lo, hi).
int count_mappings_in(const void* lo, const void* hi) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  const auto a = reinterpret_cast<std::uintptr_t>(lo);
  const auto b = reinterpret_cast<std::uintptr_t>(hi);
  while (std::getline(maps, line)) {
    const std::size_t dash = line.find('-');
    const std::uintptr_t start = std::stoull(line.substr(0, dash), nullptr, 16);
    const std::uintptr_t end = std::stoull(line.substr(dash + 1), nullptr, 16);
    if (start < b && end > a) ++n;
  }
  return n;
}
}  // namespace

TEST(stack_pool, sizes_round_up_to_pages_and_never_below_the_minimum) {
  const std::size_t page = pool::page_size();
  EXPECT_EQ(pool::rounded_size(1), pool::min_size);
  EXPECT_EQ(pool::rounded_size(pool::min_size + 1), pool::min_size + page);
  EXPECT_EQ(pool::rounded_size(pool::default_size), pool::default_size);
  stack s;
  ASSERT_EQ(pool::allocate(pool::min_size + 1, s), 0);
  EXPECT_EQ(s.size, pool::min_size + page);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(s.base) % page, 0u);
  pool::release(s);
}

TEST(stack_pool, a_released_stack_is_reused_by_the_same_thread) {
  stack a;
  ASSERT_EQ(pool::allocate(64 * 1024, a), 0);
  a.base[0] = std::byte{1};
  a.top()[-1] = std::byte{2};
  pool::release(a);
  stack b;
  ASSERT_EQ(pool::allocate(64 * 1024, b), 0);
  EXPECT_EQ(a.base, b.base);
  pool::release(b);
}

TEST(stack_pool, stacks_do_not_overlap_and_are_fully_writable) {
  std::vector<stack> stacks(200);
  std::set<std::byte*> bases;
  for (auto& s : stacks) {
    ASSERT_EQ(pool::allocate(16 * 1024, s), 0);
    std::memset(s.base, 0x5a, s.size);
    bases.insert(s.base);
  }
  EXPECT_EQ(bases.size(), stacks.size());
  for (std::size_t i = 1; i < stacks.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      bool disjoint = stacks[i].top() <= stacks[j].base - pool::guard_size ||
                      stacks[j].top() <= stacks[i].base - pool::guard_size;
      ASSERT_TRUE(disjoint) << "stack " << i << " overlaps stack " << j << " or its guard";
    }
  }
  for (auto& s : stacks) pool::release(s);
}

TEST(stack_pool, new_stacks_come_in_address_order_with_their_top_page_in_memory) {
  // MADV_POPULATE_WRITE is Linux 5.14: without it the first touch faults the page in. (qemu-user
  // says yes to it and does nothing.)
  const std::size_t page = pool::page_size();
  void* probe = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(probe, MAP_FAILED);
  unsigned char probed = 0;
  const bool populates = madvise(probe, page, 23 /* MADV_POPULATE_WRITE */) == 0 &&
                         mincore(probe, page, &probed) == 0 && (probed & 1) != 0;
  munmap(probe, page);
  if (!populates) GTEST_SKIP() << "MADV_POPULATE_WRITE does nothing here";
  // A size no other test uses, so that every stack here is new: carved in batches of
  // growing size.
  constexpr std::size_t size = 88 * 1024;
  std::vector<stack> stacks(100);
  for (auto& s : stacks) ASSERT_EQ(pool::allocate(size, s), 0);
  for (std::size_t i = 0; i < stacks.size(); ++i) {
    unsigned char resident = 0;
    ASSERT_EQ(mincore(stacks[i].top() - page, page, &resident), 0);
    EXPECT_TRUE(resident & 1) << "stack " << i << ": top page not in memory";
    if (i > 0) {
      EXPECT_GT(stacks[i].base, stacks[i - 1].base) << "stack " << i;
    }
  }
  // Nothing else of a new stack is: it costs one page until it runs deeper.
  unsigned char below = 0;
  ASSERT_EQ(mincore(stacks.back().top() - 2 * page, page, &below), 0);
  EXPECT_FALSE(below & 1);
  for (auto& s : stacks) pool::release(s);
}

// The batch grew with every carve whatever the size: once a program had made many stacks of
// one size, each other size it asked for once carved up to 64 stacks, a page of memory each.
TEST(stack_pool, a_size_asked_for_once_carves_one_stack_however_many_others_were_carved) {
  std::vector<stack> many(200);
  for (auto& s : many) ASSERT_EQ(pool::allocate(pool::default_size, s), 0);
  for (auto& s : many) pool::release(s);
  const std::size_t before = pool::stats().carved;
  constexpr std::size_t kinds = 50;
  for (std::size_t i = 0; i < kinds; ++i) {
    stack s;
    // Sizes no other test uses, one greenlet at a time.
    ASSERT_EQ(pool::allocate(300 * 1024 + i * pool::page_size(), s), 0);
    pool::release(s);
  }
  EXPECT_EQ(pool::stats().carved - before, kinds);
}

// Under valgrind (CI runs this suite there), memcheck is told which of the pool's memory holds
// a stack in use: a stack handed out is addressable, one given back is not, nor are the guard
// pages and the reservation not carved yet, which its leak check then skips.
// Under an RLIMIT_AS, the pool's reservation (4 GiB without a limit) takes at most a
// sixteenth of it, so that the program keeps room to allocate: here a limit 6 GiB above what
// the process already maps, then a 3 GiB allocation after the first stack. In a child, so
// that the limit stays there. (ctest runs each case in a process of its own, where the pool
// reserves its first region here; run with other cases first, an earlier region may serve.)
TEST(stack_pool, under_an_address_space_limit_the_reservation_leaves_room) {
  namespace san = tendril::detail::sanitizer;
#if defined(TENDRIL_HAS_ASAN) || defined(TENDRIL_HAS_TSAN)
  GTEST_SKIP() << "the sanitizers' shadow memory does not run under an RLIMIT_AS";
#endif
  if (san::running_on_valgrind()) GTEST_SKIP() << "valgrind manages the address space itself";
  std::size_t vm_kib = 0;
  {
    std::ifstream status("/proc/self/status");
    std::string key;
    while (status >> key) {
      if (key == "VmSize:") {
        status >> vm_kib;
        break;
      }
    }
  }
  ASSERT_GT(vm_kib, 0u);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    rlimit limit{};
    limit.rlim_cur = limit.rlim_max = vm_kib * 1024 + (std::size_t{6} << 30);
    if (::setrlimit(RLIMIT_AS, &limit) != 0) ::_exit(2);
    stack a;
    if (pool::allocate(64 * 1024, a) != 0) ::_exit(3);
    void* big = ::mmap(nullptr, std::size_t{3} << 30, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ::_exit(big == MAP_FAILED ? 4 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: setrlimit, 3: no stack, 4: no room left for 3 GiB";
}

TEST(stack_pool, valgrind_sees_only_the_stacks_in_use) {
  namespace san = tendril::detail::sanitizer;
  if (!san::running_on_valgrind()) GTEST_SKIP() << "checked when the suite runs under valgrind";
  stack a;
  ASSERT_EQ(pool::allocate(64 * 1024, a), 0);
  EXPECT_EQ(san::valgrind_addressable(a.base), 1);
  EXPECT_EQ(san::valgrind_addressable(a.top() - 1), 1);
  EXPECT_EQ(san::valgrind_addressable(a.base - 1), 0) << "the guard page below the stack";
  EXPECT_EQ(san::valgrind_addressable(a.top() + pool::guard_size), 0)
      << "the next slot, carved in the same batch or not at all yet";
  pool::release(a);
  EXPECT_EQ(san::valgrind_addressable(a.base), 0);
  EXPECT_EQ(san::valgrind_addressable(a.top() - 1), 0);
  stack b;
  ASSERT_EQ(pool::allocate(64 * 1024, b), 0);
  ASSERT_EQ(b.base, a.base);
  EXPECT_EQ(san::valgrind_addressable(b.base), 1);
  EXPECT_EQ(san::valgrind_addressable(b.top() - 1), 1);
  pool::release(b);
}

TEST(stack_pool, guards_are_page_table_markers_on_this_kernel) {
  stack s;
  ASSERT_EQ(pool::allocate(16 * 1024, s), 0);
  pool::release(s);
  // The machine tendril is developed on runs Linux 6.18; where the kernel is older than
  // 6.13 the mprotect fallback is used and this test has nothing to check.
  if (!pool::uses_guard_markers()) GTEST_SKIP() << "kernel without MADV_GUARD_INSTALL";
  // Only the stacks' own range counts: the allocator of the bookkeeping (ASan's especially)
  // maps memory of its own meanwhile.
  std::vector<stack> stacks(2000);
  for (auto& st : stacks) ASSERT_EQ(pool::allocate(16 * 1024, st), 0);
  const std::byte* lo = stacks[0].base;
  const std::byte* hi = stacks[0].top();
  for (const auto& st : stacks) {
    lo = std::min<const std::byte*>(lo, st.base - pool::guard_size);
    hi = std::max<const std::byte*>(hi, st.top());
  }
  EXPECT_LT(count_mappings_in(lo, hi), 10)
      << "guard markers must not split the reservation into mappings";
  for (auto& st : stacks) pool::release(st);
}

TEST(stack_pool, trim_keeps_stacks_usable_and_gives_memory_back) {
  std::vector<stack> stacks(64);
  for (auto& s : stacks) {
    ASSERT_EQ(pool::allocate(64 * 1024, s), 0);
    std::memset(s.base, 0x77, s.size);
  }
  for (auto& s : stacks) pool::release(s);
  EXPECT_GE(pool::trim(), stacks.size());
  // Trimmed pages read back as zero (MADV_DONTNEED on private anonymous memory).
  stack again;
  ASSERT_EQ(pool::allocate(64 * 1024, again), 0);
  tendril::detail::sanitizer::valgrind_make_defined(again.top() - 1, 1);  // the kernel's zero
  EXPECT_EQ(again.top()[-1], std::byte{0});
  std::memset(again.base, 1, again.size);
  pool::release(again);
}

TEST(stack_pool, stacks_released_by_an_ended_thread_go_to_the_shared_list) {
  auto before = pool::stats();
  std::thread t([] {
    std::vector<stack> v(10);
    for (auto& s : v) ASSERT_EQ(pool::allocate(48 * 1024, s), 0);
    for (auto& s : v) pool::release(s);
  });
  t.join();
  auto after = pool::stats();
  EXPECT_GE(after.cached_global, before.cached_global + 10);
  // This thread now gets them without carving new ones.
  std::vector<stack> v(10);
  for (auto& s : v) ASSERT_EQ(pool::allocate(48 * 1024, s), 0);
  EXPECT_EQ(pool::stats().carved, after.carved);
  for (auto& s : v) pool::release(s);
}

TEST(stack_pool, in_guard_tells_the_guard_below_a_stack) {
  stack s;
  ASSERT_EQ(pool::allocate(16 * 1024, s), 0);
  EXPECT_TRUE(pool::in_guard(s, s.base - 1));
  EXPECT_TRUE(pool::in_guard(s, s.base - pool::guard_size));
  EXPECT_FALSE(pool::in_guard(s, s.base));
  EXPECT_FALSE(pool::in_guard(s, s.base - pool::guard_size - 1));
  pool::release(s);
}
