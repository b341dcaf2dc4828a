// greenlet: the order of switches, parents, values both ways, throw_into, dead greenlets,
// reparenting, state, names and misuse. Modelled on python greenlet's own test_greenlet.py
// and test_throw.py.
#include <gtest/gtest.h>

#include <any>
#include <array>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <typeinfo>
#include <utility>
#include <vector>

#include "greenlet/greenlet_record.hpp"
#include "tendril/greenlet/exceptions.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "tendril/greenlet/stack.hpp"

using tendril::greenlet;
using tendril::greenlet_error;
using tendril::greenlet_exit;
using tendril::parent_cycle;

namespace {

struct some_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// python's greenlet.getcurrent().parent.switch(v).
std::any switch_to_parent(std::any v = {}) {
  return greenlet::current().parent().switch_to(std::move(v));
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A greenlet that takes its stack when it first runs, as spawn() makes a task's.
template <class F>
greenlet lazy_greenlet(F run) {
  void* storage = nullptr;
  void* extra = nullptr;
  tendril::detail::greenlet_record* r = tendril::detail::greenlet_create_ex(
      sizeof(F), alignof(F), &tendril::detail::callable_ops_for<F>, nullptr, 0, 0, nullptr,
      &storage, &extra, true);
  ::new (storage) F(std::move(run));
  return greenlet(r, greenlet::adopt_t{});
}

}  // namespace

// --- switching order and parents -----------------------------------------------------------

TEST(greenlet, making_a_greenlet_runs_nothing_until_the_first_switch) {
  bool ran = false;
  greenlet g([&] { ran = true; });
  EXPECT_FALSE(ran);
  EXPECT_FALSE(g.started());
  g.switch_to();
  EXPECT_TRUE(ran);
}

TEST(greenlet, switches_interleave_in_the_order_they_are_made) {
  std::vector<int> trace;
  greenlet g([&] {
    trace.push_back(1);
    switch_to_parent();
    trace.push_back(3);
  });
  trace.push_back(0);
  g.switch_to();
  trace.push_back(2);
  g.switch_to();
  trace.push_back(4);
  EXPECT_EQ(trace, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(g.dead());
}

TEST(greenlet, two_children_of_one_parent_each_return_to_it) {
  std::vector<int> trace;
  auto f = [&] {
    trace.push_back(1);
    switch_to_parent();
    trace.push_back(1);
    trace.push_back(1);
  };
  greenlet g(f);
  greenlet h(f);
  g.switch_to();
  EXPECT_EQ(trace.size(), 1u);
  h.switch_to();
  EXPECT_EQ(trace.size(), 2u);
  h.switch_to();
  EXPECT_EQ(trace.size(), 4u);
  EXPECT_TRUE(h.dead());
  EXPECT_FALSE(g.dead());
  g.switch_to();
  EXPECT_EQ(trace.size(), 6u);
  EXPECT_TRUE(g.dead());
}

TEST(greenlet, a_child_made_inside_a_greenlet_returns_to_that_greenlet) {
  std::string trace;
  greenlet outer([&] {
    trace += 'a';
    greenlet inner([&] {
      trace += 'b';
      switch_to_parent();
      trace += 'x';  // never resumed: inner is dropped suspended when outer ends
    });
    EXPECT_TRUE(inner.parent() == greenlet::current());
    inner.switch_to();
    trace += 'c';
  });
  outer.switch_to();
  EXPECT_EQ(trace, "abc");
  EXPECT_TRUE(outer.dead());
}

TEST(greenlet, results_climb_a_chain_of_nested_parents) {
  std::vector<std::string> trace;
  greenlet level1([&] {
    greenlet level2([&] {
      greenlet level3([&] {
        trace.push_back("level3");
        return 1;
      });
      int v = std::any_cast<int>(level3.switch_to());
      trace.push_back("level2 got " + std::to_string(v));
      return v + 10;
    });
    int v = std::any_cast<int>(level2.switch_to());
    trace.push_back("level1 got " + std::to_string(v));
    return v + 100;
  });
  EXPECT_EQ(std::any_cast<int>(level1.switch_to()), 111);
  EXPECT_EQ(trace, (std::vector<std::string>{"level3", "level2 got 1", "level1 got 11"}));
}

TEST(greenlet, parent_defaults_to_the_creating_greenlet) {
  greenlet main = greenlet::current();
  greenlet g([] {});
  EXPECT_TRUE(g.parent() == main);
  greenlet creator([&] {
    greenlet child([] {});
    EXPECT_TRUE(child.parent() == greenlet::current());
    EXPECT_FALSE(child.parent() == main);
  });
  creator.switch_to();
  EXPECT_TRUE(creator.dead());
}

TEST(greenlet, an_explicit_parent_receives_the_result) {
  std::any got;
  greenlet p([&] {
    got = switch_to_parent();
    return std::string("p ended");
  });
  p.switch_to();
  greenlet c([] { return 5; }, p);
  EXPECT_TRUE(c.parent() == p);
  // c ends into p, which ends into the main greenlet.
  EXPECT_EQ(std::any_cast<std::string>(c.switch_to()), "p ended");
  EXPECT_EQ(std::any_cast<int>(got), 5);
}

TEST(greenlet, a_greenlet_ends_into_its_parent_not_into_whoever_switched_to_it) {
  std::vector<std::string> trace;
  greenlet target([] { return std::string("target result"); });  // parent: main
  greenlet starter([&] {
    target.switch_to();
    trace.push_back("starter resumed");  // never: target ends into main
  });
  std::any r = starter.switch_to();
  EXPECT_EQ(std::any_cast<std::string>(r), "target result");
  EXPECT_TRUE(target.dead());
  EXPECT_FALSE(starter.dead());
  EXPECT_TRUE(trace.empty());
}

TEST(greenlet, a_finishing_child_starts_an_unstarted_parent_with_its_result) {
  int got = 0;
  greenlet p([&](std::any v) {
    got = std::any_cast<int>(v);
    return got * 2;
  });
  greenlet c([] { return 21; }, p);
  EXPECT_EQ(std::any_cast<int>(c.switch_to()), 42);
  EXPECT_EQ(got, 21);
  EXPECT_TRUE(p.dead());
  EXPECT_TRUE(c.dead());
}

// A lazy parent (a task's greenlet before it first ran) has no stack yet: the child's end
// jumped to its null context.
TEST(greenlet, a_finishing_child_starts_an_unstarted_lazy_parent_with_its_result) {
  int got = 0;
  greenlet p = lazy_greenlet([&](std::any v) {
    got = std::any_cast<int>(v);
    return got * 2;
  });
  greenlet c([] { return 21; }, p);
  EXPECT_EQ(std::any_cast<int>(c.switch_to()), 42);
  EXPECT_EQ(got, 21);
  EXPECT_TRUE(p.dead());
  EXPECT_TRUE(c.dead());
}

TEST(greenlet, current_is_the_running_greenlet) {
  greenlet main = greenlet::current();
  EXPECT_TRUE(main.is_root());
  EXPECT_TRUE(main.parent().empty());
  greenlet seen;
  greenlet g([&] {
    seen = greenlet::current();
    EXPECT_FALSE(greenlet::current().is_root());
    EXPECT_TRUE(greenlet::current().parent() == main);
  });
  g.switch_to();
  EXPECT_TRUE(seen == g);
  EXPECT_TRUE(greenlet::current() == main);
}

// --- values --------------------------------------------------------------------------------

TEST(greenlet, values_pass_both_ways_through_switch_to) {
  std::vector<std::string> inside;
  greenlet g([&](std::any first) {
    inside.push_back(std::any_cast<std::string>(first));
    std::any back = switch_to_parent(std::string("from g 1"));
    inside.push_back(std::any_cast<std::string>(back));
    back = switch_to_parent(std::string("from g 2"));
    inside.push_back(std::any_cast<std::string>(back));
    return std::string("g returned");
  });
  EXPECT_EQ(std::any_cast<std::string>(g.switch_to(std::string("to g 1"))), "from g 1");
  EXPECT_EQ(std::any_cast<std::string>(g.switch_to(std::string("to g 2"))), "from g 2");
  EXPECT_EQ(std::any_cast<std::string>(g.switch_to(std::string("to g 3"))), "g returned");
  EXPECT_EQ(inside, (std::vector<std::string>{"to g 1", "to g 2", "to g 3"}));
}

TEST(greenlet, a_switch_without_value_arrives_as_an_empty_any) {
  bool first_empty = false;
  bool second_empty = false;
  greenlet g([&](std::any first) {
    first_empty = !first.has_value();
    second_empty = !switch_to_parent().has_value();
  });
  EXPECT_FALSE(g.switch_to().has_value());
  EXPECT_FALSE(g.switch_to().has_value());
  EXPECT_TRUE(first_empty);
  EXPECT_TRUE(second_empty);
}

TEST(greenlet, run_taking_any_receives_the_value_of_the_first_switch) {
  greenlet g([](std::any v) { return std::any_cast<int>(v) + 1; });
  EXPECT_EQ(std::any_cast<int>(g.switch_to(41)), 42);
}

TEST(greenlet, run_taking_nothing_ignores_the_value_of_the_first_switch) {
  greenlet g([] { return 5; });
  EXPECT_EQ(std::any_cast<int>(g.switch_to(std::string("ignored"))), 5);
}

TEST(greenlet, a_first_value_that_run_does_not_take_is_dropped_and_never_returned_again) {
  greenlet main_g = greenlet::current();
  std::any second;
  greenlet g([&] { second = main_g.switch_to(1); });
  auto token = std::make_shared<int>(7);
  std::weak_ptr<int> watch = token;
  EXPECT_EQ(std::any_cast<int>(g.switch_to(std::move(token))), 1);
  EXPECT_TRUE(watch.expired());  // dropped at the start, not kept until run ends
  g.switch_to();                 // resumed with nothing
  EXPECT_TRUE(g.dead());
  EXPECT_FALSE(second.has_value());
}

TEST(greenlet, a_first_value_run_takes_by_reference_is_not_returned_again) {
  greenlet main_g = greenlet::current();
  int seen = 0;
  std::any second;
  greenlet g([&](const std::any& v) {
    seen = std::any_cast<int>(v);
    second = main_g.switch_to();
  });
  g.switch_to(42);
  EXPECT_EQ(seen, 42);
  g.switch_to();
  EXPECT_TRUE(g.dead());
  EXPECT_FALSE(second.has_value());
}

TEST(greenlet, run_returning_void_hands_the_parent_an_empty_value) {
  greenlet g([] {});
  std::any r = g.switch_to(3);
  EXPECT_FALSE(r.has_value());
  EXPECT_TRUE(g.dead());
}

TEST(greenlet, run_returning_any_hands_it_over_unwrapped) {
  greenlet g([]() -> std::any { return std::string("plain"); });
  std::any r = g.switch_to();
  ASSERT_EQ(r.type(), typeid(std::string));
  EXPECT_EQ(std::any_cast<std::string>(r), "plain");
}

TEST(greenlet, move_only_values_pass_through_switch_to_and_return) {
  greenlet g([](std::any first) {
    auto p = std::any_cast<std::shared_ptr<int>>(std::move(first));
    return std::make_shared<int>(*p + 1);
  });
  std::any r = g.switch_to(std::make_shared<int>(1));
  EXPECT_EQ(*std::any_cast<std::shared_ptr<int>>(r), 2);
}

TEST(greenlet, switching_to_the_current_greenlet_returns_the_value_at_once) {
  EXPECT_EQ(std::any_cast<int>(greenlet::current().switch_to(7)), 7);
  EXPECT_FALSE(greenlet::current().switch_to().has_value());
  greenlet g([] {
    int a = std::any_cast<int>(greenlet::current().switch_to(8));
    return a + std::any_cast<int>(greenlet::current().switch_to(1));
  });
  EXPECT_EQ(std::any_cast<int>(g.switch_to()), 9);
}

// --- exceptions leaving run ----------------------------------------------------------------

TEST(greenlet, an_exception_from_run_is_raised_in_the_parent) {
  greenlet g([] { throw some_error("from run"); });
  try {
    g.switch_to();
    FAIL() << "switch_to() should have thrown";
  } catch (const some_error& e) {
    EXPECT_STREQ(e.what(), "from run");
  }
  EXPECT_TRUE(g.dead());
  EXPECT_FALSE(static_cast<bool>(g));
}

TEST(greenlet, an_exception_from_run_is_raised_where_the_parent_switched_away) {
  // python's test_exception: g2's parent is g1, suspended in a switch; g2's exception lands
  // there, passes through g1's handler and ends g1, then reaches the main greenlet.
  std::vector<std::string> seen;
  auto fmain = [&] {
    try {
      switch_to_parent();
    } catch (const some_error&) {
      seen.push_back("some_error");
      throw;
    }
    throw some_error("fmain");
  };
  greenlet g1(fmain);
  greenlet g2(fmain);
  g1.switch_to();
  g2.switch_to();
  g2.set_parent(g1);
  EXPECT_TRUE(seen.empty());
  EXPECT_THROW(g2.switch_to(), some_error);
  EXPECT_EQ(seen, std::vector<std::string>{"some_error"});
  EXPECT_TRUE(g1.dead());
  EXPECT_TRUE(g2.dead());
  EXPECT_FALSE(g2.switch_to().has_value());
  EXPECT_EQ(std::any_cast<int>(g2.switch_to(25)), 25);
  EXPECT_EQ(seen, std::vector<std::string>{"some_error"});
}

TEST(greenlet, a_parent_catching_a_childs_exception_goes_on_running) {
  std::string caught;
  greenlet p([&] {
    greenlet c([] { throw some_error("child failed"); });
    try {
      c.switch_to();
    } catch (const some_error& e) {
      caught = e.what();
    }
    return std::string("p survived");
  });
  EXPECT_EQ(std::any_cast<std::string>(p.switch_to()), "p survived");
  EXPECT_EQ(caught, "child failed");
}

TEST(greenlet, a_childs_exception_passes_through_an_unstarted_parent_without_running_it) {
  bool parent_ran = false;
  greenlet p([&] { parent_ran = true; });
  greenlet c([] { throw some_error("c"); }, p);
  EXPECT_THROW(c.switch_to(), some_error);
  EXPECT_FALSE(parent_ran);
  EXPECT_TRUE(p.dead());
  EXPECT_TRUE(c.dead());
}

TEST(greenlet, greenlet_exit_leaving_run_is_a_normal_death_with_it_as_the_value) {
  greenlet g([] { throw greenlet_exit{}; });
  std::any r;
  EXPECT_NO_THROW(r = g.switch_to());
  EXPECT_EQ(r.type(), typeid(greenlet_exit));
  EXPECT_TRUE(g.dead());
}

// --- throw_into ----------------------------------------------------------------------------

TEST(greenlet, throw_into_a_started_greenlet_raises_at_its_switch_point) {
  // python's test_throw.py test_class / test_val.
  std::string caught;
  greenlet g([&] {
    try {
      switch_to_parent(std::string("ok"));
    } catch (const std::runtime_error& e) {
      caught = e.what();
      switch_to_parent(std::string("ok"));
      return;
    }
    switch_to_parent(std::string("fail"));
  });
  EXPECT_EQ(std::any_cast<std::string>(g.switch_to()), "ok");
  EXPECT_EQ(std::any_cast<std::string>(g.throw_into(std::runtime_error("fun"))), "ok");
  EXPECT_EQ(caught, "fun");
  EXPECT_FALSE(g.switch_to().has_value());
  EXPECT_TRUE(g.dead());
}

TEST(greenlet, throw_into_accepts_an_exception_ptr) {
  std::string caught;
  greenlet g([&] {
    try {
      switch_to_parent();
    } catch (const some_error& e) {
      caught = e.what();
    }
    return 1;
  });
  g.switch_to();
  EXPECT_EQ(std::any_cast<int>(g.throw_into(std::make_exception_ptr(some_error("by ptr")))), 1);
  EXPECT_EQ(caught, "by ptr");
}

TEST(greenlet, throw_into_a_started_greenlet_that_lets_it_escape_raises_in_its_parent) {
  int local_destroyed = 0;
  struct guard {
    int* n;
    ~guard() { ++*n; }
  };
  greenlet g([&] {
    guard gd{&local_destroyed};
    switch_to_parent();
  });
  g.switch_to();
  EXPECT_THROW(g.throw_into(some_error("escape")), some_error);
  EXPECT_EQ(local_destroyed, 1);
  EXPECT_TRUE(g.dead());
}

TEST(greenlet, throw_greenlet_exit_into_a_started_greenlet_kills_it_and_returns_greenlet_exit) {
  // python's test_throw.py test_kill.
  bool resumed = false;
  greenlet g([&] {
    switch_to_parent(std::string("ok"));
    resumed = true;
    switch_to_parent(std::string("fail"));
  });
  EXPECT_EQ(std::any_cast<std::string>(g.switch_to()), "ok");
  std::any r = g.throw_into(greenlet_exit{});
  EXPECT_EQ(r.type(), typeid(greenlet_exit));
  EXPECT_TRUE(g.dead());
  EXPECT_FALSE(resumed);
}

TEST(greenlet, throw_greenlet_exit_into_a_dead_greenlet_returns_greenlet_exit) {
  // python's test_kill: "immediately eaten by the already-dead greenlet". Killing a greenlet
  // that already ended must not kill the caller.
  greenlet g([] { return 1; });
  g.switch_to();
  ASSERT_TRUE(g.dead());
  std::any r;
  EXPECT_NO_THROW(r = g.throw_into(greenlet_exit{}));
  EXPECT_EQ(r.type(), typeid(greenlet_exit));
}

TEST(greenlet, throw_into_an_unstarted_greenlet_never_runs_it_and_raises_in_its_parent) {
  bool ran = false;
  greenlet g([&] { ran = true; });
  EXPECT_THROW(g.throw_into(some_error("before start")), some_error);
  EXPECT_FALSE(ran);
  EXPECT_TRUE(g.dead());
  EXPECT_FALSE(static_cast<bool>(g));
  // As in python, the kill counts as its start.
  EXPECT_TRUE(g.started());
  // Later switches go past it, to its parent.
  EXPECT_EQ(std::any_cast<int>(g.switch_to(3)), 3);
  EXPECT_FALSE(ran);
}

TEST(greenlet, throw_greenlet_exit_into_an_unstarted_greenlet_returns_it_as_a_value) {
  bool ran = false;
  greenlet g([&] { ran = true; });
  std::any r;
  EXPECT_NO_THROW(r = g.throw_into(greenlet_exit{}));
  EXPECT_EQ(r.type(), typeid(greenlet_exit));
  EXPECT_FALSE(ran);
  EXPECT_TRUE(g.dead());
}

TEST(greenlet, throw_into_an_unstarted_greenlet_destroys_its_callable) {
  auto token = std::make_shared<int>(0);
  greenlet g([token] { ++*token; });
  EXPECT_EQ(token.use_count(), 2);
  EXPECT_THROW(g.throw_into(some_error("x")), some_error);
  EXPECT_EQ(token.use_count(), 1);
  EXPECT_EQ(*token, 0);
}

TEST(greenlet, throw_into_an_unstarted_greenlet_surfaces_in_its_parent_not_the_caller) {
  std::string p_caught;
  greenlet p([&] {
    try {
      switch_to_parent();
    } catch (const some_error& e) {
      p_caught = e.what();
    }
    return std::string("p done");
  });
  p.switch_to();
  bool ran = false;
  greenlet g([&] { ran = true; }, p);
  // The exception goes to p, which handles it and ends into the main greenlet.
  EXPECT_EQ(std::any_cast<std::string>(g.throw_into(some_error("for p"))), "p done");
  EXPECT_EQ(p_caught, "for p");
  EXPECT_FALSE(ran);
  EXPECT_TRUE(g.dead());
  EXPECT_TRUE(p.dead());
}

TEST(greenlet, throw_into_goes_to_the_original_parent) {
  // python's test_throw.py test_throw_goes_to_original_parent, three cases.
  auto f1 = [] {
    try {
      switch_to_parent(std::string("f1 ready to catch"));
    } catch (const std::out_of_range&) {
      return std::string("caught");
    }
    return std::string("normal exit");
  };
  greenlet main = greenlet::current();
  auto f2 = [&main] { main.switch_to(std::string("from f2")); };
  {
    // Neither started: both die, and the exception reaches the main greenlet.
    greenlet g1(f1);
    greenlet g2(f2, g1);
    EXPECT_THROW(g2.throw_into(std::out_of_range("x")), std::out_of_range);
    EXPECT_TRUE(g2.dead());
    EXPECT_TRUE(g1.dead());
  }
  {
    // g1 waits in its try block, g2 has not started: g1 catches.
    greenlet g1(f1);
    greenlet g2(f2, g1);
    EXPECT_EQ(std::any_cast<std::string>(g1.switch_to()), "f1 ready to catch");
    EXPECT_EQ(std::any_cast<std::string>(g2.throw_into(std::out_of_range("x"))), "caught");
    EXPECT_TRUE(g2.dead());
    EXPECT_TRUE(g1.dead());
  }
  {
    // Both started: g2 does not catch, so its parent g1 gets it.
    greenlet g1(f1);
    greenlet g2(f2, g1);
    EXPECT_EQ(std::any_cast<std::string>(g1.switch_to()), "f1 ready to catch");
    EXPECT_EQ(std::any_cast<std::string>(g2.switch_to()), "from f2");
    EXPECT_EQ(std::any_cast<std::string>(g2.throw_into(std::out_of_range("x"))), "caught");
    EXPECT_TRUE(g2.dead());
    EXPECT_TRUE(g1.dead());
  }
}

TEST(greenlet, throw_into_a_dead_greenlet_raises_in_its_first_live_ancestor) {
  greenlet g([] { return 1; });
  g.switch_to();
  ASSERT_TRUE(g.dead());
  EXPECT_THROW(g.throw_into(some_error("to main")), some_error);

  // With its parent suspended elsewhere, the exception lands in that parent.
  std::string p_caught;
  greenlet p([&] {
    try {
      switch_to_parent();
    } catch (const some_error& e) {
      p_caught = e.what();
    }
    return 2;
  });
  p.switch_to();
  greenlet c([] {});
  c.switch_to();
  ASSERT_TRUE(c.dead());
  c.set_parent(p);
  EXPECT_EQ(std::any_cast<int>(c.throw_into(some_error("to p"))), 2);
  EXPECT_EQ(p_caught, "to p");
}

// throw_into() switched to a lazy parent, which has no stack yet, without giving it one.
TEST(greenlet, throw_into_an_unstarted_greenlet_passes_through_its_unstarted_lazy_parent) {
  bool parent_ran = false;
  greenlet p = lazy_greenlet([&] { parent_ran = true; });
  greenlet c([] {}, p);
  EXPECT_THROW(c.throw_into(some_error("into c")), some_error);
  EXPECT_FALSE(parent_ran);
  EXPECT_TRUE(p.dead());
  EXPECT_TRUE(c.dead());
}

TEST(greenlet, throw_into_a_dead_greenlet_starts_its_unstarted_lazy_parent_with_it) {
  greenlet p = lazy_greenlet([] { return 1; });
  greenlet c([] { return 0; });
  c.switch_to();
  c.set_parent(p);
  EXPECT_THROW(c.throw_into(some_error("into dead c")), some_error);
  EXPECT_TRUE(p.dead());
}

TEST(greenlet, throw_into_null_is_invalid_argument_and_changes_nothing) {
  greenlet g([] { return 1; });
  g.set_name("target");
  try {
    g.throw_into(std::exception_ptr{});
    FAIL() << "throw_into(nullptr) should have thrown";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), "'target'")) << e.what();
  }
  EXPECT_FALSE(g.started());
  EXPECT_EQ(std::any_cast<int>(g.switch_to()), 1);
}

TEST(greenlet, throw_into_the_current_greenlet_raises_at_once) {
  EXPECT_THROW(greenlet::current().throw_into(some_error("self")), some_error);
  greenlet g([] {
    try {
      greenlet::current().throw_into(some_error("self in g"));
    } catch (const some_error& e) {
      return std::string(e.what());
    }
    return std::string("not raised");
  });
  EXPECT_EQ(std::any_cast<std::string>(g.switch_to()), "self in g");
}

TEST(greenlet, throw_into_a_suspended_parent_raises_where_it_switched_away) {
  greenlet main = greenlet::current();
  greenlet g([&] { main.throw_into(some_error("into main")); });
  EXPECT_THROW(g.switch_to(), some_error);
  EXPECT_FALSE(g.dead());  // g waits in its throw_into()
  EXPECT_TRUE(static_cast<bool>(g));
}

// --- dead greenlets ------------------------------------------------------------------------

TEST(greenlet, switching_to_dead_greenlet_resumes_parent) {
  std::vector<int> received;
  greenlet p([&] {
    received.push_back(std::any_cast<int>(switch_to_parent()));  // c's result
    received.push_back(std::any_cast<int>(switch_to_parent(std::string("again"))));
    return 7;
  });
  p.switch_to();
  greenlet c([] { return 1; }, p);
  EXPECT_EQ(std::any_cast<std::string>(c.switch_to()), "again");
  EXPECT_TRUE(c.dead());
  // c is dead: the switch goes to p, with the value; p then ends into the main greenlet.
  EXPECT_EQ(std::any_cast<int>(c.switch_to(99)), 7);
  EXPECT_EQ(received, (std::vector<int>{1, 99}));
}

TEST(greenlet, switching_to_a_dead_child_of_the_current_greenlet_returns_the_value) {
  greenlet g([] {});
  g.switch_to();
  ASSERT_TRUE(g.dead());
  EXPECT_EQ(std::any_cast<int>(g.switch_to(5)), 5);
  EXPECT_FALSE(g.switch_to().has_value());
}

TEST(greenlet, switching_to_a_dead_greenlet_skips_dead_ancestors) {
  std::vector<int> received;
  greenlet grandparent([&] {
    received.push_back(std::any_cast<int>(switch_to_parent()));
    return std::string("grandparent done");
  });
  grandparent.switch_to();
  greenlet parent([] {});
  greenlet child([] {});
  parent.switch_to();
  child.switch_to();
  ASSERT_TRUE(parent.dead());
  ASSERT_TRUE(child.dead());
  child.set_parent(parent);
  parent.set_parent(grandparent);
  EXPECT_EQ(std::any_cast<std::string>(child.switch_to(42)), "grandparent done");
  EXPECT_EQ(received, std::vector<int>{42});
}

TEST(greenlet, a_dead_greenlet_keeps_its_parent) {
  greenlet g([] {});
  g.switch_to();
  EXPECT_TRUE(g.parent() == greenlet::current());
}

// --- reparenting ---------------------------------------------------------------------------

TEST(greenlet, set_parent_changes_where_run_ends) {
  std::any p_got;
  greenlet p([&] {
    p_got = switch_to_parent();
    return 6;
  });
  p.switch_to();
  greenlet g([] { return 5; });
  EXPECT_TRUE(g.parent() == greenlet::current());
  g.set_parent(p);
  EXPECT_TRUE(g.parent() == p);
  EXPECT_EQ(std::any_cast<int>(g.switch_to()), 6);
  EXPECT_EQ(std::any_cast<int>(p_got), 5);
}

TEST(greenlet, set_parent_of_a_running_greenlet_changes_where_it_switches_up) {
  std::any p_got;
  greenlet p([&] {
    p_got = switch_to_parent();
    return std::string("p ended");
  });
  p.switch_to();
  greenlet g([&] {
    greenlet::current().set_parent(p);
    return std::string("to p");
  });
  EXPECT_EQ(std::any_cast<std::string>(g.switch_to()), "p ended");
  EXPECT_EQ(std::any_cast<std::string>(p_got), "to p");
}

TEST(greenlet, set_parent_refuses_a_cycle_naming_both_greenlets) {
  greenlet a([] {});
  greenlet b([] {}, a);
  a.set_name("alpha");
  b.set_name("beta");
  try {
    a.set_parent(b);
    FAIL() << "set_parent() should have refused the cycle";
  } catch (const parent_cycle& e) {
    EXPECT_TRUE(contains(e.what(), "'alpha'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "'beta'")) << e.what();
  }
  EXPECT_TRUE(a.parent() == greenlet::current());  // unchanged
  EXPECT_TRUE(b.parent() == a);

  greenlet c([] {}, b);
  EXPECT_THROW(a.set_parent(c), parent_cycle);  // a longer cycle
  EXPECT_THROW(a.set_parent(a), parent_cycle);  // itself
  EXPECT_TRUE(a.parent() == greenlet::current());
}

TEST(greenlet, parent_cycle_is_a_greenlet_error_and_a_logic_error) {
  greenlet a([] {});
  try {
    a.set_parent(a);
    FAIL();
  } catch (const greenlet_error& e) {
    EXPECT_NE(dynamic_cast<const parent_cycle*>(&e), nullptr);
    const std::logic_error& le = e;
    EXPECT_TRUE(contains(le.what(), a.name())) << le.what();
  }
}

TEST(greenlet, set_parent_of_a_root_or_to_an_empty_handle_is_refused) {
  greenlet g([] {});
  EXPECT_THROW(greenlet::current().set_parent(g), greenlet_error);
  EXPECT_THROW(g.set_parent(greenlet{}), greenlet_error);
  EXPECT_TRUE(g.parent() == greenlet::current());
}

// --- state, names, ids ---------------------------------------------------------------------

TEST(greenlet, started_dead_and_bool_follow_the_life_of_a_greenlet) {
  bool inside_started = false;
  bool inside_dead = true;
  bool inside_bool = false;
  greenlet g([&] {
    greenlet self = greenlet::current();
    inside_started = self.started();
    inside_dead = self.dead();
    inside_bool = static_cast<bool>(self);
    switch_to_parent();
  });
  EXPECT_FALSE(g.empty());
  EXPECT_FALSE(g.started());
  EXPECT_FALSE(g.dead());
  EXPECT_FALSE(static_cast<bool>(g));
  g.switch_to();
  EXPECT_TRUE(inside_started);
  EXPECT_FALSE(inside_dead);
  EXPECT_TRUE(inside_bool);
  EXPECT_TRUE(g.started());
  EXPECT_FALSE(g.dead());
  EXPECT_TRUE(static_cast<bool>(g));
  g.switch_to();
  EXPECT_TRUE(g.started());
  EXPECT_TRUE(g.dead());
  EXPECT_FALSE(static_cast<bool>(g));
}

TEST(greenlet, the_root_is_started_alive_and_true) {
  greenlet root = greenlet::current();
  EXPECT_TRUE(root.is_root());
  EXPECT_TRUE(root.started());
  EXPECT_FALSE(root.dead());
  EXPECT_TRUE(static_cast<bool>(root));
  greenlet g([] {});
  EXPECT_FALSE(g.is_root());
}

TEST(greenlet, the_main_threads_root_is_named_main) {
  EXPECT_EQ(greenlet::current().name(), "main");
}

TEST(greenlet, names_default_to_greenlet_and_the_id) {
  greenlet g([] {});
  EXPECT_NE(g.id(), 0u);
  EXPECT_EQ(g.name(), "greenlet-" + std::to_string(g.id()));
}

TEST(greenlet, set_name_changes_the_name_seen_by_every_handle) {
  greenlet g([] { return greenlet::current().name(); });
  greenlet copy = g;
  g.set_name("worker-3");
  EXPECT_EQ(copy.name(), "worker-3");
  EXPECT_EQ(std::any_cast<std::string>(g.switch_to()), "worker-3");
  EXPECT_EQ(g.name(), "worker-3");  // kept after death
}

TEST(greenlet, ids_are_unique_and_stable) {
  std::set<std::uint64_t> ids{greenlet::current().id()};
  std::vector<greenlet> gs;
  for (int i = 0; i < 100; ++i) {
    gs.emplace_back([] {});
    EXPECT_TRUE(ids.insert(gs.back().id()).second);
  }
  std::uint64_t first = gs.front().id();
  gs.front().switch_to();
  EXPECT_EQ(gs.front().id(), first);
  EXPECT_EQ(greenlet::current().id(), greenlet::current().id());
}

// --- handles -------------------------------------------------------------------------------

TEST(greenlet, handles_share_one_greenlet) {
  greenlet a([] { return 1; });
  greenlet b([] { return 2; });
  greenlet a2 = a;
  EXPECT_TRUE(a2 == a);
  EXPECT_FALSE(a == b);
  greenlet moved = std::move(a2);
  EXPECT_TRUE(a2.empty());  // NOLINT(bugprone-use-after-move): a moved-from handle is empty
  EXPECT_TRUE(moved == a);
  greenlet old_b = b;
  moved.swap(b);
  EXPECT_TRUE(moved == old_b);
  EXPECT_TRUE(b == a);
  EXPECT_EQ(std::any_cast<int>(b.switch_to()), 1);
  EXPECT_TRUE(a.dead());
  greenlet assigned;
  assigned = moved;
  EXPECT_TRUE(assigned == moved);
  assigned = greenlet{};
  EXPECT_TRUE(assigned.empty());
  EXPECT_TRUE(greenlet::current() == greenlet::current());
}

TEST(greenlet, an_empty_handle_refuses_every_operation_with_greenlet_error) {
  greenlet e;
  EXPECT_TRUE(e.empty());
  EXPECT_FALSE(e.started());
  EXPECT_FALSE(e.dead());
  EXPECT_FALSE(static_cast<bool>(e));
  EXPECT_FALSE(e.is_root());
  EXPECT_EQ(e.id(), 0u);
  EXPECT_EQ(e.name(), "");
  EXPECT_TRUE(e.parent().empty());
  EXPECT_THROW(e.switch_to(), greenlet_error);
  EXPECT_THROW(e.switch_to(1), greenlet_error);
  EXPECT_THROW(e.throw_into(some_error("x")), greenlet_error);
  EXPECT_THROW(e.set_parent(greenlet::current()), greenlet_error);
  EXPECT_THROW(e.set_name("x"), greenlet_error);
  EXPECT_THROW((void)greenlet([] {}, e), greenlet_error);
  EXPECT_TRUE(e == greenlet{});
}

// --- stacks and callables ------------------------------------------------------------------

TEST(greenlet, a_stack_below_the_minimum_is_invalid_argument_naming_the_minimum) {
  try {
    greenlet g([] {}, tendril::stack_size{tendril::min_stack_size - 1});
    FAIL() << "a stack below min_stack_size should have been refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), std::to_string(tendril::min_stack_size))) << e.what();
  }
  EXPECT_THROW((void)greenlet([] {}, tendril::stack_size{1}), std::invalid_argument);
  EXPECT_THROW((void)greenlet([] {}, greenlet::current(), tendril::stack_size{4096}),
               std::invalid_argument);
}

// A size so large that rounding it to pages and adding the guard page would wrap around:
// ENOMEM, as for any stack the address space cannot hold (it crashed in the switch).
TEST(greenlet, a_stack_larger_than_any_address_space_is_enomem) {
  const std::size_t max = std::numeric_limits<std::size_t>::max();
  for (std::size_t size : {max, max - 100, max - 4096, max / 2, std::size_t{1} << 60}) {
    try {
      greenlet g([] { return 1; }, tendril::stack_size{size});
      g.switch_to();
      ADD_FAILURE() << "a stack of " << size << " bytes was made";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::not_enough_memory) << size;
    }
  }
}

TEST(greenlet, the_minimum_stack_is_usable) {
  greenlet g(
      [] {
        // Use a good part of it, in a frame the compiler cannot drop.
        volatile char scratch[8 * 1024] = {};
        scratch[0] = 1;
        scratch[sizeof scratch - 1] = 2;
        return scratch[0] + scratch[sizeof scratch - 1];
      },
      tendril::stack_size{tendril::min_stack_size});
  EXPECT_EQ(std::any_cast<int>(g.switch_to()), 3);
}

TEST(greenlet, a_large_stack_holds_a_large_frame) {
  greenlet g(
      [] {
        volatile char scratch[1024 * 1024] = {};
        scratch[0] = 4;
        scratch[sizeof scratch - 1] = 5;
        return scratch[0] + scratch[sizeof scratch - 1];
      },
      tendril::stack_size{2 * 1024 * 1024});
  EXPECT_EQ(std::any_cast<int>(g.switch_to()), 9);
}

TEST(greenlet, a_callable_larger_than_the_stack_is_kept_off_the_stack) {
  // The callable lives in the greenlet's record, not on its stack: a capture twice the size
  // of the smallest stack is fine, and the stack stays free for the body.
  std::array<char, 32 * 1024> big{};
  big[0] = 1;
  big[big.size() - 1] = 2;
  greenlet small([big] { return big[0] + big[big.size() - 1]; },
                 tendril::stack_size{tendril::min_stack_size});
  EXPECT_EQ(std::any_cast<int>(small.switch_to()), 3);
}

namespace {
struct throws_on_copy {
  throws_on_copy() = default;
  throws_on_copy(const throws_on_copy&) { throw some_error("copy failed"); }
  void operator()() const {}
};
}  // namespace

TEST(greenlet, a_callable_whose_copy_throws_makes_no_greenlet) {
  throws_on_copy f;
  EXPECT_THROW((void)greenlet(f), some_error);
  greenlet after([] { return 1; });  // the abandoned stack went back cleanly
  EXPECT_EQ(std::any_cast<int>(after.switch_to()), 1);
}

TEST(greenlet, the_callable_is_destroyed_when_run_ends) {
  auto token = std::make_shared<int>(0);
  greenlet g([token] { ++*token; });
  EXPECT_EQ(token.use_count(), 2);
  g.switch_to();
  EXPECT_EQ(*token, 1);
  EXPECT_EQ(token.use_count(), 1);  // g itself is still referenced
  EXPECT_TRUE(g.dead());
}

TEST(greenlet, doubles_format_and_parse_on_a_greenlet_stack) {
  greenlet g([] {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g %.3Lf", 3.141592653589793, 2.5L);
    double back = 0.0;
    long double lback = 0.0L;
    int n = std::sscanf(buf, "%lf %Lf", &back, &lback);
    return std::make_pair(std::string(buf), n == 2 && back == 3.141592653589793 && lback == 2.5L);
  });
  auto r = std::any_cast<std::pair<std::string, bool>>(g.switch_to());
  EXPECT_EQ(r.first, "3.1415926535897931 2.500");
  EXPECT_TRUE(r.second);
}

TEST(greenlet, greenlet_frames_are_16_byte_aligned) {
  auto misalignment = [] {
    alignas(16) volatile unsigned char probe[16] = {};
    probe[0] = 1;
    return static_cast<int>(reinterpret_cast<std::uintptr_t>(&probe[0]) % 16);
  };
  greenlet g([&] {
    int first = misalignment();
    switch_to_parent();
    return first + misalignment();
  });
  g.switch_to();
  EXPECT_EQ(std::any_cast<int>(g.switch_to()), 0);
}
