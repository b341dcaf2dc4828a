// timeout scopes, timeout_error and with_timeout: firing in a blocking call or at the next
// one, nesting in both orders, an outer scope never lost inside an inner timed wait, and
// durations that are negative or too large for the clock. Modelled on gevent's
// test__timeout.py and test__with_timeout.py.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "failing_new.hpp"
#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "hub/clock.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::event;
using tendril::spawn;
using tendril::timeout;
using tendril::timeout_error;

namespace {

constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

class timeouts : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

}  // namespace

TEST_F(timeouts, a_blocking_call_throws_timeout_error_once_the_time_has_passed) {
  event never;
  const std::int64_t start = now_ns();
  timeout t(2s);
  EXPECT_FALSE(t.fired());
  try {
    never.wait();
    ADD_FAILURE() << "wait returned";
  } catch (const timeout_error& e) {
    EXPECT_EQ(e.source(), &t);
    EXPECT_NE(std::string(e.what()).find("timeout"), std::string::npos);
  }
  EXPECT_TRUE(t.fired());
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  EXPECT_LT(now_ns() - start, 3 * second_ns);
}

TEST_F(timeouts, a_call_that_ends_in_time_is_not_interrupted) {
  timeout t(2s);
  EXPECT_NO_THROW(tendril::sleep(1s));
  EXPECT_FALSE(t.fired());
}

TEST_F(timeouts, leaving_the_scope_cancels_it) {
  {
    timeout t(1s);
    tendril::sleep(500ms);
  }
  EXPECT_NO_THROW(tendril::sleep(5s));
}

TEST_F(timeouts, cancel_stops_it_early) {
  timeout t(1s);
  t.cancel();
  EXPECT_NO_THROW(tendril::sleep(5s));
  EXPECT_FALSE(t.fired());
}

TEST_F(timeouts, cancel_drops_a_fired_but_undelivered_timeout) {
  timeout t(1s);
  // The clock passes the deadline while this greenlet yields: the scope fires after the
  // yield's wake-up was already due, so the error waits for the next blocking call...
  tendril::detail::test_clock::advance_to(now_ns() + 2 * second_ns);
  EXPECT_NO_THROW(tendril::sleep(0s));
  EXPECT_TRUE(t.fired());
  // ...unless the scope is cancelled first.
  t.cancel();
  EXPECT_NO_THROW(tendril::sleep(1s));
}

TEST_F(timeouts, a_scope_that_fired_while_the_greenlet_was_not_waiting_is_raised_at_its_next_call) {
  timeout t(1s);
  tendril::detail::test_clock::advance_to(now_ns() + 2 * second_ns);
  EXPECT_NO_THROW(tendril::sleep(0s));  // the scope fires during this yield
  EXPECT_TRUE(t.fired());
  try {
    tendril::sleep(0s);  // a yield is a blocking call too
    ADD_FAILURE() << "the pending timeout was not raised by sleep(0s)";
  } catch (const timeout_error& e) {
    EXPECT_EQ(e.source(), &t);
  }
}

TEST_F(timeouts, a_loop_that_only_yields_is_still_interrupted) {
  // gevent: `with Timeout(1): while True: sleep(0)` ends with Timeout.
  timeout t(1s);
  int rounds = 0;
  const std::int64_t start = now_ns();
  try {
    while (rounds < 100) {
      tendril::detail::test_clock::advance_to(start + (rounds + 1) * second_ns / 10);
      tendril::sleep(0s);
      ++rounds;
    }
  } catch (const timeout_error& e) {
    EXPECT_EQ(e.source(), &t);
  }
  EXPECT_GE(rounds, 9);
  EXPECT_LE(rounds, 11);
}

TEST_F(timeouts, a_scope_fires_once) {
  timeout t(1s);
  EXPECT_THROW(tendril::sleep(2s), timeout_error);
  EXPECT_NO_THROW(tendril::sleep(2s));
}

TEST_F(timeouts, timeout_error_is_not_caught_by_catching_std_exception) {
  static_assert(!std::is_base_of_v<std::exception, timeout_error>);
  bool swallowed = false;
  bool caught = false;
  try {
    timeout t(1s);
    try {
      tendril::sleep(1h);
    } catch (const std::exception&) {
      swallowed = true;
    }
  } catch (const timeout_error&) {
    caught = true;
  }
  EXPECT_FALSE(swallowed);
  EXPECT_TRUE(caught);
}

TEST_F(timeouts, a_timeout_in_one_task_does_not_touch_another) {
  auto limited = spawn([] {
    timeout t(1s);
    tendril::sleep(5s);
  });
  auto free = spawn([] {
    tendril::sleep(3s);
    return 1;
  });
  EXPECT_EQ(free.get(), 1);
  limited.join();
  EXPECT_FALSE(limited.successful());  // timeout_error left its body
  EXPECT_NE(limited.exception(), nullptr);
}

// --- nesting -------------------------------------------------------------------------------

TEST_F(timeouts, nested_with_the_inner_one_shorter_each_fires_its_own_scope) {
  event never;
  timeout outer(5s);
  const std::int64_t start = now_ns();
  {
    timeout inner(1s);
    try {
      never.wait();
      ADD_FAILURE();
    } catch (const timeout_error& e) {
      EXPECT_EQ(e.source(), &inner);
    }
    EXPECT_TRUE(inner.fired());
    EXPECT_FALSE(outer.fired());
  }
  try {
    never.wait();
    ADD_FAILURE();
  } catch (const timeout_error& e) {
    EXPECT_EQ(e.source(), &outer);
  }
  EXPECT_GE(now_ns() - start, 5 * second_ns);
}

TEST_F(timeouts, nested_with_the_outer_one_shorter_the_outer_fires_through_the_inner) {
  event never;
  const timeout* source = nullptr;
  bool inner_fired = true;
  timeout outer(1s);
  try {
    timeout inner(5s);
    try {
      never.wait();
    } catch (const timeout_error& e) {
      inner_fired = inner.fired();
      EXPECT_EQ(e.source(), &outer);
      throw;
    }
  } catch (const timeout_error& e) {
    source = e.source();
  }
  EXPECT_EQ(source, &outer);
  EXPECT_FALSE(inner_fired);
  EXPECT_TRUE(outer.fired());
}

TEST_F(timeouts, two_scopes_firing_in_the_same_pass_raise_the_outer_one) {
  event never;
  const timeout* source = nullptr;
  try {
    timeout outer(1s);
    try {
      timeout inner(1s);  // same deadline: both fire in one pass of the hub
      never.wait();
    } catch (const timeout_error& e) {
      source = e.source();
      EXPECT_EQ(e.source(), &outer);
      // The inner scope is gone; the outer one, now delivered, fires no more.
      EXPECT_NO_THROW(tendril::sleep(1s));
    }
  } catch (const timeout_error&) {
    ADD_FAILURE() << "a scope fired twice";
  }
  ASSERT_NE(source, nullptr);
}

TEST_F(timeouts, an_outer_timeout_fires_inside_an_inner_timed_wait_with_a_longer_limit) {
  event never;
  timeout outer(1s);
  const std::int64_t start = now_ns();
  try {
    never.wait_for(10s);
    ADD_FAILURE() << "wait_for returned";
  } catch (const timeout_error& e) {
    EXPECT_EQ(e.source(), &outer);
  }
  EXPECT_LT(now_ns() - start, 2 * second_ns);
}

TEST_F(timeouts, an_outer_timeout_is_not_lost_when_the_inner_wait_times_out_in_the_same_pass) {
  // The wait's own limit (1 s) and the scope (2 s) both pass before the hub looks again: the
  // wait ends first and returns false; the scope, which could not interrupt it, is raised by
  // the next blocking call.
  event never;
  timeout outer(2s);
  auto jumper = spawn([] { tendril::detail::test_clock::advance_to(now_ns() + 10 * second_ns); });
  EXPECT_FALSE(never.wait_for(1s));
  EXPECT_TRUE(outer.fired());
  try {
    tendril::sleep(1h);
    ADD_FAILURE() << "the outer timeout was lost";
  } catch (const timeout_error& e) {
    EXPECT_EQ(e.source(), &outer);
  }
  jumper.join();
}

TEST_F(timeouts, an_outer_timeout_is_not_lost_when_the_awaited_event_is_set_in_the_same_pass) {
  event e;
  timeout outer(1s);
  // A task sets the event and moves the clock past the scope's deadline: the wake comes
  // first, the scope fires in the hub's next pass while the waiter is already woken.
  auto setter = spawn([&] {
    e.set();
    tendril::detail::test_clock::advance_to(now_ns() + 2 * second_ns);
  });
  bool thrown = false;
  try {
    e.wait();  // the wake won
    EXPECT_TRUE(outer.fired());
    tendril::sleep(1h);  // the scope is raised here
    ADD_FAILURE() << "the outer timeout was lost";
  } catch (const timeout_error& x) {
    thrown = true;
    EXPECT_EQ(x.source(), &outer);
  }
  EXPECT_TRUE(thrown);
  setter.join();
}

// --- with_timeout --------------------------------------------------------------------------

TEST_F(timeouts, with_timeout_returns_the_result_of_a_call_that_ends_in_time) {
  auto r = tendril::with_timeout(
      2s,
      [](int a, int b) {
        tendril::sleep(1s);
        return a + b;
      },
      2, 3);
  EXPECT_EQ(r, 5);
}

TEST_F(timeouts, with_timeout_throws_timeout_error_when_the_call_runs_late) {
  bool after = false;
  EXPECT_THROW(tendril::with_timeout(1s,
                                     [&] {
                                       tendril::sleep(2s);
                                       after = true;
                                     }),
               timeout_error);
  EXPECT_FALSE(after);
  EXPECT_NO_THROW(tendril::sleep(5s));  // nothing left armed
}

TEST_F(timeouts, with_timeout_limits_a_join) {
  auto slow = spawn([] { tendril::sleep(10s); });
  EXPECT_THROW(tendril::with_timeout(1s, [&] { slow.join(); }), timeout_error);
  EXPECT_FALSE(slow.ready());
  slow.kill();
}

// --- durations at the edges ----------------------------------------------------------------

TEST_F(timeouts, a_negative_duration_fires_at_the_first_blocking_call) {
  const std::int64_t start = now_ns();
  timeout t(-5s);
  EXPECT_THROW(tendril::sleep(1h), timeout_error);
  EXPECT_EQ(now_ns(), start);
}

TEST_F(timeouts, a_duration_too_large_for_the_clock_never_fires) {
  timeout a(std::chrono::hours::max());
  timeout b(std::chrono::nanoseconds::max());
  timeout c(std::chrono::duration<double>(1e300));
  tendril::sleep(1000h);
  EXPECT_FALSE(a.fired());
  EXPECT_FALSE(b.fired());
  EXPECT_FALSE(c.fired());
}

// A NaN compares false with everything: timeout(NaN) never fired, sleep(NaN) slept for ever,
// spawn_later(NaN) never started, and nothing named the bad input.
TEST_F(timeouts, a_nan_duration_or_time_point_is_refused_with_invalid_argument) {
  const std::chrono::duration<double> nan(std::numeric_limits<double>::quiet_NaN());
  auto says_nan = [](auto&& call) {
    try {
      call();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what()).find("NaN") != std::string::npos;
    }
    return false;
  };
  EXPECT_TRUE(says_nan([&] { timeout t(nan); }));
  EXPECT_TRUE(says_nan([&] { tendril::sleep(nan); }));
  EXPECT_TRUE(says_nan([&] { tendril::spawn_later(nan, [] {}); }));
  auto t = spawn([] {});
  EXPECT_TRUE(says_nan([&] { t.join_for(nan); }));
  event never;
  EXPECT_TRUE(says_nan([&] { never.wait_for(nan); }));
  const std::chrono::time_point<std::chrono::steady_clock, std::chrono::duration<double>> at(nan);
  EXPECT_TRUE(says_nan([&] { tendril::sleep_until(at); }));
  t.join();
}

TEST_F(timeouts, a_time_point_in_the_past_fires_at_once) {
  timeout t(std::chrono::steady_clock::now() - 1s);
  EXPECT_THROW(tendril::sleep(1h), timeout_error);
}

TEST_F(timeouts, a_time_point_scope_fires_at_that_time) {
  event never;
  const std::int64_t start = now_ns();
  timeout t(std::chrono::steady_clock::now() + 3s);
  EXPECT_THROW(never.wait(), timeout_error);
  EXPECT_GE(now_ns() - start, 2 * second_ns);  // the two clocks need not agree to the ns
}

TEST_F(timeouts, a_sleep_of_a_duration_too_large_for_the_clock_is_ended_by_a_scope) {
  {
    timeout t(1s);
    EXPECT_THROW(tendril::sleep(std::chrono::hours::max()), timeout_error);
  }
  {
    timeout t(1s);
    EXPECT_THROW(tendril::sleep(std::chrono::nanoseconds::max()), timeout_error);
  }
  {
    timeout t(1s);
    EXPECT_THROW(tendril::sleep(std::chrono::duration<double, std::ratio<86400>>(1e300)),
                 timeout_error);
  }
}

TEST_F(timeouts, a_timed_wait_of_a_duration_too_large_for_the_clock_is_ended_by_its_event) {
  event e;
  auto setter = spawn([&] {
    tendril::sleep(1s);
    e.set();
  });
  EXPECT_TRUE(e.wait_for(std::chrono::hours::max()));
  e.clear();
  auto again = spawn([&] {
    tendril::sleep(1s);
    e.set();
  });
  EXPECT_TRUE(e.wait_until(std::chrono::steady_clock::time_point::max()));
  tendril::joinall(setter, again);
}

// The constructor linked the scope into its greenlet's chain before adding its timer: when
// that threw std::bad_alloc, the chain kept the unmade scope for the next blocking call to read.
TEST_F(timeouts, a_scope_whose_timer_finds_no_room_is_not_left_in_its_greenlets_chain) {
  if (!tendril::test::failing_new_works()) GTEST_SKIP() << "operator new is not the test's own";
  bool refused = false;
  const void* chain = &refused;
  bool outer_fired = false;
  std::thread([&] {
    tendril::sleep(0s);  // this thread's hub, whose timer heap has no room yet
    tendril::test::fail_next_new();
    try {
      timeout t(5s);
    } catch (const std::bad_alloc&) {
      refused = true;
    }
    chain = tendril::detail::thread_state::get().current()->timeouts;
    if (chain != nullptr) return;  // the next blocking call would read a scope that is gone
    timeout outer(1s);
    try {
      tendril::sleep(2s);
    } catch (const timeout_error& e) {
      outer_fired = e.source() == &outer;
    }
  }).join();
  EXPECT_TRUE(refused);
  EXPECT_EQ(chain, nullptr);
  EXPECT_TRUE(outer_fired);
}
