// event: set, clear, is_set, wait, wait_for, wait_until; 1, 100 and 10,000 waiters; set then
// clear still wakes every waiter; set from another thread wakes timed and untimed waiters;
// loop_exit for a wait nobody can end. Modelled on gevent's test__event.py.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "context/sanitizer.hpp"
#include "fenced.hpp"
#include "hub/clock.hpp"
#include "tendril/tendril.hpp"
#include "test_scale.hpp"

using namespace std::chrono_literals;
using tendril::event;
using tendril::spawn;
using tendril::task;

namespace {

constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class events : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

// Cross-thread tests run on the real clock: the other thread is not the hub's to schedule.
class events_across_threads : public ::testing::Test {};

}  // namespace

TEST_F(events, starts_unset_and_set_and_clear_flip_the_flag) {
  event e;
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.ready());
  e.set();
  EXPECT_TRUE(e.is_set());
  EXPECT_TRUE(e.ready());
  e.set();  // twice is fine
  EXPECT_TRUE(e.is_set());
  e.clear();
  EXPECT_FALSE(e.is_set());
  e.clear();
  EXPECT_FALSE(e.is_set());
}

TEST_F(events, wait_on_a_set_event_returns_at_once_without_switching) {
  event e;
  e.set();
  bool other_ran = false;
  auto t = spawn([&] { other_ran = true; });
  e.wait();
  EXPECT_TRUE(e.wait_for(1s));
  EXPECT_TRUE(e.wait_for(-1s));
  EXPECT_TRUE(e.wait_until(std::chrono::steady_clock::now() - 1s));
  EXPECT_FALSE(other_ran);
  t.join();
}

TEST_F(events, wait_blocks_until_set) {
  event e;
  std::int64_t set_at = 0;
  auto setter = spawn([&] {
    tendril::sleep(2s);
    set_at = now_ns();
    e.set();
  });
  e.wait();
  EXPECT_NE(set_at, 0);
  EXPECT_GE(now_ns(), set_at);
  setter.join();
}

TEST_F(events, wait_for_returns_false_when_the_time_runs_out) {
  event e;
  const std::int64_t start = now_ns();
  EXPECT_FALSE(e.wait_for(2s));
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  EXPECT_LT(now_ns() - start, 3 * second_ns);
}

TEST_F(events, wait_for_returns_true_when_set_in_time) {
  event e;
  auto setter = spawn([&] {
    tendril::sleep(1s);
    e.set();
  });
  const std::int64_t start = now_ns();
  EXPECT_TRUE(e.wait_for(5s));
  EXPECT_LT(now_ns() - start, 2 * second_ns);
  setter.join();
}

TEST_F(events, wait_until_takes_time_points_of_any_clock) {
  event e;
  EXPECT_FALSE(e.wait_until(std::chrono::steady_clock::now() + 1s));
  EXPECT_FALSE(e.wait_until(std::chrono::system_clock::now() + 1s));
  auto setter = spawn([&] {
    tendril::sleep(1s);
    e.set();
  });
  EXPECT_TRUE(e.wait_until(std::chrono::system_clock::now() + 1h));
  setter.join();
}

TEST_F(events, a_negative_duration_acts_as_zero) {
  event e;
  bool other_ran = false;
  auto t = spawn([&] { other_ran = true; });
  const std::int64_t start = now_ns();
  EXPECT_FALSE(e.wait_for(-1s));
  EXPECT_FALSE(e.wait_for(std::chrono::nanoseconds::min()));
  EXPECT_FALSE(e.wait_until(std::chrono::steady_clock::time_point::min()));
  EXPECT_FALSE(e.wait_for(0s));
  EXPECT_EQ(now_ns(), start);
  EXPECT_FALSE(other_ran);  // no switch either
  t.join();
}

TEST_F(events, a_duration_too_large_for_the_clock_waits_until_set) {
  event e;
  auto setter = spawn([&] {
    tendril::sleep(5000h);  // far, but the huge wait below must not have wrapped around
    e.set();
  });
  EXPECT_TRUE(e.wait_for(std::chrono::hours::max()));
  e.clear();
  auto again = spawn([&] {
    tendril::sleep(1s);
    e.set();
  });
  EXPECT_TRUE(e.wait_for(std::chrono::duration<double>(1e300)));
  tendril::joinall(setter, again);
}

TEST_F(events, waiters_wake_in_the_order_they_waited) {
  event e;
  std::vector<int> order;
  std::vector<task<void>> all;
  for (int i = 0; i < 10; ++i)
    all.push_back(spawn([&, i] {
      e.wait();
      order.push_back(i);
    }));
  tendril::sleep(0s);
  e.set();
  tendril::joinall(all);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

class event_waiters : public events, public ::testing::WithParamInterface<std::size_t> {
 protected:
  // ThreadSanitizer counts every greenlet as a thread, and dies past 8128 of them.
  static bool too_many_for_tsan(std::size_t n) {
#if defined(TENDRIL_HAS_TSAN)
    return n > 4000;
#else
    (void)n;
    return false;
#endif
  }
};

TEST_P(event_waiters, set_wakes_every_waiter) {
  const std::size_t n = GetParam();
  if (too_many_for_tsan(n)) GTEST_SKIP() << "ThreadSanitizer allows at most 8128 greenlets";
  event e;
  std::size_t woke = 0;
  std::vector<task<void>> all;
  all.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    all.push_back(spawn([&] {
      e.wait();
      ++woke;
    }));
  tendril::sleep(0s);
  EXPECT_EQ(woke, 0u);
  e.set();
  tendril::joinall(all);
  EXPECT_EQ(woke, n);
}

TEST_P(event_waiters, set_then_clear_still_wakes_every_waiter_and_they_return_true) {
  const std::size_t n = GetParam();
  if (too_many_for_tsan(n)) GTEST_SKIP() << "ThreadSanitizer allows at most 8128 greenlets";
  event e;
  std::size_t got_true = 0;
  std::vector<task<void>> all;
  all.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    all.push_back(spawn([&, i] {
      if (i % 2 == 0) {
        if (e.wait_for(1h)) ++got_true;
      } else {
        e.wait();
        ++got_true;
      }
    }));
  tendril::sleep(0s);
  const std::int64_t start = now_ns();
  e.set();
  e.clear();
  tendril::joinall(all);
  EXPECT_EQ(got_true, n);
  EXPECT_EQ(now_ns(), start);  // nobody waited for the hour
  EXPECT_FALSE(e.is_set());
}

INSTANTIATE_TEST_SUITE_P(counts, event_waiters,
                         ::testing::Values(std::size_t{1}, std::size_t{100},
                                           tendril::test::scaled(10000, 100)));

TEST_F(events, a_timed_out_waiter_is_not_counted_and_the_rest_still_wake) {
  event e;
  bool early = true;
  bool late = false;
  auto impatient = spawn([&] { early = e.wait_for(1s); });
  auto patient = spawn([&] { late = e.wait_for(10s); });
  tendril::sleep(2s);
  e.set();
  tendril::joinall(impatient, patient);
  EXPECT_FALSE(early);
  EXPECT_TRUE(late);
}

TEST_F(events, a_killed_waiter_leaves_the_event_usable) {
  event e;
  auto victim = spawn([&] { e.wait(); });
  bool woke = false;
  auto other = spawn([&] {
    e.wait();
    woke = true;
  });
  tendril::sleep(0s);
  victim.kill();
  EXPECT_TRUE(victim.successful());
  e.set();
  other.join();
  EXPECT_TRUE(woke);
}

TEST_F(events, main_waiting_on_an_event_nobody_can_set_gets_loop_exit_naming_it) {
  event never;
  try {
    never.wait();
    ADD_FAILURE() << "wait returned";
  } catch (const tendril::loop_exit& e) {
    EXPECT_TRUE(contains(e.what(), "this operation would block forever")) << e.what();
    EXPECT_TRUE(contains(e.what(), "'main'")) << e.what();
  }
  static_assert(std::is_base_of_v<std::runtime_error, tendril::loop_exit>);
  // The hub is fine afterwards.
  auto t = spawn([] { return 1; });
  EXPECT_EQ(t.get(), 1);
}

TEST_F(events, a_reused_event_works_after_clear) {
  event e;
  for (int round = 0; round < 3; ++round) {
    auto setter = spawn([&] {
      tendril::sleep(1s);
      e.set();
    });
    EXPECT_TRUE(e.wait_for(1h));
    e.clear();
    setter.join();
  }
}

// A waiter woken by set() took the event's lock to unlink itself when it resumed: an event
// destroyed once set() returned, before its waiters ran, was written after it was freed.
TEST_F(events, may_be_destroyed_once_set_returned_though_its_waiters_have_not_resumed) {
  auto* e = new event;
  int returned = 0;
  std::vector<task<void>> waiters;
  for (int i = 0; i < 3; ++i)
    waiters.push_back(spawn([e, &returned] {
      e->wait();
      ++returned;
    }));
  tendril::sleep(0s);
  e->set();
  delete e;
  const tendril::test::refilled<event> reused;  // the freed block: a later write to it shows
  tendril::joinall(waiters);
  EXPECT_EQ(returned, 3);
  EXPECT_TRUE(reused.untouched());
}

// --- other threads -------------------------------------------------------------------------

TEST_F(events_across_threads, set_from_another_thread_wakes_an_untimed_waiter) {
  event e;
  std::thread th([&] {
    std::this_thread::sleep_for(20ms);
    e.set();
  });
  e.wait();
  EXPECT_TRUE(e.is_set());
  th.join();
}

TEST_F(events_across_threads, set_from_another_thread_wakes_a_timed_waiter) {
  event e;
  std::thread th([&] {
    std::this_thread::sleep_for(20ms);
    e.set();
  });
  EXPECT_TRUE(e.wait_for(60s));
  th.join();
}

TEST_F(events_across_threads, set_from_another_thread_wakes_many_tasks) {
  event e;
  std::atomic<int> woke{0};
  std::vector<task<void>> all;
  for (int i = 0; i < 50; ++i)
    all.push_back(spawn([&, i] {
      if (i % 2 == 0) {
        if (e.wait_for(60s)) ++woke;
      } else {
        e.wait();
        ++woke;
      }
    }));
  tendril::sleep(0s);
  std::thread th([&] { e.set(); });
  tendril::joinall(all);
  th.join();
  EXPECT_EQ(woke, 50);
}

TEST_F(events_across_threads, waiters_in_several_threads_are_all_woken) {
  event e;
  std::atomic<int> woke{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      std::vector<task<void>> mine;
      for (int j = 0; j < 4; ++j)
        mine.push_back(spawn([&] {
          if (e.wait_for(60s)) ++woke;
        }));
      e.wait();
      ++woke;
      tendril::joinall(mine);
    });
  }
  std::this_thread::sleep_for(20ms);
  e.set();
  for (auto& th : threads) th.join();
  EXPECT_EQ(woke, 15);
}

TEST_F(events_across_threads, loop_exit_comes_once_no_other_thread_is_left_to_set_it) {
  // While another thread lives it might set the event, so the hub waits; once it is gone,
  // nothing can, and the wait ends with loop_exit instead of hanging.
  event never;
  std::atomic<bool> thread_done{false};
  std::thread th([&] {
    std::this_thread::sleep_for(50ms);
    thread_done = true;
  });
  bool got_loop_exit = false;
  try {
    never.wait();
  } catch (const tendril::loop_exit&) {
    got_loop_exit = true;
  }
  EXPECT_TRUE(got_loop_exit);
  EXPECT_TRUE(thread_done);
  th.join();
}

// In a ThreadSanitizer build the hub counted TSan's own thread, which the runtime starts with
// the process's first thread and keeps, as one that might set the event: the wait hung.
TEST_F(events_across_threads, a_wait_nobody_can_end_gets_loop_exit_after_a_thread_came_and_went) {
  std::atomic<bool> ran{false};
  std::thread([&] { ran = true; }).join();
  event never;
  EXPECT_THROW(never.wait(), tendril::loop_exit);
  EXPECT_TRUE(ran);
}

TEST_F(events_across_threads, set_and_clear_racing_with_waits_lose_no_wake) {
  // Another thread sets and clears the event over and over while this one waits again and
  // again: no wait may miss every set (each returns true, none runs out of time).
  const int rounds = static_cast<int>(tendril::test::scaled(200, 20));
  event e;
  std::atomic<bool> stop{false};
  std::thread setter([&] {
    while (!stop) {
      e.set();
      std::this_thread::sleep_for(100us);
      e.clear();
    }
  });
  int woke = 0;
  for (int i = 0; i < rounds; ++i) {
    if (e.wait_for(60s)) ++woke;
  }
  stop = true;
  setter.join();
  EXPECT_EQ(woke, rounds);
}

// set() of another thread stored the flag before it woke the waiters and unlocked the event's
// mutex; a wait() that saw the flag returned at once, and the event destroyed then was written
// by that set() afterwards (a heap-use-after-free, seen by ASan and ThreadSanitizer).
TEST_F(events_across_threads, a_waiter_may_destroy_the_event_as_soon_as_wait_returns) {
  const int rounds = static_cast<int>(tendril::test::scaled(2000, 200));
  int returned = 0;
  for (int i = 0; i < rounds; ++i) {
    auto* e = new event;
    std::thread setter([e] { e->set(); });
    if (i % 2 == 0) {
      while (!e->is_set()) std::this_thread::yield();
    }
    e->wait();
    delete e;
    ++returned;
    setter.join();
  }
  EXPECT_EQ(returned, rounds);
}

// A waiter woken by the set() of another thread took the event's lock when it resumed: an
// event that thread destroyed once set() returned was touched after it was gone.
TEST_F(events_across_threads,
       the_setting_thread_may_destroy_it_before_the_greenlets_it_woke_resume) {
  tendril::test::fenced<event> e;
  int returned = 0;
  std::vector<task<void>> waiters;
  for (int i = 0; i < 3; ++i)
    waiters.push_back(spawn([&, i] {
      if (i == 0) {
        e->wait();
      } else {
        EXPECT_TRUE(e->wait_for(60s));
      }
      ++returned;
    }));
  tendril::sleep(0s);
  std::thread setter([&] {
    e->set();
    e.destroy();
  });
  setter.join();  // blocks this thread: the woken greenlets resume only after
  tendril::joinall(waiters);
  EXPECT_EQ(returned, 3);
}

// Time points far in the future in coarse units (whose distance from now overflows in
// nanoseconds) mean "no time limit" to every *_until call, not "already past".
TEST_F(events, wait_until_a_far_coarse_time_point_waits_for_the_set) {
  using namespace std::chrono;
  tendril::event e;
  auto setter = tendril::spawn([&] {
    tendril::sleep(1s);
    e.set();
  });
  EXPECT_TRUE(e.wait_until(time_point<steady_clock, seconds>::max()));
  e.clear();
  auto again = tendril::spawn([&] {
    tendril::sleep(1s);
    e.set();
  });
  EXPECT_TRUE(e.wait_until(time_point<system_clock, hours>::max()));
  tendril::queue<int> q;
  auto putter = tendril::spawn([&] {
    tendril::sleep(1s);
    q.put(5);
  });
  EXPECT_EQ(q.get_until(time_point<system_clock, hours>::max()), std::optional<int>(5));
  auto t = tendril::spawn([] { tendril::sleep(1s); });
  EXPECT_TRUE(t.join_until(time_point<steady_clock, seconds>::max()));
  setter.join();
  again.join();
  putter.join();
  // Far in the past in coarse units: already past, at once.
  EXPECT_FALSE(tendril::event{}.wait_until(time_point<steady_clock, seconds>::min()));
}
