// How long greenlets live: destroying a suspended greenlet unwinds it with greenlet_exit,
// which handles keep a greenlet alive (not one on its own stack; parent links do), greenlets
// that resist or fail their unwinding, and many live stacks at once (python greenlet's
// test_dealloc*, test_parent_restored_on_kill and test_dealloc_switch_args_not_lost).
#include <gtest/gtest.h>

#include <algorithm>
#include <any>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "context/stack_pool.hpp"
#include "tendril/greenlet/exceptions.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "tendril/greenlet/stack.hpp"
#include "test_scale.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define TENDRIL_TEST_LSAN_IGNORE(p) __lsan_ignore_object(p)
#else
#define TENDRIL_TEST_LSAN_IGNORE(p) static_cast<void>(p)
#endif

using tendril::greenlet;
using tendril::greenlet_exit;

namespace {

struct some_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::any switch_to_parent(std::any v = {}) {
  return greenlet::current().parent().switch_to(std::move(v));
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A local that notes its destruction.
struct noted {
  std::vector<std::string>* trace;
  std::string name;
  ~noted() { trace->push_back(name); }
};

void wait_deeper(std::vector<std::string>* trace) {
  noted inner{trace, "inner"};
  switch_to_parent();
  trace->push_back("not reached");
}

}  // namespace

// --- unwinding on destruction --------------------------------------------------------------

TEST(lifetime, destroying_a_suspended_greenlet_runs_the_destructors_of_its_locals) {
  std::vector<std::string> trace;
  {
    greenlet g([&] {
      noted outer{&trace, "outer"};
      {
        noted middle{&trace, "middle"};
        wait_deeper(&trace);
      }
      trace.push_back("not reached either");
    });
    g.switch_to();
    EXPECT_TRUE(trace.empty());
  }
  EXPECT_EQ(trace, (std::vector<std::string>{"inner", "middle", "outer"}));
}

TEST(lifetime, destruction_raises_greenlet_exit_at_the_switch_point) {
  // python's test_dealloc: each greenlet sees GreenletExit when its last reference goes.
  std::vector<std::string> seen;
  auto fmain = [&](std::any name) {
    try {
      switch_to_parent();
    } catch (const greenlet_exit& e) {
      seen.push_back(std::any_cast<std::string>(name) + ": " + e.what());
      throw;
    }
  };
  std::optional<greenlet> g1(std::in_place, fmain);
  std::optional<greenlet> g2(std::in_place, fmain);
  g1->switch_to(std::string("g1"));
  g2->switch_to(std::string("g2"));
  EXPECT_TRUE(seen.empty());
  g1.reset();
  EXPECT_EQ(seen, std::vector<std::string>{"g1: tendril::greenlet_exit"});
  g2.reset();
  EXPECT_EQ(seen,
            (std::vector<std::string>{"g1: tendril::greenlet_exit", "g2: tendril::greenlet_exit"}));
}

TEST(lifetime, greenlet_exit_is_not_caught_by_catch_std_exception) {
  static_assert(!std::is_base_of_v<std::exception, greenlet_exit>);
  bool caught_as_std_exception = false;
  bool ended = false;
  std::vector<std::string> trace;
  {
    greenlet g([&] {
      noted n{&trace, "local"};
      try {
        switch_to_parent();
      } catch (const std::exception&) {
        caught_as_std_exception = true;
      }
      ended = true;
    });
    g.switch_to();
  }
  EXPECT_FALSE(caught_as_std_exception);
  EXPECT_FALSE(ended);
  EXPECT_EQ(trace, std::vector<std::string>{"local"});
}

TEST(lifetime, destroying_an_unstarted_greenlet_destroys_its_callable_without_running_it) {
  auto token = std::make_shared<int>(0);
  {
    greenlet g([token] { ++*token; });
    EXPECT_EQ(token.use_count(), 2);
  }
  EXPECT_EQ(token.use_count(), 1);
  EXPECT_EQ(*token, 0);
}

TEST(lifetime, a_killed_greenlet_ends_into_its_destroyer) {
  // python's test_parent_restored_on_kill: while it unwinds, its parent is the greenlet that
  // dropped it, and control comes back there.
  std::vector<std::string> trace;
  greenlet main = greenlet::current();
  greenlet hub([] {});
  greenlet killer;
  {
    greenlet victim(
        [&] {
          try {
            main.switch_to();
          } catch (const greenlet_exit&) {
            trace.push_back(greenlet::current().parent() == killer ? "parent is killer"
                                                                   : "parent is not killer");
            throw;
          }
        },
        hub);
    victim.switch_to();
    killer = greenlet([&, v = std::move(victim)]() mutable {
      trace.push_back("killer start");
      v = greenlet{};  // the last handle: victim unwinds now, and comes back here
      trace.push_back("killer after kill");
      return std::string("killer done");
    });
  }
  EXPECT_EQ(std::any_cast<std::string>(killer.switch_to()), "killer done");
  EXPECT_EQ(trace,
            (std::vector<std::string>{"killer start", "parent is killer", "killer after kill"}));
  EXPECT_FALSE(hub.started());
}

TEST(lifetime, a_killed_greenlet_whose_parent_is_dead_ends_into_its_destroyer) {
  std::vector<std::string> trace;
  greenlet main = greenlet::current();
  {
    greenlet p([] {});
    p.switch_to();
    ASSERT_TRUE(p.dead());
    greenlet g(
        [&] {
          noted n{&trace, "g local"};
          main.switch_to();
        },
        p);
    g.switch_to();
  }
  EXPECT_EQ(trace, std::vector<std::string>{"g local"});
  EXPECT_TRUE(greenlet::current() == main);
}

TEST(lifetime, destroying_a_greenlet_whose_stack_holds_the_last_handle_to_another_unwinds_both) {
  constexpr int chain = 10;
  std::vector<std::string> trace;
  std::vector<int> uncaught;
  greenlet next;
  for (int i = chain - 1; i >= 0; --i) {
    greenlet gi([&trace, &uncaught, i, held = std::move(next)]() mutable {
      greenlet mine = std::move(held);  // now the only handle lies on this stack
      struct note_uncaught {
        std::vector<int>* out;
        ~note_uncaught() { out->push_back(std::uncaught_exceptions()); }
      } nu{&uncaught};
      noted n{&trace, std::to_string(i)};
      switch_to_parent();
    });
    gi.switch_to();
    next = std::move(gi);
  }
  EXPECT_TRUE(trace.empty());
  next = greenlet{};
  std::vector<std::string> expected;
  for (int i = 0; i < chain; ++i) expected.push_back(std::to_string(i));
  EXPECT_EQ(trace, expected);
  // Each one counted only its own greenlet_exit, though the next was killed during its
  // predecessor's unwinding.
  EXPECT_EQ(uncaught, std::vector<int>(chain, 1));
  EXPECT_EQ(std::uncaught_exceptions(), 0);
}

// --- which handles keep a greenlet alive ---------------------------------------------------

TEST(lifetime, a_handle_to_itself_on_its_own_stack_does_not_keep_it_alive) {
  std::vector<std::string> trace;
  {
    greenlet g([&] {
      greenlet self = greenlet::current();
      greenlet copy = self;
      greenlet moved = std::move(copy);
      greenlet assigned;
      assigned = moved;
      noted n{&trace, "local"};
      switch_to_parent();
    });
    g.switch_to();
    EXPECT_TRUE(trace.empty());
  }
  EXPECT_EQ(trace, std::vector<std::string>{"local"});
}

TEST(lifetime, a_handle_to_itself_kept_off_its_stack_keeps_it_alive) {
  std::vector<std::string> trace;
  std::optional<greenlet> keeper;
  {
    greenlet g([&] {
      noted n{&trace, "local"};
      keeper = greenlet::current();  // a handle on the main greenlet's stack
      switch_to_parent();
    });
    g.switch_to();
  }
  EXPECT_TRUE(trace.empty());
  ASSERT_TRUE(keeper.has_value());
  EXPECT_TRUE(static_cast<bool>(*keeper));
  keeper.reset();
  EXPECT_EQ(trace, std::vector<std::string>{"local"});
}

TEST(lifetime, a_parent_link_does_not_keep_the_parent_alive_and_children_move_up) {
  // Parent links are not references (a parent holding its child's handle would otherwise
  // never be freed): dropping p's last handle unwinds p, and c's parent becomes p's parent.
  std::vector<std::string> trace;
  greenlet main = greenlet::current();
  greenlet c;
  {
    greenlet p([&] {
      noted n{&trace, "p local"};
      switch_to_parent();
      trace.push_back("p resumed");
    });
    p.switch_to();
    c = greenlet([] { return std::string("c's result"); }, p);
    EXPECT_TRUE(c.parent() == p);
  }
  EXPECT_EQ(trace, std::vector<std::string>{"p local"});
  EXPECT_TRUE(c.parent() == main);
  EXPECT_EQ(std::any_cast<std::string>(c.switch_to()), "c's result");
  EXPECT_EQ(trace, std::vector<std::string>{"p local"});
}

// The child itself drops its parent's last handle: the parent is unwound (into the child,
// the current greenlet), and the child's parent becomes the parent's own parent, as when
// another greenlet drops it. It became the child itself, and the child's end looped for ever.
TEST(lifetime, a_child_that_drops_its_parents_last_handle_ends_into_the_grandparent) {
  std::vector<std::string> trace;
  greenlet main = greenlet::current();
  std::optional<greenlet> p(std::in_place, [&] {
    noted n{&trace, "p local"};
    switch_to_parent();
  });
  p->switch_to();
  greenlet c(
      [&] {
        p.reset();  // the last handle: p unwinds now
        trace.push_back("c goes on");
        return std::string("c's result");
      },
      *p);
  EXPECT_EQ(std::any_cast<std::string>(c.switch_to()), "c's result");
  EXPECT_EQ(trace, (std::vector<std::string>{"p local", "c goes on"}));
  EXPECT_TRUE(c.dead());

  // Two generations up: g, then p (child of g), then c (child of p) drops g's last handle.
  trace.clear();
  std::optional<greenlet> g(std::in_place, [&] {
    noted n{&trace, "g local"};
    switch_to_parent();
  });
  g->switch_to();
  greenlet p2([&] { return switch_to_parent(); }, *g);  // hands on what resumes it
  p2.switch_to();
  greenlet c2(
      [&] {
        g.reset();
        return std::string("c2's result");
      },
      p2);
  // c2 ends into p2, whose parent is now main, and p2 ends into main with c2's result.
  EXPECT_EQ(std::any_cast<std::string>(c2.switch_to()), "c2's result");
  EXPECT_EQ(trace, std::vector<std::string>{"g local"});
  EXPECT_TRUE(p2.dead());
  EXPECT_TRUE(p2.parent() == main);
}

// As above, but the parent's stack holds the child's last handle: the child, waiting for the
// parent to unwind into it, got greenlet_exit in the middle of that wait (false reports of a
// greenlet that raised and one that did not end, then a greenlet that was its own parent).
TEST(lifetime, a_child_dropping_its_parent_that_holds_its_last_handle_goes_on_and_ends_first) {
  std::vector<std::string> trace;
  greenlet main = greenlet::current();
  std::optional<greenlet> p(std::in_place, [&] {
    noted np{&trace, "p local"};
    greenlet c([&] {
      noted nc{&trace, "c local"};
      p.reset();  // p unwinds now, dropping the last handle to c
      trace.push_back("c goes on");
      return std::string("c's result");
    });
    c.switch_to();
    trace.push_back("not reached");
  });
  testing::internal::CaptureStderr();
  std::any result = p->switch_to();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(std::any_cast<std::string>(result), "c's result");
  EXPECT_EQ(trace, (std::vector<std::string>{"p local", "c goes on", "c local"}));
  EXPECT_EQ(err, "");
  EXPECT_TRUE(greenlet::current() == main);

  // The same with a child that switches away instead of ending: it is unwound at the next
  // switch, like any running greenlet whose last handle went.
  trace.clear();
  p.emplace([&] {
    noted np{&trace, "p local"};
    greenlet c([&] {
      noted nc{&trace, "c local"};
      p.reset();
      trace.push_back("c goes on");
      main.switch_to();
      trace.push_back("not reached");
    });
    c.switch_to();
  });
  testing::internal::CaptureStderr();
  p->switch_to();
  EXPECT_EQ(trace, (std::vector<std::string>{"p local", "c goes on"}));
  greenlet([] {}).switch_to();
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(trace, (std::vector<std::string>{"p local", "c goes on", "c local"}));
}

TEST(lifetime, a_suspended_child_outlives_its_dropped_parent_and_is_unwound_later) {
  std::vector<std::string> trace;
  greenlet main = greenlet::current();
  {
    greenlet c;
    {
      greenlet p([&] {
        noted n{&trace, "p local"};
        switch_to_parent();
      });
      p.switch_to();
      c = greenlet(
          [&] {
            noted n{&trace, "c local"};
            main.switch_to();
          },
          p);
      c.switch_to();
    }
    EXPECT_EQ(trace, std::vector<std::string>{"p local"});
    EXPECT_TRUE(c.parent() == main);
  }
  EXPECT_EQ(trace, (std::vector<std::string>{"p local", "c local"}));
}

TEST(lifetime, a_greenlet_holding_a_dead_child_it_made_is_unwound_when_dropped) {
  std::vector<std::string> trace;
  greenlet main = greenlet::current();
  {
    greenlet p([&] {
      noted n{&trace, "p local"};
      greenlet child([] {});
      child.switch_to();  // child ends; its handle stays on p's stack
      main.switch_to();
    });
    p.switch_to();
  }
  EXPECT_EQ(trace, std::vector<std::string>{"p local"});
}

TEST(lifetime, a_greenlet_holding_a_suspended_child_it_made_is_unwound_when_dropped) {
  std::vector<std::string> trace;
  greenlet main = greenlet::current();
  {
    greenlet p([&] {
      noted n{&trace, "p local"};
      greenlet child([&] {
        noted c{&trace, "child local"};
        main.switch_to();
      });
      child.switch_to();
      main.switch_to();
    });
    p.switch_to();
  }
  EXPECT_EQ(trace, (std::vector<std::string>{"child local", "p local"}));
}

TEST(lifetime, dropping_a_temporary_greenlet_after_switch_to) {
  // One that ends: the value comes back and nothing is left.
  EXPECT_EQ(std::any_cast<int>(greenlet([] { return 3; }).switch_to()), 3);
  // One that suspends: the value comes back, then the temporary's destruction unwinds it.
  std::vector<std::string> trace;
  std::any r = greenlet([&] {
                 noted n{&trace, "local"};
                 switch_to_parent(std::string("suspended"));
               }).switch_to();
  EXPECT_EQ(std::any_cast<std::string>(r), "suspended");
  EXPECT_EQ(trace, std::vector<std::string>{"local"});
}

// --- greenlets that resist their unwinding -------------------------------------------------

TEST(lifetime, a_greenlet_that_catches_greenlet_exit_keeps_running_until_it_ends) {
  std::vector<std::string> trace;
  {
    greenlet g([&] {
      try {
        switch_to_parent();
      } catch (const greenlet_exit&) {
        trace.push_back("caught greenlet_exit");
      }
      // Still running: it may switch to greenlets of its own before it ends.
      greenlet helper([&] {
        trace.push_back("helper ran");
        return 2;
      });
      int v = std::any_cast<int>(helper.switch_to());
      trace.push_back("cleanup done " + std::to_string(v));
    });
    g.switch_to();
  }
  trace.push_back("destructor returned");
  EXPECT_EQ(trace, (std::vector<std::string>{"caught greenlet_exit", "helper ran", "cleanup done 2",
                                             "destructor returned"}));
}

TEST(lifetime, a_greenlet_that_refuses_to_end_when_destroyed_is_reported_and_left_alone) {
  bool caught = false;
  bool resumed = false;
  testing::internal::CaptureStderr();
  {
    greenlet g([&] {
      try {
        switch_to_parent();
      } catch (const greenlet_exit&) {
        caught = true;
      }
      switch_to_parent();  // back to its destroyer, instead of ending
      resumed = true;
    });
    g.set_name("stubborn");
    g.switch_to();
    // Its record and stack are deliberately leaked: nothing can ever resume it.
    TENDRIL_TEST_LSAN_IGNORE(g.record());
  }
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(caught);
  EXPECT_FALSE(resumed);
  EXPECT_TRUE(contains(err, "'stubborn' did not end")) << err;
  // The destroyer goes on normally.
  EXPECT_EQ(std::any_cast<int>(greenlet([] { return 1; }).switch_to()), 1);
}

TEST(lifetime, a_greenlet_that_raises_while_being_destroyed_is_reported) {
  // python's test_dealloc_catches_GreenletExit_throws_other: the parent does not get it.
  testing::internal::CaptureStderr();
  bool raised = false;
  {
    greenlet g([&] {
      try {
        switch_to_parent();
      } catch (const greenlet_exit&) {
        raised = true;
        throw some_error("something else instead");
      }
    });
    g.set_name("rebel");
    g.switch_to();
  }
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(raised);
  EXPECT_TRUE(contains(err, "'rebel' raised while it was being destroyed")) << err;
  EXPECT_TRUE(contains(err, "something else instead")) << err;
}

TEST(lifetime, a_running_greenlet_that_drops_its_last_handle_is_unwound_at_the_next_switch) {
  // python's test_dealloc_switch_args_not_lost: the value it switches with is not lost.
  std::vector<std::string> trace;
  auto worker_slot = std::make_unique<greenlet>();
  greenlet* initiator_ptr = nullptr;
  *worker_slot = greenlet([&] {
    std::any value = switch_to_parent();
    initiator_ptr->set_parent(greenlet::current().parent());
    worker_slot.reset();  // the last handle to the running greenlet
    trace.push_back("dropped itself");
    try {
      switch_to_parent(value);
    } catch (const greenlet_exit&) {
      trace.push_back("unwound");
      throw;
    }
  });
  worker_slot->switch_to();
  greenlet initiator([] { return 42; }, *worker_slot);
  initiator_ptr = &initiator;
  std::any value = initiator.switch_to();
  EXPECT_EQ(std::any_cast<int>(value), 42);
  ASSERT_FALSE(trace.empty());
  EXPECT_EQ(trace.front(), "dropped itself");
  greenlet([] {}).switch_to();  // a later switch of this thread
  EXPECT_EQ(trace, (std::vector<std::string>{"dropped itself", "unwound"}));
}

// --- many stacks ---------------------------------------------------------------------------

TEST(lifetime, many_live_guarded_stacks_are_created_and_destroyed) {
#if defined(TENDRIL_TSAN_FIBERS)
  // TSan counts each live fiber as a thread and dies past 8128 of them.
  std::size_t n = std::min<std::size_t>(tendril::test::scaled(100000), 4000);
#elif defined(__SANITIZE_ADDRESS__)
  // ASan took 44 s over 100,000 in CI; 20,000 run the same code for its memory checks, and
  // the dev build checks the full count.
  std::size_t n = std::min<std::size_t>(tendril::test::scaled(100000), 20000);
#else
  std::size_t n = tendril::test::scaled(100000);
#endif
  // Where guards are mprotect'ed pages (kernels before 6.13, or a build with
  // TENDRIL_GUARD_MARKERS off) each stack is two mappings, and vm.max_map_count (65,530 by
  // default) caps how many can live at once.
  {
    namespace pool = tendril::detail::stack_pool;
    tendril::detail::stack probe;
    ASSERT_EQ(pool::allocate(pool::default_size, probe), 0);
    pool::release(probe);
    if (!pool::uses_guard_markers()) n = std::min<std::size_t>(n, 20000);
  }
  std::size_t unwound = 0;
  struct count_on_unwind {
    std::size_t* n;
    ~count_on_unwind() { ++*n; }
  };
  {
    std::vector<greenlet> gs;
    gs.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      gs.emplace_back([&unwound](std::any v) {
        count_on_unwind c{&unwound};
        switch_to_parent(v);
      });
      ASSERT_EQ(std::any_cast<std::size_t>(gs.back().switch_to(i)), i);
    }
    std::size_t alive = 0;
    for (const greenlet& g : gs) alive += static_cast<bool>(g) ? 1 : 0;
    EXPECT_EQ(alive, n);
    EXPECT_EQ(unwound, 0u);
  }
  EXPECT_EQ(unwound, n);
  EXPECT_GE(tendril::trim_stack_cache(), n);
}

TEST(lifetime, trim_stack_cache_gives_cached_stacks_back_and_they_stay_usable) {
  constexpr std::size_t count = 64;
  // Touches most of its stack, then waits: `count` of them hold `count` stacks at once.
  auto use_stack = [](std::any seed) {
    volatile char scratch[32 * 1024];
    for (std::size_t i = 0; i < sizeof scratch; i += 512) scratch[i] = 1;
    switch_to_parent();
    return std::any_cast<int>(seed) + scratch[512];
  };
  {
    std::vector<greenlet> gs;
    for (std::size_t i = 0; i < count; ++i) {
      gs.emplace_back(use_stack);
      gs.back().switch_to(static_cast<int>(i));
    }
  }
  EXPECT_GE(tendril::trim_stack_cache(), count);
  std::vector<greenlet> again;
  for (std::size_t i = 0; i < count; ++i) {
    again.emplace_back(use_stack);
    again.back().switch_to(static_cast<int>(i));
  }
  for (std::size_t i = 0; i < count; ++i) {
    EXPECT_EQ(std::any_cast<int>(again[i].switch_to()), static_cast<int>(i) + 1);
  }
  EXPECT_GE(tendril::trim_stack_cache(), count);
}
