// wait(), wait_for() and iwait() over tasks, events, async results and queues: objects come
// back in the order they became ready. Modelled on gevent's test__iwait.py and
// test___wait.py.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "fenced.hpp"
#include "hub/clock.hpp"
#include "tendril/tendril.hpp"
#include "test_scale.hpp"

using namespace std::chrono_literals;
using tendril::async_result;
using tendril::event;
using tendril::spawn;
using tendril::task;
using tendril::waitable_ref;

namespace {

constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

class waiting : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

task<int> sleeper(int seconds) {
  return spawn([seconds] {
    tendril::sleep(std::chrono::seconds(seconds));
    return seconds;
  });
}

}  // namespace

TEST_F(waiting, wait_returns_tasks_in_the_order_they_ended) {
  auto a = sleeper(3);
  auto b = sleeper(1);
  auto c = sleeper(2);
  auto done = tendril::wait({a, b, c});
  ASSERT_EQ(done.size(), 3u);
  EXPECT_TRUE(done[0].is(b));
  EXPECT_TRUE(done[1].is(c));
  EXPECT_TRUE(done[2].is(a));
  EXPECT_TRUE(a.ready());
}

TEST_F(waiting, wait_with_a_count_returns_as_soon_as_that_many_are_ready) {
  auto a = sleeper(3);
  auto b = sleeper(1);
  auto c = sleeper(2);
  const std::int64_t start = now_ns();
  auto done = tendril::wait({a, b, c}, 2);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_TRUE(done[0].is(b));
  EXPECT_TRUE(done[1].is(c));
  EXPECT_LT(now_ns() - start, 3 * second_ns);
  EXPECT_FALSE(a.ready());
  a.join();
}

TEST_F(waiting, wait_for_returns_the_ready_subset_when_the_time_runs_out) {
  auto a = sleeper(10);
  auto b = sleeper(1);
  event never;
  const std::int64_t start = now_ns();
  auto done = tendril::wait_for({a, b, never}, 5s);
  EXPECT_GE(now_ns() - start, 5 * second_ns);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].is(b));
  a.kill();
}

TEST_F(waiting, wait_of_nothing_returns_at_once) {
  auto done = tendril::wait({});
  EXPECT_TRUE(done.empty());
  auto none = tendril::wait_for({}, 1s);
  EXPECT_TRUE(none.empty());
}

TEST_F(waiting, objects_ready_before_the_call_come_first) {
  event set_already;
  set_already.set();
  async_result<int> later;
  auto setter = spawn([&] {
    tendril::sleep(1s);
    later.set(4);
  });
  auto done = tendril::wait({later, set_already});
  ASSERT_EQ(done.size(), 2u);
  EXPECT_TRUE(done[0].is(set_already));
  EXPECT_TRUE(done[1].is(later));
  setter.join();
}

TEST_F(waiting, iwait_yields_mixed_objects_in_readiness_order) {
  event e;
  async_result<std::string> r;
  tendril::queue<int> q;
  auto t = sleeper(4);
  auto driver = spawn([&] {
    tendril::sleep(1s);
    q.put(1);
    tendril::sleep(1s);
    r.set("two");
    tendril::sleep(1s);
    e.set();
  });
  std::vector<std::string> order;
  for (const waitable_ref& w : tendril::iwait({t, e, r, q})) {
    if (w.is(t)) order.push_back("task");
    if (w.is(e)) order.push_back("event");
    if (w.is(r)) order.push_back("async_result");
    if (w.is(q)) order.push_back("queue");
  }
  EXPECT_EQ(order, (std::vector<std::string>{"queue", "async_result", "event", "task"}));
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(r.get(), "two");
  driver.join();
}

TEST_F(waiting, iwait_can_be_left_early_and_watches_nothing_afterwards) {
  event a;
  event b;
  {
    tendril::iwait it({a, b});
    a.set();
    auto first = it.begin();
    ASSERT_FALSE(first == std::default_sentinel);
    EXPECT_TRUE((*first).is(a));
  }
  b.set();  // nobody watches b any more: nothing may touch the gone iwait
  EXPECT_TRUE(b.is_set());
}

TEST_F(waiting, a_queue_is_ready_once_it_holds_an_item_or_is_closed) {
  tendril::queue<int> with_item;
  tendril::queue<int> closed;
  tendril::queue<int> empty;
  auto filler = spawn([&] {
    tendril::sleep(2s);
    with_item.put(7);
    tendril::sleep(1s);
    closed.close();
  });
  auto done = tendril::wait_for({empty, closed, with_item}, 10s);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_TRUE(done[0].is(with_item));
  EXPECT_TRUE(done[1].is(closed));
  EXPECT_EQ(with_item.get(), 7);
  filler.join();
}

TEST_F(waiting, a_channel_is_ready_once_a_putter_waits) {
  tendril::channel<int> ch;
  auto putter = spawn([&] {
    tendril::sleep(1s);
    ch.put(3);
  });
  auto done = tendril::wait({ch});
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(ch.get(), 3);
  putter.join();
}

TEST_F(waiting, a_timeout_scope_interrupts_wait) {
  event never;
  tendril::timeout t(1s);
  try {
    tendril::wait({never});
    ADD_FAILURE() << "wait returned";
  } catch (const tendril::timeout_error& e) {
    EXPECT_EQ(e.source(), &t);
  }
}

TEST_F(waiting, a_killed_waiter_stops_watching_its_objects) {
  event e;
  auto w = spawn([&] { tendril::wait({e}); });
  tendril::sleep(0s);
  w.kill();
  EXPECT_TRUE(w.successful());
  e.set();  // its watch is gone
  EXPECT_TRUE(e.is_set());
}

TEST_F(waiting, the_same_event_in_two_waits_wakes_both) {
  event e;
  int woke = 0;
  auto a = spawn([&] {
    tendril::wait({e});
    ++woke;
  });
  auto b = spawn([&] {
    for (const waitable_ref& r : tendril::iwait({e})) {
      EXPECT_TRUE(r.is(e));
      ++woke;
    }
  });
  tendril::sleep(0s);
  e.set();
  tendril::joinall(a, b);
  EXPECT_EQ(woke, 2);
}

TEST_F(waiting, an_event_set_from_another_thread_ends_a_wait) {
  tendril::detail::test_clock::resume();  // real time: the other thread is not the hub's
  event e;
  async_result<int> r;
  std::thread th([&] {
    std::this_thread::sleep_for(20ms);
    r.set(1);
    std::this_thread::sleep_for(20ms);
    e.set();
  });
  auto done = tendril::wait_for({e, r}, 60s);
  th.join();
  ASSERT_EQ(done.size(), 2u);
  EXPECT_TRUE(done[0].is(r));
  EXPECT_TRUE(done[1].is(e));
}

TEST_F(waiting, iwait_with_a_limit_ends_the_iteration_once_it_passed) {
  event e;
  event never;
  auto t = spawn([&] { e.set(); });
  std::vector<bool> got;
  for (const waitable_ref& r : tendril::iwait({e, never}, 200ms)) got.push_back(r.is(e));
  EXPECT_EQ(got, std::vector<bool>{true});  // e, then the limit; never is not yielded
  t.join();
}

// A wait took each object's lock to stop watching it when it returned: an event that the
// greenlet which set it destroyed at once, before the waiters ran, was written after it was freed.
TEST_F(waiting, an_event_set_then_destroyed_before_the_waiters_ran_is_not_touched_again) {
  auto* e = new event;
  event unset;  // still watched when the waits return: alive, and unwatched as before
  int returned = 0;
  auto by_wait = spawn([&] {
    EXPECT_EQ(tendril::wait({*e, unset}, 1).size(), 1u);
    ++returned;
  });
  auto by_iwait = spawn([&] {
    for (const waitable_ref& r : tendril::iwait({unset, *e})) {
      EXPECT_FALSE(r.is(unset));
      break;
    }
    ++returned;
  });
  tendril::sleep(0s);
  e->set();
  delete e;
  const tendril::test::refilled<event> reused;  // the freed block: a later write to it shows
  tendril::joinall(by_wait, by_iwait);
  EXPECT_EQ(returned, 2);
  EXPECT_TRUE(reused.untouched());
}

// As above, for an async result.
TEST_F(waiting, a_result_set_then_destroyed_before_the_waiters_ran_is_not_touched_again) {
  auto* r = new async_result<int>;
  event unset;
  int returned = 0;
  auto by_wait = spawn([&] {
    EXPECT_EQ(tendril::wait({unset, *r}, 1).size(), 1u);
    ++returned;
  });
  auto by_iwait = spawn([&] {
    for (const waitable_ref& x : tendril::iwait({*r, unset})) {
      EXPECT_FALSE(x.is(unset));
      break;
    }
    ++returned;
  });
  tendril::sleep(0s);
  r->set(7);
  delete r;
  const tendril::test::refilled<async_result<int>> reused;
  tendril::joinall(by_wait, by_iwait);
  EXPECT_EQ(returned, 2);
  EXPECT_TRUE(reused.untouched());
}

// Likewise when another thread set the objects and destroyed them as soon as each set()
// returned: the waits touched them after they were gone.
TEST_F(waiting, the_thread_that_set_the_objects_may_destroy_them_before_the_waits_return) {
  tendril::detail::test_clock::resume();  // real time: the other thread is not the hub's
  tendril::test::fenced<event> e;
  tendril::test::fenced<async_result<int>> r;
  event unset;
  int returned = 0;
  auto by_wait = spawn([&] {
    EXPECT_EQ(tendril::wait({*e, *r}).size(), 2u);
    ++returned;
  });
  auto by_iwait = spawn([&] {
    std::size_t yielded = 0;
    for (const waitable_ref& x : tendril::iwait({unset, *r, *e})) {
      EXPECT_FALSE(x.is(unset));
      if (++yielded == 2) break;
    }
    ++returned;
  });
  tendril::sleep(0s);
  std::thread setter([&] {
    e->set();
    e.destroy();
    r->set(1);
    r.destroy();
  });
  setter.join();  // blocks this thread: the woken greenlets resume only after
  tendril::joinall(by_wait, by_iwait);
  EXPECT_EQ(returned, 2);
}

// The same race with the waiter running meanwhile: it may resume between the setter's unlock
// and the end of its set(), and must then wait for that end rather than touch the object.
TEST_F(waiting, a_wait_racing_the_thread_that_sets_and_destroys_the_objects_never_touches_them) {
  tendril::detail::test_clock::resume();
  const auto rounds = tendril::test::scaled(1000, 100);
  std::size_t returned = 0;
  for (std::size_t i = 0; i < rounds; ++i) {
    auto* e = new event;
    auto* r = new async_result<int>;
    auto waits = spawn([&, i] {
      if (i % 2 == 0) {
        returned += tendril::wait({*e, *r}).size();
      } else {
        for (const waitable_ref& x : tendril::iwait({*r, *e})) {
          (void)x;
          ++returned;
        }
      }
    });
    tendril::sleep(0s);  // watching both
    std::thread setter([e, r] {
      r->set(1);
      delete r;
      e->set();
      delete e;
    });
    waits.join();  // this thread runs on: the waits may resume while a set() is inside
    setter.join();
  }
  EXPECT_EQ(returned, 2 * rounds);
}

// The other way round: the waiting greenlet destroys each object as soon as it got it back,
// while the set() of another thread that readied it may still be inside. iwait() yielded an
// object as soon as it was notified, with that set() still holding its lock.
TEST_F(waiting, the_waiter_may_destroy_what_it_got_back_while_the_setting_thread_is_inside) {
  tendril::detail::test_clock::resume();
  const auto rounds = tendril::test::scaled(1000, 100);
  std::size_t destroyed = 0;
  for (std::size_t i = 0; i < rounds; ++i) {
    auto* e = new event;
    auto* r = new async_result<int>;
    const auto e_at = reinterpret_cast<std::uintptr_t>(e);  // to tell them apart once one is gone
    std::vector<waitable_ref> objects{*e, *r};
    std::thread setter([e, r] {
      e->set();
      r->set(1);
    });
    if (i % 2 == 0) {
      destroyed += tendril::wait(objects).size();
      delete e;
      delete r;
    } else {
      for (const waitable_ref& x : tendril::iwait(objects)) {
        if (reinterpret_cast<std::uintptr_t>(x.get()) == e_at) {
          delete e;
        } else {
          delete r;
        }
        ++destroyed;
      }
    }
    setter.join();
  }
  EXPECT_EQ(destroyed, 2 * rounds);
}
