// generator<Y, S>: range-for, next() and send(), exceptions out of the body, unwinding an
// unfinished body, yielding from nested functions and nested generators (python greenlet's
// test_generator.py and test_generator_nested.py), misuse, and moves.
#include <gtest/gtest.h>

#include <algorithm>
#include <any>
#include <cerrno>
#include <exception>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tendril/greenlet/exceptions.hpp"
#include "tendril/greenlet/generator.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "tendril/greenlet/stack.hpp"

using tendril::generator;
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

struct noted {
  std::vector<std::string>* trace;
  std::string name;
  ~noted() { trace->push_back(name); }
};

generator<int> count_to(int n) {
  return generator<int>([n](auto& y) {
    for (int i = 1; i <= n; ++i) y.yield(i);
  });
}

}  // namespace

static_assert(std::input_iterator<generator<int>::iterator>);
static_assert(std::ranges::input_range<generator<int>>);

// --- consuming -----------------------------------------------------------------------------

TEST(generator, range_for_yields_the_values_in_order) {
  std::vector<int> got;
  for (int v : count_to(5)) got.push_back(v);
  EXPECT_EQ(got, (std::vector<int>{1, 2, 3, 4, 5}));
}

TEST(generator, the_body_and_the_consumer_interleave) {
  // python's test_generator: each value is seen by the body, then by the consumer.
  std::vector<int> seen;
  for (int round = 0; round < 3; ++round) {
    generator<int> g([&](auto& y) {
      for (int i = 0; i < 5; ++i) {
        seen.push_back(i);
        y.yield(i);
      }
    });
    for (int j : g) seen.push_back(j);
  }
  std::vector<int> expected;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 5; ++i) {
      expected.push_back(i);
      expected.push_back(i);
    }
  }
  EXPECT_EQ(seen, expected);
}

TEST(generator, the_body_does_not_run_until_the_first_next) {
  bool ran = false;
  generator<int> g([&](auto& y) {
    ran = true;
    y.yield(1);
  });
  EXPECT_FALSE(ran);
  EXPECT_FALSE(g.done());
  EXPECT_EQ(g.next(), 1);
  EXPECT_TRUE(ran);
}

TEST(generator, next_returns_each_value_then_nothing_forever) {
  generator<int> g = count_to(2);
  EXPECT_EQ(g.next(), 1);
  EXPECT_EQ(g.next(), 2);
  EXPECT_EQ(g.next(), std::nullopt);
  EXPECT_EQ(g.next(), std::nullopt);
  EXPECT_EQ(g.next(), std::nullopt);
}

TEST(generator, done_turns_true_once_the_body_has_ended) {
  generator<int> g = count_to(1);
  EXPECT_FALSE(g.done());
  EXPECT_EQ(g.next(), 1);
  EXPECT_FALSE(g.done());  // the body still waits in its last yield
  EXPECT_EQ(g.next(), std::nullopt);
  EXPECT_TRUE(g.done());
}

TEST(generator, a_body_that_yields_nothing_makes_an_empty_range) {
  bool ran = false;
  generator<int> g([&](auto&) { ran = true; });
  int n = 0;
  for ([[maybe_unused]] int v : g) ++n;
  EXPECT_EQ(n, 0);
  EXPECT_TRUE(ran);
  EXPECT_TRUE(g.done());
}

TEST(generator, move_only_values_are_yielded) {
  generator<std::unique_ptr<int>> g([](auto& y) {
    y.yield(std::make_unique<int>(1));
    y.yield(std::make_unique<int>(2));
  });
  std::vector<int> got;
  while (auto p = g.next()) got.push_back(**p);
  EXPECT_EQ(got, (std::vector<int>{1, 2}));
}

// A value that can be moved but not assigned (a const member): next() builds a new optional
// each time and range-for replaces the iterator's value, so neither needs an assignment.
struct labelled {
  const int id;
};

TEST(generator, values_that_cannot_be_assigned_come_out_of_next_and_range_for) {
  static_assert(!std::is_move_assignable_v<labelled>);
  auto make = [] {
    return generator<labelled>([](auto& y) {
      for (int i = 1; i <= 3; ++i) y.yield(labelled{i});
    });
  };
  std::vector<int> by_next;
  auto g = make();
  while (auto v = g.next()) by_next.push_back(v->id);
  EXPECT_EQ(by_next, (std::vector<int>{1, 2, 3}));
  std::vector<int> by_range;
  for (const labelled& v : make()) by_range.push_back(v.id);
  EXPECT_EQ(by_range, (std::vector<int>{1, 2, 3}));
}

TEST(generator, a_generator_may_be_consumed_by_several_greenlets_in_turn) {
  generator<int> gen([](auto& y) {
    for (int i = 0; i < 4; ++i) y.yield(i);
  });
  greenlet a([&] { return *gen.next(); });
  EXPECT_EQ(std::any_cast<int>(a.switch_to()), 0);
  EXPECT_EQ(gen.next(), 1);
  greenlet b([&] {
    int v = *gen.next();
    switch_to_parent(v);
    return *gen.next();
  });
  EXPECT_EQ(std::any_cast<int>(b.switch_to()), 2);
  EXPECT_EQ(std::any_cast<int>(b.switch_to()), 3);
  EXPECT_EQ(gen.next(), std::nullopt);
}

// --- send ----------------------------------------------------------------------------------

TEST(generator, send_delivers_a_value_to_the_pending_yield) {
  generator<int, int> acc([](auto& y) {
    int total = 0;
    while (true) {
      int add = y.yield(total);
      if (add < 0) return;
      total += add;
    }
  });
  EXPECT_EQ(acc.next(), 0);
  EXPECT_EQ(acc.send(5), 5);
  EXPECT_EQ(acc.send(10), 15);
  EXPECT_EQ(acc.next(), 15);  // next() sends int{}
  EXPECT_EQ(acc.send(-1), std::nullopt);
  EXPECT_TRUE(acc.done());
  EXPECT_EQ(acc.send(1), std::nullopt);
}

TEST(generator, send_carries_values_of_class_type) {
  generator<std::string, std::string> echo([](auto& y) {
    std::string got = y.yield("ready");
    while (!got.empty()) got = y.yield("echo " + got);
  });
  EXPECT_EQ(echo.next(), "ready");
  EXPECT_EQ(echo.send("one"), "echo one");
  EXPECT_EQ(echo.send("two"), "echo two");
  EXPECT_EQ(echo.next(), std::nullopt);  // next() sends an empty string
}

TEST(generator, send_before_the_body_started_is_logic_error) {
  bool ran = false;
  generator<int, int> g([&](auto& y) {
    ran = true;
    int v = y.yield(1);
    y.yield(v * 2);
  });
  try {
    g.send(3);
    FAIL() << "send() before start should have thrown";
  } catch (const std::logic_error& e) {
    EXPECT_TRUE(contains(e.what(), "next()")) << e.what();
  }
  EXPECT_FALSE(ran);
  EXPECT_EQ(g.next(), 1);
  EXPECT_EQ(g.send(3), 6);
}

// It said "send() before the body started; call next() first", which next() cannot help.
TEST(generator, send_on_a_moved_from_generator_is_logic_error_saying_it_is_empty) {
  generator<int, int> a([](auto& y) {
    int v = y.yield(1);
    while (v != 0) v = y.yield(v * 10);
  });
  EXPECT_EQ(a.next(), 1);
  generator<int, int> b(std::move(a));
  EXPECT_EQ(b.send(2), 20);
  try {
    a.send(3);  // NOLINT(bugprone-use-after-move): the misuse under test
    FAIL() << "send() on a moved-from generator should have thrown";
  } catch (const std::logic_error& e) {
    EXPECT_TRUE(contains(e.what(), "empty generator")) << e.what();
    EXPECT_FALSE(contains(e.what(), "next()")) << e.what();
  }
  EXPECT_EQ(b.send(4), 40);
}

// --- exceptions ----------------------------------------------------------------------------

TEST(generator, an_exception_from_the_body_comes_out_of_next_and_the_generator_is_done) {
  generator<int> g([](auto& y) {
    y.yield(1);
    throw some_error("body failed");
  });
  EXPECT_EQ(g.next(), 1);
  try {
    g.next();
    FAIL() << "next() should have thrown";
  } catch (const some_error& e) {
    EXPECT_STREQ(e.what(), "body failed");
  }
  EXPECT_TRUE(g.done());
  EXPECT_EQ(g.next(), std::nullopt);
}

TEST(generator, an_exception_before_the_first_yield_comes_out_of_range_for) {
  generator<int> g([](auto&) { throw some_error("at once"); });
  int n = 0;
  EXPECT_THROW(
      {
        for ([[maybe_unused]] int v : g) ++n;
      },
      some_error);
  EXPECT_EQ(n, 0);
  EXPECT_TRUE(g.done());
}

TEST(generator, an_exception_from_the_body_comes_out_of_send) {
  generator<int, int> g([](auto& y) {
    int v = y.yield(0);
    if (v == 13) throw some_error("unlucky");
    y.yield(v);
  });
  EXPECT_EQ(g.next(), 0);
  EXPECT_THROW(g.send(13), some_error);
  EXPECT_TRUE(g.done());
  EXPECT_EQ(g.send(1), std::nullopt);
}

TEST(generator, a_body_in_a_catch_block_keeps_its_exception_across_yields) {
  generator<std::string> g([](auto& y) {
    try {
      throw some_error("body's");
    } catch (const some_error&) {
      errno = EDOM;
      y.yield("in catch");
      int e = errno;
      try {
        throw;
      } catch (const some_error& again) {
        y.yield(std::string(again.what()) + (e == EDOM ? " errno kept" : " errno lost"));
      }
    }
  });
  EXPECT_EQ(g.next(), "in catch");
  EXPECT_FALSE(std::current_exception());
  try {
    throw std::logic_error("consumer's");
  } catch (const std::logic_error&) {
    errno = ERANGE;
    EXPECT_EQ(g.next(), "body's errno kept");
    int e = errno;
    EXPECT_EQ(e, ERANGE);
    try {
      throw;
    } catch (const std::logic_error& again) {
      EXPECT_STREQ(again.what(), "consumer's");
    }
  }
}

// --- unwinding -----------------------------------------------------------------------------

TEST(generator, destroying_an_unfinished_generator_unwinds_its_body) {
  std::vector<std::string> trace;
  {
    generator<int> g([&](auto& y) {
      noted n{&trace, "local"};
      try {
        y.yield(1);
        y.yield(2);
      } catch (const std::exception&) {
        trace.push_back("caught as std::exception");
      } catch (const greenlet_exit&) {
        trace.push_back("greenlet_exit at yield");
        throw;
      }
      trace.push_back("not reached");
    });
    EXPECT_EQ(g.next(), 1);
    EXPECT_TRUE(trace.empty());
  }
  EXPECT_EQ(trace, (std::vector<std::string>{"greenlet_exit at yield", "local"}));
}

// A greenlet_exit that ends the body comes out of next(), the very object thrown. It was
// kept in the body's state, which is destroyed with the body: next() rethrew a freed
// exception (valgrind and ASan saw it), and a task killed inside next() corrupted the heap.
TEST(generator, a_greenlet_exit_that_ends_the_body_comes_out_of_next_intact) {
  struct farewell : greenlet_exit {
    std::string why = std::string(200, 'w');
  };
  generator<int> g([](auto& y) {
    y.yield(1);
    throw farewell{};
  });
  EXPECT_EQ(g.next(), 1);
  try {
    g.next();
    ADD_FAILURE() << "next() returned";
  } catch (const farewell& f) {
    EXPECT_EQ(f.why, std::string(200, 'w'));
  }
  EXPECT_TRUE(g.done());
  EXPECT_EQ(g.next(), std::nullopt);
  // Moved while suspended, the body's exit still reaches the generator it moved to.
  generator<int> a([](auto& y) {
    y.yield(1);
    throw farewell{};
  });
  EXPECT_EQ(a.next(), 1);
  generator<int> b(std::move(a));
  generator<int> c([](auto& y) { y.yield(0); });
  EXPECT_EQ(c.next(), 0);
  c = std::move(b);  // unwinds c's own body
  EXPECT_THROW(c.next(), farewell);
}

// A body that caught greenlet_exit at its destruction and yielded again was never resumed:
// its destructors never ran and its stack leaked (a line on stderr said so). Now that yield()
// throws, as python's "generator ignored GeneratorExit", and the body is unwound.
TEST(generator, a_body_that_yields_while_being_destroyed_gets_logic_error_and_is_unwound) {
  std::vector<std::string> trace;
  testing::internal::CaptureStderr();
  {
    generator<int> g([&](auto& y) {
      noted n{&trace, "local"};
      try {
        y.yield(1);
      } catch (const greenlet_exit&) {
        trace.push_back("caught greenlet_exit");
        try {
          y.yield(2);
        } catch (const std::logic_error& e) {
          trace.push_back(e.what());
          throw;
        }
        trace.push_back("yield returned");
      }
    });
    EXPECT_EQ(g.next(), 1);
  }
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_EQ(trace.size(), 3u);
  EXPECT_EQ(trace[0], "caught greenlet_exit");
  EXPECT_TRUE(contains(trace[1], "yield() in a generator being destroyed")) << trace[1];
  EXPECT_EQ(trace[2], "local");
  EXPECT_TRUE(contains(err, "yield() in a generator being destroyed")) << err;
  EXPECT_FALSE(contains(err, "leaked")) << err;
}

TEST(generator, leaving_a_range_for_early_unwinds_a_temporary_generator) {
  std::vector<std::string> trace;
  auto make = [&] {
    return generator<int>([&](auto& y) {
      noted n{&trace, "body local"};
      for (int i = 0;; ++i) y.yield(i);
    });
  };
  int last = -1;
  for (int v : make()) {
    last = v;
    if (v == 3) break;
  }
  EXPECT_EQ(last, 3);
  EXPECT_EQ(trace, std::vector<std::string>{"body local"});
}

TEST(generator, destroying_an_unstarted_generator_never_runs_its_body) {
  auto token = std::make_shared<int>(0);
  {
    generator<int> g([token](auto& y) {
      ++*token;
      y.yield(1);
    });
    EXPECT_EQ(token.use_count(), 2);
  }
  EXPECT_EQ(token.use_count(), 1);
  EXPECT_EQ(*token, 0);
}

TEST(generator, a_killed_greenlet_unwinds_the_generator_it_was_consuming) {
  std::vector<std::string> trace;
  {
    greenlet consumer([&] {
      generator<int> g([&](auto& y) {
        noted n{&trace, "generator local"};
        y.yield(1);
        y.yield(2);
      });
      noted n{&trace, "consumer local"};
      g.next();
      switch_to_parent();
    });
    consumer.switch_to();
  }
  EXPECT_EQ(trace, (std::vector<std::string>{"consumer local", "generator local"}));
}

TEST(generator, abandoning_a_generator_unwinds_the_inner_generator_it_was_consuming) {
  std::vector<std::string> trace;
  {
    generator<int> outer([&](auto& y) {
      noted n{&trace, "outer local"};
      generator<int> inner([&](auto& iy) {
        noted m{&trace, "inner local"};
        for (int i = 0;; ++i) iy.yield(i);
      });
      while (auto v = inner.next()) y.yield(*v);
    });
    EXPECT_EQ(outer.next(), 0);
    EXPECT_EQ(outer.next(), 1);
  }
  EXPECT_EQ(trace, (std::vector<std::string>{"inner local", "outer local"}));
}

// --- stackful ------------------------------------------------------------------------------

namespace {

struct node {
  int value;
  std::unique_ptr<node> left;
  std::unique_ptr<node> right;
};

std::unique_ptr<node> leaf(int v) { return std::make_unique<node>(node{v, nullptr, nullptr}); }

void walk(const node* n, generator<int>::yielder& y) {
  if (n == nullptr) return;
  walk(n->left.get(), y);
  y.yield(n->value);
  walk(n->right.get(), y);
}

generator<std::vector<int>> permutations(std::vector<int> items) {
  return generator<std::vector<int>>([items](auto& y) {
    if (items.size() <= 1) {
      y.yield(items);
      return;
    }
    for (std::size_t i = 0; i < items.size(); ++i) {
      std::vector<int> rest = items;
      int first = rest[i];
      rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(i));
      for (const std::vector<int>& p : permutations(rest)) {
        std::vector<int> full(p.size() + 1, first);
        std::copy(p.begin(), p.end(), full.begin() + 1);
        y.yield(std::move(full));
      }
    }
  });
}

}  // namespace

TEST(generator, a_nested_function_can_yield) {
  // 4 is the root; an in-order walk of the tree yields from every level of recursion.
  auto root = std::make_unique<node>(node{4, nullptr, nullptr});
  root->left = std::make_unique<node>(node{2, leaf(1), leaf(3)});
  root->right = std::make_unique<node>(node{6, leaf(5), leaf(7)});
  generator<int> g([&](generator<int>::yielder& y) { walk(root.get(), y); });
  std::vector<int> got;
  for (int v : g) got.push_back(v);
  EXPECT_EQ(got, (std::vector<int>{1, 2, 3, 4, 5, 6, 7}));
}

TEST(generator, generators_nest_inside_generator_bodies) {
  // python's test_generator_nested test_permutations.
  std::vector<std::vector<int>> got;
  for (auto& p : permutations({1, 2, 3, 4})) got.push_back(p);
  ASSERT_EQ(got.size(), 24u);
  EXPECT_EQ(got.front(), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(got[1], (std::vector<int>{1, 2, 4, 3}));
  EXPECT_EQ(got.back(), (std::vector<int>{4, 3, 2, 1}));
}

TEST(generator, a_generator_started_outside_may_be_finished_inside_another_body) {
  generator<int> numbers = count_to(6);
  EXPECT_EQ(numbers.next(), 1);
  generator<int> doubled([&](auto& y) {
    while (auto v = numbers.next()) y.yield(*v * 2);
  });
  std::vector<int> got;
  for (int v : doubled) got.push_back(v);
  EXPECT_EQ(got, (std::vector<int>{4, 6, 8, 10, 12}));
  EXPECT_TRUE(numbers.done());
}

// --- misuse --------------------------------------------------------------------------------

TEST(generator, yield_outside_the_body_is_logic_error) {
  generator<int>::yielder* escaped = nullptr;
  generator<int> g([&](auto& y) {
    escaped = &y;
    y.yield(1);
    y.yield(2);
  });
  EXPECT_EQ(g.next(), 1);
  ASSERT_NE(escaped, nullptr);
  EXPECT_THROW(escaped->yield(3), std::logic_error);
  greenlet other([&] { escaped->yield(4); });
  EXPECT_THROW(other.switch_to(), std::logic_error);
  EXPECT_EQ(g.next(), 2);
  EXPECT_EQ(g.next(), std::nullopt);
}

TEST(generator, next_on_a_running_generator_from_its_own_body_is_logic_error) {
  generator<int>* self = nullptr;
  std::string msg;
  generator<int> g([&](auto& y) {
    try {
      self->next();
    } catch (const std::logic_error& e) {
      msg = e.what();
    }
    y.yield(1);
  });
  self = &g;
  EXPECT_EQ(g.next(), 1);
  EXPECT_TRUE(contains(msg, "already running")) << msg;
  EXPECT_EQ(g.next(), std::nullopt);
}

TEST(generator, resuming_a_generator_from_a_generator_it_is_consuming_is_logic_error) {
  generator<int>* outer_ptr = nullptr;
  bool refused = false;
  generator<int> outer([&](auto& y) {
    generator<int> inner([&](auto& iy) {
      try {
        outer_ptr->next();  // outer is running: it is waiting for this very body
      } catch (const std::logic_error&) {
        refused = true;
      }
      iy.yield(10);
    });
    y.yield(*inner.next() + 1);
    inner.next();  // let inner end before outer does
  });
  outer_ptr = &outer;
  EXPECT_EQ(outer.next(), 11);
  EXPECT_TRUE(refused);
  EXPECT_EQ(outer.next(), std::nullopt);
}

// A second greenlet's next() while the first is inside next() and the body switched away
// (parked in the hub, say) took the body over: it got the first one's item, or died of an
// invalid_switch in the hub, and the first waited for ever.
TEST(generator, next_while_another_greenlet_is_inside_next_is_generator_running) {
  greenlet main = greenlet::current();
  greenlet body;
  generator<int> g([&](auto& y) {
    body = greenlet::current();
    main.switch_to();  // away, as a body parks in the hub
    y.yield(1);
  });
  greenlet a([&] { return *g.next(); });
  a.set_name("first-consumer");
  a.switch_to();  // a is inside next(), the body switched back here
  try {
    g.next();
    ADD_FAILURE() << "next() took over the body";
  } catch (const tendril::generator_running& e) {
    EXPECT_TRUE(contains(e.what(), "already running")) << e.what();
    EXPECT_TRUE(contains(e.what(), "'first-consumer' is inside its next()")) << e.what();
  }
  EXPECT_THROW(g.next(), std::logic_error);
  // Neither a nor the body was touched: the body yields to a, which returns here.
  EXPECT_EQ(std::any_cast<int>(body.switch_to()), 1);
  EXPECT_TRUE(a.dead());
  body = greenlet();
  EXPECT_EQ(g.next(), std::nullopt);
}

TEST(generator, a_refused_next_on_itself_leaves_the_body_like_any_exception) {
  // The refusal comes out of the body like any exception, and ends it.
  generator<int>* self = nullptr;
  generator<int> g([&](auto& y) {
    y.yield(1);
    self->next();
  });
  self = &g;
  EXPECT_EQ(g.next(), 1);
  EXPECT_THROW(g.next(), std::logic_error);
  EXPECT_TRUE(g.done());
}

TEST(generator, a_stack_below_the_minimum_is_invalid_argument) {
  auto body = [](auto& y) { y.yield(1); };
  EXPECT_THROW((generator<int>(body, tendril::stack_size{tendril::min_stack_size - 1})),
               std::invalid_argument);
  generator<int> small(body, tendril::stack_size{tendril::min_stack_size});
  EXPECT_EQ(small.next(), 1);
}

// --- moves ---------------------------------------------------------------------------------

TEST(generator, a_moved_generator_continues_where_it_was) {
  generator<int> a = count_to(3);
  EXPECT_EQ(a.next(), 1);
  generator<int> b(std::move(a));
  EXPECT_TRUE(a.done());  // NOLINT(bugprone-use-after-move): a moved-from generator is done
  EXPECT_EQ(a.next(), std::nullopt);
  EXPECT_EQ(b.next(), 2);
  EXPECT_EQ(b.next(), 3);
  EXPECT_EQ(b.next(), std::nullopt);
}

TEST(generator, move_assignment_unwinds_the_generator_it_replaces) {
  std::vector<std::string> trace;
  generator<int> target([&](auto& y) {
    noted n{&trace, "replaced body"};
    y.yield(100);
    y.yield(101);
  });
  EXPECT_EQ(target.next(), 100);
  generator<int> source = count_to(2);
  EXPECT_EQ(source.next(), 1);
  target = std::move(source);
  EXPECT_EQ(trace, std::vector<std::string>{"replaced body"});
  EXPECT_EQ(target.next(), 2);
  EXPECT_EQ(target.next(), std::nullopt);
  EXPECT_TRUE(source.done());  // NOLINT(bugprone-use-after-move)
}

TEST(generator, self_move_assignment_leaves_the_generator_usable) {
  generator<int> g = count_to(3);
  EXPECT_EQ(g.next(), 1);
  generator<int>& alias = g;
  g = std::move(alias);
  EXPECT_EQ(g.next(), 2);
  EXPECT_EQ(g.next(), 3);
  EXPECT_EQ(g.next(), std::nullopt);
}
