// sleep(), sleep_until() and the current greenlet's name and id: sleeping blocks only the
// caller, sleepers wake in deadline order, sleep(0s) round-robins the ready greenlets in
// order, a busy yielding loop cannot starve a timer, and durations at the edges. Modelled on
// gevent's test__sleep0.py, test__hub.py (TestSleep) and test__greenlet.py.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hub/clock.hpp"
#include "tendril/tendril.hpp"
#include "test_scale.hpp"

using namespace std::chrono_literals;
using tendril::spawn;
using tendril::task;

namespace {

constexpr std::int64_t ms_ns = 1'000'000;
constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

class sleeping : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

}  // namespace

TEST_F(sleeping, sleep_waits_at_least_the_duration) {
  const std::int64_t start = now_ns();
  tendril::sleep(1500ms);
  EXPECT_GE(now_ns() - start, 1500 * ms_ns);
  EXPECT_LT(now_ns() - start, 2 * second_ns);
}

TEST_F(sleeping, sleep_blocks_only_the_calling_greenlet) {
  std::vector<std::string> trace;
  auto a = spawn([&] {
    trace.push_back("a starts");
    tendril::sleep(2s);
    trace.push_back("a ends");
  });
  auto b = spawn([&] {
    trace.push_back("b starts");
    tendril::sleep(1s);
    trace.push_back("b ends");
  });
  trace.push_back("main sleeps");
  const std::int64_t start = now_ns();
  tendril::sleep(3s);
  trace.push_back("main wakes");
  EXPECT_EQ(trace, (std::vector<std::string>{"main sleeps", "a starts", "b starts", "b ends",
                                             "a ends", "main wakes"}));
  // Concurrent: three seconds in all, not six.
  EXPECT_LT(now_ns() - start, 4 * second_ns);
  tendril::joinall(a, b);
}

TEST_F(sleeping, sleepers_wake_in_deadline_order) {
  std::vector<int> order;
  std::vector<task<void>> all;
  const int durations[] = {5, 1, 4, 2, 3};
  for (int d : durations)
    all.push_back(spawn([&order, d] {
      tendril::sleep(std::chrono::seconds(d));
      order.push_back(d);
    }));
  tendril::joinall(all);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4, 5}));
}

TEST_F(sleeping, sleepers_with_the_same_deadline_wake_in_the_order_they_slept) {
  std::vector<int> order;
  std::vector<task<void>> all;
  // The paused clock stands still within a pass, so all ten deadlines are equal.
  for (int i = 0; i < 10; ++i)
    all.push_back(spawn([&order, i] {
      tendril::sleep(1s);
      order.push_back(i);
    }));
  tendril::joinall(all);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST_F(sleeping, sleep_zero_round_robins_ready_greenlets_in_order) {
  std::vector<int> trace;
  std::vector<task<void>> all;
  for (int i = 0; i < 4; ++i)
    all.push_back(spawn([&trace, i] {
      for (int round = 0; round < 3; ++round) {
        trace.push_back(i);
        tendril::sleep(0s);
      }
    }));
  tendril::joinall(all);
  EXPECT_EQ(trace, (std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}));
}

TEST_F(sleeping, sleep_zero_lets_every_ready_greenlet_run_once_then_continues) {
  std::vector<int> trace;
  std::vector<task<void>> all;
  for (int i = 0; i < 3; ++i)
    all.push_back(spawn([&trace, i] {
      for (int round = 0; round < 100; ++round) {
        trace.push_back(i);
        tendril::sleep(0s);
      }
    }));
  tendril::sleep(0s);
  EXPECT_EQ(trace, (std::vector<int>{0, 1, 2}));
  tendril::sleep(0s);
  EXPECT_EQ(trace, (std::vector<int>{0, 1, 2, 0, 1, 2}));
  tendril::killall(all);
  for (auto& t : all) EXPECT_TRUE(t.successful());
  EXPECT_LE(trace.size(), 9u);  // each ran at most once more before its kill was raised
}

TEST_F(sleeping, a_greenlet_that_only_yields_can_be_killed) {
  // Its waits are always woken already when a kill comes: the kill must still be raised at
  // its next yield (gevent: kill() ends a `while True: sleep(0)` loop).
  int rounds = 0;
  bool finished = false;
  auto spinner = spawn([&] {
    while (rounds < 1000) {
      ++rounds;
      tendril::sleep(0s);
    }
    finished = true;
  });
  tendril::sleep(0s);
  ASSERT_EQ(rounds, 1);
  spinner.kill();
  EXPECT_TRUE(spinner.ready());
  EXPECT_FALSE(finished);
  EXPECT_LE(rounds, 3);
}

// yield_now() looked only at the calling greenlet's own kill and timeouts: a generator's body
// looping on sleep(0s) never saw its consumer's kill or fired timeout (other waits do).
TEST_F(sleeping, a_generator_body_that_only_yields_is_ended_by_its_consumers_kill_or_timeout) {
  constexpr int give_up = 100'000;
  int rounds = 0;
  auto spin = [&](tendril::generator<int>::yielder& y) {
    for (rounds = 0; rounds < give_up; ++rounds) {
      tendril::detail::test_clock::advance_to(now_ns() + ms_ns);
      tendril::sleep(0s);
    }
    y.yield(rounds);
  };
  auto consumer = spawn([&] {
    tendril::generator<int> g(spin);
    for (int v : g) (void)v;
  });
  tendril::sleep(0s);  // the body spins
  consumer.kill();
  EXPECT_TRUE(consumer.ready());
  EXPECT_LT(rounds, give_up);
  bool timed_out = false;
  try {
    tendril::timeout limit(10ms);
    tendril::generator<int> g(spin);
    auto it = g.begin();
    (void)it;
  } catch (const tendril::timeout_error&) {
    timed_out = true;
  }
  EXPECT_TRUE(timed_out);
  EXPECT_LT(rounds, give_up);
}

TEST_F(sleeping, sleep_zero_does_not_advance_the_clock) {
  auto other = spawn([] { tendril::sleep(1s); });
  const std::int64_t start = now_ns();
  tendril::sleep(0s);
  tendril::sleep(0s);
  EXPECT_EQ(now_ns(), start);
  other.join();
}

TEST_F(sleeping, a_busy_sleep_zero_loop_cannot_starve_a_timer) {
  // The clock moves 1 ms per round while main keeps yielding: the sleeper, due after 10 ms,
  // must wake in the round that passes its deadline, or the one after.
  bool woke = false;
  auto sleeper = spawn([&] {
    tendril::sleep(10ms);
    woke = true;
  });
  tendril::sleep(0s);  // the sleeper is asleep
  const std::int64_t start = now_ns();
  int rounds = 0;
  while (!woke && rounds < 1000) {
    ++rounds;
    tendril::detail::test_clock::advance_to(start + rounds * ms_ns);
    tendril::sleep(0s);
  }
  EXPECT_TRUE(woke);
  EXPECT_GE(rounds, 10);
  EXPECT_LE(rounds, 11);
  sleeper.join();
}

TEST_F(sleeping, several_busy_yielders_cannot_starve_a_timer) {
  bool woke = false;
  bool stop = false;
  std::vector<task<void>> spinners;
  for (int i = 0; i < 3; ++i)
    spinners.push_back(spawn([&] {
      while (!stop) tendril::sleep(0s);
    }));
  auto sleeper = spawn([&] {
    tendril::sleep(5ms);
    woke = true;
  });
  tendril::sleep(0s);
  const std::int64_t start = now_ns();
  int rounds = 0;
  while (!woke && rounds < 1000) {
    ++rounds;
    tendril::detail::test_clock::advance_to(start + rounds * ms_ns);
    tendril::sleep(0s);
  }
  EXPECT_TRUE(woke);
  EXPECT_LE(rounds, 6);
  stop = true;
  tendril::joinall(spinners);
  sleeper.join();
}

TEST_F(sleeping, a_negative_duration_acts_as_zero) {
  std::vector<int> trace;
  auto t = spawn([&] { trace.push_back(1); });
  const std::int64_t start = now_ns();
  tendril::sleep(-5s);
  trace.push_back(2);
  EXPECT_EQ(trace, (std::vector<int>{1, 2}));  // it yielded, as sleep(0s) does
  EXPECT_EQ(now_ns(), start);
  tendril::sleep(std::chrono::nanoseconds::min());
  tendril::sleep(std::chrono::hours::min());
  EXPECT_EQ(now_ns(), start);
  t.join();
}

TEST_F(sleeping, sleep_until_a_past_time_point_returns_without_waiting) {
  const std::int64_t start = now_ns();
  tendril::sleep_until(std::chrono::steady_clock::now() - 1h);
  tendril::sleep_until(std::chrono::system_clock::time_point::min());
  tendril::sleep_until(std::chrono::steady_clock::time_point::min());
  EXPECT_EQ(now_ns(), start);
}

TEST_F(sleeping, sleepers_until_the_same_steady_time_point_wake_in_the_order_they_slept) {
  // Each sleep_until(tp) read steady_clock and the hub clock apart: the same tp became
  // deadlines a few hundred nanoseconds apart, and the sleepers woke out of order.
  tendril::detail::test_clock::resume();  // the paused clock converts through now() still
  for (int round = 0; round < 3; ++round) {
    const auto tp = std::chrono::steady_clock::now() + 20ms;
    std::vector<int> order;
    std::vector<task<void>> sleepers;
    for (int i = 0; i < 20; ++i) {
      sleepers.push_back(spawn([&, i] {
        tendril::sleep_until(tp);
        order.push_back(i);
      }));
    }
    tendril::joinall(sleepers);
    std::vector<int> expected(20);
    for (int i = 0; i < 20; ++i) expected[static_cast<std::size_t>(i)] = i;
    EXPECT_EQ(order, expected) << "round " << round;
  }
}

TEST_F(sleeping, a_loop_of_tiny_sleeps_cannot_starve_a_timer) {
  // A sleep whose deadline had passed by the time the waiter looked (1 ns later, on the real
  // clock) returned without switching: `while (!stop) sleep(1ns);` never let the timer that
  // sets stop fire, nor a ready greenlet run.
  tendril::detail::test_clock::resume();  // on the paused clock a 1 ns sleep always waits
  bool ran = false;
  auto ready = spawn([&] { ran = true; });
  tendril::sleep(1ns);
  EXPECT_TRUE(ran);
  bool stop = false;
  auto setter = spawn([&] {
    tendril::sleep(1ms);
    stop = true;
  });
  long spins = 0;
  while (!stop && spins < 1'000'000) {
    tendril::sleep(1ns);
    ++spins;
  }
  EXPECT_TRUE(stop);
  tendril::joinall(ready, setter);
}

TEST_F(sleeping, sleep_until_a_past_time_point_lets_every_ready_greenlet_run_first) {
  std::vector<int> trace;
  auto t = spawn([&] { trace.push_back(1); });
  tendril::sleep_until(std::chrono::steady_clock::now() - 1s);
  trace.push_back(2);
  auto u = spawn([&] { trace.push_back(3); });
  tendril::sleep_until(std::chrono::system_clock::time_point::min());
  trace.push_back(4);
  EXPECT_EQ(trace, (std::vector<int>{1, 2, 3, 4}));
  tendril::joinall(t, u);
}

TEST_F(sleeping, sleep_until_waits_for_a_time_point_of_any_clock) {
  const std::int64_t start = now_ns();
  tendril::sleep_until(std::chrono::steady_clock::now() + 2s);
  EXPECT_GE(now_ns() - start, 1 * second_ns);
  const std::int64_t mid = now_ns();
  tendril::sleep_until(std::chrono::system_clock::now() + 3s);
  EXPECT_GE(now_ns() - mid, 2 * second_ns);
}

TEST_F(sleeping, a_duration_too_large_for_the_clock_sleeps_until_killed) {
  bool woke = false;
  auto forever = spawn([&] {
    tendril::sleep(std::chrono::hours::max());
    woke = true;
  });
  auto also_forever = spawn([&] {
    tendril::sleep_until(std::chrono::steady_clock::time_point::max());
    woke = true;
  });
  auto other = spawn([] { tendril::sleep(1000h); });
  other.join();  // the clock passed 1000 h and the huge sleeps did not wrap around
  EXPECT_FALSE(woke);
  std::vector<task<void>> both{forever, also_forever};
  tendril::killall(both);
  EXPECT_FALSE(woke);
}

TEST_F(sleeping, a_sleep_without_any_task_starts_the_hub_and_returns) {
  // On a thread that has never blocked: the hub starts on this first call.
  std::int64_t slept = 0;
  std::thread th([&] {
    const std::int64_t start = now_ns();
    tendril::sleep(1s);
    slept = now_ns() - start;
  });
  th.join();
  EXPECT_GE(slept, second_ns);
}

TEST_F(sleeping, many_sleepers_all_wake) {
  const std::size_t n = tendril::test::scaled(2000, 10);
  std::size_t woke = 0;
  std::vector<task<void>> all;
  for (std::size_t i = 0; i < n; ++i)
    all.push_back(spawn([&woke, i] {
      tendril::sleep(std::chrono::milliseconds(i % 97));
      ++woke;
    }));
  tendril::joinall(all);
  EXPECT_EQ(woke, n);
}

// --- this_greenlet -------------------------------------------------------------------------

TEST_F(sleeping, this_greenlet_names_main_and_each_task) {
  EXPECT_EQ(tendril::this_greenlet::name(), "main");
  auto t = spawn([] { return tendril::this_greenlet::name(); });
  const std::string expected = t.name();
  EXPECT_EQ(t.get(), expected);
  EXPECT_EQ(expected.rfind("Greenlet-", 0), 0u);
}

TEST_F(sleeping, this_greenlet_ids_are_unique_and_stable) {
  std::set<std::uint64_t> ids;
  std::vector<task<void>> all;
  for (int i = 0; i < 10; ++i)
    all.push_back(spawn([&ids] {
      const std::uint64_t id = tendril::this_greenlet::get_id();
      tendril::sleep(0s);
      EXPECT_EQ(tendril::this_greenlet::get_id(), id);
      ids.insert(id);
    }));
  tendril::joinall(all);
  ids.insert(tendril::this_greenlet::get_id());
  EXPECT_EQ(ids.size(), 11u);
}

TEST_F(sleeping, this_greenlet_names_the_root_of_another_thread_apart_from_main) {
  std::string name;
  std::uint64_t id = 0;
  std::thread th([&] {
    name = tendril::this_greenlet::name();
    id = tendril::this_greenlet::get_id();
  });
  th.join();
  EXPECT_NE(name, "main");
  EXPECT_FALSE(name.empty());
  EXPECT_NE(id, tendril::this_greenlet::get_id());
}
