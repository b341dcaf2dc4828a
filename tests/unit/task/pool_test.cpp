// group and pool: add, spawn, join, kill; pool(n) never runs more than n tasks (an
// instrumented counter over thousands of jobs with random sleeps, errors and kills), spawn
// waits for a slot, a slot comes back however a task ends, map keeps order,
// imap_unordered yields every result as it comes, free_count, pool(0). Modelled on gevent's
// test__pool.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <any>
#include <chrono>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hub/clock.hpp"
#include "tendril/tendril.hpp"
#include "test_scale.hpp"

using namespace std::chrono_literals;
using tendril::group;
using tendril::pool;
using tendril::spawn;
using tendril::task;

namespace {

constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

struct some_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class pools : public ::testing::Test {
 protected:
  void SetUp() override {
    tendril::detail::test_clock::pause();
    // Failing tasks are expected here: count them instead of printing them.
    tendril::hub::current().set_error_handler(
        [this](const std::string&, std::exception_ptr) { ++errors_reported; });
  }
  void TearDown() override {
    tendril::hub::current().set_error_handler({});
    tendril::detail::test_clock::resume();
  }
  int errors_reported = 0;
};

class groups : public pools {};

}  // namespace

// --- group ---------------------------------------------------------------------------------

TEST_F(groups, spawn_adds_the_task_and_join_waits_for_all) {
  group g;
  int done = 0;
  for (int i = 1; i <= 3; ++i)
    g.spawn([&done, i] {
      tendril::sleep(std::chrono::seconds(i));
      ++done;
    });
  EXPECT_EQ(g.size(), 3u);
  const std::int64_t start = now_ns();
  g.join();
  EXPECT_EQ(done, 3);
  EXPECT_EQ(g.size(), 0u);
  EXPECT_GE(now_ns() - start, 3 * second_ns);
}

TEST_F(groups, add_tracks_a_task_until_it_ends) {
  group g;
  auto t = spawn([] { tendril::sleep(1s); });
  g.add(t);
  EXPECT_EQ(g.size(), 1u);
  auto ended = spawn([] {});
  ended.join();
  g.add(ended);  // an ended task is forgotten at once
  EXPECT_EQ(g.size(), 1u);
  tendril::sleep(2s);
  EXPECT_EQ(g.size(), 0u);
  g.join();
}

// add() of a task already in the group tracked it again (size() counted it twice); a task of
// another thread was taken, and a pool kept the slot it reserved for it for good.
TEST_F(groups, add_counts_a_task_once_and_refuses_a_task_of_another_thread) {
  group g;
  tendril::event made, release;
  auto t = g.spawn([&] { release.wait(); });
  g.add(t);
  g.add(t);
  EXPECT_EQ(g.size(), 1u);

  task<void> foreign;
  std::thread other([&] {
    foreign = spawn([&] { release.wait(); });
    made.set();
    foreign.join();
  });
  made.wait();
  EXPECT_THROW(g.add(foreign), tendril::wrong_thread);
  EXPECT_EQ(g.size(), 1u);
  pool p(2);
  EXPECT_THROW(p.add(foreign), tendril::wrong_thread);
  EXPECT_EQ(p.free_count(), 2u);
  EXPECT_EQ(p.size(), 0u);
  release.set();
  other.join();
  EXPECT_THROW(g.add(task<void>()), std::logic_error);
  g.join();
  EXPECT_EQ(g.size(), 0u);
}

TEST_F(groups, join_for_returns_false_when_the_time_runs_out) {
  group g;
  g.spawn([] { tendril::sleep(10s); });
  g.spawn([] { tendril::sleep(1s); });
  EXPECT_FALSE(g.join_for(5s));
  EXPECT_EQ(g.size(), 1u);
  EXPECT_TRUE(g.join_for(1h));
}

TEST_F(groups, join_also_waits_for_tasks_added_meanwhile) {
  group g;
  bool late_done = false;
  g.spawn([&] {
    tendril::sleep(1s);
    g.spawn([&] {
      tendril::sleep(5s);
      late_done = true;
    });
  });
  g.join();
  EXPECT_TRUE(late_done);
}

TEST_F(groups, kill_kills_every_task) {
  group g;
  int unwound = 0;
  struct counts {
    int* n;
    ~counts() { ++*n; }
  };
  std::vector<task<void>> all;
  for (int i = 0; i < 4; ++i)
    all.push_back(g.spawn([&] {
      counts c{&unwound};
      tendril::sleep(1h);
    }));
  tendril::sleep(0s);
  g.kill();
  EXPECT_EQ(unwound, 4);
  EXPECT_EQ(g.size(), 0u);
  for (auto& t : all) EXPECT_TRUE(t.successful());
}

// kill() killed the members it found when it started, then join() waited for the ones added
// while those were dying (by a spawner outside the group) to end on their own.
TEST_F(groups, kill_also_kills_tasks_added_while_it_waits) {
  group g;
  int killed = 0;
  int finished = 0;
  auto member = [&] {
    try {
      tendril::sleep(1h);
      ++finished;
    } catch (const tendril::greenlet_exit&) {
      ++killed;
      tendril::sleep(30ms);  // cleans up slowly
      throw;
    }
  };
  for (int i = 0; i < 3; ++i) g.spawn(member);
  auto spawner = spawn([&] {
    for (int i = 0; i < 4; ++i) {
      tendril::sleep(5ms);
      g.spawn(member);
    }
  });
  tendril::sleep(1ms);
  const std::int64_t start = now_ns();
  g.kill();
  EXPECT_EQ(g.size(), 0u);
  EXPECT_EQ(killed, 7);
  EXPECT_EQ(finished, 0);
  EXPECT_LT(now_ns() - start, 60 * second_ns);
  spawner.join();
}

TEST_F(groups, kill_without_block_then_join) {
  group g;
  g.spawn([] { tendril::sleep(1h); });
  tendril::sleep(0s);  // asleep now
  auto early = g.spawn([] { return 1; });
  early.kill();  // before it starts: ends at once
  EXPECT_EQ(g.size(), 1u);
  g.kill(false);
  EXPECT_EQ(g.size(), 1u);
  g.join();
  EXPECT_EQ(g.size(), 0u);
}

namespace {

// A member of g that sleeps for an hour, and sets unwound when a kill unwinds it.
void spawn_sleeper(group& g, bool& unwound) {
  g.spawn([&unwound] {
    struct mark {
      bool* b;
      ~mark() { *b = true; }
    } m{&unwound};
    tendril::sleep(1h);
  });
}

}  // namespace

// One of the group's own tasks may join it (it waits for the others) and kill it (it kills
// the others and goes on): a task cannot wait for itself to end.
TEST_F(groups, a_member_joins_and_kills_the_others) {
  group g;
  std::vector<int> order;
  g.spawn([&] {
    tendril::sleep(20ms);
    order.push_back(1);
  });
  auto joiner = g.spawn([&] {
    g.join();
    order.push_back(2);
    EXPECT_TRUE(g.join_for(1ms));  // nothing but itself left
    return g.size();
  });
  EXPECT_EQ(joiner.get(), 1u);  // itself, still running when it asked
  EXPECT_EQ(order, (std::vector<int>{1, 2}));

  bool unwound = false;
  spawn_sleeper(g, unwound);
  auto killer = g.spawn([&] {
    tendril::sleep(0s);
    g.kill();
    return unwound;
  });
  EXPECT_TRUE(killer.get());
  EXPECT_TRUE(killer.successful());
  EXPECT_EQ(g.size(), 0u);
}

// The same from code the member task runs on another greenlet: a generator's body (and a
// greenlet it switched into) counts as its task. Before, it waited for its own task: forever.
TEST_F(groups, a_generator_inside_a_member_joins_and_kills_the_others_too) {
  group g;
  bool other_done = false;
  g.spawn([&] {
    tendril::sleep(20ms);
    other_done = true;
  });
  auto member = g.spawn([&] {
    tendril::generator<int> gen([&](tendril::generator<int>::yielder& y) {
      g.join();  // from the generator's greenlet
      y.yield(1);
      EXPECT_TRUE(g.join_for(1ms));
      y.yield(2);
    });
    int sum = 0;
    for (int v : gen) sum += v;
    return sum;
  });
  EXPECT_EQ(member.get(), 3);
  EXPECT_TRUE(other_done);

  bool unwound = false;
  spawn_sleeper(g, unwound);
  auto killer = g.spawn([&] {
    tendril::sleep(0s);
    tendril::greenlet inner([&] {
      g.kill();  // from a plain greenlet the task switched into
      return std::any(unwound);
    });
    return std::any_cast<bool>(inner.switch_to());
  });
  EXPECT_TRUE(killer.get());
  EXPECT_EQ(g.size(), 0u);

  // A task cannot join or kill itself from there either: a clear error, not a hang.
  tendril::task<void> self_joiner;
  self_joiner = tendril::spawn([&] {
    tendril::generator<int> gen([&](tendril::generator<int>::yielder& y) {
      EXPECT_THROW(self_joiner.join(), std::logic_error);
      EXPECT_THROW(self_joiner.kill(), std::logic_error);
      y.yield(1);
    });
    EXPECT_EQ(gen.next(), 1);
  });
  self_joiner.join();
  EXPECT_TRUE(self_joiner.successful());
}

TEST_F(groups, join_until_returns_false_at_the_time_point_and_joinall_until_the_finished_ones) {
  group g;
  auto slow = g.spawn([] { tendril::sleep(1h); });
  auto quick = g.spawn([] {});
  EXPECT_FALSE(g.join_until(std::chrono::steady_clock::now() + 100ms));
  std::vector<tendril::task<void>> both{slow, quick};
  const auto done = tendril::joinall_until(std::chrono::steady_clock::now() + 100ms, both);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0] == quick);
  g.kill();
  EXPECT_TRUE(g.join_until(std::chrono::steady_clock::now() + 1ms));
}

// --- pool ----------------------------------------------------------------------------------

TEST_F(pools, free_count_counts_the_free_slots) {
  pool p(3);
  EXPECT_EQ(p.capacity(), 3u);
  EXPECT_EQ(p.free_count(), 3u);
  auto a = p.spawn([] { tendril::sleep(1s); });
  auto b = p.spawn([] { tendril::sleep(2s); });
  EXPECT_EQ(p.free_count(), 1u);
  EXPECT_EQ(p.size(), 2u);
  a.join();
  EXPECT_EQ(p.free_count(), 2u);
  p.join();
  EXPECT_EQ(p.free_count(), 3u);
}

// The size was cast to a negative ptrdiff_t: the error named a semaphore and a count (-1)
// the caller never passed.
TEST_F(pools, a_size_above_ptrdiff_max_is_refused_naming_the_pool_and_the_size) {
  for (std::size_t n : {std::numeric_limits<std::size_t>::max(),
                        std::size_t{std::numeric_limits<std::ptrdiff_t>::max()} + 1}) {
    try {
      pool p(n);
      ADD_FAILURE() << "pool(" << n << ") was made";
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("tendril::pool"), std::string::npos) << what;
      EXPECT_NE(what.find(std::to_string(n)), std::string::npos) << what;
    }
  }
  pool largest(std::numeric_limits<std::ptrdiff_t>::max());
  EXPECT_EQ(largest.free_count(), std::size_t{std::numeric_limits<std::ptrdiff_t>::max()});
}

TEST_F(pools, spawn_waits_for_a_free_slot) {
  pool p(1);
  auto first = p.spawn([] { tendril::sleep(2s); });
  const std::int64_t start = now_ns();
  auto second = p.spawn([](int v) { return v; }, 4);
  EXPECT_TRUE(first.ready());
  EXPECT_GE(now_ns() - start, 2 * second_ns);
  EXPECT_EQ(second.get(), 4);
}

TEST_F(pools, spawners_waiting_for_a_slot_are_served_in_order) {
  pool p(1);
  std::vector<int> order;
  p.spawn([] { tendril::sleep(1s); });
  std::vector<task<void>> spawners;
  for (int i = 0; i < 4; ++i)
    spawners.push_back(spawn([&, i] { p.spawn([&order, i] { order.push_back(i); }); }));
  tendril::joinall(spawners);
  p.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
}

TEST_F(pools, spawn_for_gives_up_when_no_slot_frees_in_time) {
  pool p(1);
  auto busy = p.spawn([] { tendril::sleep(1h); });
  bool ran = false;
  auto none = p.spawn_for(1s, [&] { ran = true; });
  EXPECT_FALSE(none.has_value());
  tendril::sleep(1s);
  EXPECT_FALSE(ran);
  EXPECT_EQ(p.free_count(), 0u);
  busy.kill();
  EXPECT_EQ(p.free_count(), 1u);
  auto some = p.spawn_for(1s, [&] { ran = true; });
  ASSERT_TRUE(some.has_value());
  some->join();
  EXPECT_TRUE(ran);
}

TEST_F(pools, a_slot_comes_back_however_the_task_ends) {
  pool p(2);
  p.spawn([] {}).join();
  EXPECT_EQ(p.free_count(), 2u);
  p.spawn([] { throw some_error("fails"); }).join();
  EXPECT_EQ(p.free_count(), 2u);
  auto unstarted = p.spawn([] {});
  EXPECT_EQ(p.free_count(), 1u);
  unstarted.kill();
  EXPECT_EQ(p.free_count(), 2u);
  auto asleep = p.spawn([] { tendril::sleep(1h); });
  tendril::sleep(0s);
  asleep.kill();
  EXPECT_EQ(p.free_count(), 2u);
  auto custom = p.spawn([] { tendril::sleep(1h); });
  tendril::sleep(0s);
  custom.kill(std::make_exception_ptr(some_error("killed with an error")));
  EXPECT_EQ(p.free_count(), 2u);
  EXPECT_EQ(errors_reported, 2);
}

TEST_F(pools, a_pool_of_size_zero_refuses_to_spawn) {
  pool p(0);
  EXPECT_EQ(p.free_count(), 0u);
  bool ran = false;
  try {
    p.spawn([&] { ran = true; });
    ADD_FAILURE() << "spawned";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("size 0"), std::string::npos) << e.what();
  }
  const std::int64_t start = now_ns();
  EXPECT_FALSE(p.spawn_for(1s, [&] { ran = true; }).has_value());
  EXPECT_GE(now_ns() - start, second_ns);
  tendril::sleep(0s);
  EXPECT_FALSE(ran);
}

TEST_F(pools, kill_kills_every_task_and_frees_every_slot) {
  pool p(3);
  std::vector<task<void>> all;
  for (int i = 0; i < 3; ++i) all.push_back(p.spawn([] { tendril::sleep(1h); }));
  tendril::sleep(0s);
  p.kill();
  for (auto& t : all) EXPECT_TRUE(t.ready());
  EXPECT_EQ(p.free_count(), 3u);
  EXPECT_EQ(p.size(), 0u);
}

TEST_F(pools, never_runs_more_than_n_over_thousands_of_jobs_with_sleeps_errors_and_kills) {
  constexpr std::size_t n = 7;
  const std::size_t jobs = tendril::test::scaled(3000, 50);
  pool p(n);
  std::mt19937 rng(20240601);
  std::size_t running = 0;
  std::size_t most = 0;
  std::size_t returned = 0;
  std::size_t threw = 0;
  std::size_t killed = 0;
  std::vector<task<void>> kill_later;
  for (std::size_t i = 0; i < jobs; ++i) {
    const unsigned kind = rng() % 10;
    const auto nap = std::chrono::microseconds(rng() % 20'000);
    auto t = p.spawn([&, kind, nap] {
      ++running;
      most = std::max(most, running);
      struct leaving {
        std::size_t& running;
        ~leaving() { --running; }
      } on_exit{running};
      if (rng() % 2) tendril::sleep(nap);
      if (kind == 0) throw some_error("job failed");
      if (rng() % 4 == 0) tendril::sleep(0s);
    });
    EXPECT_LE(running, n);
    t.link([&](task<void>& done) {
      if (done.exception()) {
        ++threw;
      } else if (done.value()) {
        ++returned;
      } else {
        ++killed;
      }
    });
    if (kind == 1) t.kill(false);  // before it started: ends at once
    if (kind == 2) kill_later.push_back(t);
    if (i % 40 == 39) {
      tendril::killall(kill_later, false);
      kill_later.clear();
    }
  }
  tendril::killall(kill_later, false);
  p.join();
  EXPECT_LE(most, n);
  EXPECT_EQ(most, n);  // and it did fill up
  EXPECT_EQ(running, 0u);
  EXPECT_EQ(p.free_count(), n);
  EXPECT_EQ(p.size(), 0u);
  EXPECT_EQ(returned + threw + killed, jobs);
  EXPECT_GT(killed, 0u);
  EXPECT_GT(threw, 0u);
  EXPECT_EQ(static_cast<std::size_t>(errors_reported), threw);
}

TEST_F(pools, map_returns_the_results_in_the_order_of_the_items) {
  pool p(3);
  std::vector<int> items{5, 1, 4, 2, 3, 0};
  const std::int64_t start = now_ns();
  auto out = p.map(
      [](const int& v) {
        tendril::sleep(std::chrono::seconds(v));  // later items end first
        return v * 10;
      },
      items);
  EXPECT_EQ(out, (std::vector<int>{50, 10, 40, 20, 30, 0}));
  EXPECT_LT(now_ns() - start, 15 * second_ns);  // ran concurrently
  EXPECT_EQ(p.free_count(), 3u);
}

TEST_F(pools, map_rethrows_the_first_exception_in_item_order_after_all_ended) {
  pool p(4);
  std::vector<int> items{0, 1, 2, 3, 4, 5};
  int ended = 0;
  try {
    p.map(
        [&](const int& v) {
          struct counts {
            int& n;
            ~counts() { ++n; }
          } c{ended};
          tendril::sleep(std::chrono::seconds(10 - v));
          if (v == 2) throw some_error("item 2");
          if (v == 4) throw some_error("item 4");  // fails first in time
          return v;
        },
        items);
    ADD_FAILURE() << "map returned";
  } catch (const some_error& e) {
    EXPECT_STREQ(e.what(), "item 2");
  }
  EXPECT_EQ(ended, 6);
  EXPECT_EQ(p.free_count(), 4u);
}

TEST_F(pools, map_of_a_void_function_runs_every_item) {
  pool p(2);
  std::vector<int> seen;
  p.map([&](const int& v) { seen.push_back(v); }, std::vector<int>{1, 2, 3});
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<int>{1, 2, 3}));
}

TEST_F(pools, imap_unordered_yields_every_result_as_its_task_ends) {
  pool p(3);
  std::vector<int> items{3, 1, 2};
  std::vector<int> got;
  for (int v : p.imap_unordered(
           [](const int& s) {
             tendril::sleep(std::chrono::seconds(s));
             return s;
           },
           items)) {
    got.push_back(v);
  }
  EXPECT_EQ(got, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(p.free_count(), 3u);
}

TEST_F(pools, imap_unordered_yields_all_results_through_a_small_pool) {
  pool p(2);
  std::vector<int> items;
  for (int i = 0; i < 50; ++i) items.push_back(i);
  std::multiset<int> got;
  for (int v : p.imap_unordered(
           [](const int& i) {
             tendril::sleep(std::chrono::milliseconds((i * 37) % 11));
             return i * i;
           },
           items)) {
    got.insert(v);
    EXPECT_LE(p.size(), 2u);
  }
  std::multiset<int> expected;
  for (int i = 0; i < 50; ++i) expected.insert(i * i);
  EXPECT_EQ(got, expected);
}

TEST_F(pools, imap_unordered_passes_a_tasks_exception_to_the_step_that_reaches_it) {
  pool p(2);
  std::vector<int> items{1, 2, 3};
  std::vector<int> got;
  bool thrown = false;
  try {
    for (int v : p.imap_unordered(
             [](const int& s) {
               tendril::sleep(std::chrono::seconds(s));
               if (s == 2) throw some_error("two");
               return s;
             },
             items)) {
      got.push_back(v);
    }
  } catch (const some_error& e) {
    thrown = true;
    EXPECT_STREQ(e.what(), "two");
  }
  EXPECT_TRUE(thrown);
  EXPECT_EQ(got, (std::vector<int>{1}));
  p.join();  // the task of item 3 still ends normally
  EXPECT_EQ(p.free_count(), 2u);
}

TEST_F(pools, leaving_imap_unordered_early_leaves_the_running_tasks_unharmed) {
  pool p(3);
  std::vector<int> items{1, 2, 3, 4};
  int ended = 0;
  for (int v : p.imap_unordered(
           [&](const int& s) {
             tendril::sleep(std::chrono::seconds(s));
             ++ended;
             return s;
           },
           items)) {
    EXPECT_EQ(v, 1);
    break;
  }
  p.join();  // the tasks still running end normally, with nobody reading their results
  EXPECT_GE(ended, 3);
  EXPECT_EQ(p.free_count(), 3u);
}

// spawn() through a group& is the pool's: it waits for a slot (before, group::spawn took
// none, and a pool(2) ran five at once).
TEST_F(pools, spawn_through_a_group_reference_waits_for_a_slot) {
  pool p(2);
  group& g = p;
  int running = 0;
  int peak = 0;
  for (int i = 0; i < 5; ++i) {
    g.spawn([&] {
      peak = std::max(peak, ++running);
      tendril::sleep(1s);
      --running;
    });
    EXPECT_LE(2 - static_cast<int>(p.free_count()), 2);
  }
  g.join();
  EXPECT_EQ(peak, 2);
  EXPECT_EQ(p.free_count(), 2u);
}

// add() of a task spawned elsewhere takes a slot, waiting for one while the pool is full
// (the task itself may already run: it counts from then on), also through a group&; a task
// added twice, or ended, takes none.
TEST_F(pools, add_takes_a_slot_and_waits_for_one_while_the_pool_is_full) {
  pool p(1);
  auto first = spawn([] { tendril::sleep(1s); });
  p.add(first);
  p.add(first);
  EXPECT_EQ(p.free_count(), 0u);
  EXPECT_EQ(p.size(), 1u);
  auto second = spawn([] { tendril::sleep(5s); });
  group& g = p;
  g.add(second);  // waits until first has ended and given its slot back
  EXPECT_TRUE(first.ready());
  EXPECT_EQ(p.free_count(), 0u);
  EXPECT_EQ(p.size(), 1u);
  second.join();
  EXPECT_EQ(p.free_count(), 1u);
  p.add(second);  // ended: takes nothing
  EXPECT_EQ(p.free_count(), 1u);
  EXPECT_EQ(p.size(), 0u);
  pool none(0);
  auto third = spawn([] {});
  EXPECT_THROW(none.add(third), std::logic_error);
  third.join();
}

// imap_unordered() is a generator: a timeout scope or a kill of the consumer reaches it while
// it waits for results (before, neither did until a result came by itself).
TEST_F(pools, a_timeout_scope_and_a_kill_reach_a_consumer_of_imap_unordered) {
  pool p(2);
  std::vector<int> got;
  bool timed_out = false;
  try {
    tendril::timeout scope(1s);
    for (int r : p.imap_unordered(
             [](int x) {
               tendril::sleep(1h);
               return x;
             },
             std::vector<int>{1, 2}))
      got.push_back(r);
  } catch (const tendril::timeout_error&) {
    timed_out = true;
  }
  EXPECT_TRUE(timed_out);
  EXPECT_TRUE(got.empty());
  p.kill();

  bool consumer_went_on = false;
  auto consumer = spawn([&] {
    for (int r : p.imap_unordered(
             [](int x) {
               tendril::sleep(1h);
               return x;
             },
             std::vector<int>{1}))
      got.push_back(r);
    consumer_went_on = true;
  });
  tendril::sleep(1s);
  consumer.kill();
  EXPECT_TRUE(consumer.ready());
  EXPECT_FALSE(consumer_went_on);
  EXPECT_TRUE(got.empty());
  p.kill();
}

// imap_unordered() has one consumer at a time, as any generator: a second task's next()
// while the first waits inside its own took the body over, which died of an invalid_switch
// in the hub, and the first waited for ever. Now the second gets generator_running.
TEST_F(pools, a_second_task_draining_one_imap_unordered_gets_generator_running) {
  pool p(4);
  auto results = p.imap_unordered(
      [](int x) {
        tendril::sleep(std::chrono::seconds(x));
        return x * 10;
      },
      std::vector<int>{1, 2, 3, 4});
  std::vector<int> got;
  auto a = spawn([&] {
    while (auto v = results.next()) got.push_back(*v);
  });
  std::string refused;
  auto b = spawn([&] {
    tendril::sleep(100ms);  // a is inside next(), the body waits for the first result
    try {
      results.next();
    } catch (const tendril::generator_running& e) {
      refused = e.what();
    }
  });
  EXPECT_EQ(tendril::joinall_for(1min, a, b).size(), 2u);
  EXPECT_TRUE(a.successful());
  EXPECT_EQ(got, (std::vector<int>{10, 20, 30, 40}));
  EXPECT_NE(refused.find("'" + a.name() + "' is inside its next()"), std::string::npos) << refused;
  p.kill();
}
