// semaphore and bounded_semaphore: permits, first come first served, time limits, waiters
// that time out or are killed, misuse (a negative count, releasing a bounded semaphore too
// often), and release() from another thread. Modelled on gevent's test__semaphore.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fenced.hpp"
#include "hub/clock.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::bounded_semaphore;
using tendril::semaphore;
using tendril::spawn;
using tendril::task;

namespace {

constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class semaphores : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

}  // namespace

TEST_F(semaphores, acquire_and_release_count_permits) {
  semaphore s(2);
  EXPECT_EQ(s.count(), 2);
  s.acquire();
  EXPECT_EQ(s.count(), 1);
  EXPECT_TRUE(s.try_acquire());
  EXPECT_EQ(s.count(), 0);
  EXPECT_FALSE(s.try_acquire());
  s.release();
  EXPECT_EQ(s.count(), 1);
  s.release(3);
  EXPECT_EQ(s.count(), 4);
  EXPECT_EQ(s.waiting(), 0u);
}

TEST_F(semaphores, the_default_holds_one_permit) {
  semaphore s;
  EXPECT_EQ(s.count(), 1);
  bounded_semaphore b;
  EXPECT_EQ(b.count(), 1);
}

TEST_F(semaphores, acquire_waits_until_a_permit_is_released) {
  semaphore s(0);
  std::int64_t released_at = 0;
  auto releaser = spawn([&] {
    tendril::sleep(2s);
    released_at = now_ns();
    s.release();
  });
  s.acquire();
  EXPECT_NE(released_at, 0);
  EXPECT_EQ(s.count(), 0);
  releaser.join();
}

TEST_F(semaphores, waiters_are_served_first_come_first_served) {
  semaphore s(0);
  std::vector<int> order;
  std::vector<task<void>> all;
  for (int i = 0; i < 6; ++i)
    all.push_back(spawn([&, i] {
      tendril::sleep(std::chrono::milliseconds(10 * i));  // arrive in order
      s.acquire();
      order.push_back(i);
    }));
  tendril::sleep(1s);
  EXPECT_EQ(s.waiting(), 6u);
  for (int i = 0; i < 6; ++i) {
    s.release();
    tendril::sleep(0s);
  }
  tendril::joinall(all);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5}));
}

TEST_F(semaphores, a_released_permit_goes_to_the_waiter_not_to_a_latecomer) {
  semaphore s(0);
  bool waiter_got = false;
  auto waiter = spawn([&] {
    s.acquire();
    waiter_got = true;
  });
  tendril::sleep(0s);
  s.release();  // handed to the waiter, which has not run yet
  EXPECT_EQ(s.count(), 0);
  EXPECT_FALSE(s.try_acquire());  // main arrives later: no permit for it
  bool latecomer_got = true;
  auto latecomer = spawn([&] { latecomer_got = s.try_acquire_for(1s); });
  tendril::joinall(waiter, latecomer);
  EXPECT_TRUE(waiter_got);
  EXPECT_FALSE(latecomer_got);
}

TEST_F(semaphores, try_acquire_refuses_while_others_wait_even_with_a_free_permit) {
  semaphore s(0);
  std::vector<task<void>> waiters;
  for (int i = 0; i < 2; ++i) waiters.push_back(spawn([&] { s.acquire(); }));
  tendril::sleep(0s);
  s.release(3);  // two go to the waiters, one stays free
  EXPECT_EQ(s.count(), 1);
  tendril::joinall(waiters);
  EXPECT_TRUE(s.try_acquire());
}

TEST_F(semaphores, release_of_several_permits_wakes_as_many_waiters) {
  semaphore s(0);
  int got = 0;
  std::vector<task<void>> all;
  for (int i = 0; i < 5; ++i)
    all.push_back(spawn([&] {
      if (s.try_acquire_for(10s)) ++got;
    }));
  tendril::sleep(0s);
  s.release(3);
  tendril::sleep(0s);
  EXPECT_EQ(got, 3);
  EXPECT_EQ(s.waiting(), 2u);
  s.release(2);
  tendril::joinall(all);
  EXPECT_EQ(got, 5);
  EXPECT_EQ(s.count(), 0);
}

TEST_F(semaphores, try_acquire_for_returns_false_when_the_time_runs_out) {
  semaphore s(0);
  const std::int64_t start = now_ns();
  EXPECT_FALSE(s.try_acquire_for(2s));
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  EXPECT_EQ(s.count(), 0);
  EXPECT_EQ(s.waiting(), 0u);
  EXPECT_FALSE(s.try_acquire_until(std::chrono::steady_clock::now() + 1s));
  EXPECT_FALSE(s.try_acquire_for(-1s));
  s.release();
  EXPECT_TRUE(s.try_acquire_for(-1s));  // a free permit needs no wait
}

TEST_F(semaphores, a_timed_out_waiter_takes_no_permit) {
  semaphore s(0);
  bool first = true;
  bool second = false;
  auto impatient = spawn([&] { first = s.try_acquire_for(1s); });
  auto patient = spawn([&] { second = s.try_acquire_for(10s); });
  tendril::sleep(2s);
  s.release();
  tendril::joinall(impatient, patient);
  EXPECT_FALSE(first);
  EXPECT_TRUE(second);
  EXPECT_EQ(s.count(), 0);
}

TEST_F(semaphores, a_killed_waiter_takes_no_permit) {
  semaphore s(0);
  auto victim = spawn([&] { s.acquire(); });
  tendril::sleep(0s);
  victim.kill();
  EXPECT_EQ(s.waiting(), 0u);
  s.release();
  EXPECT_EQ(s.count(), 1);
}

TEST_F(semaphores, a_waiter_that_timed_out_in_the_same_pass_as_a_release_is_skipped) {
  // The release and the waiter's deadline meet in one pass of the hub: the permit must go
  // to the next waiter, or stay free, never vanish.
  semaphore s(0);
  bool first = true;
  bool second = false;
  auto impatient = spawn([&] { first = s.try_acquire_for(1s); });
  auto patient = spawn([&] { second = s.try_acquire_for(1h); });
  auto releaser = tendril::spawn_later(1s, [&] { s.release(); });
  tendril::joinall(impatient, patient, releaser);
  EXPECT_FALSE(first);  // its deadline passed before the releaser ran
  EXPECT_TRUE(second);
  EXPECT_EQ(s.count(), 0);
}

TEST_F(semaphores, a_negative_count_throws_invalid_argument) {
  try {
    semaphore s(-1);
    ADD_FAILURE() << "constructed";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), "semaphore")) << e.what();
    EXPECT_TRUE(contains(e.what(), "-1")) << e.what();
  }
  EXPECT_THROW(bounded_semaphore(-3), std::invalid_argument);
  semaphore s(1);
  EXPECT_THROW(s.release(-1), std::invalid_argument);
  EXPECT_EQ(s.count(), 1);
}

TEST_F(semaphores, bounded_semaphore_over_release_throws_logic_error_naming_it) {
  bounded_semaphore b(2);
  b.acquire();
  b.release();
  try {
    b.release();
    ADD_FAILURE() << "released beyond the start";
  } catch (const std::logic_error& e) {
    EXPECT_TRUE(contains(e.what(), "bounded_semaphore")) << e.what();
    EXPECT_TRUE(contains(e.what(), "release")) << e.what();
  }
  EXPECT_EQ(b.count(), 2);  // changed nothing
  b.acquire();
  EXPECT_THROW(b.release(2), std::logic_error);
  EXPECT_EQ(b.count(), 1);
  b.release();
  EXPECT_EQ(b.count(), 2);
}

TEST_F(semaphores, bounded_semaphore_counts_permits_handed_to_waiters_as_in_use) {
  bounded_semaphore b(1);
  b.acquire();
  auto waiter = spawn([&] { b.acquire(); });  // keeps its permit
  tendril::sleep(0s);
  b.release();  // handed straight to the waiter: still none free
  EXPECT_EQ(b.count(), 0);
  waiter.join();
  b.release();  // the waiter's permit, given back on its behalf
  EXPECT_EQ(b.count(), 1);
  EXPECT_THROW(b.release(), std::logic_error);  // now one more than was ever acquired
  EXPECT_EQ(b.count(), 1);
}

TEST_F(semaphores, a_timeout_scope_interrupts_acquire) {
  semaphore s(0);
  tendril::timeout t(1s);
  EXPECT_THROW(s.acquire(), tendril::timeout_error);
  EXPECT_EQ(s.waiting(), 0u);
}

TEST_F(semaphores, limits_how_many_greenlets_are_inside_at_once) {
  semaphore s(3);
  int inside = 0;
  int most = 0;
  std::vector<task<void>> all;
  for (int i = 0; i < 30; ++i)
    all.push_back(spawn([&, i] {
      s.acquire();
      ++inside;
      most = std::max(most, inside);
      tendril::sleep(std::chrono::milliseconds(1 + i % 7));
      --inside;
      s.release();
    }));
  tendril::joinall(all);
  EXPECT_EQ(most, 3);
  EXPECT_EQ(s.count(), 3);
}

// --- other threads -------------------------------------------------------------------------

TEST(semaphores_across_threads, release_from_another_thread_wakes_an_untimed_waiter) {
  semaphore s(0);
  std::thread th([&] {
    std::this_thread::sleep_for(20ms);
    s.release();
  });
  s.acquire();
  EXPECT_EQ(s.count(), 0);
  th.join();
}

TEST(semaphores_across_threads, release_from_another_thread_wakes_a_timed_waiter) {
  semaphore s(0);
  std::thread th([&] {
    std::this_thread::sleep_for(20ms);
    s.release();
  });
  EXPECT_TRUE(s.try_acquire_for(60s));
  th.join();
}

// A waiter woken by the release() of another thread took the semaphore's lock when it
// resumed: a semaphore that thread destroyed once release() returned was touched after it was
// gone.
TEST(semaphores_across_threads,
     the_releasing_thread_may_destroy_it_before_the_greenlet_it_woke_resumes) {
  tendril::test::fenced<semaphore> s(0);
  bool acquired = false;
  auto waiter = spawn([&] {
    s->acquire();
    acquired = true;
  });
  tendril::sleep(0s);
  ASSERT_EQ(s->waiting(), 1u);
  std::thread releaser([&] {
    s->release();
    s.destroy();
  });
  releaser.join();  // blocks this thread: the woken greenlet resumes only after
  waiter.join();
  EXPECT_TRUE(acquired);
}

TEST(semaphores_across_threads, permits_flow_between_two_threads_without_loss) {
  const int rounds = 200;
  semaphore to_main(0);
  semaphore to_other(0);
  std::thread th([&] {
    for (int i = 0; i < rounds; ++i) {
      to_other.acquire();
      to_main.release();
    }
  });
  int got = 0;
  for (int i = 0; i < rounds; ++i) {
    to_other.release();
    if (to_main.try_acquire_for(60s)) ++got;
  }
  th.join();
  EXPECT_EQ(got, rounds);
  EXPECT_EQ(to_main.count(), 0);
  EXPECT_EQ(to_other.count(), 0);
}

TEST(semaphores_across_threads, many_tasks_share_permits_released_by_another_thread) {
  semaphore s(0);
  std::atomic<int> got{0};
  std::vector<task<void>> all;
  for (int i = 0; i < 20; ++i)
    all.push_back(spawn([&, i] {
      if (i % 2) {
        s.acquire();
        ++got;
      } else if (s.try_acquire_for(60s)) {
        ++got;
      }
    }));
  tendril::sleep(0s);
  std::thread th([&] {
    for (int i = 0; i < 20; ++i) s.release();
  });
  tendril::joinall(all);
  th.join();
  EXPECT_EQ(got, 20);
  EXPECT_EQ(s.count(), 0);
}

// A waiter switched into by hand (invalid_switch) after release() had handed it its permit:
// the acquire succeeds with that permit, and invalid_switch comes out of the next blocking
// call instead (before, the acquire threw and the permit was gone for good).
TEST_F(semaphores, a_waiter_switched_into_by_hand_after_release_keeps_its_permit) {
  semaphore s(0);
  bool acquired = false;
  bool got_invalid_switch = false;
  auto t = spawn([&] {
    s.acquire();
    acquired = true;
    try {
      tendril::sleep(0s);
    } catch (const tendril::invalid_switch&) {
      got_invalid_switch = true;
    }
    s.release();
  });
  tendril::sleep(0s);  // t waits in acquire()
  s.release();         // the permit is handed to t, which is now on the run queue
  {
    tendril::detail::waiter come_back;  // the hub resumes main once t has ended
    come_back.wake();
    t.greenlet().switch_to();  // by hand, not through the hub
  }
  t.join();
  EXPECT_TRUE(acquired);
  EXPECT_TRUE(got_invalid_switch);
  EXPECT_EQ(s.count(), 1);
  EXPECT_EQ(s.waiting(), 0u);
}

TEST_F(semaphores, a_release_past_ptrdiff_max_throws_and_changes_nothing) {
  semaphore s(1);
  const auto max = std::numeric_limits<std::ptrdiff_t>::max();
  try {
    s.release(max);
    ADD_FAILURE() << "release(PTRDIFF_MAX) on a count of 1 returned";
  } catch (const std::overflow_error& e) {
    EXPECT_TRUE(contains(e.what(), "tendril::semaphore::release")) << e.what();
  }
  EXPECT_EQ(s.count(), 1);
  s.release(max - 1);
  EXPECT_EQ(s.count(), max);

  bounded_semaphore b(1);
  EXPECT_THROW(b.release(max), std::logic_error);
  EXPECT_EQ(b.count(), 1);
  EXPECT_TRUE(b.try_acquire());
}

// A waiter handed a permit took the semaphore's lock to unlink itself when it resumed: a
// semaphore (or the mutex around it) destroyed once release() returned was written after it
// was freed.
TEST_F(semaphores, may_be_destroyed_once_release_returned_though_its_waiters_have_not_resumed) {
  auto* s = new semaphore(0);
  int acquired = 0;
  std::vector<task<void>> waiters;
  for (int i = 0; i < 3; ++i)
    waiters.push_back(spawn([s, &acquired] {
      s->acquire();
      ++acquired;
    }));
  tendril::sleep(0s);
  s->release(3);
  delete s;
  const tendril::test::refilled<semaphore> reused;  // the freed block: a later write to it shows
  tendril::joinall(waiters);
  EXPECT_EQ(acquired, 3);
  EXPECT_TRUE(reused.untouched());
}
