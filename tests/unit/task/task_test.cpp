// task<R>, spawn, spawn_later, join, kill, link, joinall, killall, names, the hub's error
// handler, loop_exit, invalid_switch and blocking_switch_out. Modelled on gevent's
// test__greenlet.py (TestBasic, TestStuff, TestJoin, TestLink, TestKill) and test__hub.py.
#include <gtest/gtest.h>

#include <any>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "failing_new.hpp"
#include "hub/clock.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::event;
using tendril::greenlet;
using tendril::greenlet_exit;
using tendril::spawn;
using tendril::task;

namespace {

struct some_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

// Every test runs on the paused hub clock: a hub with nothing to do but wait for a timer
// moves the clock to it, so timed tests take no time and run in a fixed order.
class tasks : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

// Captures what the hub's error handler receives, for as long as it lives.
struct error_log {
  struct report {
    std::string task_name;
    std::exception_ptr error;
    std::string greenlet_name;  // the greenlet the handler ran on
  };
  std::vector<report> reports;
  error_log() {
    tendril::hub::current().set_error_handler(
        [this](const std::string& name, std::exception_ptr e) {
          reports.push_back({name, std::move(e), tendril::this_greenlet::name()});
        });
  }
  ~error_log() { tendril::hub::current().set_error_handler({}); }
  error_log(const error_log&) = delete;
  error_log& operator=(const error_log&) = delete;
};

// Sets a flag when destroyed: shows that a killed task unwound its stack.
struct sets_on_destruction {
  bool* flag;
  ~sets_on_destruction() { *flag = true; }
};

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "?";
  }
}

}  // namespace

// --- starting and the lifecycle flags ------------------------------------------------------

TEST_F(tasks, spawn_runs_nothing_until_the_spawner_blocks) {
  bool ran = false;
  auto t = spawn([&] { ran = true; });
  EXPECT_FALSE(ran);
  EXPECT_FALSE(t.started());
  EXPECT_FALSE(t.ready());
  t.join();
  EXPECT_TRUE(ran);
}

TEST_F(tasks, tasks_start_in_the_order_they_were_spawned) {
  std::vector<int> order;
  std::vector<task<void>> all;
  for (int i = 0; i < 5; ++i) all.push_back(spawn([&order, i] { order.push_back(i); }));
  tendril::joinall(all);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST_F(tasks, lifecycle_flags_of_a_task_that_returns) {
  event go;
  auto t = spawn([&] {
    go.wait();
    return 42;
  });
  EXPECT_FALSE(t.started());
  EXPECT_FALSE(t.ready());
  EXPECT_FALSE(t.successful());
  EXPECT_FALSE(t.value().has_value());
  EXPECT_EQ(t.exception(), nullptr);

  tendril::sleep(0s);  // it starts and waits
  EXPECT_TRUE(t.started());
  EXPECT_FALSE(t.ready());
  EXPECT_FALSE(t.successful());
  EXPECT_FALSE(t.value().has_value());
  EXPECT_TRUE(static_cast<bool>(t));

  go.set();
  t.join();
  EXPECT_TRUE(t.started());
  EXPECT_TRUE(t.ready());
  EXPECT_TRUE(t.successful());
  ASSERT_TRUE(t.value().has_value());
  EXPECT_EQ(*t.value(), 42);
  EXPECT_EQ(t.exception(), nullptr);
  EXPECT_EQ(t.get(), 42);
  EXPECT_EQ(t.get(), 42);  // as often as asked
  EXPECT_TRUE(t.greenlet().dead());
}

TEST_F(tasks, lifecycle_flags_of_a_task_that_throws) {
  error_log log;
  auto t = spawn([]() -> int { throw some_error("boom"); });
  t.join();
  EXPECT_TRUE(t.started());
  EXPECT_TRUE(t.ready());
  EXPECT_FALSE(t.successful());
  EXPECT_FALSE(t.value().has_value());
  ASSERT_NE(t.exception(), nullptr);
  EXPECT_EQ(what_of(t.exception()), "boom");
  EXPECT_THROW(t.get(), some_error);
}

TEST_F(tasks, a_void_task_reports_its_value_as_a_bool) {
  auto t = spawn([] {});
  EXPECT_FALSE(t.value());
  t.join();
  EXPECT_TRUE(t.value());
  static_assert(std::is_void_v<decltype(t.get())>);
  EXPECT_NO_THROW(t.get());
}

TEST_F(tasks, copies_of_a_handle_share_the_task) {
  auto t = spawn([] { return std::string("shared"); });
  task<std::string> copy = t;
  EXPECT_TRUE(copy == t);
  copy.join();
  EXPECT_TRUE(t.ready());
  EXPECT_EQ(t.get(), "shared");
  tendril::task_base base = t;
  EXPECT_TRUE(base.ready());
  EXPECT_TRUE(base == t);
}

TEST_F(tasks, an_empty_handle_is_not_ready_and_refuses_to_join) {
  task<int> t;
  EXPECT_FALSE(static_cast<bool>(t));
  EXPECT_FALSE(t.ready());
  EXPECT_FALSE(t.successful());
  EXPECT_EQ(t.exception(), nullptr);
  EXPECT_THROW(t.join(), std::logic_error);
}

TEST_F(tasks, arguments_are_bound_by_value_as_std_thread_does) {
  std::string text = "before";
  auto t = spawn([](std::string s, int n) { return s + std::to_string(n); }, text, 7);
  text = "after";
  EXPECT_EQ(t.get(), "before7");
}

TEST_F(tasks, get_waits_for_the_result) {
  auto t = spawn([] {
    tendril::sleep(1s);
    return 5;
  });
  const std::int64_t start = now_ns();
  EXPECT_EQ(t.get(), 5);
  EXPECT_GE(now_ns() - start, 1'000'000'000);
}

// --- join --------------------------------------------------------------------------------

TEST_F(tasks, join_for_returns_false_when_the_time_runs_out) {
  auto t = spawn([] { tendril::sleep(10s); });
  const std::int64_t start = now_ns();
  EXPECT_FALSE(t.join_for(1s));
  EXPECT_GE(now_ns() - start, 1'000'000'000);
  EXPECT_FALSE(t.ready());
  EXPECT_TRUE(t.join_for(20s));
  EXPECT_TRUE(t.ready());
}

TEST_F(tasks, join_until_takes_a_time_point) {
  auto t = spawn([] { tendril::sleep(10s); });
  EXPECT_FALSE(t.join_until(std::chrono::steady_clock::now() - 1s));  // past: no wait
  EXPECT_TRUE(t.join_until(std::chrono::steady_clock::now() + 1h));
}

TEST_F(tasks, join_of_an_ended_task_returns_at_once) {
  auto t = spawn([] {});
  t.join();
  bool other_ran = false;
  auto other = spawn([&] { other_ran = true; });
  t.join();  // no switch: the other task does not get to run
  EXPECT_FALSE(other_ran);
  other.join();
}

TEST_F(tasks, several_greenlets_may_join_one_task) {
  event go;
  auto t = spawn([&] { go.wait(); });
  int joined = 0;
  std::vector<task<void>> joiners;
  for (int i = 0; i < 3; ++i)
    joiners.push_back(spawn([&] {
      t.join();
      ++joined;
    }));
  tendril::sleep(0s);
  EXPECT_EQ(joined, 0);
  go.set();
  tendril::joinall(joiners);
  EXPECT_EQ(joined, 3);
}

TEST_F(tasks, joining_yourself_throws_logic_error_naming_the_task) {
  task<void> self;
  std::string join_error;
  std::string kill_error;
  self = spawn([&] {
    try {
      self.join();
    } catch (const std::logic_error& e) {
      join_error = e.what();
    }
    try {
      self.kill();
    } catch (const std::logic_error& e) {
      kill_error = e.what();
    }
  });
  self.join();
  EXPECT_TRUE(self.successful());
  EXPECT_TRUE(contains(join_error, "'" + self.name() + "'")) << join_error;
  EXPECT_TRUE(contains(join_error, "itself")) << join_error;
  EXPECT_TRUE(contains(kill_error, "'" + self.name() + "'")) << kill_error;
  EXPECT_TRUE(contains(kill_error, "itself")) << kill_error;
}

// --- joinall, joinall_for, killall ---------------------------------------------------------

TEST_F(tasks, joinall_waits_for_a_pack_and_for_a_range) {
  auto a = spawn([] { tendril::sleep(3s); });
  auto b = spawn([] {
    tendril::sleep(1s);
    return 2;
  });
  const std::int64_t start = now_ns();
  tendril::joinall(a, b);
  EXPECT_TRUE(a.ready());
  EXPECT_TRUE(b.ready());
  EXPECT_GE(now_ns() - start, 3'000'000'000);

  std::vector<task<int>> range;
  for (int i = 0; i < 4; ++i)
    range.push_back(spawn([i] {
      tendril::sleep(std::chrono::seconds(4 - i));
      return i;
    }));
  tendril::joinall(range);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(range[i].get(), i);
}

TEST_F(tasks, joinall_does_not_throw_for_failed_tasks) {
  error_log log;
  auto ok = spawn([] { return 1; });
  auto failed = spawn([]() -> int { throw some_error("quietly stored"); });
  EXPECT_NO_THROW(tendril::joinall(ok, failed));
  EXPECT_TRUE(failed.ready());
  EXPECT_FALSE(failed.successful());
  EXPECT_EQ(log.reports.size(), 1u);
}

TEST_F(tasks, joinall_for_returns_the_finished_subset_in_order) {
  std::vector<task<int>> all;
  all.push_back(spawn([] {
    tendril::sleep(10s);
    return 0;
  }));
  all.push_back(spawn([] {
    tendril::sleep(1s);
    return 1;
  }));
  all.push_back(spawn([] {
    tendril::sleep(2s);
    return 2;
  }));
  all.push_back(spawn([] {
    tendril::sleep(20s);
    return 3;
  }));
  const std::int64_t start = now_ns();
  auto done = tendril::joinall_for(5s, all);
  const std::int64_t waited = now_ns() - start;
  EXPECT_GE(waited, 5'000'000'000);
  EXPECT_LT(waited, 10'000'000'000);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_TRUE(done[0] == all[1]);
  EXPECT_TRUE(done[1] == all[2]);
  EXPECT_EQ(done[0].get(), 1);
  EXPECT_EQ(done[1].get(), 2);
  EXPECT_FALSE(all[0].ready());
  EXPECT_FALSE(all[3].ready());
  tendril::killall(all);
  for (auto& t : all) EXPECT_TRUE(t.ready());
}

// joinall_for() took only a range held in a variable: a pack of tasks and a temporary range
// did not compile.
TEST_F(tasks, joinall_for_takes_a_pack_of_tasks_and_a_temporary_range) {
  auto quick = spawn([] {
    tendril::sleep(1s);
    return 1;
  });
  auto slow = spawn([] {
    tendril::sleep(20s);
    return 2;
  });
  auto done = tendril::joinall_for(5s, quick, slow);
  static_assert(std::is_same_v<decltype(done), std::vector<task<int>>>);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0] == quick);
  EXPECT_EQ(done[0].get(), 1);

  // Tasks of different result types come back as task_base handles, in order.
  auto plain = spawn([] { tendril::sleep(1s); });
  auto mixed = tendril::joinall_until(std::chrono::steady_clock::now() + 5s, slow, plain);
  static_assert(std::is_same_v<decltype(mixed), std::vector<tendril::task_base>>);
  ASSERT_EQ(mixed.size(), 1u);
  EXPECT_TRUE(mixed[0] == plain);

  auto temporary = tendril::joinall_for(30s, std::vector<task<int>>{slow, quick});
  ASSERT_EQ(temporary.size(), 2u);
  EXPECT_TRUE(temporary[0] == slow);
  tendril::killall(std::vector<task<int>>{slow});
  tendril::joinall(std::vector<task<void>>{plain});
}

TEST_F(tasks, killall_kills_every_task_and_waits_for_them) {
  int unwound = 0;
  struct counts {
    int* n;
    ~counts() { ++*n; }
  };
  std::vector<task<void>> all;
  for (int i = 0; i < 5; ++i)
    all.push_back(spawn([&] {
      counts c{&unwound};
      tendril::sleep(1h);
      ADD_FAILURE() << "a killed task went on";
    }));
  tendril::sleep(0s);  // all of them asleep
  const std::int64_t start = now_ns();
  tendril::killall(all);
  EXPECT_EQ(now_ns(), start);
  EXPECT_EQ(unwound, 5);
  for (auto& t : all) {
    EXPECT_TRUE(t.ready());
    EXPECT_TRUE(t.successful());
    EXPECT_FALSE(t.value());
    EXPECT_THROW(t.get(), tendril::task_killed);
  }
}

TEST_F(tasks, killall_without_block_returns_before_the_tasks_end) {
  std::vector<task<void>> all;
  for (int i = 0; i < 3; ++i) all.push_back(spawn([] { tendril::sleep(1h); }));
  tendril::sleep(0s);
  tendril::killall(all, false);
  for (auto& t : all) EXPECT_FALSE(t.ready());
  tendril::joinall(all);
  for (auto& t : all) EXPECT_TRUE(t.successful());
}

// A task that called killall() on a range it is in killed the tasks listed before it, then
// itself (a logic_error from its own kill); the tasks after it were never killed.
TEST_F(tasks, killall_called_by_one_of_the_tasks_kills_the_others_and_returns) {
  std::vector<task<void>> all;
  std::string seen = "not run";
  for (int i = 0; i < 3; ++i) {
    all.push_back(spawn([&, i] {
      if (i != 1) return tendril::sleep(1h);
      tendril::sleep(0s);  // the others asleep
      try {
        tendril::killall(all);
        seen = "returned";
      } catch (const std::logic_error& e) {
        seen = e.what();
      }
    }));
  }
  all[1].join();
  EXPECT_EQ(seen, "returned");
  EXPECT_TRUE(all[0].ready());
  EXPECT_TRUE(all[2].ready());
  tendril::killall(all);
}

// --- kill ----------------------------------------------------------------------------------

TEST_F(tasks, kill_before_start_never_runs_the_body) {
  bool ran = false;
  int links = 0;
  auto t = spawn([&] {
    ran = true;
    return 1;
  });
  t.link([&] { ++links; });
  t.kill();
  EXPECT_FALSE(ran);
  EXPECT_TRUE(t.ready());
  EXPECT_FALSE(t.started());
  EXPECT_TRUE(t.successful());  // greenlet_exit counts as success
  EXPECT_FALSE(t.value().has_value());
  EXPECT_EQ(t.exception(), nullptr);
  EXPECT_EQ(links, 1);
  EXPECT_THROW(t.get(), tendril::task_killed);
  tendril::sleep(0s);
  EXPECT_FALSE(ran);
  EXPECT_EQ(links, 1);
}

TEST_F(tasks, kill_while_asleep_ends_at_once_and_runs_destructors) {
  bool destroyed = false;
  bool after_sleep = false;
  auto t = spawn([&] {
    sets_on_destruction guard{&destroyed};
    tendril::sleep(1h);
    after_sleep = true;
  });
  tendril::sleep(0s);
  ASSERT_TRUE(t.started());
  const std::int64_t start = now_ns();
  t.kill();
  EXPECT_EQ(now_ns(), start);  // no timer had to pass
  EXPECT_TRUE(t.ready());
  EXPECT_TRUE(destroyed);
  EXPECT_FALSE(after_sleep);
  EXPECT_TRUE(t.successful());
  EXPECT_EQ(t.exception(), nullptr);
}

TEST_F(tasks, kill_is_not_swallowed_by_catching_std_exception) {
  static_assert(!std::is_base_of_v<std::exception, greenlet_exit>);
  bool swallowed = false;
  auto t = spawn([&] {
    try {
      tendril::sleep(1h);
    } catch (const std::exception&) {
      swallowed = true;
    }
  });
  tendril::sleep(0s);
  t.kill();
  EXPECT_FALSE(swallowed);
  EXPECT_TRUE(t.successful());
}

TEST_F(tasks, kill_with_a_custom_exception_makes_the_task_unsuccessful) {
  error_log log;
  bool destroyed = false;
  auto t = spawn([&] {
    sets_on_destruction guard{&destroyed};
    tendril::sleep(1h);
    return 1;
  });
  tendril::sleep(0s);
  t.kill(std::make_exception_ptr(some_error("custom")));
  EXPECT_TRUE(destroyed);
  EXPECT_TRUE(t.ready());
  EXPECT_FALSE(t.successful());
  EXPECT_FALSE(t.value().has_value());
  EXPECT_EQ(what_of(t.exception()), "custom");
  EXPECT_THROW(t.get(), some_error);
  ASSERT_EQ(log.reports.size(), 1u);
  EXPECT_EQ(log.reports[0].task_name, t.name());
}

TEST_F(tasks, kill_before_start_with_a_custom_exception_makes_the_task_unsuccessful) {
  error_log log;
  bool ran = false;
  auto t = spawn([&] { ran = true; });
  t.kill(std::make_exception_ptr(some_error("early")));
  EXPECT_FALSE(ran);
  EXPECT_FALSE(t.started());
  EXPECT_TRUE(t.ready());
  EXPECT_FALSE(t.successful());
  EXPECT_THROW(t.get(), some_error);
  EXPECT_EQ(log.reports.size(), 1u);
}

TEST_F(tasks, kill_without_block_takes_effect_at_the_next_switch) {
  bool destroyed = false;
  auto t = spawn([&] {
    sets_on_destruction guard{&destroyed};
    tendril::sleep(1h);
  });
  tendril::sleep(0s);
  t.kill(false);
  EXPECT_FALSE(t.ready());
  EXPECT_FALSE(destroyed);
  t.join();
  EXPECT_TRUE(destroyed);
  EXPECT_TRUE(t.successful());
}

TEST_F(tasks, kill_of_an_ended_task_does_nothing) {
  auto t = spawn([] { return 3; });
  t.join();
  t.kill();
  t.kill(std::make_exception_ptr(some_error("late")));
  EXPECT_TRUE(t.successful());
  EXPECT_EQ(t.get(), 3);
}

TEST_F(tasks, a_kill_that_arrives_after_a_wake_is_raised_at_the_next_blocking_call) {
  event e;
  bool wait_returned = false;
  bool destroyed = false;
  auto t = spawn([&] {
    sets_on_destruction guard{&destroyed};
    wait_returned = e.wait_for(1h);
    tendril::sleep(1s);  // the kill is raised here
    ADD_FAILURE() << "the pending kill was lost";
  });
  tendril::sleep(0s);
  e.set();       // t is woken, not run yet
  t.kill(true);  // the wake won: the kill waits for t's next blocking call
  EXPECT_TRUE(wait_returned);
  EXPECT_TRUE(destroyed);
  EXPECT_TRUE(t.successful());
}

TEST_F(tasks, a_pending_kill_is_raised_before_a_pending_timeout) {
  event e;
  bool wait_returned = false;
  bool timed_out = false;
  auto t = spawn([&] {
    tendril::timeout scope(1s);
    try {
      wait_returned = e.wait_for(1h);
      tendril::sleep(1s);
    } catch (const tendril::timeout_error&) {
      timed_out = true;
    }
  });
  tendril::sleep(0s);
  // In one pass: t is woken, the clock passes its scope's deadline, and t is killed. When t
  // runs, both the kill and the timeout are pending: the kill comes first.
  auto helper = spawn([&] {
    e.set();
    tendril::detail::test_clock::advance_to(now_ns() + 2'000'000'000);
    t.kill(false);
  });
  tendril::joinall(helper, t);
  EXPECT_TRUE(wait_returned);
  EXPECT_FALSE(timed_out);
  EXPECT_TRUE(t.successful());
  EXPECT_FALSE(t.value());
}

TEST_F(tasks, a_task_may_kill_another_task) {
  bool destroyed = false;
  auto victim = spawn([&] {
    sets_on_destruction guard{&destroyed};
    tendril::sleep(1h);
  });
  auto killer = spawn([&] {
    tendril::sleep(1s);
    victim.kill();
    return victim.ready();
  });
  EXPECT_TRUE(killer.get());
  EXPECT_TRUE(destroyed);
}

TEST_F(tasks, a_killed_task_that_was_waiting_on_an_event_leaves_it_usable) {
  event e;
  auto victim = spawn([&] { e.wait(); });
  bool other_woke = false;
  auto other = spawn([&] { other_woke = e.wait_for(1h); });
  tendril::sleep(0s);
  victim.kill();
  e.set();
  other.join();
  EXPECT_TRUE(other_woke);
}

// --- exceptions and the hub's error handler ------------------------------------------------

TEST_F(tasks, a_task_exception_does_not_reach_the_spawner) {
  error_log log;
  auto t = spawn([] { throw some_error("not yours"); });
  EXPECT_NO_THROW(tendril::sleep(0s));
  EXPECT_NO_THROW(t.join());
  EXPECT_TRUE(t.ready());
  EXPECT_THROW(t.get(), some_error);
}

TEST_F(tasks, a_failed_task_is_reported_to_the_error_handler_once) {
  error_log log;
  auto t = spawn([] { throw some_error("reported"); });
  t.set_name("failing");
  t.join();
  tendril::sleep(0s);
  tendril::sleep(1s);
  (void)t.exception();
  EXPECT_THROW(t.get(), some_error);
  ASSERT_EQ(log.reports.size(), 1u);
  EXPECT_EQ(log.reports[0].task_name, "failing");
  EXPECT_EQ(what_of(log.reports[0].error), "reported");
  EXPECT_EQ(log.reports[0].error, t.exception());
}

TEST_F(tasks, killed_and_successful_tasks_are_not_reported) {
  error_log log;
  auto ok = spawn([] { return 1; });
  auto killed = spawn([] { tendril::sleep(1h); });
  auto killed_early = spawn([] {});
  killed_early.kill();
  tendril::sleep(0s);
  killed.kill();
  ok.join();
  EXPECT_TRUE(log.reports.empty());
}

TEST_F(tasks, the_default_error_handler_prints_the_task_name_and_the_error) {
  auto t = spawn([] { throw some_error("printed on stderr"); });
  t.set_name("noisy");
  ::testing::internal::CaptureStderr();
  t.join();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(contains(err, "tendril: task 'noisy' failed: printed on stderr")) << err;
}

// The hub called a copy of its handler: a handler that counts in its own state (mutable)
// counted 1 at every report.
TEST_F(tasks, an_error_handler_keeps_its_own_state_from_one_report_to_the_next) {
  std::vector<int> seen;
  tendril::hub::current().set_error_handler(
      [n = 0, &seen](const std::string&, std::exception_ptr) mutable { seen.push_back(++n); });
  for (int i = 0; i < 3; ++i) spawn([] { throw some_error("counted"); }).join();
  EXPECT_EQ(seen, (std::vector<int>{1, 2, 3}));
  tendril::hub::current().set_error_handler({});
}

TEST_F(tasks, an_error_handler_replaced_while_it_runs_keeps_its_state_until_it_returns) {
  // The hub called its handler in place: a handler that replaced itself (one-shot), or that
  // blocked while another task replaced it, ran on in a destroyed closure.
  auto state = std::make_shared<int>(1);
  std::weak_ptr<int> watch = state;
  bool alive_after_replacing_itself = false;
  tendril::hub::current().set_error_handler(
      [state, &watch, &alive_after_replacing_itself](const std::string&, std::exception_ptr) {
        tendril::hub::current().set_error_handler({});
        alive_after_replacing_itself = !watch.expired();
      });
  state.reset();
  spawn([] { throw some_error("first"); }).join();
  EXPECT_TRUE(alive_after_replacing_itself);

  state = std::make_shared<int>(2);
  watch = state;
  bool alive_after_being_replaced = false;
  tendril::hub::current().set_error_handler(
      [state, &watch, &alive_after_being_replaced](const std::string&, std::exception_ptr) {
        tendril::sleep(10ms);
        alive_after_being_replaced = !watch.expired();
      });
  state.reset();
  auto bad = spawn([] { throw some_error("second"); });
  auto replacer = spawn([] {
    tendril::sleep(1ms);
    tendril::hub::current().set_error_handler({});
  });
  tendril::joinall(bad, replacer);
  tendril::sleep(20ms);
  EXPECT_TRUE(alive_after_being_replaced);
  EXPECT_TRUE(watch.expired());
}

TEST_F(tasks, an_empty_error_handler_restores_the_default) {
  int calls = 0;
  tendril::hub::current().set_error_handler(
      [&](const std::string&, std::exception_ptr) { ++calls; });
  tendril::hub::current().set_error_handler({});
  auto t = spawn([] { throw some_error("back to stderr"); });
  ::testing::internal::CaptureStderr();
  t.join();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(contains(err, "back to stderr")) << err;
}

TEST_F(tasks, a_task_that_throws_a_non_std_exception_is_reported_too) {
  error_log log;
  auto t = spawn([] { throw 17; });
  t.join();
  EXPECT_FALSE(t.successful());
  EXPECT_THROW(t.get(), int);
  EXPECT_EQ(log.reports.size(), 1u);
}

// --- links ---------------------------------------------------------------------------------

TEST_F(tasks, links_run_once_in_the_order_they_were_added) {
  std::vector<int> order;
  auto t = spawn([] {
    tendril::sleep(1s);
    return 7;
  });
  t.link([&] { order.push_back(1); });
  t.link([&](task<int>& done) {
    EXPECT_TRUE(done.ready());
    EXPECT_EQ(done.value(), 7);
    order.push_back(2);
  });
  t.link([&] { order.push_back(3); });
  EXPECT_TRUE(order.empty());
  t.join();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  tendril::sleep(2s);
  t.join();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST_F(tasks, linking_an_ended_task_calls_at_once) {
  auto t = spawn([] { return 1; });
  t.join();
  int calls = 0;
  t.link([&] { ++calls; });
  EXPECT_EQ(calls, 1);
  t.link([&](task<int>& done) { calls += done.get(); });
  EXPECT_EQ(calls, 2);
  tendril::sleep(0s);
  EXPECT_EQ(calls, 2);
}

// kill_under_a_timeout() spawns a task and, before it starts, lets `kill` kill it inside a
// 10 ms timeout scope, then sleeps: whether the caller went on after the kill, and the scope
// that fired (null if none did).
namespace {
struct killed_under_a_timeout {
  bool went_on = false;
  const tendril::timeout* fired = nullptr;
};
template <class Kill>
killed_under_a_timeout kill_under_a_timeout(Kill kill) {
  killed_under_a_timeout k;
  try {
    tendril::timeout limit(10ms);
    auto t = spawn([] {});
    kill(t);
    k.went_on = true;
    tendril::sleep(1h);
  } catch (const tendril::timeout_error& e) {
    k.fired = e.source();
  }
  return k;
}
}  // namespace

// A task killed before it started runs its links on its killer's greenlet. A link that
// blocked there caught the killer's own timeout or kill as its failure ("a link callback
// threw; ignored"), and the killer never saw it.
TEST_F(tasks, links_of_a_task_killed_before_it_started_leave_the_killers_timeout_and_kill_to_it) {
  const killed_under_a_timeout k = kill_under_a_timeout([](task<void>& t) {
    t.link([] { tendril::sleep(1s); });
    t.kill();  // the link runs here, and the scope fires in it
  });
  EXPECT_TRUE(k.went_on);
  EXPECT_NE(k.fired, nullptr);
  struct stop {};
  std::string seen;
  auto killer = spawn([&] {
    auto t = spawn([] {});
    t.link([] { tendril::sleep(1s); });
    t.kill();  // the link runs here, and the killer is killed in it
    seen = "went on";
    tendril::sleep(1h);
    seen = "slept";
  });
  tendril::sleep(10ms);
  killer.kill(std::make_exception_ptr(stop{}));
  EXPECT_EQ(seen, "went on");
  EXPECT_FALSE(killer.successful());
}

// The same for the hub's error handler, which reports such a task killed with an exception of
// its own: the killer's timeout that ended a blocking handler was reported as the handler's.
TEST_F(tasks, the_error_handler_of_a_task_killed_before_it_started_leaves_the_killers_timeout) {
  tendril::hub::current().set_error_handler(
      [](const std::string&, std::exception_ptr) { tendril::sleep(1s); });
  struct restore {
    ~restore() { tendril::hub::current().set_error_handler({}); }
  } guard;
  const killed_under_a_timeout k = kill_under_a_timeout([](task<void>& t) {
    t.kill(std::make_exception_ptr(std::runtime_error("stop")));  // reported here
  });
  EXPECT_TRUE(k.went_on);
  EXPECT_NE(k.fired, nullptr);
}

TEST_F(tasks, links_run_on_the_tasks_own_greenlet_before_joiners_resume) {
  std::string ran_on;
  bool joiner_saw_link = false;
  auto t = spawn([] {});
  t.link([&] { ran_on = tendril::this_greenlet::name(); });
  t.join();
  joiner_saw_link = !ran_on.empty();
  EXPECT_EQ(ran_on, t.name());
  EXPECT_TRUE(joiner_saw_link);
}

TEST_F(tasks, links_run_for_failed_and_killed_tasks) {
  error_log log;
  auto failed = spawn([] { throw some_error("x"); });
  auto killed = spawn([] { tendril::sleep(1h); });
  bool failed_linked = false;
  bool killed_linked = false;
  failed.link([&](task<void>& t) { failed_linked = t.exception() != nullptr; });
  killed.link([&](task<void>& t) { killed_linked = t.successful() && !t.value(); });
  failed.join();
  killed.kill();
  EXPECT_TRUE(failed_linked);
  EXPECT_TRUE(killed_linked);
}

TEST_F(tasks, a_link_that_throws_does_not_stop_the_others) {
  std::vector<int> order;
  auto t = spawn([] {});
  t.link([&] { order.push_back(1); });
  t.link([&] {
    order.push_back(2);
    throw some_error("bad link");
  });
  t.link([&] { order.push_back(3); });
  ::testing::internal::CaptureStderr();
  t.join();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(contains(err, "link callback")) << err;
  EXPECT_TRUE(t.successful());
}

// --- lifetime ------------------------------------------------------------------------------

TEST_F(tasks, dropping_every_handle_to_a_running_task_does_not_kill_it) {
  event done;
  bool destroyed = false;
  {
    auto t = spawn([&] {
      sets_on_destruction guard{&destroyed};
      tendril::sleep(5s);
      done.set();
    });
    tendril::sleep(0s);  // started and asleep
  }
  spawn([&] { tendril::sleep(1s); });  // never joined either
  EXPECT_FALSE(destroyed);
  EXPECT_TRUE(done.wait_for(1h));
  tendril::sleep(0s);
  EXPECT_TRUE(destroyed);
}

TEST_F(tasks, dropping_every_handle_to_an_unstarted_task_still_runs_it) {
  bool ran = false;
  spawn([&] { ran = true; });
  tendril::sleep(0s);
  EXPECT_TRUE(ran);
}

// --- spawn_later ---------------------------------------------------------------------------

TEST_F(tasks, spawn_later_starts_the_task_once_the_time_has_passed) {
  const std::int64_t start = now_ns();
  std::int64_t started_at = 0;
  auto t = tendril::spawn_later(
      2s,
      [&](int v) {
        started_at = now_ns();
        return v;
      },
      9);
  tendril::sleep(1s);
  EXPECT_FALSE(t.started());
  EXPECT_EQ(t.get(), 9);
  EXPECT_GE(started_at - start, 2'000'000'000);
}

TEST_F(tasks, spawn_later_with_a_negative_delay_starts_at_the_next_switch) {
  bool ran = false;
  auto t = tendril::spawn_later(-5s, [&] { ran = true; });
  const std::int64_t start = now_ns();
  tendril::sleep(0s);
  EXPECT_TRUE(ran);
  EXPECT_EQ(now_ns(), start);
  t.join();
}

TEST_F(tasks, spawn_later_killed_before_its_time_never_runs) {
  bool ran = false;
  auto t = tendril::spawn_later(1s, [&] { ran = true; });
  t.kill();
  EXPECT_TRUE(t.ready());
  tendril::sleep(2s);
  EXPECT_FALSE(ran);
  EXPECT_FALSE(t.started());
}

// The task was handed to the hub before spawn_later's timer was added: when that threw
// std::bad_alloc, the task and what its body held stayed, unreachable, until the thread ended.
TEST_F(tasks, spawn_later_that_finds_no_room_for_its_timer_frees_the_task_at_once) {
  if (!tendril::test::failing_new_works()) GTEST_SKIP() << "operator new is not the test's own";
  // The timer heap's entry (deadline, sequence, node): its first push allocates one.
  constexpr std::size_t heap_entry = 2 * sizeof(std::int64_t) + sizeof(void*);
  auto held = std::make_shared<int>(1);
  bool refused = false;
  long uses = 0;
  std::thread([&] {
    tendril::sleep(0s);  // this thread's hub, whose timer heap has no room yet
    tendril::test::fail_next_new(heap_entry);
    try {
      tendril::spawn_later(1s, [held] {});
    } catch (const std::bad_alloc&) {
      refused = true;
    }
    tendril::test::stop_failing_new();
    uses = held.use_count();
  }).join();
  EXPECT_TRUE(refused);
  EXPECT_EQ(uses, 1);
}

// --- names and ids -------------------------------------------------------------------------

TEST_F(tasks, tasks_are_named_greenlet_n_in_spawn_order) {
  auto a = spawn([] { return tendril::this_greenlet::name(); });
  auto b = spawn([] { return tendril::this_greenlet::name(); });
  const std::string na = a.name();
  const std::string nb = b.name();
  ASSERT_EQ(na.rfind("Greenlet-", 0), 0u) << na;
  ASSERT_EQ(nb.rfind("Greenlet-", 0), 0u) << nb;
  EXPECT_EQ(std::stoul(nb.substr(9)), std::stoul(na.substr(9)) + 1);
  EXPECT_EQ(a.get(), na);
  EXPECT_EQ(b.get(), nb);
}

TEST_F(tasks, set_name_renames_the_task_for_this_greenlet_too) {
  auto t = spawn([] { return tendril::this_greenlet::name(); });
  t.set_name("worker-1");
  EXPECT_EQ(t.name(), "worker-1");
  EXPECT_EQ(t.get(), "worker-1");
}

TEST_F(tasks, each_greenlet_has_an_id_of_its_own) {
  const std::uint64_t main_id = tendril::this_greenlet::get_id();
  EXPECT_EQ(tendril::this_greenlet::name(), "main");
  auto a = spawn([] { return tendril::this_greenlet::get_id(); });
  auto b = spawn([] { return tendril::this_greenlet::get_id(); });
  const std::uint64_t ia = a.get();
  const std::uint64_t ib = b.get();
  EXPECT_NE(ia, ib);
  EXPECT_NE(ia, main_id);
  EXPECT_EQ(ia, a.greenlet().id());
  EXPECT_EQ(ib, b.greenlet().id());
  EXPECT_EQ(tendril::this_greenlet::get_id(), main_id);
}

// --- loop_exit, invalid_switch, blocking_switch_out ----------------------------------------

TEST_F(tasks, main_joining_a_task_that_waits_forever_gets_loop_exit) {
  event never;
  auto t = spawn([&] { never.wait(); });
  try {
    t.join();
    ADD_FAILURE() << "join returned";
  } catch (const tendril::loop_exit& e) {
    EXPECT_TRUE(contains(e.what(), "would block forever")) << e.what();
    EXPECT_TRUE(contains(e.what(), "'main'")) << e.what();
  }
  EXPECT_FALSE(t.ready());
  t.kill();
  EXPECT_TRUE(t.ready());
}

TEST_F(tasks, loop_exit_goes_to_the_greenlet_that_blocked_last_when_main_is_not_waiting) {
  // A plain greenlet (not a task) whose parent is main blocks: main is not waiting in the
  // hub, so the greenlet itself gets loop_exit.
  std::string error;
  greenlet g([&] {
    event never;
    try {
      never.wait();
    } catch (const tendril::loop_exit& e) {
      error = e.what();
    }
  });
  g.set_name("blocker");
  g.switch_to();
  EXPECT_TRUE(g.dead());
  EXPECT_TRUE(contains(error, "'blocker'")) << error;
}

TEST_F(tasks, a_parked_task_switched_into_by_another_greenlet_gets_invalid_switch) {
  event e;
  std::string error;
  bool waited_again = false;
  auto t = spawn([&] {
    try {
      e.wait();
    } catch (const tendril::invalid_switch& x) {
      error = x.what();
    }
    waited_again = !e.wait_for(1s);  // waits again, through the hub, and times out
  });
  tendril::sleep(0s);  // t waits on e
  {
    // Stay on the hub's run queue, so that the hub resumes main once t is parked again.
    tendril::detail::waiter come_back;
    come_back.wake();
    t.greenlet().switch_to();  // by hand, not through the hub
  }
  EXPECT_TRUE(contains(error, "'" + t.name() + "'")) << error;
  EXPECT_TRUE(contains(error, "'main'")) << error;
  EXPECT_TRUE(contains(error, "only the hub")) << error;
  static_assert(std::is_base_of_v<std::logic_error, tendril::invalid_switch>);
  t.join();
  EXPECT_TRUE(waited_again);
  EXPECT_TRUE(t.successful());
}

TEST_F(tasks, an_exception_thrown_into_a_parked_task_by_hand_gives_invalid_switch_and_goes) {
  event e;
  bool got_invalid_switch = false;
  bool waited_again = false;
  auto t = spawn([&] {
    try {
      e.wait();
    } catch (const tendril::invalid_switch&) {
      got_invalid_switch = true;
    }
    waited_again = !e.wait_for(50ms);  // times out: the intruder's exception is not raised here
  });
  tendril::sleep(0s);  // t waits on e
  {
    tendril::detail::waiter come_back;
    come_back.wake();
    t.greenlet().throw_into(std::make_exception_ptr(std::runtime_error("intruder")));
  }
  t.join();
  EXPECT_TRUE(got_invalid_switch);
  EXPECT_TRUE(waited_again);
  EXPECT_TRUE(t.successful()) << "the intruder's exception came out later";
}

TEST_F(tasks, blocking_in_an_error_handler_that_runs_on_the_hub_throws_blocking_switch_out) {
  // The hub itself reports a greenlet whose parent is the hub and that is not a task; an
  // error handler that blocks there gets blocking_switch_out.
  greenlet hub_greenlet;
  spawn([&] { hub_greenlet = greenlet::current().parent(); }).join();
  ASSERT_FALSE(hub_greenlet.empty());
  std::string blocked_with;
  std::string reported;
  std::string ran_on;
  tendril::hub::current().set_error_handler([&](const std::string&, std::exception_ptr e) {
    reported = what_of(e);
    ran_on = tendril::this_greenlet::name();
    try {
      tendril::sleep(0s);
    } catch (const tendril::blocking_switch_out& x) {
      blocked_with = x.what();
    }
    try {
      event never;
      never.wait();
    } catch (const tendril::blocking_switch_out& x) {
      blocked_with += " | ";
      blocked_with += x.what();
    }
  });
  greenlet thrower([] { throw some_error("raised into the hub"); }, hub_greenlet);
  {
    tendril::detail::waiter come_back;  // the hub resumes main once it handled the error
    come_back.wake();
    thrower.switch_to();
  }
  tendril::hub::current().set_error_handler({});
  EXPECT_EQ(reported, "raised into the hub");
  EXPECT_EQ(ran_on, "hub");
  EXPECT_TRUE(contains(blocked_with, "blocking call on the hub")) << blocked_with;
  EXPECT_TRUE(contains(blocked_with, " | ")) << blocked_with;
  // The hub goes on working.
  auto t = spawn([] { return 1; });
  EXPECT_EQ(t.get(), 1);
}

TEST_F(tasks, a_blocking_call_in_a_link_callback_runs_on_the_tasks_greenlet) {
  // link() callbacks run on the task's own greenlet (task.hpp), so they may block there.
  bool slept = false;
  auto t = spawn([] {});
  t.link([&] {
    tendril::sleep(1s);
    slept = true;
  });
  t.join();
  EXPECT_FALSE(slept);  // joiners are woken before the links run
  tendril::sleep(2s);
  EXPECT_TRUE(slept);
}

TEST_F(tasks, the_error_handler_for_a_task_runs_on_the_tasks_greenlet) {
  error_log log;
  auto t = spawn([] { throw some_error("where"); });
  t.join();
  ASSERT_EQ(log.reports.size(), 1u);
  EXPECT_EQ(log.reports[0].greenlet_name, t.name());
}

// A task handle is for the thread that spawned the task: using it from another thread is a
// programming error, named, and leaves the task and its hub as they were.
TEST_F(tasks, a_task_handle_used_from_another_thread_throws_wrong_thread) {
  event go;
  auto t = spawn([&] {
    go.wait();
    return 7;
  });
  tendril::sleep(0s);  // it waits on the event
  std::vector<std::string> messages;
  std::thread other([&] {
    auto expect_wrong_thread = [&](const char* what, const std::function<void()>& use) {
      try {
        use();
        ADD_FAILURE() << what << " from another thread did not throw";
      } catch (const tendril::wrong_thread& e) {
        messages.push_back(e.what());
      } catch (...) {
        ADD_FAILURE() << what << " from another thread threw something else";
      }
    };
    expect_wrong_thread("join", [&] { t.join(); });
    expect_wrong_thread("join_for", [&] { t.join_for(1ms); });
    expect_wrong_thread("get", [&] { t.get(); });
    expect_wrong_thread("kill", [&] { t.kill(); });
    expect_wrong_thread("link", [&] { t.link([] {}); });
    expect_wrong_thread("value", [&] { (void)t.value(); });
    expect_wrong_thread("name", [&] { (void)t.name(); });
    expect_wrong_thread("set_name", [&] { t.set_name("renamed"); });
  });
  other.join();
  ASSERT_EQ(messages.size(), 8u);
  EXPECT_NE(messages[0].find("task '" + t.name() + "' belongs to thread"), std::string::npos)
      << messages[0];
  EXPECT_EQ(t.name().rfind("Greenlet-", 0), 0u) << "renamed from another thread";
  // Untouched: it still waits, and ends normally.
  EXPECT_FALSE(t.ready());
  go.set();
  EXPECT_EQ(t.get(), 7);
}

// ready(), successful(), exception() and started() may be asked from another thread while the
// task ends (TSan checks the reads against the task's own writes).
TEST_F(tasks, another_thread_may_ask_whether_a_task_ended_and_how) {
  error_log log;
  event go;
  auto ok = spawn([&] {
    go.wait();
    return 1;
  });
  auto bad = spawn([&] {
    go.wait();
    throw std::runtime_error("boom");
  });
  struct seen {
    bool ok_successful = false, bad_successful = true, bad_has_exception = false;
    bool ok_started = false, bad_started = false;
  } s;
  std::thread watcher([&] {
    while (!ok.ready() || !bad.ready()) std::this_thread::yield();
    s.ok_successful = ok.successful();
    s.bad_successful = bad.successful();
    s.bad_has_exception = bad.exception() != nullptr;
    s.ok_started = ok.started();
    s.bad_started = bad.started();
  });
  tendril::sleep(0s);  // both wait on go
  go.set();
  ok.join();
  bad.join();
  watcher.join();
  EXPECT_TRUE(s.ok_successful);
  EXPECT_FALSE(s.bad_successful);
  EXPECT_TRUE(s.bad_has_exception);
  EXPECT_TRUE(s.ok_started);
  EXPECT_TRUE(s.bad_started);
  EXPECT_EQ(log.reports.size(), 1u);
}

TEST_F(tasks, a_move_only_result_is_moved_out_by_get_once) {
  auto t = spawn([] { return std::make_unique<int>(7); });
  std::unique_ptr<int> p = t.get();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 7);
  EXPECT_THROW(t.get(), std::logic_error);
  tendril::async_result<std::unique_ptr<int>> r;
  r.set(std::make_unique<int>(8));
  EXPECT_EQ(*r.get(), 8);
  EXPECT_THROW(r.get(), std::logic_error);
}

// A container of move-only values passes std::is_copy_constructible, but copying it does not
// compile: get() moves it out too, as it does nested containers, pairs and tuples of them.
TEST_F(tasks, a_container_of_move_only_values_is_moved_out_by_get_once) {
  using many = std::vector<std::unique_ptr<int>>;
  auto t = spawn([] {
    many v;
    v.push_back(std::make_unique<int>(1));
    v.push_back(std::make_unique<int>(2));
    return v;
  });
  many v = t.get();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(*v[1], 2);
  EXPECT_THROW(t.get(), std::logic_error);

  using nested = std::map<std::string, std::pair<int, many>>;
  auto n = spawn([] {
    nested m;
    m["a"].second.push_back(std::make_unique<int>(3));
    return m;
  });
  EXPECT_EQ(*n.get().at("a").second.at(0), 3);
  EXPECT_THROW(n.get(), std::logic_error);

  tendril::async_result<std::tuple<int, many>> r;
  many one;
  one.push_back(std::make_unique<int>(4));
  r.set(std::tuple<int, many>(5, std::move(one)));
  auto [five, four] = r.get();
  EXPECT_EQ(five, 5);
  EXPECT_EQ(*four.at(0), 4);
  EXPECT_THROW(r.get(), std::logic_error);

  // Copyable results are still copies: every get() sees them.
  auto c = spawn([] { return std::vector<std::string>{"x", "y"}; });
  EXPECT_EQ(c.get().size(), 2u);
  EXPECT_EQ(c.get().size(), 2u);
  static_assert(tendril::detail::copyable_v<std::map<int, std::vector<std::string>>>);
  static_assert(!tendril::detail::copyable_v<std::map<int, std::vector<many>>>);
  static_assert(!tendril::detail::copyable_v<std::optional<many>>);
  static_assert(!tendril::detail::copyable_v<std::variant<int, many>>);
  static_assert(tendril::detail::copyable_v<std::variant<int, std::string>>);
  static_assert(tendril::detail::copyable_v<std::string>);
  // An iterator has a value_type but copies without copying elements.
  static_assert(tendril::detail::copyable_v<many::iterator>);
}

// wait() over an event and a task of another thread refuses the task and leaves the event
// unwatched: setting it afterwards touches nothing of the failed wait (ASan would see it).
TEST_F(tasks, a_wait_that_refuses_a_task_of_another_thread_leaves_nothing_watched) {
  event e;
  std::optional<task<void>> foreign;
  std::thread other([&] {
    foreign = spawn([] {});
    foreign->join();
  });
  other.join();
  EXPECT_THROW(tendril::wait({e, *foreign}), tendril::wrong_thread);
  e.set();  // would notify the failed wait's freed watch
  EXPECT_TRUE(e.is_set());
  foreign.reset();
}

// A greenlet_exit thrown into a parked task by hand is the task's end, as anywhere else: it
// unwinds the task instead of turning into invalid_switch (and being dropped with it).
TEST_F(tasks, a_greenlet_exit_thrown_into_a_parked_task_by_hand_ends_it) {
  event e;
  bool got_invalid_switch = false;
  bool unwound = false;
  auto t = spawn([&] {
    struct mark {
      bool* b;
      ~mark() { *b = true; }
    } m{&unwound};
    try {
      e.wait();
    } catch (const tendril::invalid_switch&) {
      got_invalid_switch = true;
      e.wait();
    }
  });
  tendril::sleep(0s);  // t waits on e
  {
    tendril::detail::waiter come_back;
    come_back.wake();
    t.greenlet().throw_into(std::make_exception_ptr(greenlet_exit{}));
  }
  EXPECT_TRUE(unwound);
  EXPECT_FALSE(got_invalid_switch);
  e.set();
  t.join();
  EXPECT_TRUE(t.successful());
}

// throw_into() by hand on an unstarted task's greenlet raised the exception in the hub (or
// handed it a greenlet_exit) and left the task pending for ever: no joiner woke, no link ran.
TEST_F(tasks, throwing_into_an_unstarted_task_ends_it_as_a_kill_before_start_would) {
  error_log log;
  bool ran = false;
  int links = 0;
  auto t = tendril::spawn_later(1s, [&] {
    ran = true;
    return 1;
  });
  t.link([&] { ++links; });
  bool joined = false;
  auto joiner = spawn([&] {
    t.join();
    joined = true;
  });
  tendril::sleep(0s);  // joiner waits on t
  const std::int64_t start = now_ns();
  std::any back = t.greenlet().throw_into(std::make_exception_ptr(some_error("thrown")));
  EXPECT_FALSE(back.has_value());  // no switch: nothing was handed back
  EXPECT_TRUE(t.ready());
  EXPECT_FALSE(t.started());
  EXPECT_FALSE(t.successful());
  EXPECT_EQ(what_of(t.exception()), "thrown");
  EXPECT_EQ(links, 1);
  ASSERT_EQ(log.reports.size(), 1u);
  EXPECT_EQ(log.reports[0].task_name, t.name());
  joiner.join();
  EXPECT_TRUE(joined);
  EXPECT_THROW(t.get(), some_error);
  tendril::sleep(2s);  // past the start spawn_later had set
  EXPECT_FALSE(ran);
  EXPECT_EQ(links, 1);
  EXPECT_GE(now_ns() - start, 2 * second_ns);

  auto killed = spawn([&] { ran = true; });
  EXPECT_FALSE(killed.greenlet().throw_into(greenlet_exit{}).has_value());
  EXPECT_TRUE(killed.ready());
  EXPECT_TRUE(killed.successful());
  EXPECT_THROW(killed.get(), tendril::task_killed);
  tendril::sleep(0s);
  EXPECT_FALSE(ran);
}

// A task started by a switch_to() by hand stayed on the hub's run queue (or spawn_later's
// timer): the hub's start later resumed it in the middle of its sleep, which crashed.
TEST_F(tasks, a_task_started_by_hand_is_not_started_again_by_the_hub) {
  std::vector<std::string> seen;
  auto body = [&](const std::string& name) {
    seen.push_back(name + " started");
    tendril::sleep(10s);
    seen.push_back(name + " slept");
  };
  const std::int64_t start = now_ns();
  auto now = spawn(body, "now");
  auto later = tendril::spawn_later(1s, body, "later");
  for (task<void>* t : {&now, &later}) {
    tendril::detail::waiter come_back;  // the hub resumes main once t sleeps
    come_back.wake();
    t->greenlet().switch_to();  // by hand, not through the hub
  }
  seen.push_back("main");
  tendril::joinall(now, later);
  EXPECT_EQ(seen, (std::vector<std::string>{"now started", "later started", "main", "now slept",
                                            "later slept"}));
  EXPECT_GE(now_ns() - start, 10 * second_ns);
  EXPECT_TRUE(now.successful());
  EXPECT_TRUE(later.successful());
}

// A task started by a switch_to() by hand before its thread's hub ever ran, ending without
// blocking, started the hub with its end, and the hub's first run did not reap it: the task
// kept itself (and its result) alive and stayed among the hub's children.
TEST_F(tasks, a_task_started_by_hand_before_the_hub_ran_is_reaped_when_it_ends) {
  std::weak_ptr<int> result;
  bool expired = false;
  int later = 0;
  std::thread([&] {
    {
      auto t = spawn([] { return std::make_shared<int>(7); });
      tendril::detail::waiter come_back;  // the hub resumes this thread once t has ended
      come_back.wake();
      t.greenlet().switch_to();  // by hand; t's end is the hub's first run
      ASSERT_TRUE(t.ready());
      result = t.get();
    }
    expired = result.expired();
    later = spawn([] { return 5; }).get();
  }).join();
  EXPECT_TRUE(expired);
  EXPECT_EQ(later, 5);
}

// throw_into() into the greenlet of a task that had ended raised the exception in its first
// live ancestor, the hub: a hub that had not run yet died of it (the next blocking call then
// crashed); one that had ran reported it and left the caller to loop_exit.
TEST_F(tasks, throwing_into_an_ended_task_does_nothing) {
  std::vector<std::string> reported;
  std::string escaped;
  int later = 0;
  std::thread([&] {
    error_log log;
    auto before = spawn([] {});
    greenlet hub_greenlet = before.greenlet().parent();
    before.greenlet().throw_into(some_error("first"));  // ends it, before the hub ran
    try {
      EXPECT_FALSE(before.greenlet().throw_into(some_error("second")).has_value());
      EXPECT_FALSE(before.greenlet().throw_into(greenlet_exit{}).has_value());
      ASSERT_FALSE(hub_greenlet.dead());
      auto after = spawn([] { return 2; });
      EXPECT_EQ(after.get(), 2);  // ended, and the hub has run
      EXPECT_FALSE(after.greenlet().throw_into(some_error("third")).has_value());
      EXPECT_FALSE(after.greenlet().throw_into(greenlet_exit{}).has_value());
      tendril::sleep(10ms);
      later = spawn([] { return 5; }).get();
    } catch (const std::exception& e) {  // loop_exit among them
      escaped = e.what();
    }
    for (const auto& r : log.reports) reported.push_back(what_of(r.error));
  }).join();
  EXPECT_EQ(escaped, "");
  EXPECT_EQ(reported, std::vector<std::string>{"first"});
  EXPECT_EQ(later, 5);
}

// throw_into() into a plain greenlet that had ended or not started, whose first live ancestor
// was the hub, raised the exception there: a hub that had not run yet died of it; one that
// had ran reported it and left the caller to loop_exit.
TEST_F(tasks, throwing_into_a_greenlet_that_would_raise_it_in_the_hub_is_refused) {
  std::vector<std::string> refused;
  std::string escaped;
  bool left_unstarted = false;
  std::size_t reports = 0;
  int later = 0;
  std::thread([&] {
    error_log log;
    greenlet hub_greenlet = spawn([] {}).greenlet().parent();
    greenlet unstarted([] {}, hub_greenlet);
    try {
      try {
        unstarted.throw_into(some_error("into an unstarted greenlet"));
      } catch (const tendril::greenlet_error& e) {
        refused.push_back(e.what());
      }
      ASSERT_FALSE(hub_greenlet.dead());
      left_unstarted = !unstarted.started();
      greenlet ended;
      spawn([&] {
        ended = greenlet([] {});  // a child of the task: the hub's once the task is gone
        ended.switch_to();
      }).join();
      try {
        ended.throw_into(some_error("into an ended greenlet"));
      } catch (const tendril::greenlet_error& e) {
        refused.push_back(e.what());
      }
      EXPECT_THROW(hub_greenlet.throw_into(some_error("into the hub")), tendril::greenlet_error);
      EXPECT_THROW(hub_greenlet.throw_into(greenlet_exit{}), tendril::greenlet_error);
      later = spawn([] { return 5; }).get();
    } catch (const std::exception& e) {  // loop_exit among them
      escaped = e.what();
    }
    reports = log.reports.size();
  }).join();
  EXPECT_EQ(escaped, "");
  ASSERT_EQ(refused.size(), 2u);
  for (const std::string& what : refused) {
    EXPECT_TRUE(contains(what, "'hub'")) << what;
    EXPECT_TRUE(contains(what, "'greenlet-")) << what;
  }
  EXPECT_TRUE(left_unstarted);
  EXPECT_EQ(reports, 0u);
  EXPECT_EQ(later, 5);
}

// A spawn_later whose delay is too long for the clock never starts, and arms no timer: a
// wait that nothing else can end gets loop_exit, as sleep() with such a delay does.
TEST_F(tasks, spawn_later_beyond_the_clock_does_not_keep_loop_exit_away) {
  bool ran = false;
  auto t = tendril::spawn_later(std::chrono::hours::max(), [&] { ran = true; });
  event never;
  EXPECT_THROW(never.wait(), tendril::loop_exit);
  EXPECT_FALSE(t.ready());
  t.kill();
  EXPECT_TRUE(t.ready());
  EXPECT_FALSE(ran);
}

// A second kill of a task whose first kill has not reached it yet adds nothing: the task's
// cleanup may block without a second greenlet_exit cutting it short.
TEST_F(tasks, a_kill_on_its_way_is_not_doubled) {
  for (int variant = 0; variant < 2; ++variant) {
    bool cleaned_up = false;
    int exits = 0;
    auto t = spawn([&] {
      try {
        tendril::sleep(1h);
      } catch (const greenlet_exit&) {
        ++exits;
        tendril::sleep(1s);  // cleanup that blocks
        cleaned_up = true;
        throw;
      }
    });
    tendril::sleep(0s);
    if (variant == 0) {
      std::vector<task<void>> twice{t, t};
      tendril::killall(twice);
    } else {
      t.kill(false);
      t.kill();
    }
    EXPECT_TRUE(t.ready());
    EXPECT_TRUE(cleaned_up) << "variant " << variant;
    EXPECT_EQ(exits, 1);
    EXPECT_TRUE(t.successful());
  }
}

// A kill after a timeout scope's interrupt ended a wait (and was caught) still kills.
TEST_F(tasks, a_kill_behind_a_timeout_on_its_way_still_kills) {
  bool went_on = false;
  auto t = spawn([&] {
    try {
      tendril::timeout scope(1s);
      tendril::sleep(1h);
    } catch (const tendril::timeout_error&) {
    }
    tendril::sleep(1h);  // the kill is raised here
    went_on = true;
  });
  tendril::sleep(0s);
  tendril::sleep(1s);  // the scope fires: t is on the run queue with timeout_error
  t.kill();
  EXPECT_TRUE(t.ready());
  EXPECT_FALSE(went_on);
}

// --- a task inside a generator's next() ----------------------------------------------------
// The generator's body runs on a greenlet of its own, for its consumer: a kill or a timeout
// of the consumer reaches the body's blocking call and comes out of next(), as it would if
// the body ran on the consumer's stack (gevent). Before, it stayed pending until the body's
// wait ended by itself, and a kill then let the task's body finish normally.

TEST_F(tasks, a_kill_reaches_a_task_waiting_inside_a_generator_body) {
  bool body_unwound = false;
  bool task_went_on = false;
  auto t = spawn([&] {
    tendril::generator<int> g([&](tendril::generator<int>::yielder& y) {
      struct note {
        bool& flag;
        ~note() { flag = true; }
      } n{body_unwound};
      tendril::sleep(1h);
      y.yield(1);
    });
    for (int v : g) (void)v;
    task_went_on = true;
  });
  tendril::sleep(1s);
  const std::int64_t start = now_ns();
  t.kill();
  EXPECT_LT(now_ns() - start, second_ns);
  EXPECT_TRUE(t.ready());
  EXPECT_TRUE(body_unwound);
  EXPECT_FALSE(task_went_on);
  EXPECT_TRUE(t.successful());  // killed with greenlet_exit
}

TEST_F(tasks, a_kill_with_an_exception_reaches_a_task_inside_nested_generators) {
  auto t = spawn([&] {
    tendril::generator<int> outer([](tendril::generator<int>::yielder& y) {
      tendril::generator<int> inner([](tendril::generator<int>::yielder& yi) {
        tendril::sleep(1h);
        yi.yield(1);
      });
      for (int v : inner) y.yield(v);
    });
    for (int v : outer) (void)v;
  });
  tendril::sleep(1s);
  t.kill(std::make_exception_ptr(some_error("stop")));
  EXPECT_TRUE(t.ready());
  EXPECT_FALSE(t.successful());
  EXPECT_THROW(std::rethrow_exception(t.exception()), some_error);
}

// A kill that came while the task was not parked is raised at the first blocking call its
// generator's body makes.
TEST_F(tasks, a_pending_kill_is_raised_at_the_first_blocking_call_of_a_generator_body) {
  event go;
  bool slept = false;
  auto t = spawn([&] {
    go.wait();
    tendril::generator<int> g([&](tendril::generator<int>::yielder& y) {
      tendril::sleep(1h);
      slept = true;
      y.yield(1);
    });
    for (int v : g) (void)v;
  });
  tendril::sleep(0s);
  go.set();       // t is woken, not yet running
  t.kill(false);  // pending
  const std::int64_t start = now_ns();
  t.join();
  EXPECT_LT(now_ns() - start, second_ns);
  EXPECT_FALSE(slept);
}

// The hub of an ending thread stops its tasks: one inside next() was asked to, but the body
// parked for it was not woken; the task went on once the body's wait ended by itself (one
// that never ends kept the thread from ending).
TEST_F(tasks, an_ending_thread_unwinds_a_task_waiting_inside_a_generator_body) {
  bool body_unwound = false;
  bool body_went_on = false;
  bool task_went_on = false;
  std::thread([&] {
    spawn([&] {
      tendril::generator<int> g([&](tendril::generator<int>::yielder& y) {
        struct note {
          bool& flag;
          ~note() { flag = true; }
        } n{body_unwound};
        tendril::sleep(1h);
        body_went_on = true;
        y.yield(1);
      });
      for (int v : g) (void)v;
      task_went_on = true;
    });
    tendril::sleep(1s);  // the task is inside next(), its body asleep
  }).join();
  EXPECT_TRUE(body_unwound);
  EXPECT_FALSE(body_went_on);
  EXPECT_FALSE(task_went_on);
}

// A kill of a task that destroys a generator goes to the task, once the body's cleanup
// (which may block) is over. The destroyer stood as the body's consumer: the cleanup's
// blocking call took the kill (sent or pending), the body ended quietly and the task went on.
TEST_F(tasks, a_kill_of_a_task_destroying_a_generator_is_not_taken_by_the_body_cleanup) {
  bool cleanup_done = false;
  bool task_went_on = false;
  auto body = [&](tendril::generator<int>::yielder& y) {
    try {
      y.yield(1);
    } catch (const tendril::greenlet_exit&) {
      tendril::sleep(1s);  // a graceful close, say
      cleanup_done = true;
      throw;
    }
  };
  auto t = spawn([&] {
    {
      tendril::generator<int> g(body);
      g.next();
    }
    tendril::sleep(1h);
    task_went_on = true;
  });
  tendril::sleep(100ms);  // t destroys g, the body's cleanup asleep
  t.kill();
  EXPECT_TRUE(t.ready());
  EXPECT_TRUE(cleanup_done);
  EXPECT_FALSE(task_went_on);

  // The same with the kill pending when the destruction starts.
  cleanup_done = false;
  event go;
  auto u = spawn([&] {
    {
      tendril::generator<int> g(body);
      g.next();
      go.wait();
    }
    tendril::sleep(1h);
    task_went_on = true;
  });
  tendril::sleep(0s);  // u waits on go
  go.set();            // u is woken, not yet running
  u.kill(false);       // pending
  u.join();
  EXPECT_TRUE(cleanup_done);
  EXPECT_FALSE(task_went_on);
}

// The same for a timeout scope: it fired into the body's cleanup (which reported the
// timeout_error on stderr), and never for the greenlet that owns it.
TEST_F(tasks, a_timeout_scope_firing_while_a_generator_is_destroyed_reaches_its_own_greenlet) {
  bool cleanup_done = false;
  bool went_on = false;
  const tendril::timeout* source = nullptr;
  try {
    tendril::timeout scope(1s);
    {
      tendril::generator<int> g([&](tendril::generator<int>::yielder& y) {
        try {
          y.yield(1);
        } catch (const tendril::greenlet_exit&) {
          tendril::sleep(2s);
          cleanup_done = true;
          throw;
        }
      });
      g.next();
    }
    tendril::sleep(1h);
    went_on = true;
  } catch (const tendril::timeout_error& e) {
    source = e.source();
  }
  EXPECT_TRUE(cleanup_done);
  EXPECT_NE(source, nullptr);
  EXPECT_FALSE(went_on);
}

TEST_F(tasks, a_timeout_scope_reaches_a_wait_inside_a_generator_body) {
  const tendril::timeout* source = nullptr;
  bool went_on = false;
  const std::int64_t start = now_ns();
  try {
    tendril::timeout scope(1s);
    tendril::generator<int> g([](tendril::generator<int>::yielder& y) {
      tendril::sleep(1h);
      y.yield(1);
    });
    for (int v : g) (void)v;
    went_on = true;
  } catch (const tendril::timeout_error& e) {
    source = e.source();
  }
  EXPECT_NE(source, nullptr);
  EXPECT_FALSE(went_on);
  EXPECT_LT(now_ns() - start, 10 * second_ns);
}
