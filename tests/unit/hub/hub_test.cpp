// The hub's loop, through the public API and the waiter: it starts lazily, uses the backend
// TENDRIL_BACKEND names, fires timers in deadline order, runs ready greenlets one pass at a
// time in the order they became ready, takes wakes from other threads, raises loop_exit
// instead of hanging (and only then), refuses switches that bypass it (invalid_switch) and
// blocking on itself (blocking_switch_out); one hub per thread, which unwinds its tasks and
// the other greenlets parked there when the thread ends; the thread pool beside it; and a
// forked child's fresh hub and pool.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "child_process.hpp"
#include "failing_new.hpp"
#include "hub/backend.hpp"
#include "hub/clock.hpp"
#include "hub/hub_impl.hpp"
#include "hub/thread_pool.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "tendril/hub/deadline.hpp"
#include "tendril/hub/exceptions.hpp"
#include "tendril/hub/hub.hpp"
#include "tendril/net/socket.hpp"
#include "tendril/sync/event.hpp"
#include "tendril/sync/waiter.hpp"
#include "tendril/task/sleep.hpp"
#include "tendril/task/task.hpp"
#include "tendril/task/timeout.hpp"
#include "test_scale.hpp"

using namespace std::chrono_literals;
using tendril::blocking_switch_out;
using tendril::greenlet;
using tendril::invalid_switch;
using tendril::loop_exit;
using tendril::spawn;
using tendril::spawn_later;
using tendril::timeout;
using tendril::timeout_error;
using tendril::detail::hub_impl;
using tendril::detail::waiter;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Freezes the hub clock for the test's duration: timers then fire in no wall time, and the
// clock stands exactly at each deadline as it fires.
struct paused_clock {
  paused_clock() { tendril::detail::test_clock::pause(); }
  ~paused_clock() { tendril::detail::test_clock::resume(); }
  paused_clock(const paused_clock&) = delete;
  paused_clock& operator=(const paused_clock&) = delete;
};

// Sets an environment variable for a scope, and puts the old value back.
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~scoped_env() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Runs f on a thread of its own and waits for it.
template <class F>
void on_new_thread(F&& f) {
  std::thread t(std::forward<F>(f));
  t.join();
}

// The number of threads of this process, from /proc.
int threads_in_process() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

std::int64_t ms(std::int64_t n) { return n * 1'000'000; }

// A timer for the hub, noting when it fired.
struct noted_timer : tendril::detail::timer_node {
  std::vector<std::string>* trace = nullptr;
  std::string label;
  std::int64_t fired_at = -1;
};

void note_timer(tendril::detail::timer_node* t) {
  auto* n = static_cast<noted_timer*>(t);
  n->fired_at = tendril::detail::hub_now_ns();
  n->trace->push_back(n->label);
}

// A local that notes its destruction, and on which thread.
struct noted {
  std::atomic<int>* destroyed;
  std::thread::id* where;
  ~noted() {
    *where = std::this_thread::get_id();
    destroyed->fetch_add(1);
  }
};

}  // namespace

// --- starting ------------------------------------------------------------------------------

TEST(hub, hub_starts_lazily_on_the_first_blocking_call) {
  on_new_thread([] {
    EXPECT_EQ(hub_impl::peek(), nullptr);
    // Greenlets alone do not need a hub.
    greenlet g([] { return 1; });
    g.switch_to();
    EXPECT_EQ(hub_impl::peek(), nullptr);
    tendril::sleep(0s);
    hub_impl* started = hub_impl::peek();
    ASSERT_NE(started, nullptr);
    EXPECT_EQ(&tendril::hub::current().impl(), started);
    EXPECT_EQ(&tendril::hub::current(), &started->facade());
  });
}

TEST(hub, hub_current_is_the_same_hub_each_time) {
  tendril::hub& a = tendril::hub::current();
  tendril::hub& b = tendril::hub::current();
  EXPECT_EQ(&a, &b);
  tendril::sleep(0s);
  EXPECT_EQ(&tendril::hub::current(), &a);
}

TEST(hub, backend_name_is_the_one_tendril_backend_names) {
  // The suite runs every case once as is and once under TENDRIL_BACKEND=poll.
  const char* want = std::getenv("TENDRIL_BACKEND");
  const std::string name = tendril::hub::current().backend_name();
  if (want != nullptr && *want != '\0') {
    EXPECT_EQ(name, want);
  } else {
    // The best the kernel has: io_uring where tendril was built with it and the kernel
    // allows it, epoll otherwise; never the poll backend kept for tests.
    EXPECT_TRUE(name == "epoll" || name == "io_uring") << name;
  }
  EXPECT_STREQ(tendril::detail::make_backend()->name(), name.c_str());
}

TEST(hub, tendril_backend_chooses_epoll_or_poll) {
  {
    scoped_env env("TENDRIL_BACKEND", "epoll");
    EXPECT_STREQ(tendril::detail::make_backend()->name(), "epoll");
  }
  {
    scoped_env env("TENDRIL_BACKEND", "poll");
    EXPECT_STREQ(tendril::detail::make_backend()->name(), "poll");
    std::string seen;
    on_new_thread([&] { seen = tendril::hub::current().backend_name(); });
    EXPECT_EQ(seen, "poll");
  }
}

TEST(hub, unknown_tendril_backend_is_refused_with_invalid_argument_naming_it) {
  scoped_env env("TENDRIL_BACKEND", "kqueue-please");
  try {
    tendril::detail::make_backend();
    ADD_FAILURE() << "make_backend() accepted an unknown backend";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), "kqueue-please")) << e.what();
  }
}

TEST(hub, hub_that_cannot_start_throws_at_the_blocking_call_and_can_start_later) {
  std::string error;
  bool started_later = false;
  on_new_thread([&] {
    {
      scoped_env env("TENDRIL_BACKEND", "kqueue-please");
      try {
        tendril::sleep(0s);
      } catch (const std::invalid_argument& e) {
        error = e.what();
      }
      EXPECT_EQ(hub_impl::peek(), nullptr);
    }
    tendril::sleep(0s);
    started_later = hub_impl::peek() != nullptr;
  });
  EXPECT_TRUE(contains(error, "kqueue-please")) << error;
  EXPECT_TRUE(started_later);
}

// --- timers --------------------------------------------------------------------------------

TEST(hub, timers_fire_in_deadline_order) {
  paused_clock paused;
  std::vector<std::string> trace;
  const std::int64_t start = tendril::detail::hub_now_ns();
  auto sleeper = [&](std::string label, std::chrono::milliseconds d) {
    return spawn([&trace, label, d] {
      tendril::sleep(d);
      trace.push_back(label);
    });
  };
  auto a = sleeper("a:50", 50ms);
  auto b = sleeper("b:10", 10ms);
  auto c = sleeper("c:40", 40ms);
  auto d = sleeper("d:10", 10ms);  // the same deadline as b, armed after it
  auto e = sleeper("e:30", 30ms);
  auto f = sleeper("f:20", 20ms);
  tendril::joinall(a, b, c, d, e, f);
  EXPECT_EQ(trace, (std::vector<std::string>{"b:10", "d:10", "f:20", "e:30", "c:40", "a:50"}));
  // The paused clock went to each deadline in turn and stopped at the last.
  EXPECT_EQ(tendril::detail::hub_now_ns() - start, ms(50));
}

TEST(hub, hub_timers_fire_in_deadline_order_and_cancelled_ones_never) {
  paused_clock paused;
  hub_impl& hub = hub_impl::current();
  const std::int64_t start = tendril::detail::hub_now_ns();
  std::vector<std::string> trace;
  const std::vector<std::pair<std::string, std::int64_t>> plan = {
      {"t70", 70}, {"t20", 20}, {"t50", 50}, {"x30", 30}, {"t20b", 20}, {"x10", 10}, {"t60", 60}};
  std::vector<std::unique_ptr<noted_timer>> timers;
  for (const auto& [label, at] : plan) {
    auto t = std::make_unique<noted_timer>();
    t->trace = &trace;
    t->label = label;
    t->deadline_ns = start + ms(at);
    t->fire = &note_timer;
    hub.add_timer(*t);
    timers.push_back(std::move(t));
  }
  for (auto& t : timers) {
    if (t->label[0] == 'x') hub.cancel_timer(*t);
  }
  waiter w;
  EXPECT_FALSE(w.wait(start + ms(100)));  // nothing wakes it: its own deadline passes
  EXPECT_EQ(trace, (std::vector<std::string>{"t20", "t20b", "t50", "t60", "t70"}));
  for (auto& t : timers) {
    EXPECT_FALSE(t->armed()) << t->label;
    const bool cancelled = t->label[0] == 'x';
    EXPECT_EQ(t->fired_at, cancelled ? -1 : t->deadline_ns) << t->label;
    hub.cancel_timer(*t);  // a no-op, unless the test failed: never left in the hub
  }
}

TEST(hub, paused_clock_jumps_to_the_next_deadline_instead_of_sleeping) {
  paused_clock paused;
  const auto wall = std::chrono::steady_clock::now();
  const std::int64_t start = tendril::detail::hub_now_ns();
  tendril::sleep(1h);
  EXPECT_EQ(tendril::detail::hub_now_ns() - start, std::int64_t{3600} * 1'000'000'000);
  EXPECT_LT(std::chrono::steady_clock::now() - wall, 60s);
}

TEST(hub, deadline_at_a_steady_time_point_is_that_time_point) {
  // It went through steady_clock::now() and the hub clock, read one after the other: the
  // same time point gave deadlines that differed by up to a microsecond from call to call.
  using tendril::detail::deadline_at;
  const auto tp = std::chrono::steady_clock::now() + 20ms;
  const std::int64_t exact =
      std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
  int differed = 0;
  for (int i = 0; i < 1000; ++i) differed += deadline_at(tp) != exact;
  EXPECT_EQ(differed, 0);
  using seconds_point = std::chrono::time_point<std::chrono::steady_clock, std::chrono::seconds>;
  EXPECT_EQ(deadline_at(seconds_point::max()), tendril::detail::forever_ns);
  EXPECT_LE(deadline_at(std::chrono::steady_clock::time_point::min()),
            tendril::detail::hub_now_ns());
  // On a paused clock, a steady time point is as far ahead of the hub clock as of now().
  paused_clock paused;
  const std::int64_t start = tendril::detail::hub_now_ns();
  tendril::detail::test_clock::advance_to(start + ms(3'600'000));
  const std::int64_t d = deadline_at(std::chrono::steady_clock::now() + 1s);
  EXPECT_GT(d, start + ms(3'600'000) + ms(500));
  EXPECT_LE(d, start + ms(3'601'000));
}

TEST(hub, timer_due_while_a_greenlet_keeps_yielding_still_fires) {
  // Each pass of the run queue begins with the due timers: a greenlet that yields forever
  // cannot keep the hub from them (the pass is what it runs, not the queue until empty).
  std::atomic<bool> fired{false};
  auto timer = spawn([&] {
    tendril::sleep(1ms);
    fired = true;
  });
  long spins = 0;
  auto busy = spawn([&] {
    const auto give_up = std::chrono::steady_clock::now() + 60s;
    while (!fired && std::chrono::steady_clock::now() < give_up) {
      ++spins;
      tendril::sleep(0s);
    }
  });
  tendril::joinall(timer, busy);
  EXPECT_TRUE(fired);
  EXPECT_GT(spins, 0);
}

// --- the run queue -------------------------------------------------------------------------

TEST(hub, ready_greenlets_run_in_the_order_they_became_ready) {
  std::vector<std::string> trace;
  std::vector<waiter*> parked(3, nullptr);
  std::vector<tendril::task<void>> tasks;
  for (int i = 0; i < 3; ++i) {
    tasks.push_back(spawn([&, i] {
      waiter w;
      parked[static_cast<std::size_t>(i)] = &w;
      w.wait();
      trace.push_back("task" + std::to_string(i));
    }));
  }
  tendril::sleep(0s);  // they start, in spawn order, and park
  ASSERT_TRUE(parked[0] && parked[1] && parked[2]);
  // Woken in another order than they parked: they run in the order of the wakes.
  EXPECT_TRUE(parked[2]->wake());
  EXPECT_TRUE(parked[0]->wake());
  EXPECT_TRUE(parked[1]->wake());
  tendril::sleep(0s);  // ready after them: runs once they all did
  trace.push_back("root");
  EXPECT_EQ(trace, (std::vector<std::string>{"task2", "task0", "task1", "root"}));
  tendril::joinall(tasks);
}

TEST(hub, a_second_wake_of_a_woken_waiter_is_refused) {
  waiter w;
  EXPECT_TRUE(w.wake());
  EXPECT_FALSE(w.wake());
  EXPECT_TRUE(w.wait());
}

TEST(hub, ready_greenlets_run_one_pass_at_a_time) {
  // A greenlet that makes itself ready again during a pass runs in the next pass, after the
  // others that were ready already.
  std::vector<std::string> trace;
  auto looper = [&trace](std::string name, int rounds) {
    return spawn([&trace, name, rounds] {
      for (int r = 1; r <= rounds; ++r) {
        trace.push_back(name + std::to_string(r));
        tendril::sleep(0s);
      }
    });
  };
  auto a = looper("a", 3);
  auto b = looper("b", 1);
  auto c = looper("c", 2);
  tendril::joinall(a, b, c);
  EXPECT_EQ(trace, (std::vector<std::string>{"a1", "b1", "c1", "a2", "c2", "a3"}));
}

TEST(hub, root_that_yields_runs_after_every_ready_greenlet) {
  std::vector<std::string> trace;
  auto a = spawn([&] { trace.push_back("a"); });
  auto b = spawn([&] { trace.push_back("b"); });
  trace.push_back("root before");
  tendril::sleep(0s);
  trace.push_back("root after");
  EXPECT_EQ(trace, (std::vector<std::string>{"root before", "a", "b", "root after"}));
  EXPECT_TRUE(a.ready());
  EXPECT_TRUE(b.ready());
}

// --- other threads -------------------------------------------------------------------------

TEST(hub, greenlet_woken_from_another_thread_runs) {
  std::atomic<waiter*> parked{nullptr};
  bool ran = false;
  auto t = spawn([&] {
    waiter w(true);
    parked = &w;
    EXPECT_TRUE(w.wait());
    ran = true;
  });
  std::thread waker([&] {
    waiter* w = nullptr;
    while ((w = parked.load()) == nullptr) std::this_thread::yield();
    std::this_thread::sleep_for(20ms);  // most likely after it parked: the hub is waiting
    EXPECT_TRUE(w->wake());
  });
  t.join();
  waker.join();
  EXPECT_TRUE(ran);
}

TEST(hub, root_woken_from_another_thread_before_it_waits_does_not_wait) {
  waiter w(true);
  std::thread waker([&] { EXPECT_TRUE(w.wake()); });
  waker.join();
  EXPECT_TRUE(w.wait());
}

TEST(hub, many_threads_waking_greenlets_of_one_hub_lose_none) {
  const int count = static_cast<int>(tendril::test::scaled(200, 20));
  constexpr int wakers = 4;
  std::vector<std::atomic<waiter*>> parked(static_cast<std::size_t>(count));
  std::atomic<int> woken{0};
  std::vector<tendril::task<void>> tasks;
  for (int i = 0; i < count; ++i) {
    tasks.push_back(spawn([&, i] {
      waiter w(true);
      parked[static_cast<std::size_t>(i)] = &w;
      if (w.wait()) woken.fetch_add(1);
    }));
  }
  std::vector<std::thread> threads;
  for (int k = 0; k < wakers; ++k) {
    threads.emplace_back([&, k] {
      for (int i = k; i < count; i += wakers) {
        waiter* w = nullptr;
        while ((w = parked[static_cast<std::size_t>(i)].load()) == nullptr) {
          std::this_thread::yield();
        }
        w->wake();
      }
    });
  }
  try {
    tendril::joinall(tasks);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "joinall threw: " << e.what();
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(woken.load(), count);
}

TEST(hub, loop_keeps_waiting_while_another_thread_could_wake_a_cross_thread_wait) {
  // Longer than the loop's recheck of who could still wake it (250 ms): it looks several
  // times, sees the other thread, and goes on waiting instead of raising loop_exit.
  waiter w(true);
  std::thread waker([&] {
    std::this_thread::sleep_for(700ms);
    w.wake();
  });
  bool woken = false;
  try {
    woken = w.wait();
  } catch (const loop_exit& e) {
    ADD_FAILURE() << e.what();
  }
  waker.join();
  EXPECT_TRUE(woken);
}

TEST(hub, descriptor_wait_keeps_the_loop_waiting_and_its_callback_wakes_a_greenlet) {
  struct pipe_watch : tendril::detail::io_watch {
    waiter* to_wake = nullptr;
  };
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  hub_impl& hub = hub_impl::current();
  waiter w;  // not cross-thread: only the descriptor wait keeps loop_exit away
  pipe_watch pw;
  pw.fd = p[0];
  pw.events = POLLIN;
  pw.to_wake = &w;
  pw.ready = [](tendril::detail::io_watch* self, std::uint32_t) {
    auto* me = static_cast<pipe_watch*>(self);
    if (me->to_wake) me->to_wake->wake();
  };
  ASSERT_EQ(hub.io().watch(pw), 0);
  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(::write(p[1], "x", 1), 1);
  });
  bool woken = false;
  hub.add_descriptor_waits(1);  // as the I/O layer counts its readers
  try {
    woken = w.wait();
  } catch (const loop_exit& e) {
    ADD_FAILURE() << e.what();
  }
  hub.add_descriptor_waits(-1);
  writer.join();
  EXPECT_TRUE(woken);
  pw.to_wake = nullptr;
  hub.io().unwatch(pw);
  ::close(p[0]);
  ::close(p[1]);
}

// --- loop_exit -----------------------------------------------------------------------------

TEST(hub, a_watched_descriptor_nobody_waits_on_does_not_keep_loop_exit_away) {
  // The loop took any watch for something that could wake a greenlet; epoll and poll keep a
  // socket watched for its whole life once waited on, so an idle one kept a wait that
  // nothing could end from raising loop_exit (here until the pipe became ready).
  struct pipe_watch : tendril::detail::io_watch {
    hub_impl* hub = nullptr;
    bool reported = false;
  };
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  hub_impl& hub = hub_impl::current();
  pipe_watch pw;
  pw.fd = p[0];
  pw.events = POLLIN;
  pw.hub = &hub;
  pw.ready = [](tendril::detail::io_watch* self, std::uint32_t) {
    auto* me = static_cast<pipe_watch*>(self);
    me->reported = true;
    me->hub->io().unwatch(*me);  // so that the loop stops waiting even if it would not
  };
  ASSERT_EQ(hub.io().watch(pw), 0);
  std::thread writer([&] {
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(::write(p[1], "x", 1), 1);
  });
  bool raised_before_the_pipe_was_ready = false;
  try {
    waiter w;
    w.wait();
    ADD_FAILURE() << "wait() returned";
  } catch (const loop_exit&) {
    raised_before_the_pipe_was_ready = !pw.reported;
  }
  writer.join();
  EXPECT_TRUE(raised_before_the_pipe_was_ready);
  if (!pw.reported) hub.io().unwatch(pw);
  ::close(p[0]);
  ::close(p[1]);
}

TEST(hub, loop_exit_is_raised_in_the_root_when_it_waits_and_nothing_can_wake_it) {
  waiter w;
  try {
    w.wait();
    ADD_FAILURE() << "wait() returned";
  } catch (const loop_exit& e) {
    EXPECT_TRUE(contains(e.what(), "would block forever")) << e.what();
    EXPECT_TRUE(contains(e.what(), "'" + greenlet::current().name() + "'")) << e.what();
  }
  // The hub is still usable.
  tendril::sleep(1ms);
}

TEST(hub, loop_exit_is_raised_in_the_root_joining_a_task_that_waits_forever) {
  std::atomic<int> destroyed{0};
  std::thread::id where;
  auto forever = spawn([&] {
    noted n{&destroyed, &where};
    waiter w;
    w.wait();
  });
  try {
    forever.join();
    ADD_FAILURE() << "join() returned";
  } catch (const loop_exit& e) {
    EXPECT_TRUE(contains(e.what(), "'" + greenlet::current().name() + "'")) << e.what();
  }
  EXPECT_FALSE(forever.ready());
  forever.kill();
  EXPECT_TRUE(forever.ready());
  EXPECT_EQ(destroyed.load(), 1);
}

TEST(hub, loop_exit_goes_to_the_greenlet_that_blocked_last_when_the_root_does_not_wait) {
  greenlet sleeper([] {
    waiter w;
    w.wait();
  });
  sleeper.set_name("sleeper");
  try {
    sleeper.switch_to();  // it blocks; the root is not waiting in the hub
    ADD_FAILURE() << "no loop_exit";
  } catch (const loop_exit& e) {
    // It reached the root as sleeper's own exception, sleeper having died of it.
    EXPECT_TRUE(contains(e.what(), "'sleeper'")) << e.what();
  }
  EXPECT_TRUE(sleeper.dead());
  tendril::sleep(1ms);
}

TEST(hub, loop_exit_after_a_task_was_started_directly_reaches_the_root) {
  {
    // A greenlet that parked once and is gone by the time the loop runs out of work.
    auto earlier = spawn([] { tendril::sleep(0s); });
    earlier.join();
  }
  // Started by a plain switch rather than by the hub, the task ends into the hub (its
  // parent), which finds nothing left that could ever resume the root.
  auto direct = spawn([] { return 7; });
  try {
    direct.greenlet().switch_to();
    ADD_FAILURE() << "no loop_exit";
  } catch (const loop_exit& e) {
    EXPECT_TRUE(contains(e.what(), "'" + greenlet::current().name() + "'")) << e.what();
  }
  EXPECT_EQ(direct.value(), std::optional<int>(7));
}

TEST(hub, cross_thread_wait_with_no_other_thread_alive_raises_loop_exit) {
  const int others = threads_in_process() - 1 - tendril::detail::sanitizer_threads() -
                     static_cast<int>(tendril::detail::thread_pool::workers());
  if (others != 0) {
    GTEST_SKIP() << "the process has " << others
                 << " other thread(s) (one left by another test) that could wake the wait, "
                    "so the loop rightly waits for them";
  }
  waiter w(true);
  EXPECT_THROW(w.wait(), loop_exit);
}

// --- misuse --------------------------------------------------------------------------------

TEST(hub, a_thread_count_that_cannot_be_read_counts_as_threads_that_could_wake) {
  // Without /proc the count read as 0, which left -1 other threads: a cross-thread wait that
  // another thread was about to end got loop_exit at once.
  using tendril::detail::other_threads_could_wake;
  EXPECT_TRUE(other_threads_could_wake(-1, 0, false));
  EXPECT_TRUE(other_threads_could_wake(-1, 3, true));
  EXPECT_FALSE(other_threads_could_wake(1, 0, false));
  EXPECT_TRUE(other_threads_could_wake(2, 0, false));
  // Pool threads never wake anyone; the waiting thread, when one of them, is counted once.
  EXPECT_FALSE(other_threads_could_wake(3, 2, false));
  EXPECT_TRUE(other_threads_could_wake(3, 2, true));
  EXPECT_FALSE(other_threads_could_wake(2, 2, true));
}

TEST(hub, switching_into_a_parked_greenlet_from_another_greenlet_raises_invalid_switch_in_it) {
  hub_impl& hub = hub_impl::current();
  std::string message;
  bool caught_in_victim = false;
  waiter done;  // the root waits here; the victim wakes it
  auto victim = spawn([&] {
    waiter w;
    try {
      w.wait();
    } catch (const invalid_switch& e) {
      caught_in_victim = true;
      message = e.what();
    }
    done.wake();
  });
  victim.set_name("victim");
  // The intruder is a plain greenlet that the hub starts after the victim parked; it
  // switches into the victim directly. The victim then ends, back to the hub, and the
  // intruder stays suspended until its last handle goes.
  tendril::detail::greenlet_retain(hub.greenlet());
  greenlet hub_greenlet(hub.greenlet(), greenlet::adopt_t{});
  greenlet intruder([&] { victim.greenlet().switch_to(); }, hub_greenlet);
  intruder.set_name("intruder");
  tendril::detail::ready_node start;
  start.greenlet = intruder.record();
  hub.schedule(start);
  EXPECT_TRUE(done.wait());
  EXPECT_TRUE(caught_in_victim);
  EXPECT_TRUE(contains(message, "'victim'")) << message;
  EXPECT_TRUE(contains(message, "'intruder'")) << message;
  EXPECT_TRUE(victim.ready());
  EXPECT_FALSE(intruder.dead());
  intruder = greenlet();  // unwinds it
  tendril::sleep(0s);
}

TEST(hub, blocking_inside_a_hub_timer_raises_blocking_switch_out) {
  paused_clock paused;
  struct blocking_timer : tendril::detail::timer_node {
    std::vector<std::string> messages;
  };
  blocking_timer t;
  t.deadline_ns = tendril::detail::hub_now_ns() + ms(10);
  t.fire = [](tendril::detail::timer_node* self) {
    auto* me = static_cast<blocking_timer*>(self);
    // Runs on the hub: every way of blocking is refused.
    try {
      tendril::sleep(0s);
    } catch (const blocking_switch_out& e) {
      me->messages.push_back(e.what());
    }
    try {
      tendril::sleep(5ms);
    } catch (const blocking_switch_out& e) {
      me->messages.push_back(e.what());
    }
    try {
      waiter w;
      w.wait();
    } catch (const blocking_switch_out& e) {
      me->messages.push_back(e.what());
    }
  };
  hub_impl::current().add_timer(t);
  tendril::sleep(20ms);
  hub_impl::current().cancel_timer(t);  // a no-op once it fired; never left behind
  ASSERT_EQ(t.messages.size(), 3u);
  for (const auto& m : t.messages) EXPECT_TRUE(contains(m, "hub itself")) << m;
  // Nothing the refused calls left behind disturbs the loop.
  std::vector<int> order;
  auto a = spawn([&] { order.push_back(1); });
  tendril::sleep(1ms);
  a.join();
  EXPECT_EQ(order, std::vector<int>{1});
}

TEST(hub, blocking_inside_a_descriptor_callback_raises_blocking_switch_out) {
  struct blocking_watch : tendril::detail::io_watch {
    std::string message;
    waiter* to_wake = nullptr;
  };
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  ASSERT_EQ(::write(p[1], "x", 1), 1);
  hub_impl& hub = hub_impl::current();
  waiter w;
  blocking_watch bw;
  bw.fd = p[0];
  bw.events = POLLIN;
  bw.to_wake = &w;
  bw.ready = [](tendril::detail::io_watch* self, std::uint32_t) {
    auto* me = static_cast<blocking_watch*>(self);
    try {
      tendril::sleep(1ms);
    } catch (const blocking_switch_out& e) {
      me->message = e.what();
    }
    if (me->to_wake) me->to_wake->wake();
  };
  ASSERT_EQ(hub.io().watch(bw), 0);
  hub.add_descriptor_waits(1);  // as the I/O layer counts its readers
  EXPECT_TRUE(w.wait());
  hub.add_descriptor_waits(-1);
  EXPECT_TRUE(contains(bw.message, "hub itself")) << bw.message;
  hub.io().unwatch(bw);
  ::close(p[0]);
  ::close(p[1]);
}

// A plain greenlet whose parent is the hub and that threw ended the hub itself when the hub had
// not run yet, or sat in its own switch to the root (after loop_exit, after draining its
// tasks): the root got the exception, and the thread's next wait jumped into a dead hub.
TEST(hub, a_greenlet_that_throws_into_the_hub_is_reported_whatever_the_hub_was_doing) {
  enum class before { nothing, loop_exit_in_the_root, draining_the_tasks };
  for (before b : {before::nothing, before::loop_exit_in_the_root, before::draining_the_tasks}) {
    SCOPED_TRACE(b == before::nothing                 ? "the hub had not run"
                 : b == before::loop_exit_in_the_root ? "after loop_exit in the root"
                                                      : "after draining the tasks");
    std::vector<std::string> reported;
    std::string escaped;
    bool hub_alive = false;
    int later = 0;
    on_new_thread([&] {
      hub_impl& hub = hub_impl::current();
      hub.facade().set_error_handler([&](const std::string& name, std::exception_ptr e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          reported.push_back(name + ": " + x.what());
        }
      });
      if (b == before::loop_exit_in_the_root) {
        // Started by hand, the task ends into the hub, which finds nothing that could resume
        // the root and switches to it with loop_exit.
        auto direct = spawn([] {});
        EXPECT_THROW(direct.greenlet().switch_to(), loop_exit);
      } else if (b == before::draining_the_tasks) {
        auto sleeper = spawn([] { tendril::sleep(1h); });
        tendril::sleep(0s);
        hub.end_tasks();  // the hub switches to the root once the sleeper has unwound
        EXPECT_TRUE(sleeper.ready());
      }
      tendril::detail::greenlet_retain(hub.greenlet());
      greenlet hub_greenlet(hub.greenlet(), greenlet::adopt_t{});
      greenlet thrower([] { throw std::runtime_error("boom"); }, hub_greenlet);
      try {
        waiter come_back;  // the hub resumes the root once it handled the error
        come_back.wake();
        thrower.switch_to();
      } catch (const std::exception& e) {
        escaped = e.what();
      }
      hub_alive = !hub_greenlet.dead();
      if (!hub_alive) return;  // the next wait would jump into a dead hub
      tendril::sleep(1ms);
      later = spawn([] { return 5; }).get();
    });
    EXPECT_EQ(escaped, "");
    EXPECT_TRUE(hub_alive);
    EXPECT_EQ(reported, std::vector<std::string>{"a greenlet whose parent is the hub: boom"});
    EXPECT_EQ(later, 5);
  }
}

// --- threads and their hubs ----------------------------------------------------------------

TEST(hub, each_thread_has_its_own_hub) {
  static constexpr int thread_count = 2;
  static constexpr int per_thread = 3;
  struct seen {
    tendril::hub* hub = nullptr;
    std::thread::id thread;
    std::vector<std::thread::id> task_threads;
    std::vector<tendril::hub*> task_hubs;
    int finished = 0;
  };
  std::vector<seen> out(thread_count);
  // Main's hub made first, so that it is alive while the others are: a hub made after their
  // threads ended could take the address one of theirs had (ThreadSanitizer's allocator did).
  tendril::hub* const main_hub = &tendril::hub::current();
  std::barrier both(thread_count);
  std::vector<std::thread> threads;
  for (int i = 0; i < thread_count; ++i) {
    threads.emplace_back([&, i] {
      seen& s = out[static_cast<std::size_t>(i)];
      s.thread = std::this_thread::get_id();
      s.hub = &tendril::hub::current();
      both.arrive_and_wait();  // both hubs run at once
      std::vector<tendril::task<void>> tasks;
      for (int k = 0; k < per_thread; ++k) {
        tasks.push_back(spawn([&s, k] {
          tendril::sleep(std::chrono::milliseconds(5 * (per_thread - k)));
          s.task_threads.push_back(std::this_thread::get_id());
          s.task_hubs.push_back(&tendril::hub::current());
          ++s.finished;
        }));
      }
      tendril::sleep(2ms);
      tendril::joinall(tasks);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_NE(out[0].hub, out[1].hub);
  for (const seen& s : out) {
    EXPECT_NE(s.hub, main_hub);
    EXPECT_EQ(s.finished, per_thread);
    for (auto id : s.task_threads) EXPECT_EQ(id, s.thread);
    for (auto* h : s.task_hubs) EXPECT_EQ(h, s.hub);
  }
}

TEST(hub, hub_of_an_ending_thread_unwinds_the_tasks_still_parked_there) {
  std::atomic<int> destroyed{0};
  std::thread::id sleeper_died_on, waiter_died_on, thread_id;
  std::atomic<bool> unstarted_ran{false};
  auto token = std::make_shared<int>(0);
  std::atomic<bool> after_sleep{false};
  on_new_thread([&] {
    thread_id = std::this_thread::get_id();
    spawn([&] {
      noted n{&destroyed, &sleeper_died_on};
      tendril::sleep(1h);
      after_sleep = true;
    });
    spawn([&] {
      noted n{&destroyed, &waiter_died_on};
      waiter w;
      w.wait();
    });
    tendril::sleep(0s);  // both start and park
    // Spawned, never started: it never runs, and what it holds is released.
    spawn([&unstarted_ran, token] { unstarted_ran = true; });
    EXPECT_EQ(token.use_count(), 2);
  });
  EXPECT_EQ(destroyed.load(), 2);
  EXPECT_EQ(sleeper_died_on, thread_id);
  EXPECT_EQ(waiter_died_on, thread_id);
  EXPECT_FALSE(after_sleep);
  EXPECT_FALSE(unstarted_ran);
  EXPECT_EQ(token.use_count(), 1);
}

TEST(hub, an_ending_thread_unwinds_a_task_blocked_in_its_error_handler_or_a_link) {
  // A task left the hub's children as it ended, before its error handler and links ran:
  // one blocked there was never unwound, its locals never destroyed.
  std::atomic<int> destroyed{0};
  std::thread::id handler_died_on, link_died_on, thread_id;
  bool handler_went_on = false;
  bool link_went_on = false;
  bool later_link_ran = false;
  on_new_thread([&] {
    thread_id = std::this_thread::get_id();
    tendril::hub::current().set_error_handler([&](const std::string&, std::exception_ptr) {
      noted n{&destroyed, &handler_died_on};
      tendril::sleep(1h);
      handler_went_on = true;
    });
    auto failing = spawn([] { throw std::runtime_error("failed"); });
    auto linked = spawn([] {});
    linked.link([&] {
      noted n{&destroyed, &link_died_on};
      waiter w;
      w.wait();
      link_went_on = true;
    });
    // A later link still runs, but cannot block.
    linked.link([&] {
      later_link_ran = true;
      tendril::sleep(1h);
      link_went_on = true;
    });
    failing.join();
    linked.join();
  });
  EXPECT_EQ(destroyed.load(), 2);
  EXPECT_EQ(handler_died_on, thread_id);
  EXPECT_EQ(link_died_on, thread_id);
  EXPECT_FALSE(handler_went_on);
  EXPECT_FALSE(link_went_on);
  EXPECT_TRUE(later_link_ran);
}

TEST(hub, an_ending_thread_whose_unstarted_task_kills_another_in_a_link_stops_both) {
  // The hub walked its children by saving each one's next before asking it to stop; the link
  // killed that next one, which left the list, and the walk followed a null pointer.
  bool a_ran = false;
  bool b_ran = false;
  bool link_ran = false;
  on_new_thread([&] {
    auto a = spawn([&] { a_ran = true; });
    auto b = spawn([&] { b_ran = true; });
    a.link([&, b]() mutable {
      link_ran = true;
      b.kill(false);
    });
  });
  EXPECT_TRUE(link_ran);
  EXPECT_FALSE(a_ran);
  EXPECT_FALSE(b_ran);
}

namespace {

// Whether fd still names the socket whose inode was ino (a number closed since may have been
// reused by another descriptor).
bool still_open_as(int fd, ino_t ino) {
  struct stat st {};
  return ::fcntl(fd, F_GETFD) != -1 && ::fstat(fd, &st) == 0 && st.st_ino == ino;
}

// A connected TCP pair whose closing the test checks: our end, a tendril socket of this
// thread (returned; its number and inode recorded, to tell a reused number apart), and the
// peer, a plain descriptor that the caller closes.
struct watched_socket {
  int fd = -1;
  ino_t ino = 0;
  int peer = -1;
};

tendril::net::tcp_stream tcp_pair_with_plain_peer(watched_socket& w) {
  tendril::net::tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  const tendril::net::address to = l.local_address();
  w.peer = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(w.peer, 0);
  EXPECT_EQ(::connect(w.peer, to.data(), to.size()), 0);  // the backlog completes it
  tendril::net::tcp_stream ours = l.accept();
  w.fd = ours.native_handle();
  struct stat st {};
  EXPECT_EQ(::fstat(w.fd, &st), 0);
  w.ino = st.st_ino;
  return ours;
}

}  // namespace

// Tasks parked in a sleep, an event and a recv, each holding what its unwinding must release
// (a socket, heap memory for ASan's leak check, a guard), and one spawned for later. The hub's
// drain of its tasks already handled these; the test pins it down on every backend.
TEST(hub, an_ending_thread_unwinds_tasks_parked_in_sleep_an_event_and_a_recv) {
  std::atomic<int> destroyed{0};
  std::thread::id sleeper_died_on, event_died_on, reader_died_on, thread_id;
  std::atomic<bool> went_on{false};
  auto token = std::make_shared<int>(0);
  watched_socket sock;
  on_new_thread([&] {
    thread_id = std::this_thread::get_id();
    tendril::net::tcp_stream ours = tcp_pair_with_plain_peer(sock);
    spawn([&] {
      noted n{&destroyed, &sleeper_died_on};
      auto held = std::make_unique<std::string>(100, 's');
      tendril::sleep(1h);
      went_on = true;
    });
    // Held by the task: an event destroyed while a greenlet waits in it stops the process.
    spawn([&, never = std::make_shared<tendril::event>()] {
      noted n{&destroyed, &event_died_on};
      auto held = std::make_unique<std::string>(100, 'e');
      never->wait();
      went_on = true;
    });
    spawn([&, s = std::move(ours)]() mutable {
      noted n{&destroyed, &reader_died_on};
      tendril::net::tcp_stream mine = std::move(s);
      char buf[16];
      mine.recv(buf, sizeof buf);
      went_on = true;
    });
    spawn_later(1h, [&went_on, token] { went_on = true; });
    tendril::sleep(0s);  // all three start and park
    EXPECT_EQ(token.use_count(), 2);
  });
  EXPECT_EQ(destroyed.load(), 3);
  EXPECT_EQ(sleeper_died_on, thread_id);
  EXPECT_EQ(event_died_on, thread_id);
  EXPECT_EQ(reader_died_on, thread_id);
  EXPECT_FALSE(went_on);
  EXPECT_EQ(token.use_count(), 1);
  EXPECT_FALSE(still_open_as(sock.fd, sock.ino));
  char c;
  EXPECT_EQ(::recv(sock.peer, &c, 1, MSG_DONTWAIT), 0);  // our end was closed: end of stream
  ::close(sock.peer);
}

// A greenlet parked in the hub that is not a task (here one a task switched into) was never
// woken: the task was asked to stop but waited for it, and the thread's end hung.
TEST(hub, an_ending_thread_unwinds_a_plain_greenlet_parked_in_its_hub) {
  std::atomic<int> destroyed{0};
  std::thread::id died_on, thread_id;
  bool went_on = false;
  bool task_went_on = false;
  watched_socket sock;
  on_new_thread([&] {
    thread_id = std::this_thread::get_id();
    tendril::net::tcp_stream ours = tcp_pair_with_plain_peer(sock);
    spawn([&, s = std::move(ours)]() mutable {
      greenlet reader([&] {
        noted n{&destroyed, &died_on};
        auto held = std::make_unique<std::string>(100, 'r');
        tendril::net::tcp_stream mine = std::move(s);
        char buf[16];
        mine.recv(buf, sizeof buf);
        went_on = true;
      });
      reader.switch_to();
      tendril::sleep(1h);  // the task's own kill, pending, ends it here
      task_went_on = true;
    });
    tendril::sleep(0s);
  });
  EXPECT_EQ(destroyed.load(), 1);
  EXPECT_EQ(died_on, thread_id);
  EXPECT_FALSE(went_on);
  EXPECT_FALSE(task_went_on);
  EXPECT_FALSE(still_open_as(sock.fd, sock.ino));
  char c;
  EXPECT_EQ(::recv(sock.peer, &c, 1, MSG_DONTWAIT), 0);
  ::close(sock.peer);
}

// A task that caught the greenlet_exit of its thread's end and waited again on something
// nobody would set hung the thread's end. Such a wait now gets loop_exit once nothing bounded
// (a timer) is left; cleanup waits with a time limit run first.
TEST(hub, an_ending_thread_ends_a_cleanup_wait_nothing_bounded_would_end) {
  std::vector<std::string> refused;
  int caught = 0;
  std::vector<std::string> went_on;
  std::vector<std::string> reported;
  on_new_thread([&] {
    tendril::hub::current().set_error_handler([&](const std::string&, std::exception_ptr e) {
      try {
        std::rethrow_exception(e);
      } catch (const loop_exit& x) {
        reported.push_back(x.what());
      } catch (...) {
        reported.push_back("?");
      }
    });
    auto block_again = [&](const char* what, auto wait) {
      try {
        tendril::sleep(1h);
      } catch (const tendril::greenlet_exit&) {
        ++caught;
        try {
          wait();
        } catch (const loop_exit& e) {
          refused.push_back(e.what());
          throw;
        }
        went_on.push_back(what);
      }
    };
    // By value: the thread's function has returned by the time they unwind.
    spawn([block_again] { block_again("sleep", [] { tendril::sleep(10ms); }); });
    spawn([block_again, e = std::make_shared<tendril::event>()] {
      block_again("timed event wait", [e] { e->wait_for(10ms); });
    });
    spawn([block_again, e = std::make_shared<tendril::event>()] {
      block_again("event wait", [e] { e->wait(); });
    });
    tendril::sleep(0s);
  });
  EXPECT_EQ(caught, 3);
  std::sort(went_on.begin(), went_on.end());
  EXPECT_EQ(went_on, (std::vector<std::string>{"sleep", "timed event wait"}));
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_TRUE(contains(refused[0], "blocked while its thread was ending")) << refused[0];
  EXPECT_TRUE(contains(refused[0], "Greenlet-")) << refused[0];
  EXPECT_EQ(reported, refused);
}

// The loop ends a cleanup's wait only when nothing bounded could end it: a recv whose bytes
// have already arrived completes on every backend (io_uring included, where the read is an
// operation of its own) instead of getting loop_exit.
TEST(hub, an_ending_thread_lets_a_cleanup_read_what_has_already_arrived) {
  std::string got;
  std::vector<std::string> refused;
  watched_socket sock;
  on_new_thread([&] {
    tendril::net::tcp_stream ours = tcp_pair_with_plain_peer(sock);
    ASSERT_EQ(::send(sock.peer, "bye", 3, MSG_NOSIGNAL), 3);
    spawn([&, s = std::move(ours)]() mutable {
      tendril::net::tcp_stream mine = std::move(s);
      try {
        tendril::sleep(1h);
      } catch (const tendril::greenlet_exit&) {
        char buf[8];
        try {
          got.assign(buf, mine.recv(buf, sizeof buf));
        } catch (const loop_exit& e) {
          refused.push_back(e.what());
        }
        throw;
      }
    });
    tendril::sleep(0s);
  });
  EXPECT_EQ(got, "bye");
  EXPECT_TRUE(refused.empty()) << refused[0];
  ::close(sock.peer);
}

// A cleanup that kills (and so waits for) another task the thread's end is unwinding got
// loop_exit at once, refused as a wait without a time limit: thrown from a destructor, it
// ended the process (std::terminate).
TEST(hub, an_ending_thread_lets_a_cleanup_wait_for_a_task_it_is_unwinding) {
  std::vector<std::string> order;
  on_new_thread([&] {
    // The guard's task first: the drain unwinds it while the child is still alive.
    auto child = std::make_shared<std::optional<tendril::task<void>>>();
    spawn([&order, child] {
      struct stops_child {
        std::vector<std::string>& order;
        std::shared_ptr<std::optional<tendril::task<void>>> child;
        ~stops_child() {
          order.push_back((*child)->ready() ? "child ended already" : "guard kills the child");
          (*child)->kill();  // waits for the child's end
          order.push_back((*child)->ready() ? "child ended, guard returns" : "child alive");
        }
      } guard{order, child};
      tendril::sleep(1h);
    });
    child->emplace(spawn([&order] {
      try {
        tendril::sleep(1h);
      } catch (const tendril::greenlet_exit&) {
        order.push_back("child unwound");
        throw;
      }
    }));
    tendril::sleep(0s);
  });
  EXPECT_EQ(order, (std::vector<std::string>{"guard kills the child", "child unwound",
                                             "child ended, guard returns"}));
}

// A task that a cleanup spawned while its thread ended ran, and one it spawned for later kept
// the thread alive until its time (for ever, for a task that spawns itself again so).
TEST(hub, an_ending_thread_never_runs_a_task_a_cleanup_spawns) {
  bool ran = false;
  int spawned = 0;
  on_new_thread([&] {
    spawn([&] {
      try {
        tendril::sleep(1h);
      } catch (const tendril::greenlet_exit&) {
        auto now = spawn([&ran] { ran = true; });
        auto later = spawn_later(1h, [&ran] { ran = true; });
        spawned = 2;
        EXPECT_TRUE(now.ready());
        EXPECT_TRUE(later.ready());
        throw;
      }
    });
    tendril::sleep(0s);
  });
  EXPECT_EQ(spawned, 2);
  EXPECT_FALSE(ran);
}

// A handle to the hub's greenlet kept past the thread's end (greenlet::current().parent() in a
// task, kept outside or on a suspended greenlet's stack) left the loop suspended: the thread's end
// unwound it after the hub was freed, and its switch read the freed hub (a crash).
TEST(hub, an_ending_thread_whose_hub_greenlet_is_still_referred_to_ends_cleanly) {
  enum class kept_by {
    outside_with_nothing_left,
    outside_with_a_task_parked,
    a_suspended_greenlet
  };
  for (kept_by k : {kept_by::outside_with_nothing_left, kept_by::outside_with_a_task_parked,
                    kept_by::a_suspended_greenlet}) {
    SCOPED_TRACE(k == kept_by::outside_with_nothing_left    ? "kept outside, nothing left"
                 : k == kept_by::outside_with_a_task_parked ? "kept outside, a task parked"
                                                            : "kept by a suspended greenlet");
    greenlet kept;
    bool thread_returned = false;
    on_new_thread([&] {
      spawn([&] { kept = greenlet::current().parent(); });
      tendril::sleep(1ms);
      if (k == kept_by::outside_with_a_task_parked) {
        spawn([e = std::make_shared<tendril::event>()] { e->wait(); });
        tendril::sleep(1ms);
      } else if (k == kept_by::a_suspended_greenlet) {
        // Its stack holds the only other handle to the hub. Referred to from outside, it is
        // unwound by the thread's end, after the hub.
        greenlet holder([&] {
          greenlet hub_greenlet = std::move(kept);
          greenlet::current().parent().switch_to();
        });
        holder.switch_to();
        kept = holder;
      }
      thread_returned = !kept.empty();
    });
    EXPECT_TRUE(thread_returned);
    EXPECT_TRUE(kept.dead());  // as any greenlet its thread's end unwound
    kept = greenlet();
  }
}

// A plain greenlet whose parent is the root, parked in the hub, ends into the root when the
// thread's end unwinds it; the drain swallowed what its cleanup threw there, silently.
TEST(hub, an_ending_thread_reports_what_a_greenlet_ending_into_the_root_throws) {
  bool caught = false;
  greenlet cleaner;  // kept here, so that the thread's end, not its function, unwinds it
  testing::internal::CaptureStderr();
  on_new_thread([&] {
    cleaner = greenlet([&] {  // its parent: the root
      try {
        tendril::sleep(1h);
      } catch (const tendril::greenlet_exit&) {
        caught = true;
        throw std::runtime_error("cleanup failed");
      }
    });
    cleaner.set_name("cleaner");
    waiter come_back;  // once it parks, the hub resumes the root
    come_back.wake();
    cleaner.switch_to();
  });
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(cleaner.dead());
  cleaner = greenlet();
  EXPECT_TRUE(caught);
  EXPECT_TRUE(contains(err,
                       "tendril: greenlet 'cleaner' raised while it was being destroyed: "
                       "cleanup failed"))
      << err;
}

// Task -> plain a -> plain b, b parked. The thread's end unwound b, which ended into a with
// greenlet_exit as a value; a was never asked to stop and went on: a loop of sleeps (allowed
// during the drain) kept the thread's end waiting for ever.
TEST(hub, an_ending_thread_stops_a_greenlet_that_blocks_after_its_parked_child_was_unwound) {
  paused_clock clock;  // a's sleeps take no time: without the fix, they end by themselves
  enum class first_block { sleeps, a_recv };
  for (first_block f : {first_block::sleeps, first_block::a_recv}) {
    SCOPED_TRACE(f == first_block::sleeps ? "a sleeps in a loop" : "a reads a socket");
    int sleeps_done = 0;
    bool a_caught = false;
    bool cleanup_slept = false;
    std::string refused;
    watched_socket sock;
    on_new_thread([&] {
      tendril::net::tcp_stream ours = tcp_pair_with_plain_peer(sock);
      spawn([&, s = std::move(ours), ev = std::make_shared<tendril::event>()]() mutable {
        greenlet a([&] {
          greenlet b([ev] { ev->wait(); });
          b.switch_to();  // b parks; the thread's end unwinds it, and it ends here
          try {
            tendril::net::tcp_stream mine = std::move(s);
            if (f == first_block::a_recv) {
              char buf[16];
              mine.recv(buf, sizeof buf);  // an operation in flight on io_uring: cancelled
            }
            for (; sleeps_done < 100; ++sleeps_done) tendril::sleep(1h);
          } catch (const tendril::greenlet_exit&) {
            a_caught = true;
            // Asked once: its cleanup may wait with a time limit, not without one.
            tendril::sleep(10ms);
            cleanup_slept = true;
            try {
              ev->wait();
            } catch (const loop_exit& e) {
              refused = e.what();
            }
          }
        });
        a.switch_to();
      });
      tendril::sleep(0s);
    });
    EXPECT_EQ(sleeps_done, 0);
    EXPECT_TRUE(a_caught);
    EXPECT_TRUE(cleanup_slept);
    EXPECT_TRUE(contains(refused, "blocked while its thread was ending")) << refused;
    EXPECT_FALSE(still_open_as(sock.fd, sock.ino));
    ::close(sock.peer);
  }
}

// --- the thread pool -----------------------------------------------------------------------

namespace {

struct pool_run {
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  int running = 0;
  int most_running = 0;
  bool release = true;
  std::multiset<std::thread::id> threads;
};

struct counted_job : tendril::detail::pool_job {
  pool_run* run_state = nullptr;
};

void run_counted(tendril::detail::pool_job* self) noexcept {
  pool_run& s = *static_cast<counted_job*>(self)->run_state;
  std::unique_lock lock(s.mu);
  s.threads.insert(std::this_thread::get_id());
  s.most_running = std::max(s.most_running, ++s.running);
  s.cv.notify_all();
  s.cv.wait(lock, [&] { return s.release; });
  --s.running;
  ++s.done;
  s.cv.notify_all();  // under the lock: the waiting side may go as soon as it has it
}

// Restores the pool's size.
struct pool_size_guard {
  std::size_t saved = tendril::detail::thread_pool::size();
  ~pool_size_guard() { tendril::detail::thread_pool::set_size(saved); }
};

}  // namespace

TEST(hub, thread_pool_runs_jobs_on_other_threads) {
  constexpr int count = 20;
  pool_run s;
  std::vector<counted_job> jobs(count);
  for (auto& j : jobs) {
    j.run = &run_counted;
    j.run_state = &s;
    tendril::detail::thread_pool::submit(j);
  }
  std::unique_lock lock(s.mu);
  ASSERT_TRUE(s.cv.wait_for(lock, 60s, [&] { return s.done == count; }));
  EXPECT_EQ(s.threads.count(std::this_thread::get_id()), 0u);
  EXPECT_GE(tendril::detail::thread_pool::workers(), 1u);
  EXPECT_LE(tendril::detail::thread_pool::workers(), tendril::detail::thread_pool::size());
}

TEST(hub, thread_pool_size_can_be_read_and_set) {
  pool_size_guard guard;
  if (std::getenv("TENDRIL_THREADPOOL_SIZE") == nullptr) {
    EXPECT_EQ(guard.saved, 10u);
  }
  tendril::detail::thread_pool::set_size(3);
  EXPECT_EQ(tendril::detail::thread_pool::size(), 3u);
  EXPECT_THROW(tendril::detail::thread_pool::set_size(0), std::invalid_argument);
  EXPECT_EQ(tendril::detail::thread_pool::size(), 3u);
}

TEST(hub, thread_pool_size_from_the_environment_must_be_a_whole_number_from_one) {
  // It was read with atol(): "0", "-3" and "abc" silently gave the default 10, "4x" gave 4.
  using tendril::detail::thread_pool::parse_size;
  EXPECT_EQ(parse_size("4"), 4u);
  EXPECT_EQ(parse_size("1"), 1u);
  EXPECT_EQ(parse_size("0010"), 10u);
  for (const char* bad : {"0", "-3", "abc", "4x", " 4", "+4", "", "99999999999999999999999"}) {
    try {
      parse_size(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_TRUE(contains(e.what(), "TENDRIL_THREADPOOL_SIZE")) << e.what();
      EXPECT_TRUE(contains(e.what(), std::string("'") + bad + "'")) << e.what();
    }
  }
}

TEST(hub, thread_pool_starts_no_more_threads_than_its_size) {
  pool_size_guard guard;
  const std::size_t before = tendril::detail::thread_pool::workers();
  const std::size_t limit = before + 2;
  tendril::detail::thread_pool::set_size(limit);
  constexpr int count = 8;
  pool_run s;
  s.release = false;  // every job holds its thread until released
  std::vector<counted_job> jobs(count);
  for (auto& j : jobs) {
    j.run = &run_counted;
    j.run_state = &s;
    tendril::detail::thread_pool::submit(j);
  }
  {
    std::unique_lock lock(s.mu);
    // Wait until the pool is as busy as it can get, then let everything through.
    s.cv.wait_for(lock, 2s, [&] { return s.running == static_cast<int>(limit); });
    s.release = true;
  }
  s.cv.notify_all();
  std::unique_lock lock(s.mu);
  ASSERT_TRUE(s.cv.wait_for(lock, 60s, [&] { return s.done == count; }));
  EXPECT_LE(tendril::detail::thread_pool::workers(), limit);
  EXPECT_LE(s.most_running, static_cast<int>(limit));
  EXPECT_GE(s.most_running, 1);
}

// --- fork ----------------------------------------------------------------------------------

namespace {

using tendril::test::child_outcome;
using tendril::test::collect_child;
using tendril::test::say;

}  // namespace

// failing_new's operator new and delete went to malloc() and free(): ASan took every new
// for a malloc, and missed a new freed with free() or a sized delete of the wrong size in the
// binaries that link it (this one and tendril_task_tests).
TEST(hub, the_test_operator_new_leaves_asan_its_new_delete_checks) {
#if !defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "only AddressSanitizer checks how a block from new is freed";
#else
  struct small {
    int a = 0;
  };
  struct big : small {
    int more[16] = {};
  };
  auto report_of = [](void (*misuse)()) {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(fds[1], STDERR_FILENO);  // ASan's report
      misuse();
      say(fds[1], "not reported\n");
      ::_exit(0);
    }
    return collect_child(pid, fds).report;
  };
  const std::string freed = report_of([] {
    int* volatile p = new int(1);
    std::free(p);
  });
  EXPECT_TRUE(contains(freed, "alloc-dealloc-mismatch")) << freed;
  const std::string sized = report_of([] {
    small* volatile p = new big;
    delete p;  // the size of a small, not of the big it is
  });
  EXPECT_TRUE(contains(sized, "new-delete-type-mismatch")) << sized;
#endif
}

// Only operator new(size_t) and its nothrow form were replaced: an aligned new never failed,
// and new[] failed only where the runtime's new[] calls operator new (not under a sanitizer).
TEST(hub, the_test_operator_new_fails_on_demand_in_every_form) {
  if (!tendril::test::failing_new_works()) GTEST_SKIP() << "operator new is not the test's own";
  struct alignas(64) aligned {
    char c[64];
  };
  static void* volatile sink = nullptr;  // so that no new is optimised away
  std::vector<std::string> failed;
  auto expect_to_fail = [&](const char* form, void (*f)()) {
    tendril::test::fail_next_new();
    try {
      f();
    } catch (const std::bad_alloc&) {
      failed.emplace_back(form);
    }
    tendril::test::stop_failing_new();
    f();  // and works again
  };
  expect_to_fail("new", [] {
    sink = new int(1);
    delete static_cast<int*>(sink);
  });
  expect_to_fail("new[]", [] {
    sink = new int[4];
    delete[] static_cast<int*>(sink);
  });
  expect_to_fail("aligned new", [] {
    sink = new aligned;
    delete static_cast<aligned*>(sink);
  });
  expect_to_fail("aligned new[]", [] {
    sink = new aligned[2];
    delete[] static_cast<aligned*>(sink);
  });
  // The nothrow forms return null instead, taken here for a throw.
  expect_to_fail("nothrow new", [] {
    sink = new (std::nothrow) int(1);
    if (sink == nullptr) throw std::bad_alloc();
    delete static_cast<int*>(sink);
  });
  expect_to_fail("nothrow new[]", [] {
    sink = new (std::nothrow) int[4];
    if (sink == nullptr) throw std::bad_alloc();
    delete[] static_cast<int*>(sink);
  });
  expect_to_fail("nothrow aligned new", [] {
    sink = new (std::nothrow) aligned;
    if (sink == nullptr) throw std::bad_alloc();
    delete static_cast<aligned*>(sink);
  });
  expect_to_fail("nothrow aligned new[]", [] {
    sink = new (std::nothrow) aligned[2];
    if (sink == nullptr) throw std::bad_alloc();
    delete[] static_cast<aligned*>(sink);
  });
  const std::vector<std::string> every = {
      "new",         "new[]",         "aligned new",         "aligned new[]",
      "nothrow new", "nothrow new[]", "nothrow aligned new", "nothrow aligned new[]"};
  EXPECT_EQ(failed, every);
}

// submit() caught only std::system_error around starting a thread, after linking the job: a
// std::bad_alloc from std::thread left the job queued while the caller, told it failed, freed
// it; a worker then ran the freed job.
TEST(hub, a_pool_job_is_not_left_queued_when_starting_its_thread_throws_bad_alloc) {
  if (!tendril::test::failing_new_works()) GTEST_SKIP() << "operator new is not the test's own";
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer cannot start threads in a forked child";
#endif
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {  // a child, whose pool has no thread yet
    ::close(fds[0]);
    std::string r;
    tendril::detail::thread_pool::set_size(2);  // makes the pool: submit() allocates no more
    pool_run refused;
    counted_job a;
    a.run = &run_counted;
    a.run_state = &refused;
    tendril::test::fail_next_new();
    try {
      tendril::detail::thread_pool::submit(a);
      r += "a queued\n";
    } catch (const std::bad_alloc&) {
      r += "a refused\n";
    }
    tendril::test::stop_failing_new();
    pool_run s;
    s.release = false;
    counted_job b, c;
    b.run = c.run = &run_counted;
    b.run_state = c.run_state = &s;
    tendril::detail::thread_pool::submit(b);  // the first thread, held by b
    {
      std::unique_lock lock(s.mu);
      s.cv.wait_for(lock, 10s, [&] { return s.running == 1; });
    }
    tendril::test::fail_next_new();
    try {
      tendril::detail::thread_pool::submit(c);  // a thread runs: c waits for it
      r += "c queued\n";
    } catch (const std::bad_alloc&) {
      r += "c refused\n";
    }
    tendril::test::stop_failing_new();
    {
      std::lock_guard lock(s.mu);
      s.release = true;
    }
    s.cv.notify_all();
    std::unique_lock lock(s.mu);
    r += s.cv.wait_for(lock, 10s, [&] { return s.done == 2; }) ? "b and c ran\n" : "stuck\n";
    std::lock_guard lock_refused(refused.mu);
    r += refused.done == 0 ? "a never ran\n" : "a ran\n";
    say(fds[1], r);
    ::_exit(0);
  }
  ASSERT_GT(pid, 0);
  const child_outcome c = collect_child(pid, fds);
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(c.report, "a refused\nc queued\nb and c ran\na never ran\n");
}

// Only monkey::patch_all() made a forked child forget the parent's hub: without it the
// parent's tasks ran on in the child, which shared the parent's epoll instance or io_uring
// ring (whose wait then failed for ever there, the loop spinning) and its idle pool threads.
TEST(hub, a_child_forked_without_the_hooks_starts_with_a_fresh_hub_and_none_of_the_parents_tasks) {
#if defined(__SANITIZE_THREAD__)
  // The child starts a pool thread, which TSan refuses after a fork of a threaded process.
  GTEST_SKIP() << "ThreadSanitizer cannot start threads in a forked child";
#endif
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t parent = ::getpid();
  bool stop = false;
  auto ticker = spawn([&] {
    while (!stop) {
      if (::getpid() != parent) say(fds[1], "the parent's ticker ran in the child\n");
      tendril::sleep(1ms);
    }
  });
  {  // the pool has an idle thread when the process forks
    pool_run s;
    counted_job j;
    j.run = &run_counted;
    j.run_state = &s;
    tendril::detail::thread_pool::submit(j);
    std::unique_lock lock(s.mu);
    ASSERT_TRUE(s.cv.wait_for(lock, 60s, [&] { return s.done == 1; }));
  }
  tendril::sleep(3ms);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string r = hub_impl::peek() == nullptr ? "no hub\n" : "the parent's hub\n";
    tendril::sleep(30ms);  // the parent's ticker had many turns here, had it come along
    int ran = 0;
    auto t = spawn([&] {
      tendril::sleep(1ms);
      ran = 1;
    });
    t.join();
    r += "task=" + std::to_string(ran) + "\n";
    pool_run s;
    counted_job j;
    j.run = &run_counted;
    j.run_state = &s;
    tendril::detail::thread_pool::submit(j);
    std::unique_lock lock(s.mu);
    r += s.cv.wait_for(lock, 10s, [&] { return s.done == 1; }) ? "pool job ran\n" : "pool stuck\n";
    say(fds[1], r);
    ::_exit(0);
  }
  ASSERT_GT(pid, 0);
  const child_outcome c = collect_child(pid, fds);
  stop = true;
  ticker.join();
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(c.report, "no hub\ntask=1\npool job ran\n");
}

namespace {

int open_descriptors() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (::readdir(d) != nullptr) ++n;
  ::closedir(d);
  return n;
}

}  // namespace

// Each forked child kept the descriptors of its parent's abandoned backend (io_uring's ring
// and eventfd, epoll's instance and eventfd, poll's pipe): a process forking generation after
// generation had more with each. The abandoned backend closes them (and unmaps the ring).
TEST(hub, each_forked_generation_has_as_many_descriptors_as_the_one_before) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  tendril::sleep(1ms);  // the hub starts
  const pid_t first = ::fork();
  if (first == 0) {
    ::close(fds[0]);
    std::string r;
    for (int gen = 1;; ++gen) {
      tendril::sleep(1ms);  // this generation's own hub, and it works
      r += std::to_string(open_descriptors()) + "\n";
      if (gen == 3) break;
      const pid_t next = ::fork();
      if (next != 0) {  // the last generation reports for all
        int st = 0;
        ::waitpid(next, &st, 0);
        ::_exit(next > 0 && WIFEXITED(st) ? WEXITSTATUS(st) : 1);
      }
    }
    say(fds[1], r);
    ::_exit(0);
  }
  ASSERT_GT(first, 0);
  const child_outcome c = collect_child(first, fds);
  EXPECT_EQ(c.status, 0);
  std::vector<int> counts;
  for (std::size_t at = 0, nl; (nl = c.report.find('\n', at)) != std::string::npos; at = nl + 1)
    counts.push_back(std::stoi(c.report.substr(at, nl - at)));
  ASSERT_EQ(counts.size(), 3u) << c.report;
  EXPECT_GT(counts[0], 0);
  EXPECT_EQ(counts[1], counts[0]) << c.report;
  EXPECT_EQ(counts[2], counts[0]) << c.report;
}

namespace {

std::set<int> open_descriptor_set() {
  std::set<int> fds;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return fds;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') fds.insert(std::atoi(e->d_name));
  }
  fds.erase(::dirfd(d));
  ::closedir(d);
  return fds;
}

int io_uring_mappings() {
  std::ifstream maps("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("io_uring") != std::string::npos) ++n;
  }
  return n;
}

}  // namespace

// A forked child closed only the descriptors of its own thread's hub: those of the hubs of
// the parent's other threads (threads the child does not have) stayed open, and their
// io_uring rings mapped, for the child's whole life.
TEST(hub, a_forked_child_keeps_nothing_of_the_hubs_of_the_parents_other_threads) {
  tendril::sleep(1ms);  // this thread's hub
  const std::set<int> before = open_descriptor_set();
  constexpr int others = 2;
  std::mutex mu;
  std::condition_variable cv;
  int made = 0;
  bool end = false;
  std::vector<std::thread> threads;
  for (int i = 0; i < others; ++i) {
    threads.emplace_back([&] {
      tendril::sleep(1ms);  // a hub of its own, alive when the process forks
      std::unique_lock lock(mu);
      ++made;
      cv.notify_all();
      cv.wait(lock, [&] { return end; });
    });
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return made == others; });
  }
  std::vector<int> theirs;
  for (int fd : open_descriptor_set()) {
    if (before.count(fd) == 0) theirs.push_back(fd);
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string r;
    for (int fd : theirs) {
      if (::fcntl(fd, F_GETFD) >= 0) r += "descriptor " + std::to_string(fd) + " open\n";
    }
    if (const int n = io_uring_mappings(); n > 0) r += std::to_string(n) + " ring mappings\n";
    tendril::sleep(1ms);  // a new hub, and it works
    r += std::to_string(spawn([] { return 7; }).get()) + "\n";
    say(fds[1], r);
    ::_exit(0);
  }
  {
    std::lock_guard lock(mu);
    end = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  ASSERT_GT(pid, 0);
  EXPECT_GE(theirs.size(), static_cast<std::size_t>(2 * others));
  const child_outcome c = collect_child(pid, fds);
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(c.report, "7\n");
}

// A timeout scope the process forked in kept its timer in the parent's abandoned heap: in the
// child the scope never fired (here its wait, which nothing else can end, raised loop_exit
// at once).
TEST(hub, a_timeout_scope_the_process_forked_in_still_limits_the_child) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  tendril::sleep(1ms);  // the parent's hub has the scope's timer
  pid_t pid = -1;
  {
    timeout limit(300ms);
    pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      std::string r;
      const auto start = std::chrono::steady_clock::now();
      try {
        waiter w;
        w.wait();
        r = "woken\n";
      } catch (const timeout_error& e) {
        const auto took = std::chrono::steady_clock::now() - start;
        r = e.source() == &limit ? "the scope fired" : "another scope fired";
        r += took < 100ms ? " too early\n" : took > 10s ? " too late\n" : "\n";
      } catch (const loop_exit&) {
        r = "loop_exit\n";
      }
      say(fds[1], r);
      ::_exit(0);
    }
  }
  ASSERT_GT(pid, 0);
  const child_outcome c = collect_child(pid, fds);
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(c.report, "the scope fired\n");
}

// In the child, leaving a scope the process forked in cancelled its timer in the child's new
// heap at the index it had in the parent's: a crash, or another timer gone (a sleeper never
// woke). So did killing a parent's task that had yet to start (its start timer).
TEST(hub, leaving_a_timeout_scope_the_process_forked_in_leaves_the_childs_timers_alone) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  auto later = tendril::spawn_later(1h, [] {});
  tendril::sleep(1ms);
  pid_t pid = -1;
  {
    timeout limit(1h);
    pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      bool woke = false;
      auto sleeper = spawn([&] {
        tendril::sleep(30ms);
        woke = true;
      });
      tendril::sleep(1ms);  // the sleeper's timer is in the child's heap
      later.kill();
      sleeper.join();
      say(fds[1], woke ? "the sleeper woke\n" : "the sleeper slept on\n");
    }
  }
  if (pid == 0) {
    timeout limit(10s);  // in the child
    std::string r = "left the scope\n";
    try {
      tendril::sleep(1ms);
      r += "slept\n";
    } catch (const timeout_error&) {
      r += "timed out\n";
    }
    say(fds[1], r);
    ::_exit(0);
  }
  ASSERT_GT(pid, 0);
  const child_outcome c = collect_child(pid, fds);
  later.kill();
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(c.report, "the sleeper woke\nleft the scope\nslept\n");
}

// The root, waiting in the parent's hub for the task that forked, was still marked parked in
// the child: the child's loop_exit went to it instead of to the task, and switched into it.
TEST(hub, a_task_that_forked_and_waits_for_nothing_in_the_child_gets_loop_exit) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = -1;
  auto forker = spawn([&] {
    tendril::sleep(1ms);
    pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      std::string r;
      try {
        waiter w;
        w.wait();
        r = "woken\n";
      } catch (const loop_exit& e) {
        r = contains(e.what(), "'forker' waits") ? "loop_exit\n" : std::string(e.what()) + "\n";
      }
      say(fds[1], r);
      ::_exit(0);
    }
  });
  forker.set_name("forker");
  forker.join();
  ASSERT_GT(pid, 0);
  const child_outcome c = collect_child(pid, fds);
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(c.report, "loop_exit\n");
}
