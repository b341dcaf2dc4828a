// async_result<T>: set, set_exception, get, get_for, ready, wait; every waiter gets the
// result; a later set replaces it; set and set_exception from another thread wake timed and
// untimed waiters. Modelled on gevent's test__event.py (TestAsyncResult).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "fenced.hpp"
#include "hub/clock.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::async_result;
using tendril::spawn;
using tendril::task;

namespace {

constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

struct some_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A copy-only value whose copies throw while fail is set; alive counts the live ones.
struct fragile {
  static inline bool fail = false;
  static inline int alive = 0;
  std::string s;
  explicit fragile(std::string v) : s(std::move(v)) { ++alive; }
  fragile(const fragile& o) : s(o.s) {
    if (fail) throw std::runtime_error("copy failed");
    ++alive;
  }
  fragile& operator=(const fragile& o) {
    if (fail) throw std::runtime_error("copy failed");
    s = o.s;
    return *this;
  }
  ~fragile() { --alive; }
};

class async_results : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

}  // namespace

TEST_F(async_results, is_not_ready_until_set) {
  async_result<int> r;
  EXPECT_FALSE(r.ready());
  r.set(3);
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.get(), 3);
  EXPECT_EQ(r.get(), 3);  // get() copies: as often as asked
}

TEST_F(async_results, get_waits_until_another_greenlet_sets_it) {
  async_result<std::string> r;
  auto setter = spawn([&] {
    tendril::sleep(2s);
    r.set("done");
  });
  const std::int64_t start = now_ns();
  EXPECT_EQ(r.get(), "done");
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  setter.join();
}

TEST_F(async_results, set_exception_makes_get_rethrow_it) {
  async_result<int> r;
  auto setter = spawn([&] {
    tendril::sleep(1s);
    r.set_exception(std::make_exception_ptr(some_error("failed")));
  });
  try {
    r.get();
    ADD_FAILURE() << "get returned";
  } catch (const some_error& e) {
    EXPECT_STREQ(e.what(), "failed");
  }
  EXPECT_TRUE(r.ready());
  EXPECT_THROW(r.get(), some_error);
  EXPECT_THROW(r.get_for(1s), some_error);
  setter.join();
}

TEST_F(async_results, set_exception_refuses_a_null_exception) {
  async_result<int> r;
  EXPECT_THROW(r.set_exception(nullptr), std::invalid_argument);
  EXPECT_FALSE(r.ready());
}

TEST_F(async_results, get_for_returns_empty_when_the_time_runs_out) {
  async_result<int> r;
  const std::int64_t start = now_ns();
  EXPECT_EQ(r.get_for(2s), std::nullopt);
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  EXPECT_FALSE(r.wait_for(1s));
  auto setter = spawn([&] {
    tendril::sleep(1s);
    r.set(8);
  });
  EXPECT_EQ(r.get_for(5s), std::optional<int>(8));
  setter.join();
}

TEST_F(async_results, a_negative_or_huge_duration_acts_as_zero_or_forever) {
  async_result<int> r;
  const std::int64_t start = now_ns();
  EXPECT_EQ(r.get_for(-1s), std::nullopt);
  EXPECT_FALSE(r.wait_for(std::chrono::nanoseconds::min()));
  EXPECT_EQ(now_ns(), start);
  auto setter = spawn([&] {
    tendril::sleep(10000h);
    r.set(1);
  });
  EXPECT_EQ(r.get_for(std::chrono::hours::max()), std::optional<int>(1));
  setter.join();
}

TEST_F(async_results, every_waiter_gets_the_result) {
  async_result<int> r;
  std::vector<task<int>> all;
  for (int i = 0; i < 20; ++i)
    all.push_back(spawn([&, i] {
      if (i % 2 == 0) return r.get();
      return r.get_for(1h).value_or(-1);
    }));
  tendril::sleep(0s);
  r.set(11);
  for (auto& t : all) EXPECT_EQ(t.get(), 11);
}

TEST_F(async_results, a_later_set_replaces_the_earlier_result) {
  async_result<int> r;
  r.set(1);
  r.set(2);
  EXPECT_EQ(r.get(), 2);
  r.set_exception(std::make_exception_ptr(some_error("now an error")));
  EXPECT_THROW(r.get(), some_error);
  r.set(3);
  EXPECT_EQ(r.get(), 3);
}

TEST_F(async_results, a_void_result_has_set_without_argument) {
  async_result<void> r;
  static_assert(std::is_same_v<decltype(r.get_for(1s)), bool>);
  EXPECT_FALSE(r.get_for(1s));
  auto setter = spawn([&] {
    tendril::sleep(1s);
    r.set();
  });
  r.get();
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.get_for(1s));
  setter.join();
  async_result<void> failed;
  failed.set_exception(std::make_exception_ptr(some_error("void fails")));
  EXPECT_THROW(failed.get(), some_error);
}

TEST_F(async_results, wait_returns_once_set_without_consuming_it) {
  async_result<int> r;
  auto setter = spawn([&] { r.set(5); });
  r.wait();
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.get(), 5);
  setter.join();
}

TEST_F(async_results, a_killed_or_timed_out_waiter_leaves_it_usable) {
  async_result<int> r;
  auto victim = spawn([&] { return r.get(); });
  auto impatient = spawn([&] { return r.get_for(1s).value_or(-1); });
  tendril::sleep(0s);
  victim.kill();
  EXPECT_EQ(impatient.get(), -1);
  r.set(4);
  EXPECT_EQ(r.get(), 4);
}

TEST_F(async_results, a_timeout_scope_interrupts_get) {
  async_result<int> r;
  tendril::timeout t(1s);
  EXPECT_THROW(r.get(), tendril::timeout_error);
}

// --- other threads -------------------------------------------------------------------------

TEST(async_results_across_threads, set_from_another_thread_wakes_an_untimed_waiter) {
  async_result<std::string> r;
  std::thread th([&] {
    std::this_thread::sleep_for(20ms);
    r.set("from afar");
  });
  EXPECT_EQ(r.get(), "from afar");
  th.join();
}

TEST(async_results_across_threads, set_from_another_thread_wakes_a_timed_waiter) {
  async_result<int> r;
  std::thread th([&] {
    std::this_thread::sleep_for(20ms);
    r.set(9);
  });
  EXPECT_EQ(r.get_for(60s), std::optional<int>(9));
  th.join();
}

TEST(async_results_across_threads, set_exception_from_another_thread_is_rethrown_here) {
  async_result<int> r;
  std::thread th([&] {
    std::this_thread::sleep_for(20ms);
    r.set_exception(std::make_exception_ptr(some_error("far away")));
  });
  EXPECT_THROW(r.get_for(60s), some_error);
  th.join();
}

TEST(async_results_across_threads, results_handed_between_two_hubs_both_ways) {
  // A ping-pong between this thread's hub and another thread's hub.
  const int rounds = 50;
  std::vector<async_result<int>> to_other(rounds);
  std::vector<async_result<int>> to_main(rounds);
  std::thread th([&] {
    for (int i = 0; i < rounds; ++i) to_main[i].set(to_other[i].get() + 1);
  });
  int v = 0;
  for (int i = 0; i < rounds; ++i) {
    to_other[i].set(v);
    v = to_main[i].get();
  }
  th.join();
  EXPECT_EQ(v, rounds);
}

TEST(async_results_across_threads, many_tasks_wait_for_a_result_set_from_another_thread) {
  async_result<int> r;
  std::atomic<int> right{0};
  std::vector<task<void>> all;
  for (int i = 0; i < 30; ++i)
    all.push_back(spawn([&, i] {
      const int v = i % 2 ? r.get() : r.get_for(60s).value_or(-1);
      if (v == 21) ++right;
    }));
  tendril::sleep(0s);
  std::thread th([&] { r.set(21); });
  tendril::joinall(all);
  th.join();
  EXPECT_EQ(right, 30);
}

TEST_F(async_results, wait_until_and_get_until_end_at_a_time_point) {
  tendril::async_result<int> r;
  const auto soon = std::chrono::steady_clock::now() + 200ms;
  EXPECT_FALSE(r.wait_until(soon));
  EXPECT_EQ(r.get_until(std::chrono::steady_clock::now() + 200ms), std::nullopt);
  auto setter = spawn([&] { r.set(5); });
  EXPECT_TRUE(r.wait_until(std::chrono::steady_clock::now() + 1h));
  EXPECT_EQ(r.get_until(std::chrono::system_clock::now() + 1h), 5);
  tendril::async_result<void> v;
  EXPECT_FALSE(v.get_until(std::chrono::steady_clock::now() + 10ms));
  v.set();
  EXPECT_TRUE(v.get_until(std::chrono::steady_clock::now() + 10ms));
}

// A move-only value is moved out by the first get(); a second get() is a logic_error, and a
// later set() stores a new value that get() returns (before, the "taken" mark stayed).
TEST_F(async_results, a_move_only_value_is_taken_once_and_a_new_set_replaces_it) {
  tendril::async_result<std::unique_ptr<int>> r;
  r.set(std::make_unique<int>(1));
  EXPECT_EQ(*r.get(), 1);
  EXPECT_THROW(r.get(), std::logic_error);
  r.set(std::make_unique<int>(2));
  EXPECT_EQ(*r.get(), 2);
  r.set_exception(std::make_exception_ptr(std::runtime_error("boom")));
  EXPECT_THROW(r.get(), std::runtime_error);
  r.set(std::make_unique<int>(3));
  EXPECT_EQ(*r.get(), 3);
}

// emplace() destroyed the earlier value before the copy threw: the result stayed ready with
// an empty optional, and get() dereferenced it.
TEST_F(async_results, a_set_whose_copy_throws_leaves_the_earlier_value) {
  {
    async_result<fragile> r;
    fragile first("first value"), second("second value");
    r.set(first);
    EXPECT_EQ(fragile::alive, 3);
    fragile::fail = true;
    EXPECT_THROW(r.set(second), std::runtime_error);
    fragile::fail = false;
    EXPECT_EQ(fragile::alive, 3);
    EXPECT_TRUE(r.ready());
    EXPECT_EQ(r.get().s, "first value");
    r.set(second);
    EXPECT_EQ(r.get().s, "second value");
  }
  EXPECT_EQ(fragile::alive, 0);
}

// A wait() woken by the set() of another thread took the result's lock when it resumed: a
// result that thread destroyed once set() returned was touched after it was gone.
TEST(async_results_across_threads,
     the_setting_thread_may_destroy_it_before_the_waits_it_woke_return) {
  tendril::test::fenced<async_result<int>> r;
  int returned = 0;
  std::vector<task<void>> waiters;
  for (int i = 0; i < 2; ++i)
    waiters.push_back(spawn([&, i] {
      if (i == 0) {
        r->wait();
      } else {
        EXPECT_TRUE(r->wait_for(60s));
      }
      ++returned;
    }));
  tendril::sleep(0s);
  std::thread setter([&] {
    r->set(1);
    r.destroy();
  });
  setter.join();  // blocks this thread: the woken greenlets resume only after
  tendril::joinall(waiters);
  EXPECT_EQ(returned, 2);
}
