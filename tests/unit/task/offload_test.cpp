// offload(): a blocking call runs on a thread of the pool while only the calling greenlet
// waits; its result or exception comes back; a waiter that is killed or timed out gives up at
// once and the call finishes unobserved without losing anything. Modelled on gevent's
// test__threadpool.py (apply, apply with a timeout, kill).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hub/thread_pool.hpp"
#include "tendril/sync/waiter.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::offload;
using tendril::spawn;
using tendril::task;

namespace {

struct some_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Waits (really, on this OS thread) until pred() holds or ten seconds passed.
template <class Pred>
bool eventually(Pred pred) {
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Notes its own destruction: bound into an offloaded call, it shows when the call's state
// was freed.
struct notes_destruction {
  std::shared_ptr<std::atomic<int>> count;
  notes_destruction(std::shared_ptr<std::atomic<int>> c) : count(std::move(c)) {}
  notes_destruction(const notes_destruction& o) : count(o.count) {}
  notes_destruction(notes_destruction&& o) noexcept : count(o.count) {}
  ~notes_destruction() { count->fetch_add(1); }
};

}  // namespace

TEST(offload, runs_on_another_thread_and_returns_its_result) {
  const auto me = std::this_thread::get_id();
  std::thread::id ran_on;
  int r = offload([&] {
    ran_on = std::this_thread::get_id();
    return 6 * 7;
  });
  EXPECT_EQ(r, 42);
  EXPECT_NE(ran_on, me);
}

TEST(offload, binds_arguments_by_value) {
  std::string s = "abc";
  auto r = offload([](std::string x, int n) { return x + std::to_string(n); }, s, 1);
  EXPECT_EQ(r, "abc1");
  EXPECT_EQ(s, "abc");
}

// The bound arguments were passed as lvalues: a move-only parameter taken by value did not
// compile (spawn() and std::thread accept it).
TEST(offload, passes_bound_arguments_as_rvalues_so_move_only_ones_work) {
  auto r = offload([](std::unique_ptr<int> p) { return *p + 1; }, std::make_unique<int>(41));
  EXPECT_EQ(r, 42);
}

TEST(offload, a_void_call_returns_once_it_ran) {
  std::atomic<bool> ran{false};
  offload([&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST(offload, rethrows_the_calls_exception_in_the_greenlet) {
  try {
    offload([]() -> int { throw some_error("from the pool"); });
    ADD_FAILURE() << "offload returned";
  } catch (const some_error& e) {
    EXPECT_STREQ(e.what(), "from the pool");
  }
}

TEST(offload, other_greenlets_run_while_one_waits) {
  // The offloaded call waits until a task of this hub runs: it can only end if the hub
  // kept running greenlets while main waited.
  std::atomic<bool> task_ran{false};
  auto t = spawn([&] { task_ran = true; });
  bool saw_task = offload([&] { return eventually([&] { return task_ran.load(); }); });
  EXPECT_TRUE(saw_task);
  t.join();
}

TEST(offload, many_greenlets_offload_at_once) {
  std::vector<task<int>> all;
  for (int i = 0; i < 40; ++i)
    all.push_back(spawn([i] {
      return offload([i] {
        std::this_thread::sleep_for(1ms);
        return i * i;
      });
    }));
  for (int i = 0; i < 40; ++i) EXPECT_EQ(all[i].get(), i * i);
}

TEST(offload, calls_from_several_threads_each_return_to_their_own_hub) {
  std::vector<std::thread> threads;
  std::atomic<int> right{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&right, i] {
      std::vector<task<int>> mine;
      for (int j = 0; j < 5; ++j)
        mine.push_back(spawn([i, j] { return offload([i, j] { return i * 10 + j; }); }));
      for (int j = 0; j < 5; ++j) {
        if (mine[j].get() == i * 10 + j) ++right;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(right, 20);
}

TEST(offload, a_killed_waiter_gives_up_at_once_and_the_call_finishes_unobserved) {
  auto freed = std::make_shared<std::atomic<int>>(0);
  std::atomic<bool> release{false};
  std::atomic<bool> call_started{false};
  std::atomic<bool> call_ended{false};
  bool after_offload = false;
  notes_destruction marker(freed);
  const int copies_before = freed->load();
  auto t = spawn([&] {
    offload(
        [&](const notes_destruction&) {
          call_started = true;
          while (!release) std::this_thread::sleep_for(1ms);
          call_ended = true;
          return 1;
        },
        marker);
    after_offload = true;
  });
  tendril::sleep(0s);
  ASSERT_TRUE(eventually([&] { return call_started.load(); }));
  t.kill();  // does not wait for the call
  EXPECT_TRUE(t.ready());
  EXPECT_TRUE(t.successful());
  EXPECT_FALSE(after_offload);
  EXPECT_FALSE(call_ended);
  release = true;
  // The call ends on its own and frees its state (the bound copy of marker with it).
  EXPECT_TRUE(eventually([&] { return call_ended.load(); }));
  EXPECT_TRUE(eventually([&] { return freed->load() > copies_before; }));
}

TEST(offload, a_timeout_scope_interrupts_the_wait) {
  std::atomic<bool> release{false};
  std::atomic<bool> call_ended{false};
  bool thrown = false;
  {
    tendril::timeout t(50ms);
    try {
      offload([&] {
        while (!release) std::this_thread::sleep_for(1ms);
        call_ended = true;
      });
    } catch (const tendril::timeout_error& e) {
      thrown = true;
      EXPECT_EQ(e.source(), &t);
    }
  }
  EXPECT_TRUE(thrown);
  EXPECT_FALSE(call_ended);
  release = true;
  EXPECT_TRUE(eventually([&] { return call_ended.load(); }));
  // The pool goes on serving.
  EXPECT_EQ(offload([] { return 3; }), 3);
}

TEST(offload, a_wait_on_the_pool_is_not_mistaken_for_a_deadlock) {
  // Nothing in this thread could wake main, but the pool job will: no loop_exit.
  auto r = offload([] {
    std::this_thread::sleep_for(100ms);
    return 1;
  });
  EXPECT_EQ(r, 1);
}

// offload() on the hub (in the error handler it runs for a greenlet that is not a task): the
// call was queued before the wait refused the hub, so it ran after its caller had been told
// it failed. It is refused before it is queued.
TEST(offload, on_the_hub_itself_it_throws_blocking_switch_out_without_calling) {
  tendril::greenlet hub_greenlet;
  spawn([&] { hub_greenlet = tendril::greenlet::current().parent(); }).join();
  ASSERT_FALSE(hub_greenlet.empty());
  std::atomic<int> calls{0};
  auto freed = std::make_shared<std::atomic<int>>(0);
  bool refused = false;
  tendril::hub::current().set_error_handler([&](const std::string&, std::exception_ptr) {
    try {
      offload([&calls](const notes_destruction&) { ++calls; }, notes_destruction(freed));
    } catch (const tendril::blocking_switch_out&) {
      refused = true;
    }
  });
  tendril::greenlet thrower([] { throw some_error("boom"); }, hub_greenlet);
  {
    tendril::detail::waiter come_back;  // the hub resumes us once it handled the error
    come_back.wake();
    thrower.switch_to();
  }
  tendril::hub::current().set_error_handler({});
  EXPECT_TRUE(refused);
  // Whatever ran on the pool meanwhile has ended: a call queued there would have by now.
  offload([] {});
  tendril::sleep(50ms);
  EXPECT_EQ(calls.load(), 0);
  EXPECT_GE(freed->load(), 1);  // the bound arguments were freed, not leaked
}

TEST(offload, a_call_waiting_for_an_event_that_the_calling_thread_sets_gets_it) {
  // The pool thread's own hub subtracted the pool's threads, itself included, from the
  // process's: with one other thread (the caller's) it counted none and raised loop_exit.
  tendril::event ev;
  auto setter = spawn([&] {
    tendril::sleep(100ms);
    ev.set();
  });
  const std::string seen = offload([&]() -> std::string {
    try {
      ev.wait();
      return "set";
    } catch (const tendril::loop_exit& e) {
      return e.what();
    }
  });
  EXPECT_EQ(seen, "set");
  setter.join();
}

// Calls offloaded at once each get a thread (within the pool's size), also when one thread
// sits idle from earlier: four calls that wait for each other all meet. Before, every call
// submitted before the idle thread woke saw it idle and started none, so they ran one after
// another (and calls that need each other deadlocked).
TEST(offload, calls_offloaded_at_once_run_at_once_beside_an_idle_thread) {
  offload([] {});  // one pool thread, idle once this returns
  std::this_thread::sleep_for(20ms);
  constexpr int n = 4;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  auto meet = [&] {
    std::unique_lock lock(mu);
    ++arrived;
    cv.notify_all();
    return cv.wait_for(lock, 10s, [&] { return arrived == n; });
  };
  std::vector<task<bool>> calls;
  for (int i = 0; i < n; ++i) calls.push_back(spawn([&] { return offload(meet); }));
  tendril::joinall(calls);
  for (auto& c : calls) EXPECT_TRUE(c.get());
}

// An offload() on a pool thread waited for the pool: with every thread busy the same way
// (here the only one), for ever. It now runs the call on that thread, as gevent does.
TEST(offload, a_call_offloaded_from_a_pool_thread_runs_there_at_once) {
  const std::size_t saved = tendril::detail::thread_pool::size();
  tendril::detail::thread_pool::set_size(1);
  std::thread::id outer, inner;
  std::string failed;
  int r = 0;
  try {
    tendril::timeout limit(10s);
    r = offload([&] {
      outer = std::this_thread::get_id();
      const int two = offload([&] {
        inner = std::this_thread::get_id();
        return 2;
      });
      try {
        offload([] { throw some_error("inner"); });
      } catch (const some_error& e) {
        return two + (std::string(e.what()) == "inner" ? 1 : 0);
      }
      return two;
    });
  } catch (const tendril::timeout_error&) {
    failed = "timed out";
  }
  tendril::detail::thread_pool::set_size(saved);
  offload([] {});  // a second thread takes a stuck inner call, if any
  EXPECT_EQ(failed, "");
  EXPECT_EQ(r, 3);
  EXPECT_EQ(inner, outer);
}

// offload() allocated its job before making the hub: when that threw (here no such
// backend), the job and the arguments bound into it were never freed.
TEST(offload, frees_its_arguments_when_the_hub_cannot_be_made) {
  auto held = std::make_shared<int>(7);
  std::string thrown;
  std::optional<std::string> old_backend;
  if (const char* b = std::getenv("TENDRIL_BACKEND")) old_backend = b;
  ::setenv("TENDRIL_BACKEND", "bogus", 1);
  std::thread([&] {  // a thread without a hub yet
    try {
      offload([](const std::shared_ptr<int>& p) { return *p; }, held);
    } catch (const std::invalid_argument& e) {
      thrown = e.what();
    }
  })
      .join();
  if (old_backend) {
    ::setenv("TENDRIL_BACKEND", old_backend->c_str(), 1);
  } else {
    ::unsetenv("TENDRIL_BACKEND");
  }
  EXPECT_NE(thrown.find("bogus"), std::string::npos) << thrown;
  EXPECT_EQ(held.use_count(), 1);
}
