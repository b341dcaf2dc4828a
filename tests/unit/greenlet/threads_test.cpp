// Greenlets and OS threads: a root greenlet per thread, greenlets switching on many threads
// at once, cross-thread misuse refused with wrong_thread, and the last handle to a greenlet
// dropped on another thread or after its thread ended (python greenlet's test_threads,
// test_switch_to_another_thread, test_dealloc_other_thread).
#include <gtest/gtest.h>
#include <unistd.h>

#include <any>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "child_process.hpp"
#include "context/sanitizer.hpp"
#include "tendril/greenlet/exceptions.hpp"
#include "tendril/greenlet/generator.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "test_scale.hpp"

using tendril::greenlet;
using tendril::greenlet_error;
using tendril::wrong_thread;

namespace {

std::any switch_to_parent(std::any v = {}) {
  return greenlet::current().parent().switch_to(std::move(v));
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Runs f on a new thread and waits for it.
template <class F>
void on_another_thread(F&& f) {
  std::thread t(std::forward<F>(f));
  t.join();
}

// A local that notes the thread its destructor ran on.
struct notes_thread {
  std::optional<std::thread::id>* where;
  ~notes_thread() { *where = std::this_thread::get_id(); }
};

}  // namespace

// --- one root per thread -------------------------------------------------------------------

TEST(threads, each_thread_has_a_root_greenlet_of_its_own) {
  constexpr int count = 8;
  struct seen {
    std::uint64_t root_id = 0;
    bool is_root = false;
    bool root_has_no_parent = false;
    bool root_is_alive = false;
    bool child_sees_root_as_parent = false;
    bool current_is_root_again = false;
    std::string name;
    pid_t tid = 0;
  };
  std::vector<seen> out(count);
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&out, i] {
      seen& s = out[static_cast<std::size_t>(i)];
      greenlet root = greenlet::current();
      s.root_id = root.id();
      s.is_root = root.is_root();
      s.root_has_no_parent = root.parent().empty();
      s.root_is_alive = static_cast<bool>(root) && !root.dead();
      s.name = root.name();
      s.tid = gettid();
      greenlet child([&] { return greenlet::current().parent() == root; });
      s.child_sees_root_as_parent = std::any_cast<bool>(child.switch_to());
      s.current_is_root_again = greenlet::current() == root;
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::uint64_t> ids{greenlet::current().id()};
  for (const seen& s : out) {
    EXPECT_TRUE(ids.insert(s.root_id).second) << "root ids must differ between threads";
    EXPECT_TRUE(s.is_root);
    EXPECT_TRUE(s.root_has_no_parent);
    EXPECT_TRUE(s.root_is_alive);
    EXPECT_TRUE(s.child_sees_root_as_parent);
    EXPECT_TRUE(s.current_is_root_again);
    EXPECT_EQ(s.name, "root-" + std::to_string(s.tid));
  }
  EXPECT_EQ(greenlet::current().name(), "main");
}

TEST(threads, many_threads_switch_their_own_greenlets_at_once) {
  const int count = 8;
  const int per_thread = static_cast<int>(tendril::test::scaled(100, 4));
  const int rounds = static_cast<int>(tendril::test::scaled(50, 4));
  std::vector<long> totals(count, 0);
  std::vector<int> wrong_current(count, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&, i] {
      greenlet root = greenlet::current();
      int& wrong = wrong_current[static_cast<std::size_t>(i)];
      std::vector<greenlet> gs;
      for (int k = 0; k < per_thread; ++k) {
        gs.emplace_back([&, k](std::any v) {
          greenlet self = greenlet::current();
          int x = std::any_cast<int>(v);
          for (int r = 0; r < rounds; ++r) {
            if (!(greenlet::current() == self) || !(self.parent() == root)) ++wrong;
            x = std::any_cast<int>(switch_to_parent(x + k));
          }
          return x;
        });
      }
      std::vector<int> values(static_cast<std::size_t>(per_thread), i);
      for (int r = 0; r <= rounds; ++r) {
        for (int k = 0; k < per_thread; ++k) {
          auto idx = static_cast<std::size_t>(k);
          values[idx] = std::any_cast<int>(gs[idx].switch_to(values[idx]));
          if (!(greenlet::current() == root)) ++wrong;
        }
      }
      long total = 0;
      for (int k = 0; k < per_thread; ++k) {
        if (!gs[static_cast<std::size_t>(k)].dead()) ++wrong;
        total += values[static_cast<std::size_t>(k)];
      }
      totals[static_cast<std::size_t>(i)] = total;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < count; ++i) {
    // Each greenlet k of thread i starts from i and adds k in each of `rounds` rounds.
    long expected = 0;
    for (int k = 0; k < per_thread; ++k) expected += i + static_cast<long>(k) * rounds;
    EXPECT_EQ(totals[static_cast<std::size_t>(i)], expected) << "thread " << i;
    EXPECT_EQ(wrong_current[static_cast<std::size_t>(i)], 0) << "thread " << i;
  }
}

// --- cross-thread misuse -------------------------------------------------------------------

TEST(threads, switching_to_a_greenlet_of_another_thread_is_wrong_thread_naming_both) {
  greenlet g([] { return 1; });
  g.set_name("owned-by-main");
  const pid_t main_tid = gettid();
  pid_t other_tid = 0;
  std::string msg;
  bool threw = false;
  on_another_thread([&] {
    greenlet::current().set_name("other-root");
    other_tid = gettid();
    try {
      g.switch_to(5);
    } catch (const wrong_thread& e) {
      threw = true;
      msg = e.what();
    }
  });
  ASSERT_TRUE(threw);
  EXPECT_TRUE(contains(msg, "'owned-by-main'")) << msg;
  EXPECT_TRUE(contains(msg, "'other-root'")) << msg;
  EXPECT_TRUE(contains(msg, std::to_string(main_tid))) << msg;
  EXPECT_TRUE(contains(msg, std::to_string(other_tid))) << msg;
  // Nothing happened to g: its own thread can still run it.
  EXPECT_FALSE(g.started());
  EXPECT_EQ(std::any_cast<int>(g.switch_to()), 1);
}

TEST(threads, wrong_thread_is_a_greenlet_error_and_a_logic_error) {
  greenlet g([] {});
  bool as_greenlet_error = false;
  bool as_logic_error = false;
  on_another_thread([&] {
    try {
      g.switch_to();
    } catch (const greenlet_error&) {
      as_greenlet_error = true;
    }
    try {
      g.switch_to();
    } catch (const std::logic_error&) {
      as_logic_error = true;
    }
  });
  EXPECT_TRUE(as_greenlet_error);
  EXPECT_TRUE(as_logic_error);
}

TEST(threads, throw_into_a_greenlet_of_another_thread_is_wrong_thread) {
  bool caught_in_g = false;
  greenlet g([&] {
    try {
      switch_to_parent();
    } catch (const std::runtime_error&) {
      caught_in_g = true;
    }
  });
  g.set_name("target");
  g.switch_to();
  std::string msg;
  pid_t other_tid = 0;
  on_another_thread([&] {
    other_tid = gettid();
    try {
      g.throw_into(std::runtime_error("from afar"));
    } catch (const wrong_thread& e) {
      msg = e.what();
    }
  });
  EXPECT_TRUE(contains(msg, "'target'")) << msg;
  EXPECT_TRUE(contains(msg, "'root-" + std::to_string(other_tid) + "'")) << msg;
  EXPECT_TRUE(contains(msg, std::to_string(gettid()))) << msg;
  EXPECT_FALSE(caught_in_g);
  EXPECT_TRUE(static_cast<bool>(g));
  g.throw_into(std::runtime_error("from home"));
  EXPECT_TRUE(caught_in_g);
  EXPECT_TRUE(g.dead());
}

TEST(threads, set_parent_across_threads_is_wrong_thread) {
  greenlet mine([] {});
  mine.set_name("mine");
  greenlet main_root = greenlet::current();
  std::promise<greenlet> theirs_promise;
  std::promise<void> main_done;
  std::string from_there;
  pid_t their_tid = 0;
  std::thread t([&] {
    their_tid = gettid();
    greenlet theirs([] {});
    theirs.set_name("theirs");
    // Re-parenting a greenlet of the main thread from here.
    try {
      mine.set_parent(main_root);
    } catch (const wrong_thread& e) {
      from_there = e.what();
    }
    theirs_promise.set_value(theirs);
    main_done.get_future().wait();
  });
  greenlet theirs = theirs_promise.get_future().get();
  std::string here;
  try {
    mine.set_parent(theirs);  // a parent of another thread
  } catch (const wrong_thread& e) {
    here = e.what();
  }
  std::string construct;
  try {
    greenlet child([] {}, theirs);
  } catch (const wrong_thread& e) {
    construct = e.what();
  }
  theirs = greenlet{};
  main_done.set_value();
  t.join();
  const std::string main_tid = std::to_string(gettid());
  EXPECT_TRUE(contains(from_there, "'mine'")) << from_there;
  EXPECT_TRUE(contains(from_there, main_tid)) << from_there;
  EXPECT_TRUE(contains(from_there, std::to_string(their_tid))) << from_there;
  // It names the greenlet being re-parented, not the one calling (it said 'main').
  EXPECT_TRUE(contains(here, "make greenlet 'theirs'")) << here;
  EXPECT_TRUE(contains(here, "the parent of greenlet 'mine'")) << here;
  EXPECT_TRUE(contains(here, main_tid)) << here;
  EXPECT_TRUE(contains(here, std::to_string(their_tid))) << here;
  EXPECT_TRUE(contains(construct, "'theirs'")) << construct;
  EXPECT_TRUE(mine.parent() == main_root);
}

TEST(threads, a_generator_resumed_on_another_thread_is_wrong_thread) {
  tendril::generator<int> gen([](auto& y) {
    y.yield(1);
    y.yield(2);
  });
  EXPECT_EQ(gen.next(), 1);
  bool threw = false;
  on_another_thread([&] {
    try {
      gen.next();
    } catch (const wrong_thread&) {
      threw = true;
    }
  });
  EXPECT_TRUE(threw);
  EXPECT_EQ(gen.next(), 2);
  EXPECT_EQ(gen.next(), std::nullopt);
}

TEST(threads, name_and_id_can_be_read_from_another_thread) {
  greenlet g([] {});
  g.set_name("visible");
  std::string name;
  std::uint64_t id = 0;
  bool started = true;
  on_another_thread([&] {
    name = g.name();
    id = g.id();
    started = g.started();
  });
  EXPECT_EQ(name, "visible");
  EXPECT_EQ(id, g.id());
  EXPECT_FALSE(started);
}

// name() is for any thread, and set_name() replaced the string it was reading: torn names,
// garbage, or a crash.
TEST(threads, name_read_on_another_thread_while_its_owner_renames_it_is_one_of_the_names) {
  greenlet g([] {});
  const std::string a(40, 'a');
  const std::string b(40, 'b');
  g.set_name(a);
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> reads{0};
  std::size_t wrong = 0;
  std::thread reader([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      const std::string n = g.name();
      reads.fetch_add(1, std::memory_order_relaxed);
      if (n != a && n != b) ++wrong;
    }
  });
  // Renames until the reader has read often enough while they went on.
  const std::size_t enough = tendril::test::scaled(100000, 500);
  for (int i = 0; reads.load(std::memory_order_relaxed) < enough; ++i) g.set_name(i % 2 ? a : b);
  stop.store(true);
  reader.join();
  EXPECT_EQ(wrong, 0u) << "of " << reads.load() << " reads";
}

TEST(threads, set_name_of_a_greenlet_of_another_thread_is_wrong_thread) {
  greenlet other;
  on_another_thread([&] { other = greenlet([] {}); });
  try {
    other.set_name("renamed");
    FAIL() << "set_name() on another thread did not throw";
  } catch (const wrong_thread& e) {
    EXPECT_TRUE(contains(e.what(), "set the name of greenlet")) << e.what();
  }
  EXPECT_NE(other.name(), "renamed");
}

// --- handles dropped away from their thread ------------------------------------------------

TEST(threads, dropping_the_last_handle_on_another_thread_unwinds_it_on_its_own_thread) {
  std::optional<std::thread::id> unwound_on;
  std::optional<std::thread::id> before_next_switch;
  std::promise<greenlet> handed_over;
  std::promise<void> dropped;
  std::thread::id owner_id;
  std::thread owner([&] {
    owner_id = std::this_thread::get_id();
    greenlet g([&] {
      notes_thread n{&unwound_on};
      switch_to_parent();
    });
    g.switch_to();
    handed_over.set_value(std::move(g));
    dropped.get_future().wait();
    before_next_switch = unwound_on;
    greenlet([] {}).switch_to();  // the owner's next switch
  });
  {
    greenlet g = handed_over.get_future().get();
    EXPECT_TRUE(static_cast<bool>(g));
  }                                      // the last handle, dropped on the main thread
  EXPECT_FALSE(unwound_on.has_value());  // its frames never run here
  dropped.set_value();
  owner.join();
  EXPECT_FALSE(before_next_switch.has_value());
  ASSERT_TRUE(unwound_on.has_value());
  EXPECT_EQ(*unwound_on, owner_id);
}

TEST(threads, a_thread_that_only_iterates_a_generator_unwinds_greenlets_dropped_elsewhere) {
  std::optional<std::thread::id> unwound_on;
  auto* victim = new greenlet([&] {
    notes_thread n{&unwound_on};
    switch_to_parent();
  });
  victim->switch_to();
  tendril::generator<int> gen([](auto& y) {
    for (int i = 0;; ++i) y.yield(i);
  });
  EXPECT_EQ(gen.next(), 0);
  std::thread([victim] { delete victim; }).join();  // the last handle, dropped elsewhere
  EXPECT_FALSE(unwound_on.has_value());
  EXPECT_EQ(gen.next(), 1);  // this thread's next switch, into the generator
  ASSERT_TRUE(unwound_on.has_value());
  EXPECT_EQ(*unwound_on, std::this_thread::get_id());
}

TEST(threads, a_greenlet_dropped_elsewhere_is_unwound_when_its_thread_ends) {
  // python's test_dealloc_other_thread: the owner never switches again, it just ends.
  std::optional<std::thread::id> unwound_on;
  std::promise<greenlet> handed_over;
  std::promise<void> dropped;
  std::thread::id owner_id;
  std::thread owner([&] {
    owner_id = std::this_thread::get_id();
    greenlet g([&] {
      notes_thread n{&unwound_on};
      switch_to_parent();
    });
    g.switch_to();
    handed_over.set_value(std::move(g));
    dropped.get_future().wait();
  });
  { greenlet g = handed_over.get_future().get(); }  // the last handle, dropped on the main thread
  dropped.set_value();
  owner.join();
  ASSERT_TRUE(unwound_on.has_value());
  EXPECT_EQ(*unwound_on, owner_id);
}

TEST(threads, greenlets_left_suspended_when_a_thread_function_returns_are_unwound_there) {
  std::optional<std::thread::id> unwound_on;
  std::thread::id owner_id;
  on_another_thread([&] {
    owner_id = std::this_thread::get_id();
    greenlet g([&] {
      notes_thread n{&unwound_on};
      switch_to_parent();
    });
    g.switch_to();
  });
  ASSERT_TRUE(unwound_on.has_value());
  EXPECT_EQ(*unwound_on, owner_id);
}

TEST(threads, a_greenlet_whose_thread_has_exited_can_still_be_released) {
  std::optional<std::thread::id> unwound_on;
  std::thread::id owner_id;
  auto token = std::make_shared<int>(0);
  greenlet suspended;
  greenlet unstarted;
  greenlet finished;
  on_another_thread([&] {
    owner_id = std::this_thread::get_id();
    greenlet root = greenlet::current();
    suspended = greenlet([&] {
      notes_thread n{&unwound_on};
      root.switch_to();
    });
    suspended.set_name("orphan");
    suspended.switch_to();
    unstarted = greenlet([token] { ++*token; });
    finished = greenlet([] {});
    finished.switch_to();
  });
  // The suspended one was unwound as its thread ended, there; the unstarted one never ran.
  ASSERT_TRUE(unwound_on.has_value());
  EXPECT_EQ(*unwound_on, owner_id);
  EXPECT_EQ(token.use_count(), 2);
  // Still readable, and refused rather than run here.
  EXPECT_EQ(suspended.name(), "orphan");
  EXPECT_TRUE(suspended.dead());
  EXPECT_THROW(suspended.switch_to(), wrong_thread);
  EXPECT_THROW(unstarted.switch_to(), wrong_thread);
  EXPECT_TRUE(finished.dead());
  suspended = greenlet{};
  unstarted = greenlet{};
  finished = greenlet{};
  EXPECT_EQ(token.use_count(), 1);
  EXPECT_EQ(*token, 0);
  // This thread's greenlets are unaffected.
  EXPECT_EQ(std::any_cast<int>(greenlet([] { return 4; }).switch_to()), 4);
}

// A greenlet that outlived its thread suspended (held elsewhere, in a thread_local, or by a
// cycle of handles) was never unwound: the handles on its stack kept their records, the
// root's and the thread's state for ever (LSan, asan preset, reported them).
TEST(threads, greenlets_suspended_past_their_threads_end_are_unwound_there_and_drop_handles) {
  struct kept {
    std::shared_ptr<int> token;
    std::optional<std::thread::id>* where;
    ~kept() { *where = std::this_thread::get_id(); }
  };
  auto token = std::make_shared<int>(0);
  std::optional<std::thread::id> held_elsewhere, in_thread_local, in_cycle_a, in_cycle_b;
  std::thread::id owner_id;
  greenlet elsewhere;
  on_another_thread([&] {
    // Made before the thread's greenlet state, so destroyed after it.
    static thread_local std::optional<greenlet> tl;
    tl.emplace();
    owner_id = std::this_thread::get_id();
    greenlet root = greenlet::current();
    // Each holds a handle to the root on its stack, and one to itself off it.
    auto body = [root, token](std::any where) {
      kept k{token, std::any_cast<std::optional<std::thread::id>*>(where)};
      auto self = std::make_unique<greenlet>(greenlet::current());
      greenlet r = root;
      r.switch_to();
    };
    elsewhere = greenlet(body);
    elsewhere.switch_to(std::any(&held_elsewhere));
    *tl = greenlet(body);
    tl->switch_to(std::any(&in_thread_local));
    // a holds b; b waits in a switch to its parent, a, holding a handle to a meanwhile.
    greenlet a([&] {
      kept k{token, &in_cycle_a};
      greenlet b([&] {
        kept kb{token, &in_cycle_b};
        greenlet::current().parent().switch_to();
      });
      b.switch_to();
      root.switch_to();
    });
    a.switch_to();
  });
  EXPECT_EQ(held_elsewhere, owner_id);
  EXPECT_EQ(in_thread_local, owner_id);
  EXPECT_EQ(in_cycle_a, owner_id);
  EXPECT_EQ(in_cycle_b, owner_id);
  EXPECT_EQ(token.use_count(), 1);
  EXPECT_TRUE(elsewhere.dead());
}

// A forked child that ends with exit() unwinds its own greenlets left suspended, never the
// parent's it inherited (their frames' work is the parent's: files flushed twice, ...).
TEST(threads, a_forked_child_that_exits_unwinds_its_own_greenlets_but_not_the_parents) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  bool quiet = false;
  struct reports {
    int fd;
    const char* what;
    const bool* quiet;
    ~reports() {
      if (!*quiet) tendril::test::say(fd, what);
    }
  };
  auto waits_with = [&](const char* what) {
    return greenlet([&, what] {
      reports r{fds[1], what, &quiet};
      switch_to_parent();
    });
  };
  greenlet parents = waits_with("parent's\n");
  parents.switch_to();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    static greenlet kept;  // still there when the thread ends, as `parents` is
    kept = waits_with("child's\n");
    kept.switch_to();
    std::exit(0);
  }
  ASSERT_GT(pid, 0);
  const tendril::test::child_outcome c = tendril::test::collect_child(pid, fds);
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(c.report, "child's\n");
  quiet = true;
  parents.throw_into(std::make_exception_ptr(tendril::greenlet_exit{}));
}

TEST(threads, a_root_handle_outlives_its_thread) {
  greenlet root;
  pid_t tid = 0;
  on_another_thread([&] {
    root = greenlet::current();
    tid = gettid();
  });
  EXPECT_TRUE(root.is_root());
  EXPECT_TRUE(root.dead());
  EXPECT_FALSE(static_cast<bool>(root));
  EXPECT_EQ(root.name(), "root-" + std::to_string(tid));
  EXPECT_THROW(root.switch_to(), wrong_thread);
}

TEST(threads, greenlets_dropped_across_threads_at_once_are_each_unwound_by_their_owner) {
  constexpr int count = 4;
  const int per_thread = static_cast<int>(tendril::test::scaled(500, 10));
  std::vector<std::vector<greenlet>> made(count);
  std::vector<int> unwound_here(count, 0);
  std::atomic<int> unwound_elsewhere{0};
  std::vector<int> after_drops(count, -1);
  std::barrier sync(count);
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&, i] {
      const auto idx = static_cast<std::size_t>(i);
      const std::thread::id me = std::this_thread::get_id();
      struct counts_unwinding {
        std::thread::id owner;
        int* here;
        std::atomic<int>* elsewhere;
        ~counts_unwinding() {
          if (std::this_thread::get_id() == owner) {
            ++*here;
          } else {
            elsewhere->fetch_add(1);
          }
        }
      };
      for (int k = 0; k < per_thread; ++k) {
        made[idx].emplace_back([&, me, idx] {
          counts_unwinding c{me, &unwound_here[idx], &unwound_elsewhere};
          switch_to_parent();
        });
        made[idx].back().switch_to();
      }
      sync.arrive_and_wait();
      made[(idx + 1) % count].clear();  // another thread's greenlets: their last handles
      sync.arrive_and_wait();
      greenlet([] {}).switch_to();  // runs what the other threads handed back
      after_drops[idx] = unwound_here[idx];
      sync.arrive_and_wait();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(unwound_elsewhere.load(), 0);
  for (int i = 0; i < count; ++i) {
    EXPECT_EQ(after_drops[static_cast<std::size_t>(i)], per_thread) << "thread " << i;
  }
}

// A running greenlet that takes handles to itself while another thread drops its last one:
// the count could go 1 -> 0 there and 0 -> 1 -> 0 here, and both threads queued it, so its
// record was released again after it was freed (sometimes a newer greenlet's, reusing it).
TEST(threads, a_running_greenlet_dropped_elsewhere_while_it_takes_handles_is_unwound_once) {
  // The two threads spin waiting for each other, which valgrind, running one thread at a time,
  // does not get through (the race is ASan's and TSan's to catch).
  if (tendril::detail::sanitizer::running_on_valgrind()) GTEST_SKIP() << "spins under valgrind";
  const int trials = static_cast<int>(tendril::test::scaled(5000, 200));
  std::atomic<greenlet*> handoff{nullptr};
  std::atomic<bool> dropped{false};
  greenlet* const stop = reinterpret_cast<greenlet*>(&handoff);
  std::thread dropper([&] {
    for (;;) {
      greenlet* h;
      while ((h = handoff.exchange(nullptr)) == nullptr) std::this_thread::yield();
      if (h == stop) return;
      delete h;  // the last counted handle
      dropped.store(true);
    }
  });
  std::vector<int> unwound(static_cast<std::size_t>(trials), 0);
  int wrong_thread_unwinds = 0;
  const std::thread::id owner = std::this_thread::get_id();
  struct counts_unwinding {
    int* count;
    int* elsewhere;
    std::thread::id owner;
    ~counts_unwinding() {
      ++*count;
      if (std::this_thread::get_id() != owner) ++*elsewhere;
    }
  };
  for (int i = 0; i < trials; ++i) {
    dropped.store(false);
    auto* h = new greenlet();
    *h = greenlet([&, h, i] {
      counts_unwinding c{&unwound[static_cast<std::size_t>(i)], &wrong_thread_unwinds, owner};
      handoff.store(h);
      while (!dropped.load()) {
        greenlet on_own_stack = greenlet::current();  // not counted
        auto* counted = new greenlet(on_own_stack);   // counted, then dropped again
        delete counted;
      }
      switch_to_parent();
    });
    h->switch_to();               // the handle is the dropper's now
    greenlet([] {}).switch_to();  // unwinds what was queued
  }
  handoff.store(stop);
  dropper.join();
  EXPECT_EQ(wrong_thread_unwinds, 0);
  int wrong = 0;
  for (int n : unwound) wrong += n != 1;
  EXPECT_EQ(wrong, 0) << "greenlets not unwound exactly once, of " << trials;
}
