// queue<T>, channel<T> and joinable_queue<T>: FIFO order, back-pressure, time limits, no
// item lost or handed to a waiter that timed out or was killed, close() draining, range-for,
// channel hand-offs and task_done / join. Modelled on gevent's test__queue.py.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hub/clock.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::channel;
using tendril::joinable_queue;
using tendril::queue;
using tendril::queue_closed;
using tendril::spawn;
using tendril::task;

namespace {

constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class queues : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

class channels : public queues {};
class joinable_queues : public queues {};

// A copy-only item whose copy (so also its "move") throws for the value fragile::fail_on.
struct fragile {
  static inline int fail_on = -1;
  int v;
  explicit fragile(int x) : v(x) {}
  fragile(const fragile& o) : v(o.v) { check(o); }
  fragile& operator=(const fragile& o) {
    check(o);
    v = o.v;
    return *this;
  }
  static void check(const fragile& o) {
    if (o.v == fail_on) throw std::runtime_error("copy failed");
  }
};

// Takes everything left in q without waiting.
template <class Q>
std::vector<int> drain(Q& q) {
  std::vector<int> out;
  while (auto v = q.try_get()) out.push_back(*v);
  return out;
}

}  // namespace

// --- queue ---------------------------------------------------------------------------------

TEST_F(queues, items_come_out_in_the_order_they_went_in) {
  queue<int> q;
  for (int i = 0; i < 100; ++i) q.put(i);
  EXPECT_EQ(q.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(q.get(), i);
  EXPECT_TRUE(q.empty());
}

TEST_F(queues, size_empty_full_and_maxsize) {
  queue<int> q(2);
  EXPECT_EQ(q.maxsize(), 2u);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.full());
  q.put(1);
  EXPECT_EQ(q.size(), 1u);
  EXPECT_FALSE(q.empty());
  q.put(2);
  EXPECT_TRUE(q.full());
  queue<int> unbounded;
  EXPECT_EQ(unbounded.maxsize(), queue<int>::unbounded);
  EXPECT_FALSE(unbounded.full());
  drain(q);
}

TEST_F(queues, get_waits_for_an_item) {
  queue<std::string> q;
  auto putter = spawn([&] {
    tendril::sleep(2s);
    q.put("late");
  });
  const std::int64_t start = now_ns();
  EXPECT_EQ(q.get(), "late");
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  putter.join();
}

TEST_F(queues, waiting_getters_are_served_in_the_order_they_waited) {
  queue<int> q;
  std::vector<std::pair<int, int>> got;  // (getter, item)
  std::vector<task<void>> getters;
  for (int i = 0; i < 4; ++i) getters.push_back(spawn([&, i] { got.emplace_back(i, q.get()); }));
  tendril::sleep(0s);
  for (int v = 10; v < 14; ++v) q.put(v);
  tendril::joinall(getters);
  EXPECT_EQ(got, (std::vector<std::pair<int, int>>{{0, 10}, {1, 11}, {2, 12}, {3, 13}}));
}

TEST_F(queues, put_blocks_while_the_queue_is_full) {
  queue<int> q(2);
  int put = 0;
  auto putter = spawn([&] {
    for (int i = 0; i < 5; ++i) {
      q.put(i);
      ++put;
    }
  });
  tendril::sleep(0s);
  EXPECT_EQ(put, 2);
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.get(), 0);  // makes room: the waiting item moves in
  EXPECT_EQ(q.size(), 2u);
  tendril::sleep(0s);
  EXPECT_EQ(put, 3);
  std::vector<int> rest;
  for (int i = 0; i < 4; ++i) rest.push_back(q.get());
  EXPECT_EQ(rest, (std::vector<int>{1, 2, 3, 4}));
  putter.join();
  EXPECT_EQ(put, 5);
}

TEST_F(queues, waiting_putters_are_served_in_the_order_they_waited) {
  queue<int> q(1);
  q.put(0);
  std::vector<task<void>> putters;
  for (int i = 1; i <= 4; ++i) putters.push_back(spawn([&q, i] { q.put(i); }));
  tendril::sleep(0s);
  std::vector<int> got;
  for (int i = 0; i < 5; ++i) got.push_back(q.get());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4}));
  tendril::joinall(putters);
}

TEST_F(queues, try_put_and_try_get_never_wait) {
  queue<int> q(1);
  EXPECT_EQ(q.try_get(), std::nullopt);
  EXPECT_TRUE(q.try_put(1));
  EXPECT_FALSE(q.try_put(2));
  EXPECT_EQ(q.try_get(), std::optional<int>(1));
  EXPECT_EQ(q.try_get(), std::nullopt);
}

TEST_F(queues, a_refused_lvalue_is_not_moved_from) {
  queue<std::string> q(1);
  q.put("first");
  std::string item = "kept";
  EXPECT_FALSE(q.try_put(item));
  EXPECT_EQ(item, "kept");
  EXPECT_FALSE(q.put_for(item, 1s));
  EXPECT_EQ(item, "kept");
  EXPECT_EQ(q.get(), "first");
  EXPECT_TRUE(q.try_put(item));
  EXPECT_EQ(q.get(), "kept");
}

TEST_F(queues, put_for_and_get_for_return_false_or_empty_when_the_time_runs_out) {
  queue<int> q(1);
  const std::int64_t start = now_ns();
  EXPECT_EQ(q.get_for(2s), std::nullopt);
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  EXPECT_EQ(q.get_until(std::chrono::steady_clock::now() + 1s), std::nullopt);
  q.put(1);
  const std::int64_t mid = now_ns();
  EXPECT_FALSE(q.put_for(2, 2s));
  EXPECT_GE(now_ns() - mid, 2 * second_ns);
  EXPECT_EQ(q.size(), 1u);
  EXPECT_FALSE(q.put_for(2, -1s));
  EXPECT_EQ(q.get_for(-1s), std::optional<int>(1));
  EXPECT_EQ(q.get_for(-1s), std::nullopt);
}

TEST_F(queues, a_duration_too_large_for_the_clock_waits_for_an_item) {
  queue<int> q;
  auto putter = spawn([&] {
    tendril::sleep(1000h);
    q.put(5);
  });
  EXPECT_EQ(q.get_for(std::chrono::hours::max()), std::optional<int>(5));
  putter.join();
}

TEST_F(queues, a_getter_that_timed_out_never_receives_an_item) {
  queue<int> q;
  std::optional<int> got = 99;
  auto getter = spawn([&] { got = q.get_for(1s); });
  tendril::sleep(2s);
  q.put(7);
  getter.join();
  EXPECT_EQ(got, std::nullopt);
  EXPECT_EQ(q.size(), 1u);  // the item waits for the next getter
  EXPECT_EQ(q.get(), 7);
}

TEST_F(queues, a_getter_timing_out_in_the_same_pass_as_a_put_loses_no_item) {
  // The putter starts in the very pass in which the getter's deadline passes: the getter
  // must come back empty-handed and the item stay in the queue.
  queue<int> q;
  auto putter = tendril::spawn_later(1s, [&] { q.put(8); });
  std::optional<int> got = 99;
  auto getter = spawn([&] { got = q.get_for(1s); });
  tendril::joinall(putter, getter);
  EXPECT_EQ(got, std::nullopt);
  EXPECT_EQ(drain(q), (std::vector<int>{8}));
}

TEST_F(queues, a_killed_getter_never_receives_an_item) {
  queue<int> q;
  bool received = false;
  auto victim = spawn([&] {
    q.get();
    received = true;
  });
  std::optional<int> other_got;
  auto other = spawn([&] { other_got = q.get(); });
  tendril::sleep(0s);
  victim.kill();
  q.put(1);
  q.put(2);
  other.join();
  EXPECT_FALSE(received);
  EXPECT_EQ(other_got, std::optional<int>(1));
  EXPECT_EQ(drain(q), (std::vector<int>{2}));
}

TEST_F(queues, a_putter_that_timed_out_or_was_killed_hands_over_nothing) {
  queue<int> q(1);
  q.put(0);
  bool timed_out_put = true;
  auto impatient = spawn([&] { timed_out_put = q.put_for(1, 1s); });
  auto victim = spawn([&] { q.put(2); });
  auto patient = spawn([&] { q.put(3); });
  tendril::sleep(0s);
  victim.kill();
  tendril::sleep(2s);
  EXPECT_FALSE(timed_out_put);
  std::vector<int> got;
  for (int i = 0; i < 2; ++i) got.push_back(q.get());
  EXPECT_EQ(got, (std::vector<int>{0, 3}));
  tendril::joinall(impatient, patient);
  EXPECT_TRUE(q.empty());
}

TEST_F(queues, a_putter_timing_out_in_the_same_pass_as_a_get_hands_over_nothing) {
  queue<int> q(1);
  q.put(0);
  std::optional<int> got;
  auto getter = tendril::spawn_later(1s, [&] { got = q.get(); });
  bool put = true;
  auto putter = spawn([&] { put = q.put_for(1, 1s); });
  tendril::joinall(getter, putter);
  EXPECT_EQ(got, std::optional<int>(0));
  EXPECT_FALSE(put);
  EXPECT_TRUE(q.empty());
}

// The putter was claimed before its item moved into the room a get() made: the get() threw
// (its own item lost) and the putter, claimed but never scheduled, waited for ever.
TEST_F(queues,
       a_waiting_putter_whose_item_fails_to_move_in_gets_the_error_and_the_getter_its_item) {
  queue<fragile> q(1);
  q.put(fragile(1));
  std::string putter_saw;
  auto putter = spawn([&] {
    try {
      q.put(fragile(2));
      putter_saw = "put";
    } catch (const std::runtime_error& e) {
      putter_saw = e.what();
    }
  });
  tendril::sleep(0s);
  fragile::fail_on = 2;
  EXPECT_EQ(q.get().v, 1);
  fragile::fail_on = -1;
  putter.join();
  EXPECT_EQ(putter_saw, "copy failed");
  EXPECT_TRUE(q.empty());
}

// Nothing refused it: the other thread changed the wait lists of this thread's hub unguarded,
// and what came out, if anything, was a misleading loop_exit.
TEST_F(queues, a_call_from_another_thread_once_a_greenlet_waited_in_it_throws_wrong_thread) {
  joinable_queue<int> q;
  std::optional<int> got;
  auto getter = spawn([&] { got = q.get(); });
  tendril::sleep(0s);
  std::string refused;
  int refusals = 0;
  std::thread other([&] {
    auto refuse = [&](auto call) {
      try {
        call();
      } catch (const tendril::wrong_thread& e) {
        refused = e.what();
        ++refusals;
      }
    };
    refuse([&] { q.put(1); });
    refuse([&] { q.try_get(); });
    refuse([&] { q.close(); });
    refuse([&] { q.task_done(); });
  });
  other.join();
  EXPECT_EQ(refusals, 4);
  EXPECT_TRUE(contains(refused, "tendril::queue")) << refused;
  EXPECT_FALSE(q.closed());
  q.put(2);
  getter.join();
  EXPECT_EQ(got, 2);
  // Closed and drained, try_get() answered "nothing" before it looked at the thread.
  q.close();
  std::thread late([&] {
    try {
      q.try_get();
    } catch (const tendril::wrong_thread&) {
      ++refusals;
    }
  });
  late.join();
  EXPECT_EQ(refusals, 5);
}

// size(), empty(), full(), ready(), closed() and unfinished() checked no thread: another
// thread read what this thread's greenlets change unguarded, where every other member refused.
TEST_F(queues, reading_its_state_from_another_thread_once_a_greenlet_waited_throws_wrong_thread) {
  joinable_queue<int> q(4);
  auto getter = spawn([&] { return q.get(); });
  tendril::sleep(0s);  // q is this thread's from now on
  std::vector<std::string> refused;
  std::thread other([&] {
    auto refuse = [&](auto call) {
      try {
        call();
      } catch (const tendril::wrong_thread& e) {
        refused.emplace_back(e.what());
      }
    };
    refuse([&] { return q.size(); });
    refuse([&] { return q.empty(); });
    refuse([&] { return q.full(); });
    refuse([&] { return q.ready(); });
    refuse([&] { return q.closed(); });
    refuse([&] { return q.unfinished(); });
    EXPECT_EQ(q.maxsize(), 4u);  // never changes: any thread may read it
  });
  other.join();
  EXPECT_EQ(refused.size(), 6u);
  for (const std::string& r : refused) EXPECT_TRUE(contains(r, "tendril::queue")) << r;
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.ready());
  q.put(3);
  EXPECT_EQ(getter.get(), 3);
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(q.unfinished(), 1u);
}

// wait() and iwait() checked no thread: another thread's observer went into this thread's
// wait lists unguarded, to be notified from here while its own thread ran.
TEST_F(queues, wait_and_iwait_on_a_queue_of_another_thread_throw_wrong_thread) {
  const std::string this_thread = std::to_string(tendril::detail::this_thread_id());
  auto check = [&](auto& q) {
    auto getter = spawn([&] { return q.get(); });
    tendril::sleep(0s);  // q is this thread's from now on
    std::vector<std::string> refused;
    std::thread other([&] {
      try {
        tendril::wait_for({q}, 10ms);
      } catch (const tendril::wrong_thread& e) {
        refused.emplace_back(e.what());
      }
      try {
        tendril::iwait watch({q});
      } catch (const tendril::wrong_thread& e) {
        refused.emplace_back(e.what());
      }
    });
    other.join();
    EXPECT_EQ(refused.size(), 2u);
    for (const std::string& r : refused) {
      EXPECT_TRUE(contains(r, "tendril::queue")) << r;
      EXPECT_TRUE(contains(r, "thread " + this_thread)) << r;
    }
    q.put(5);
    EXPECT_EQ(getter.get(), 5);
  };
  queue<int> q;
  check(q);
  channel<int> c;
  check(c);
  joinable_queue<int> j;
  check(j);
}

// A queue waited on only through wait() had no thread: a put() from another thread was taken
// and notified the waiting greenlet's observer from there, racing its own thread.
TEST_F(queues, a_put_from_another_thread_into_a_queue_watched_by_wait_throws_wrong_thread) {
  auto check = [&](auto& q) {
    auto watcher = spawn([&] { return tendril::wait({q}).size(); });
    tendril::sleep(0s);  // watcher's wait() watches q
    std::string refused;
    std::thread other([&] {
      try {
        q.put(1);
      } catch (const tendril::wrong_thread& e) {
        refused = e.what();
      }
    });
    other.join();
    EXPECT_TRUE(contains(refused, "tendril::queue")) << refused;
    EXPECT_FALSE(watcher.ready());
    q.put(2);
    EXPECT_EQ(watcher.get(), 1u);
    EXPECT_EQ(q.try_get(), std::optional<int>(2));
  };
  queue<int> q;
  check(q);
  joinable_queue<int> j;
  check(j);
}

// A getter switched into by hand (invalid_switch) after a put had handed it its item: the
// get() returns that item, and invalid_switch comes out of the next blocking call.
TEST_F(queues, a_getter_switched_into_by_hand_after_a_hand_off_loses_no_item) {
  queue<int> q;
  std::optional<int> got;
  bool got_invalid_switch = false;
  auto t = spawn([&] {
    got = q.get();
    try {
      tendril::sleep(0s);
    } catch (const tendril::invalid_switch&) {
      got_invalid_switch = true;
    }
  });
  tendril::sleep(0s);  // t waits in get()
  q.put(7);            // handed to t, which is now on the run queue
  q.put(8);            // behind it, in the queue
  {
    tendril::detail::waiter come_back;  // the hub resumes main once t has ended
    come_back.wake();
    t.greenlet().switch_to();  // by hand, not through the hub
  }
  t.join();
  EXPECT_EQ(got, std::optional<int>(7));
  EXPECT_TRUE(got_invalid_switch);
  EXPECT_EQ(q.try_get(), std::optional<int>(8));
  EXPECT_TRUE(q.empty());
}

// A putter switched into by hand after a getter took its item: put() returns (the item was
// delivered), so a retry cannot deliver it twice, and a joinable_queue counts it once.
TEST_F(queues, a_putter_switched_into_by_hand_after_its_item_was_taken_reports_it_put) {
  joinable_queue<int> q(0);
  bool put = false;
  bool got_invalid_switch = false;
  auto t = spawn([&] {
    q.put(7);
    put = true;
    try {
      tendril::sleep(0s);
    } catch (const tendril::invalid_switch&) {
      got_invalid_switch = true;
    }
  });
  tendril::sleep(0s);  // t waits in put()
  EXPECT_EQ(q.try_get(), std::optional<int>(7));
  {
    tendril::detail::waiter come_back;
    come_back.wake();
    t.greenlet().switch_to();
  }
  t.join();
  EXPECT_TRUE(put);
  EXPECT_TRUE(got_invalid_switch);
  EXPECT_EQ(q.unfinished(), 1u);
  q.task_done();
  EXPECT_TRUE(q.join_for(0s));
}

TEST_F(queues, a_timeout_scope_interrupts_get_and_put) {
  queue<int> q(1);
  {
    tendril::timeout t(1s);
    EXPECT_THROW(q.get(), tendril::timeout_error);
  }
  q.put(1);
  {
    tendril::timeout t(1s);
    EXPECT_THROW(q.put(2), tendril::timeout_error);
  }
  EXPECT_EQ(drain(q), (std::vector<int>{1}));
}

TEST_F(queues, move_only_items_pass_through) {
  queue<std::unique_ptr<int>> q(1);
  q.put(std::make_unique<int>(1));
  auto putter = spawn([&] { q.put(std::make_unique<int>(2)); });
  auto a = q.get();
  auto b = q.get();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, 1);
  EXPECT_EQ(*b, 2);
  putter.join();
}

// --- close ---------------------------------------------------------------------------------

TEST_F(queues, close_lets_getters_drain_then_raises_queue_closed) {
  queue<int> q;
  q.put(1);
  q.put(2);
  q.close();
  EXPECT_TRUE(q.closed());
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get_for(1s), std::optional<int>(2));
  EXPECT_THROW(q.get(), queue_closed);
  EXPECT_THROW(q.get_for(1s), queue_closed);
  EXPECT_EQ(q.try_get(), std::nullopt);
}

TEST_F(queues, close_wakes_waiting_getters_with_queue_closed) {
  queue<int> q;
  int closed_seen = 0;
  std::vector<task<void>> getters;
  for (int i = 0; i < 3; ++i)
    getters.push_back(spawn([&] {
      try {
        q.get();
      } catch (const queue_closed&) {
        ++closed_seen;
      }
    }));
  tendril::sleep(0s);
  const std::int64_t start = now_ns();
  q.close();
  tendril::joinall(getters);
  EXPECT_EQ(closed_seen, 3);
  EXPECT_EQ(now_ns(), start);
}

TEST_F(queues, putters_on_a_closed_queue_throw_and_their_items_stay_out) {
  queue<int> q(1);
  q.put(1);
  bool waiting_putter_refused = false;
  auto putter = spawn([&] {
    try {
      q.put(2);
    } catch (const queue_closed&) {
      waiting_putter_refused = true;
    }
  });
  tendril::sleep(0s);
  q.close();
  putter.join();
  EXPECT_TRUE(waiting_putter_refused);
  EXPECT_THROW(q.put(3), queue_closed);
  EXPECT_THROW(q.try_put(3), queue_closed);
  EXPECT_THROW(q.put_for(3, 1s), queue_closed);
  EXPECT_EQ(q.get(), 1);
  EXPECT_THROW(q.get(), queue_closed);
}

TEST_F(queues, range_for_drains_until_closed) {
  queue<int> q(3);
  auto producer = spawn([&] {
    for (int i = 0; i < 10; ++i) {
      q.put(i);
      if (i % 4 == 0) tendril::sleep(1s);
    }
    q.close();
  });
  std::vector<int> got;
  for (int v : q) got.push_back(v);
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  producer.join();
}

TEST_F(queues, range_for_over_a_closed_empty_queue_runs_no_round) {
  queue<int> q;
  q.close();
  int rounds = 0;
  for (int v : q) rounds += v + 1;
  EXPECT_EQ(rounds, 0);
}

TEST_F(queues, many_producers_and_consumers_lose_and_duplicate_nothing) {
  queue<int> q(8);
  constexpr int producers = 5;
  constexpr int per_producer = 200;
  std::vector<int> seen(producers * per_producer, 0);
  std::vector<task<void>> all;
  for (int p = 0; p < producers; ++p)
    all.push_back(spawn([&q, p] {
      for (int i = 0; i < per_producer; ++i) {
        q.put(p * per_producer + i);
        if (i % 7 == 0) tendril::sleep(0s);
      }
    }));
  std::vector<task<void>> consumers;
  for (int c = 0; c < 3; ++c)
    consumers.push_back(spawn([&q, &seen] {
      for (int v : q) {
        ++seen[v];
        if (v % 5 == 0) tendril::sleep(1ms);
      }
    }));
  tendril::joinall(all);
  q.close();
  tendril::joinall(consumers);
  for (int count : seen) EXPECT_EQ(count, 1);
}

// --- channel -------------------------------------------------------------------------------

TEST_F(channels, put_waits_until_a_getter_takes_the_item) {
  channel<int> ch;
  EXPECT_EQ(ch.maxsize(), 0u);
  bool handed_over = false;
  auto putter = spawn([&] {
    ch.put(1);
    handed_over = true;
  });
  tendril::sleep(1s);
  EXPECT_FALSE(handed_over);
  EXPECT_EQ(ch.size(), 0u);
  EXPECT_EQ(ch.get(), 1);
  putter.join();
  EXPECT_TRUE(handed_over);
}

TEST_F(channels, items_are_handed_over_in_the_order_they_were_put) {
  channel<int> ch;
  std::vector<task<void>> putters;
  for (int i = 0; i < 5; ++i) putters.push_back(spawn([&ch, i] { ch.put(i); }));
  tendril::sleep(0s);
  std::vector<int> got;
  for (int i = 0; i < 5; ++i) got.push_back(ch.get());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4}));
  tendril::joinall(putters);
}

TEST_F(channels, a_waiting_getter_takes_the_item_without_the_putter_waiting) {
  channel<std::string> ch;
  std::string got;
  auto getter = spawn([&] { got = ch.get(); });
  tendril::sleep(0s);
  EXPECT_TRUE(ch.try_put(std::string("via try_put")));
  getter.join();
  EXPECT_EQ(got, "via try_put");

  auto second = spawn([&] { got = ch.get(); });
  tendril::sleep(0s);
  bool other_ran = false;
  auto marker = spawn([&] { other_ran = true; });
  ch.put("direct");  // a getter waits: no switch
  EXPECT_FALSE(other_ran);
  tendril::joinall(second, marker);
  EXPECT_EQ(got, "direct");
}

TEST_F(channels, try_put_and_try_get_need_someone_waiting_on_the_other_side) {
  channel<int> ch;
  EXPECT_FALSE(ch.try_put(1));
  EXPECT_EQ(ch.try_get(), std::nullopt);
  auto putter = spawn([&] { ch.put(2); });
  tendril::sleep(0s);
  EXPECT_EQ(ch.try_get(), std::optional<int>(2));
  putter.join();
}

TEST_F(channels, a_putter_that_timed_out_hands_over_nothing) {
  channel<int> ch;
  EXPECT_FALSE(ch.put_for(1, 1s));
  EXPECT_EQ(ch.try_get(), std::nullopt);
  auto getter = spawn([&] { return ch.get_for(1s); });
  EXPECT_EQ(getter.get(), std::nullopt);
}

TEST_F(channels, a_ping_pong_alternates_strictly) {
  channel<int> ping;
  channel<int> pong;
  std::vector<int> trace;
  auto other = spawn([&] {
    for (int i = 0; i < 5; ++i) {
      const int v = ping.get();
      trace.push_back(v);
      pong.put(v + 1);
    }
  });
  int v = 0;
  for (int i = 0; i < 5; ++i) {
    ping.put(v);
    v = pong.get();
    trace.push_back(v);
  }
  other.join();
  EXPECT_EQ(trace, (std::vector<int>{0, 1, 1, 2, 2, 3, 3, 4, 4, 5}));
}

TEST_F(channels, close_refuses_a_waiting_putter) {
  channel<int> ch;
  bool refused = false;
  auto putter = spawn([&] {
    try {
      ch.put(1);
    } catch (const queue_closed&) {
      refused = true;
    }
  });
  tendril::sleep(0s);
  ch.close();
  putter.join();
  EXPECT_TRUE(refused);
  EXPECT_THROW(ch.get(), queue_closed);
}

// The waiter on the other side was claimed before the item moved: the move threw, and that
// waiter, claimed but never scheduled, waited for ever (no time limit or kill could end it).
TEST_F(channels, a_hand_off_whose_move_throws_leaves_the_other_side_waiting_for_the_next_one) {
  channel<fragile> ch;
  std::optional<int> got;
  auto getter = spawn([&] { got = ch.get().v; });
  tendril::sleep(0s);
  fragile::fail_on = 1;
  fragile bad(1);
  EXPECT_THROW(ch.try_put(bad), std::runtime_error);
  fragile::fail_on = -1;
  EXPECT_TRUE(ch.try_put(fragile(2)));
  getter.join();
  EXPECT_EQ(got, 2);

  bool put = false;
  auto putter = spawn([&] {
    ch.put(fragile(3));
    put = true;
  });
  tendril::sleep(0s);
  fragile::fail_on = 3;
  EXPECT_THROW(ch.try_get(), std::runtime_error);
  fragile::fail_on = -1;
  std::optional<fragile> taken = ch.try_get();
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->v, 3);
  putter.join();
  EXPECT_TRUE(put);
}

// --- joinable_queue ------------------------------------------------------------------------

TEST_F(joinable_queues, join_waits_until_every_item_is_marked_done) {
  joinable_queue<int> q;
  EXPECT_EQ(q.unfinished(), 0u);
  q.join();  // nothing put: returns at once
  for (int i = 0; i < 3; ++i) q.put(i);
  EXPECT_EQ(q.unfinished(), 3u);
  int processed = 0;
  auto worker = spawn([&] {
    for (int i = 0; i < 3; ++i) {
      q.get();
      tendril::sleep(1s);
      ++processed;
      q.task_done();
    }
  });
  const std::int64_t start = now_ns();
  q.join();
  EXPECT_EQ(processed, 3);
  EXPECT_EQ(q.unfinished(), 0u);
  EXPECT_GE(now_ns() - start, 3 * second_ns);
  worker.join();
}

TEST_F(joinable_queues, join_for_returns_false_when_the_time_runs_out) {
  joinable_queue<int> q;
  q.put(1);
  EXPECT_FALSE(q.join_for(1s));
  EXPECT_EQ(q.get(), 1);
  EXPECT_FALSE(q.join_for(1s));  // taken, but not done
  q.task_done();
  EXPECT_TRUE(q.join_for(1s));
}

TEST_F(joinable_queues, several_joiners_are_all_woken) {
  joinable_queue<int> q;
  q.put(1);
  int woke = 0;
  std::vector<task<void>> joiners;
  for (int i = 0; i < 3; ++i)
    joiners.push_back(spawn([&] {
      q.join();
      ++woke;
    }));
  tendril::sleep(0s);
  q.get();
  q.task_done();
  tendril::joinall(joiners);
  EXPECT_EQ(woke, 3);
}

TEST_F(joinable_queues, task_done_more_often_than_put_throws_logic_error) {
  joinable_queue<int> q;
  try {
    q.task_done();
    ADD_FAILURE() << "task_done accepted";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("task_done"), std::string::npos) << e.what();
  }
  q.put(1);
  q.get();
  q.task_done();
  EXPECT_THROW(q.task_done(), std::logic_error);
  EXPECT_EQ(q.unfinished(), 0u);
}

TEST_F(joinable_queues, a_put_that_did_not_happen_is_not_counted) {
  joinable_queue<int> q(1);
  EXPECT_TRUE(q.try_put(1));
  EXPECT_FALSE(q.try_put(2));
  EXPECT_FALSE(q.put_for(3, 1s));
  EXPECT_EQ(q.unfinished(), 1u);
  q.close();
  EXPECT_THROW(q.put(4), queue_closed);
  EXPECT_EQ(q.unfinished(), 1u);
  EXPECT_EQ(q.get(), 1);
  q.task_done();
  q.join();
}

TEST_F(joinable_queues, put_until_and_join_until_end_at_a_time_point) {
  joinable_queue<int> q(1);
  EXPECT_TRUE(q.put_until(1, std::chrono::steady_clock::now() + 10ms));
  int kept = 2;
  EXPECT_FALSE(q.put_until(kept, std::chrono::steady_clock::now() + 100ms));  // full
  EXPECT_EQ(kept, 2);
  EXPECT_FALSE(q.join_until(std::chrono::steady_clock::now() + 100ms));  // 1 not done
  EXPECT_EQ(q.get(), 1);
  q.task_done();
  EXPECT_TRUE(q.join_until(std::chrono::steady_clock::now() + 100ms));
  queue<int> plain(1);
  EXPECT_TRUE(plain.put_until(3, std::chrono::steady_clock::now() + 10ms));
  EXPECT_FALSE(plain.put_until(4, std::chrono::steady_clock::now() + 10ms));
  EXPECT_EQ(plain.get_until(std::chrono::steady_clock::now() + 10ms), 3);
}

// An item counts once the queue accepted it: a put still waiting for room adds nothing, so
// join() does not wait for a put that then times out (before, it counted at once, and the
// put's timing out dropped the count without waking join()).
TEST_F(joinable_queues, a_put_that_times_out_was_never_unfinished) {
  joinable_queue<int> q(0);
  bool put = true;
  auto putter = spawn([&] { put = q.put_for(1, 1s); });
  tendril::sleep(0s);  // the putter waits for a getter
  EXPECT_EQ(q.unfinished(), 0u);
  const std::int64_t start = now_ns();
  EXPECT_TRUE(q.join_for(5s));
  EXPECT_LT(now_ns() - start, second_ns);
  putter.join();
  EXPECT_FALSE(put);
  EXPECT_EQ(q.unfinished(), 0u);
}

TEST_F(joinable_queues, a_killed_put_leaves_nothing_unfinished) {
  joinable_queue<int> q(1);
  q.put(0);
  auto putter = spawn([&] { q.put(1); });
  tendril::sleep(0s);
  EXPECT_EQ(q.unfinished(), 1u);
  putter.kill();
  EXPECT_EQ(q.unfinished(), 1u);
  EXPECT_EQ(q.get(), 0);
  q.task_done();
  EXPECT_TRUE(q.join_for(0s));
}

// Items put through a queue<T>& (generic producer code) are counted too.
TEST_F(joinable_queues, puts_through_a_queue_reference_are_counted) {
  joinable_queue<int> q;
  queue<int>& base = q;
  base.put(1);
  EXPECT_TRUE(base.try_put(2));
  EXPECT_TRUE(base.put_for(3, 1s));
  EXPECT_EQ(q.unfinished(), 3u);
  EXPECT_FALSE(q.join_for(0s));
  for (int i = 0; i < 3; ++i) {
    q.get();
    q.task_done();
  }
  EXPECT_TRUE(q.join_for(0s));
  EXPECT_THROW(q.task_done(), std::logic_error);
}

// A waiting putter's item taken by a get counts when it is taken, before the getter can
// call task_done() on it.
TEST_F(joinable_queues, an_item_handed_over_by_a_waiting_putter_counts_before_task_done) {
  joinable_queue<int> q(1);
  q.put(0);
  auto putter = spawn([&] { q.put(1); });
  tendril::sleep(0s);     // waits for room
  EXPECT_EQ(q.get(), 0);  // room: the putter's item moves into the queue
  q.task_done();
  EXPECT_EQ(q.unfinished(), 1u);
  EXPECT_EQ(q.get(), 1);
  q.task_done();
  EXPECT_EQ(q.unfinished(), 0u);
  putter.join();
}
