// mutex and condition_variable: Lockable for std::lock_guard, std::unique_lock and
// std::scoped_lock, first come first served, misuse reported (recursive lock, unlock by a
// greenlet that does not hold it), and wait / notify_one / notify_all / the predicate forms,
// with the mutex always retaken, also when a kill or a timeout ends the wait. Modelled on
// gevent's test__lock.py and CPython's lock_tests.py (as gevent runs them).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fenced.hpp"
#include "hub/clock.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::condition_variable;
using tendril::mutex;
using tendril::spawn;
using tendril::task;

namespace {

constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class mutexes : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

class condition_variables : public mutexes {};

}  // namespace

// --- mutex ---------------------------------------------------------------------------------

TEST_F(mutexes, works_with_lock_guard_unique_lock_and_scoped_lock) {
  mutex m;
  mutex other;
  {
    std::lock_guard lock(m);
    EXPECT_FALSE(m.try_lock());  // held (by this greenlet: try_lock just says no)
  }
  {
    std::unique_lock lock(m);
    EXPECT_TRUE(lock.owns_lock());
    lock.unlock();
    EXPECT_TRUE(lock.try_lock());
  }
  { std::scoped_lock both(m, other); }
  {
    std::unique_lock lock(m, std::defer_lock);
    EXPECT_TRUE(lock.try_lock_for(1s));
  }
  EXPECT_TRUE(m.try_lock());
  m.unlock();
}

TEST_F(mutexes, only_one_greenlet_holds_it_at_a_time) {
  mutex m;
  int inside = 0;
  int most = 0;
  std::vector<task<void>> all;
  for (int i = 0; i < 20; ++i)
    all.push_back(spawn([&, i] {
      std::lock_guard lock(m);
      ++inside;
      most = std::max(most, inside);
      tendril::sleep(std::chrono::milliseconds(1 + i % 3));
      --inside;
    }));
  tendril::joinall(all);
  EXPECT_EQ(most, 1);
}

TEST_F(mutexes, lock_is_first_come_first_served) {
  mutex m;
  std::vector<int> order;
  m.lock();
  std::vector<task<void>> all;
  for (int i = 0; i < 5; ++i)
    all.push_back(spawn([&, i] {
      tendril::sleep(std::chrono::milliseconds(i));  // arrive in order
      std::lock_guard lock(m);
      order.push_back(i);
    }));
  tendril::sleep(1s);
  m.unlock();
  tendril::joinall(all);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST_F(mutexes, locking_it_twice_from_one_greenlet_throws_logic_error) {
  mutex m;
  std::lock_guard lock(m);
  try {
    m.lock();
    ADD_FAILURE() << "locked twice";
  } catch (const std::logic_error& e) {
    EXPECT_TRUE(contains(e.what(), "'main'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "already holds")) << e.what();
  }
  EXPECT_THROW((void)m.try_lock_for(1s), std::logic_error);
}

TEST_F(mutexes, unlock_by_a_greenlet_that_does_not_hold_it_throws_logic_error) {
  mutex m;
  EXPECT_THROW(m.unlock(), std::logic_error);  // nobody holds it
  m.lock();
  std::string error;
  auto intruder = spawn([&] {
    try {
      m.unlock();
    } catch (const std::logic_error& e) {
      error = e.what();
    }
  });
  intruder.join();
  EXPECT_TRUE(contains(error, "'" + intruder.name() + "'")) << error;
  EXPECT_TRUE(contains(error, "does not hold")) << error;
  EXPECT_FALSE(m.try_lock());  // still held by main
  m.unlock();
}

// The holder was known by its record's address: once it ended without unlocking, a later
// greenlet whose record reused that address passed for it (its unlock() succeeded, its
// lock() threw "already holds this mutex").
TEST_F(mutexes, a_later_greenlet_never_passes_for_a_holder_that_ended) {
  // A holder, then two checkers, one after another, all the same function (so records of
  // one size): a task's record is freed while the next one runs, so the second checker's
  // reuses the holder's.
  constexpr int rounds = 10;
  // Each mutex stays held by a greenlet that ended, and destroying it would stop the
  // process: its storage goes without its destructor.
  struct storage {
    alignas(mutex) unsigned char bytes[sizeof(mutex)];
  };
  std::vector<std::unique_ptr<storage>> storages;
  std::vector<mutex*> held;
  bool hold = false;
  int unlock_refused = 0;
  int lock_timed_out = 0;
  auto step = [&] {
    if (hold) {
      held.back()->lock();
      return;
    }
    for (auto& m : held) {
      try {
        m->unlock();
      } catch (const std::logic_error&) {
        ++unlock_refused;
      }
      if (!m->try_lock_for(1ms)) ++lock_timed_out;
    }
  };
  for (int i = 0; i < rounds; ++i) {
    storages.push_back(std::make_unique<storage>());
    held.push_back(new (storages.back()->bytes) mutex);
    hold = true;
    spawn(step).join();
    hold = false;
    spawn(step).join();
    spawn(step).join();
  }
  const int tries = rounds * (rounds + 1);
  EXPECT_EQ(unlock_refused, tries);
  EXPECT_EQ(lock_timed_out, tries);
}

TEST_F(mutexes, try_lock_for_returns_false_when_the_time_runs_out) {
  mutex m;
  auto holder = spawn([&] {
    std::lock_guard lock(m);
    tendril::sleep(10s);
  });
  tendril::sleep(0s);
  const std::int64_t start = now_ns();
  EXPECT_FALSE(m.try_lock_for(2s));
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  EXPECT_FALSE(m.try_lock_for(-1s));
  EXPECT_TRUE(m.try_lock_for(1h));
  m.unlock();
  holder.join();
}

TEST_F(mutexes, a_killed_waiter_does_not_get_the_mutex) {
  mutex m;
  m.lock();
  bool victim_got = false;
  auto victim = spawn([&] {
    m.lock();
    victim_got = true;
    m.unlock();
  });
  bool next_got = false;
  auto next = spawn([&] {
    std::lock_guard lock(m);
    next_got = true;
  });
  tendril::sleep(0s);
  victim.kill();
  m.unlock();
  next.join();
  EXPECT_FALSE(victim_got);
  EXPECT_TRUE(next_got);
  EXPECT_TRUE(m.try_lock());
  m.unlock();
}

TEST_F(mutexes, a_timeout_scope_interrupts_lock) {
  mutex m;
  auto holder = spawn([&] {
    std::lock_guard lock(m);
    tendril::sleep(10s);
  });
  tendril::sleep(0s);
  {
    tendril::timeout t(1s);
    EXPECT_THROW(m.lock(), tendril::timeout_error);
  }
  holder.join();
  EXPECT_TRUE(m.try_lock());
  m.unlock();
}

// The destructor now stops the process while the mutex is held; unlocked, with nobody left
// to hand it to (the last waiter timed out), it goes quietly, and a waiter it was handed to
// may destroy it once it unlocked it in turn.
TEST_F(mutexes, may_be_destroyed_once_unlocked_with_no_waiter_left) {
  auto* m = new mutex;
  m->lock();
  auto late = spawn([m] { return m->try_lock_for(1s); });
  tendril::sleep(2s);
  m->unlock();
  EXPECT_FALSE(late.get());
  delete m;

  m = new mutex;
  m->lock();
  auto heir = spawn([m] {
    m->lock();
    m->unlock();
    delete m;
  });
  tendril::sleep(0s);
  m->unlock();
  heir.join();
  EXPECT_TRUE(heir.successful());
}

// --- condition_variable --------------------------------------------------------------------

TEST_F(condition_variables, notify_one_wakes_the_longest_waiter) {
  mutex m;
  condition_variable cv;
  std::vector<int> order;
  std::vector<task<void>> all;
  for (int i = 0; i < 3; ++i)
    all.push_back(spawn([&, i] {
      std::unique_lock lock(m);
      cv.wait(lock);
      EXPECT_TRUE(lock.owns_lock());
      order.push_back(i);
    }));
  tendril::sleep(0s);
  cv.notify_one();
  tendril::sleep(0s);
  EXPECT_EQ(order, (std::vector<int>{0}));
  cv.notify_one();
  tendril::sleep(0s);
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
  cv.notify_one();
  tendril::joinall(all);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

TEST_F(condition_variables, notify_all_wakes_every_waiter) {
  mutex m;
  condition_variable cv;
  int woke = 0;
  std::vector<task<void>> all;
  for (int i = 0; i < 10; ++i)
    all.push_back(spawn([&] {
      std::unique_lock lock(m);
      cv.wait(lock);
      ++woke;
    }));
  tendril::sleep(0s);
  cv.notify_all();
  tendril::joinall(all);
  EXPECT_EQ(woke, 10);
}

TEST_F(condition_variables, a_notify_without_waiters_is_not_remembered) {
  mutex m;
  condition_variable cv;
  cv.notify_one();
  cv.notify_all();
  std::unique_lock lock(m);
  EXPECT_EQ(cv.wait_for(lock, 1s), std::cv_status::timeout);
}

TEST_F(condition_variables, the_predicate_form_waits_until_it_holds) {
  mutex m;
  condition_variable cv;
  int value = 0;
  int checks = 0;
  auto consumer = spawn([&] {
    std::unique_lock lock(m);
    cv.wait(lock, [&] {
      ++checks;
      return value == 3;
    });
    return value;
  });
  for (int i = 1; i <= 3; ++i) {
    tendril::sleep(1s);
    {
      std::lock_guard lock(m);
      value = i;
    }
    cv.notify_all();
  }
  EXPECT_EQ(consumer.get(), 3);
  EXPECT_EQ(checks, 4);  // once at first, then once per notify
}

TEST_F(condition_variables, wait_for_times_out_and_holds_the_mutex_again) {
  mutex m;
  condition_variable cv;
  std::unique_lock lock(m);
  const std::int64_t start = now_ns();
  EXPECT_EQ(cv.wait_for(lock, 2s), std::cv_status::timeout);
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  EXPECT_TRUE(lock.owns_lock());
  EXPECT_EQ(cv.wait_until(lock, std::chrono::steady_clock::now() + 1s), std::cv_status::timeout);
  EXPECT_TRUE(lock.owns_lock());
  EXPECT_EQ(cv.wait_for(lock, -1s), std::cv_status::timeout);
  EXPECT_TRUE(lock.owns_lock());
}

TEST_F(condition_variables, wait_for_with_a_predicate_returns_its_value) {
  mutex m;
  condition_variable cv;
  bool flag = false;
  std::unique_lock lock(m);
  EXPECT_FALSE(cv.wait_for(lock, 1s, [&] { return flag; }));
  EXPECT_TRUE(lock.owns_lock());
  auto setter = spawn([&] {
    tendril::sleep(1s);
    std::lock_guard guard(m);
    flag = true;
    cv.notify_one();
  });
  EXPECT_TRUE(cv.wait_for(lock, 1h, [&] { return flag; }));
  EXPECT_TRUE(lock.owns_lock());
  lock.unlock();
  setter.join();
}

TEST_F(condition_variables, a_woken_waiter_waits_for_the_notifier_to_unlock) {
  mutex m;
  condition_variable cv;
  std::vector<std::string> trace;
  auto waiter = spawn([&] {
    std::unique_lock lock(m);
    cv.wait(lock);
    trace.push_back("waiter has the mutex");
  });
  tendril::sleep(0s);
  {
    std::lock_guard lock(m);
    cv.notify_one();
    tendril::sleep(1s);  // the waiter is woken but cannot take the mutex yet
    trace.push_back("notifier unlocks");
  }
  waiter.join();
  EXPECT_EQ(trace, (std::vector<std::string>{"notifier unlocks", "waiter has the mutex"}));
}

TEST_F(condition_variables, a_timeout_scope_ends_the_wait_with_the_mutex_retaken) {
  mutex m;
  condition_variable cv;
  std::unique_lock lock(m);
  bool owned_in_catch = false;
  {
    tendril::timeout t(1s);
    try {
      cv.wait(lock);
    } catch (const tendril::timeout_error&) {
      owned_in_catch = lock.owns_lock();
    }
  }
  EXPECT_TRUE(owned_in_catch);
  bool other_got = true;
  auto other = spawn([&] { other_got = m.try_lock(); });
  other.join();
  EXPECT_FALSE(other_got);  // main still holds it
}

TEST_F(condition_variables, a_killed_waiter_retakes_the_mutex_and_its_lock_releases_it) {
  mutex m;
  condition_variable cv;
  bool owned_while_unwinding = false;
  auto victim = spawn([&] {
    std::unique_lock lock(m);
    struct check {
      std::unique_lock<mutex>& lock;
      bool& seen;
      ~check() { seen = lock.owns_lock(); }
    } on_unwind{lock, owned_while_unwinding};
    cv.wait(lock);
  });
  tendril::sleep(0s);
  victim.kill();
  EXPECT_TRUE(owned_while_unwinding);
  EXPECT_TRUE(m.try_lock());  // released by the victim's unique_lock
  m.unlock();
}

TEST_F(condition_variables, a_kill_during_the_relock_is_raised_at_the_next_blocking_call) {
  mutex m;
  condition_variable cv;
  bool returned_with_lock = false;
  bool went_on = false;
  auto victim = spawn([&] {
    std::unique_lock lock(m);
    cv.wait(lock);
    returned_with_lock = lock.owns_lock();
    tendril::sleep(1s);  // the kill is raised here
    went_on = true;
  });
  tendril::sleep(0s);
  m.lock();
  cv.notify_one();
  victim.kill(false);  // the victim is woken, and then waits for the mutex
  tendril::sleep(0s);
  EXPECT_FALSE(victim.ready());
  m.unlock();
  victim.join();
  EXPECT_TRUE(returned_with_lock);
  EXPECT_FALSE(went_on);
  EXPECT_TRUE(victim.successful());
  EXPECT_TRUE(m.try_lock());
  m.unlock();
}

TEST_F(condition_variables, a_timeout_during_the_relock_is_raised_at_the_next_blocking_call) {
  mutex m;
  condition_variable cv;
  bool returned_with_lock = false;
  const tendril::timeout* source = nullptr;
  auto waiter = spawn([&] {
    tendril::timeout t(2s);
    std::unique_lock lock(m);
    try {
      cv.wait(lock);  // notified at once, then waits 5 s for the mutex: the scope fires then
      returned_with_lock = lock.owns_lock();
      tendril::sleep(1h);
    } catch (const tendril::timeout_error& e) {
      source = e.source() == &t ? e.source() : nullptr;
    }
  });
  tendril::sleep(0s);
  {
    std::lock_guard lock(m);
    cv.notify_one();
    tendril::sleep(5s);
  }
  waiter.join();
  EXPECT_TRUE(returned_with_lock);
  EXPECT_NE(source, nullptr);
}

TEST_F(condition_variables, wait_without_holding_the_lock_throws_logic_error) {
  mutex m;
  condition_variable cv;
  std::unique_lock lock(m, std::defer_lock);
  EXPECT_THROW(cv.wait(lock), std::logic_error);
  EXPECT_FALSE(lock.owns_lock());
}

TEST(condition_variables_across_threads, notify_from_another_thread_wakes_a_waiter) {
  // The other thread notifies until this one saw a wake (a notify before the wait began is
  // not remembered).
  mutex m;
  condition_variable cv;
  std::atomic<bool> stop{false};
  std::thread th([&] {
    while (!stop) {
      cv.notify_all();
      std::this_thread::sleep_for(1ms);
    }
  });
  std::unique_lock lock(m);
  EXPECT_EQ(cv.wait_for(lock, 60s), std::cv_status::no_timeout);
  EXPECT_TRUE(lock.owns_lock());
  stop = true;
  th.join();
}

// A waiter woken by the notify of another thread took the variable's lock when it resumed: a
// condition_variable that thread destroyed once notify_all() returned was touched after it was
// gone.
TEST(condition_variables_across_threads,
     the_notifying_thread_may_destroy_it_before_the_greenlet_it_woke_resumes) {
  mutex m;
  tendril::test::fenced<condition_variable> cv;
  bool woke = false;
  auto waiter = spawn([&] {
    std::unique_lock lock(m);
    cv->wait(lock);
    woke = true;
  });
  tendril::sleep(0s);
  std::thread notifier([&] {
    cv->notify_all();
    cv.destroy();
  });
  notifier.join();  // blocks this thread: the woken greenlet resumes only after
  waiter.join();
  EXPECT_TRUE(woke);
}

TEST_F(mutexes, try_lock_until_gives_up_at_a_time_point) {
  mutex m;
  m.lock();
  auto t = spawn([&] {
    EXPECT_FALSE(m.try_lock_until(std::chrono::steady_clock::now() + 100ms));
    const bool got = m.try_lock_until(std::chrono::steady_clock::now() + 1h);
    if (got) m.unlock();
    return got;
  });
  tendril::sleep(500ms);  // past the first limit
  m.unlock();
  EXPECT_TRUE(t.get());
}

// Greenlets of two threads take turns holding one mutex: each increment happens under it,
// none is lost (and under TSan, no race is reported on the mutex's own state).
TEST(mutexes_across_threads, greenlets_of_two_threads_share_a_mutex) {
  mutex m;
  long counter = 0;
  constexpr int per_greenlet = 2000;
  auto work = [&] {
    std::vector<task<void>> ts;
    for (int g = 0; g < 3; ++g) {
      ts.push_back(spawn([&] {
        for (int i = 0; i < per_greenlet; ++i) {
          std::lock_guard lock(m);
          const long seen = counter;
          if (i % 64 == 0) tendril::sleep(0s);  // switch while holding it
          counter = seen + 1;
        }
      }));
    }
    tendril::joinall(ts);
  };
  std::thread other(work);
  work();
  other.join();
  EXPECT_EQ(counter, 2L * 3 * per_greenlet);
}

// The same for a mutex: the waiter was handed the lock; it holds it, and invalid_switch comes
// out of its next blocking call (before, lock() threw and the mutex stayed locked for ever).
TEST_F(mutexes, a_waiter_switched_into_by_hand_after_unlock_holds_the_mutex) {
  mutex m;
  bool locked = false;
  bool got_invalid_switch = false;
  auto t = spawn([&] {
    std::lock_guard lock(m);
    locked = true;
    try {
      tendril::sleep(0s);
    } catch (const tendril::invalid_switch&) {
      got_invalid_switch = true;
    }
  });
  m.lock();
  tendril::sleep(0s);  // t waits in lock()
  m.unlock();          // handed to t
  {
    tendril::detail::waiter come_back;
    come_back.wake();
    t.greenlet().switch_to();
  }
  t.join();
  EXPECT_TRUE(locked);
  EXPECT_TRUE(got_invalid_switch);
  EXPECT_TRUE(m.try_lock());
  m.unlock();
}

// Retaking the mutex after the wait can never succeed (its holder waits for an event nobody
// sets): the wait ends with loop_exit, without the lock. Before, the retake ran in a
// destructor and the exception called std::terminate.
TEST_F(condition_variables, a_relock_that_can_never_succeed_raises_loop_exit) {
  mutex m;
  condition_variable cv;
  tendril::event never;
  std::unique_lock lock(m);
  auto holder = spawn([&] {
    std::lock_guard g(m);  // takes the mutex once the wait below lets go of it
    never.wait();
  });
  EXPECT_THROW(cv.wait_for(lock, 50ms), tendril::loop_exit);
  EXPECT_FALSE(lock.owns_lock());
  never.set();
  holder.join();
  EXPECT_TRUE(holder.successful());
  EXPECT_TRUE(m.try_lock());
  m.unlock();
}

TEST_F(condition_variables, a_relock_that_can_never_succeed_in_a_timeout_scope_raises_loop_exit) {
  mutex m;
  condition_variable cv;
  tendril::event never;
  std::unique_lock lock(m);
  auto holder = spawn([&] {
    std::lock_guard g(m);
    never.wait();
  });
  {
    tendril::timeout t(50ms);
    EXPECT_THROW(cv.wait(lock), tendril::loop_exit);
  }
  EXPECT_FALSE(lock.owns_lock());
  never.set();
  holder.join();
}

// A notified waiter took the variable's lock to unlink itself when it resumed: a
// condition_variable destroyed once notify_all() returned was written after it was freed.
TEST_F(condition_variables,
       may_be_destroyed_once_notify_returned_though_its_waiters_have_not_resumed) {
  mutex m;
  auto* cv = new condition_variable;
  int woke = 0;
  std::vector<task<void>> waiters;
  for (int i = 0; i < 3; ++i)
    waiters.push_back(spawn([&m, cv, &woke] {
      std::unique_lock lock(m);
      cv->wait(lock);
      ++woke;
    }));
  tendril::sleep(0s);
  cv->notify_all();
  delete cv;
  const tendril::test::refilled<condition_variable>
      reused;  // the freed block: a later write to it shows
  tendril::joinall(waiters);
  EXPECT_EQ(woke, 3);
  EXPECT_TRUE(reused.untouched());
}
