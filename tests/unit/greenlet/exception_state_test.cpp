// The C++ runtime's exception state and errno belong to each greenlet: switching inside catch
// blocks at several depths with several greenlets interleaved, rethrowing after switching
// back, std::uncaught_exceptions() while destructors switch during unwinding, and killing
// greenlets that sit in catch blocks (Boost.Context's test_goodcatch / test_badcatch, python
// greenlet's test_exc_state and its C++ exception tests).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <any>
#include <cerrno>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tendril/greenlet/exceptions.hpp"
#include "tendril/greenlet/greenlet.hpp"

using tendril::greenlet;
using tendril::greenlet_exit;

namespace {

struct some_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An exception that is not a std::exception and says where it was thrown.
struct tagged_error {
  int id;
  int level;
};

// An exception that counts its live objects, to show that killed catch blocks free them.
struct counted_error {
  static inline int alive = 0;
  int tag;
  explicit counted_error(int t) : tag(t) { ++alive; }
  counted_error(const counted_error& o) : tag(o.tag) { ++alive; }
  ~counted_error() { --alive; }
};

std::any switch_to_parent(std::any v = {}) {
  return greenlet::current().parent().switch_to(std::move(v));
}

// What the exception a pointer refers to says: its what(), or a tag, or "none".
std::string describe(const std::exception_ptr& e) {
  if (!e) return "none";
  try {
    std::rethrow_exception(e);
  } catch (const greenlet_exit&) {
    return "greenlet_exit";
  } catch (const tagged_error& t) {
    return "tagged " + std::to_string(t.id) + "/" + std::to_string(t.level);
  } catch (const counted_error& c) {
    return "counted " + std::to_string(c.tag);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown";
  }
}

std::string current() { return describe(std::current_exception()); }

}  // namespace

// --- catch blocks across switches ----------------------------------------------------------

TEST(exception_state, a_greenlet_starts_with_no_exception_being_handled) {
  // python's test_exc_state: h must not see f's exception.
  std::string in_h = "not run";
  greenlet f([&] {
    try {
      throw some_error("fun");
    } catch (...) {
      greenlet h([&] { in_h = current(); });
      h.switch_to();
      EXPECT_EQ(current(), "fun");
    }
  });
  f.switch_to();
  EXPECT_EQ(in_h, "none");
  EXPECT_TRUE(f.dead());
}

TEST(exception_state, rethrow_after_switching_away_and_back_rethrows_the_greenlets_own) {
  // python greenlet's C++ test_exception_switch_and_do_in_g2: g1 switches away from inside
  // its catch block, g2 throws and catches its own exception, g1's `throw;` still works.
  std::string g2_caught;
  std::string g2_after;
  std::string rethrown;
  greenlet g1([&] {
    try {
      throw some_error("g1's");
    } catch (const some_error&) {
      greenlet g2([&] {
        try {
          throw std::logic_error("g2's");
        } catch (const std::logic_error& e) {
          g2_caught = e.what();
        }
        g2_after = current();
      });
      g2.switch_to();
      try {
        throw;
      } catch (const some_error& e) {
        rethrown = e.what();
      }
    }
  });
  g1.switch_to();
  EXPECT_EQ(g2_caught, "g2's");
  EXPECT_EQ(g2_after, "none");
  EXPECT_EQ(rethrown, "g1's");
  EXPECT_EQ(current(), "none");
}

TEST(exception_state, current_exception_is_per_greenlet) {
  std::vector<std::string> in_g;
  greenlet g([&] {
    in_g.push_back(current());
    try {
      throw some_error("g");
    } catch (...) {
      switch_to_parent();  // the main greenlet runs while g is in its catch block
      in_g.push_back(current());
    }
    in_g.push_back(current());
  });
  g.switch_to();
  EXPECT_EQ(current(), "none");
  EXPECT_EQ(std::uncaught_exceptions(), 0);
  try {
    throw std::logic_error("main");
  } catch (...) {
    g.switch_to();  // g resumes in its catch block and ends
    EXPECT_EQ(current(), "main");
  }
  EXPECT_EQ(current(), "none");
  EXPECT_EQ(in_g, (std::vector<std::string>{"none", "g", "none"}));
}

namespace {

// Enters `depth` nested catch blocks, switching to the parent inside each of them (twice at
// every level but the innermost), and checks on every resumption that the exception being
// handled is this greenlet's own, for this level, and that `throw;` rethrows it.
void nest(int id, int level, int depth, int& checks) {
  if (level == depth) {
    switch_to_parent();
    return;
  }
  try {
    throw tagged_error{id, level};
  } catch (const tagged_error& e) {
    const std::string mine = "tagged " + std::to_string(id) + "/" + std::to_string(level);
    EXPECT_EQ(current(), mine);
    nest(id, level + 1, depth, checks);
    EXPECT_EQ(current(), mine);
    switch_to_parent();
    EXPECT_EQ(current(), mine);
    try {
      throw;
    } catch (const tagged_error& again) {
      EXPECT_EQ(&again, &e);
      EXPECT_EQ(again.id, id);
      EXPECT_EQ(again.level, level);
      ++checks;
    }
    EXPECT_EQ(current(), mine);
  }
}

}  // namespace

TEST(exception_state, nested_catch_blocks_in_interleaved_greenlets_keep_their_exceptions) {
  constexpr int greenlets = 4;
  constexpr int depth = 5;
  std::vector<int> checks(greenlets, 0);
  std::vector<greenlet> gs;
  for (int id = 0; id < greenlets; ++id) {
    gs.emplace_back([&checks, id] { nest(id, 0, depth, checks[static_cast<std::size_t>(id)]); });
  }
  // The main greenlet drives them round-robin from inside catch blocks of its own.
  int rounds = 0;
  try {
    throw some_error("main outer");
  } catch (...) {
    bool any_alive = true;
    while (any_alive) {
      any_alive = false;
      for (auto& g : gs) {
        if (g.dead()) continue;
        try {
          throw some_error("main inner");
        } catch (...) {
          g.switch_to();
          EXPECT_EQ(current(), "main inner");
        }
        EXPECT_EQ(current(), "main outer");
        any_alive = any_alive || !g.dead();
      }
      ++rounds;
    }
  }
  EXPECT_EQ(current(), "none");
  EXPECT_EQ(rounds, depth + 2);
  for (int c : checks) EXPECT_EQ(c, depth);
}

// A switch between two greenlets with no exception state copies none (switch_core.hpp): the
// state a greenlet kept when it switched away inside a catch block must be dropped once it
// leaves the block and switches away again, or a later landing out of line (a value handed
// to it, a child's end) would put the old exception back.
TEST(exception_state, a_greenlet_that_left_its_catch_block_gets_no_exception_back_with_a_value) {
  std::vector<std::string> seen;
  greenlet g([&] {
    try {
      throw some_error("g's");
    } catch (const some_error&) {
      switch_to_parent();  // left inside the catch block
      seen.push_back("in catch: " + current());
    }
    switch_to_parent();  // left with nothing caught
    // Resumed with a value: it lands out of line, which puts the saved state back.
    seen.push_back("after value: " + current() + " " + std::to_string(std::uncaught_exceptions()));
  });
  g.switch_to();
  EXPECT_EQ(current(), "none");
  g.switch_to();
  EXPECT_EQ(current(), "none");
  g.switch_to(42);
  EXPECT_TRUE(g.dead());
  EXPECT_EQ(seen, (std::vector<std::string>{"in catch: g's", "after value: none 0"}));
}

TEST(exception_state, a_parent_that_left_its_catch_block_gets_no_exception_back_when_a_child_ends) {
  std::vector<std::string> seen;
  greenlet g([&] {
    try {
      throw some_error("g's");
    } catch (const some_error&) {
      greenlet child([&] { seen.push_back("child: " + current()); });
      child.switch_to();  // left inside the catch block; the child's end lands back here
      seen.push_back("back in catch: " + current());
    }
    greenlet child([&] {
      seen.push_back("second child: " + current());
      throw std::logic_error("child's");
    });
    try {
      child.switch_to();
    } catch (const std::logic_error& e) {
      seen.push_back(std::string("caught ") + e.what() + ", current " + current());
    }
    seen.push_back("after: " + current());
  });
  g.switch_to();
  EXPECT_TRUE(g.dead());
  EXPECT_EQ(current(), "none");
  EXPECT_EQ(seen,
            (std::vector<std::string>{"child: none", "back in catch: g's", "second child: none",
                                      "caught child's, current child's", "after: none"}));
}

TEST(exception_state, the_root_in_a_catch_block_keeps_its_exception_across_many_switches) {
  // The running greenlet's state not empty: every switch away keeps it, every switch back
  // restores it; the other greenlet sees none each time.
  std::vector<std::string> in_g;
  greenlet main_g = greenlet::current();
  greenlet g([&] {
    for (int i = 0; i < 3; ++i) {
      in_g.push_back(current());
      main_g.switch_to();
    }
  });
  try {
    throw some_error("root's");
  } catch (const some_error&) {
    for (int i = 0; i < 3; ++i) {
      g.switch_to();
      EXPECT_EQ(current(), "root's");
    }
  }
  EXPECT_EQ(current(), "none");
  g.switch_to();
  EXPECT_TRUE(g.dead());
  EXPECT_EQ(in_g, (std::vector<std::string>{"none", "none", "none"}));
}

TEST(exception_state,
     a_greenlet_that_kept_an_exception_stops_counting_once_it_ends_or_leaves_empty) {
  // The thread counts its greenlets left with an exception being handled, and a switch copies
  // the state while the count is not zero: a count left up would make every switch copy.
  auto kept = [] { return tendril::detail::t_thread_core->kept_count(); };
  greenlet main_g = greenlet::current();
  const unsigned base = kept();
  {
    greenlet a([&] {
      try {
        throw some_error("a's");
      } catch (const some_error&) {
        main_g.switch_to();
      }
    });
    greenlet b([&] {
      try {
        throw some_error("b's");
      } catch (const some_error&) {
        main_g.switch_to();
        main_g.switch_to();
      }
    });
    a.switch_to();
    EXPECT_EQ(kept(), base + 1);
    b.switch_to();
    EXPECT_EQ(kept(), base + 2);
    a.switch_to();  // a leaves its catch block and ends
    EXPECT_TRUE(a.dead());
    EXPECT_EQ(kept(), base + 1);
    b.switch_to();  // still in its catch block
    EXPECT_EQ(kept(), base + 1);
  }  // b is killed in its catch block
  EXPECT_EQ(kept(), base);
  greenlet c([&] {
    for (;;) main_g.switch_to();
  });
  try {
    throw some_error("root's");
  } catch (const some_error&) {
    c.switch_to();
    EXPECT_EQ(kept(), base + 1);  // the root's
  }
  EXPECT_EQ(current(), "none");
  c.switch_to();  // the root leaves with an empty state: counted no more
  EXPECT_EQ(kept(), base);
  EXPECT_EQ(current(), "none");
}

TEST(exception_state, a_childs_exception_lands_inside_the_parents_catch_block) {
  std::string inner;
  std::string during;
  std::string after;
  std::string rethrown;
  greenlet p([&] {
    try {
      throw some_error("outer");
    } catch (const some_error&) {
      greenlet c([] { throw std::logic_error("child"); });
      try {
        c.switch_to();
      } catch (const std::logic_error& e) {
        inner = e.what();
        during = current();
      }
      after = current();
      try {
        throw;
      } catch (const some_error& e) {
        rethrown = e.what();
      }
    }
  });
  p.switch_to();
  EXPECT_EQ(inner, "child");
  EXPECT_EQ(during, "child");
  EXPECT_EQ(after, "outer");
  EXPECT_EQ(rethrown, "outer");
}

TEST(exception_state, throw_into_a_greenlet_in_a_catch_block_nests_the_new_exception) {
  std::string injected;
  std::string during;
  std::string after;
  std::string rethrown;
  greenlet g([&] {
    try {
      throw some_error("held");
    } catch (const some_error&) {
      try {
        switch_to_parent();
      } catch (const std::logic_error& e) {
        injected = e.what();
        during = current();
      }
      after = current();
      try {
        throw;
      } catch (const some_error& e) {
        rethrown = e.what();
      }
    }
    return 1;
  });
  g.switch_to();
  EXPECT_EQ(std::any_cast<int>(g.throw_into(std::logic_error("injected"))), 1);
  EXPECT_EQ(injected, "injected");
  EXPECT_EQ(during, "injected");
  EXPECT_EQ(after, "held");
  EXPECT_EQ(rethrown, "held");
}

TEST(exception_state, a_caught_exception_can_be_rethrown_by_pointer_in_another_greenlet) {
  std::exception_ptr held;
  std::string rethrown_in_g;
  greenlet g([&] {
    try {
      throw some_error("shared");
    } catch (...) {
      held = std::current_exception();
      switch_to_parent();
      try {
        throw;
      } catch (const some_error& e) {
        rethrown_in_g = e.what();
      }
    }
  });
  g.switch_to();
  ASSERT_TRUE(held);
  try {
    std::rethrow_exception(held);
  } catch (const some_error& e) {
    EXPECT_STREQ(e.what(), "shared");
    g.switch_to();
    EXPECT_STREQ(e.what(), "shared");
    EXPECT_EQ(current(), "shared");
  }
  EXPECT_EQ(rethrown_in_g, "shared");
  EXPECT_EQ(current(), "none");
}

// --- std::uncaught_exceptions() during unwinding -------------------------------------------

namespace {

using log_t = std::vector<std::pair<std::string, int>>;

// A local whose destructor, run while an exception unwinds, switches to the parent.
struct switches_in_destructor {
  log_t* log;
  const char* who;
  ~switches_in_destructor() {
    log->emplace_back(std::string(who) + " before", std::uncaught_exceptions());
    switch_to_parent();
    log->emplace_back(std::string(who) + " after", std::uncaught_exceptions());
  }
};

}  // namespace

TEST(exception_state, uncaught_exceptions_survives_a_switch_in_a_destructor_during_unwinding) {
  log_t log;
  std::string caught;
  int in_catch = -1;
  greenlet g([&] {
    try {
      switches_in_destructor s{&log, "g"};
      throw some_error("unwinding");
    } catch (const some_error& e) {
      caught = e.what();
      in_catch = std::uncaught_exceptions();
    }
  });
  g.switch_to();  // g waits in the destructor, its exception in flight
  log.emplace_back("main", std::uncaught_exceptions());
  EXPECT_EQ(current(), "none");
  g.switch_to();
  EXPECT_TRUE(g.dead());
  EXPECT_EQ(log, (log_t{{"g before", 1}, {"main", 0}, {"g after", 1}}));
  EXPECT_EQ(caught, "unwinding");
  EXPECT_EQ(in_catch, 0);
  EXPECT_EQ(std::uncaught_exceptions(), 0);
}

namespace {

// In its destructor, throws and catches a second exception whose unwinding switches: two
// exceptions are in flight in that greenlet at the switch.
struct nested_unwinding {
  log_t* log;
  ~nested_unwinding() {
    try {
      switches_in_destructor inner{log, "b inner"};
      throw some_error("second");
    } catch (const some_error&) {
      log->emplace_back("b caught second", std::uncaught_exceptions());
    }
  }
};

// The main greenlet's local: resumes both greenlets while the main greenlet unwinds.
struct resumes_in_destructor {
  log_t* log;
  greenlet* a;
  greenlet* b;
  ~resumes_in_destructor() {
    log->emplace_back("main unwinding", std::uncaught_exceptions());
    a->switch_to();
    log->emplace_back("main between", std::uncaught_exceptions());
    b->switch_to();
    log->emplace_back("main done", std::uncaught_exceptions());
  }
};

}  // namespace

TEST(exception_state, uncaught_exceptions_is_counted_per_greenlet_while_several_unwind) {
  log_t log;
  greenlet a([&] {
    try {
      switches_in_destructor s{&log, "a"};
      throw some_error("a's");
    } catch (const some_error&) {
      log.emplace_back("a caught", std::uncaught_exceptions());
    }
  });
  greenlet b([&] {
    try {
      nested_unwinding n{&log};
      throw some_error("b's");
    } catch (const some_error&) {
      log.emplace_back("b caught first", std::uncaught_exceptions());
    }
  });
  a.switch_to();
  b.switch_to();
  try {
    resumes_in_destructor r{&log, &a, &b};
    throw some_error("main's");
  } catch (const some_error& e) {
    EXPECT_STREQ(e.what(), "main's");
    log.emplace_back("main caught", std::uncaught_exceptions());
  }
  EXPECT_TRUE(a.dead());
  EXPECT_TRUE(b.dead());
  EXPECT_EQ(log, (log_t{{"a before", 1},
                        {"b inner before", 2},
                        {"main unwinding", 1},
                        {"a after", 1},
                        {"a caught", 0},
                        {"main between", 1},
                        {"b inner after", 2},
                        {"b caught second", 1},
                        {"b caught first", 0},
                        {"main done", 1},
                        {"main caught", 0}}));
}

TEST(exception_state, a_killed_greenlets_destructors_see_only_its_own_greenlet_exit) {
  int in_destructor = -1;
  struct record_uncaught {
    int* out;
    ~record_uncaught() { *out = std::uncaught_exceptions(); }
  };
  {
    greenlet g([&] {
      record_uncaught r{&in_destructor};
      switch_to_parent();
    });
    g.switch_to();
  }
  EXPECT_EQ(in_destructor, 1);
  EXPECT_EQ(std::uncaught_exceptions(), 0);

  // Killed while the destroyer itself unwinds: each side counts its own.
  in_destructor = -1;
  int destroyer_after = -1;
  struct owner {
    greenlet g;
    int* after;
    ~owner() {
      g = greenlet{};  // the last handle: g unwinds here, during our unwinding
      *after = std::uncaught_exceptions();
    }
  };
  try {
    greenlet g([&] {
      record_uncaught r{&in_destructor};
      switch_to_parent();
    });
    g.switch_to();
    owner o{std::move(g), &destroyer_after};
    throw some_error("destroyer's");
  } catch (const some_error& e) {
    EXPECT_STREQ(e.what(), "destroyer's");
  }
  EXPECT_EQ(in_destructor, 1);
  EXPECT_EQ(destroyer_after, 1);
  EXPECT_EQ(std::uncaught_exceptions(), 0);
}

// --- errno ---------------------------------------------------------------------------------

TEST(exception_state, errno_is_kept_per_greenlet) {
  int a_after = 0;
  int b_after = 0;
  greenlet a([&] {
    errno = EINTR;
    switch_to_parent();
    a_after = errno;
  });
  greenlet b([&] {
    errno = EAGAIN;
    switch_to_parent();
    b_after = errno;
  });
  errno = ENOENT;
  a.switch_to();
  int main_1 = errno;
  b.switch_to();
  int main_2 = errno;
  errno = EBADF;
  a.switch_to();
  int main_3 = errno;
  b.switch_to();
  int main_4 = errno;
  EXPECT_EQ(main_1, ENOENT);
  EXPECT_EQ(main_2, ENOENT);
  EXPECT_EQ(main_3, EBADF);
  EXPECT_EQ(main_4, EBADF);
  EXPECT_EQ(a_after, EINTR);
  EXPECT_EQ(b_after, EAGAIN);
}

TEST(exception_state, errno_from_a_failed_call_survives_other_greenlets_failing_calls) {
  int after_switch = 0;
  greenlet g([&] {
    int rc = ::close(-1);  // EBADF
    if (rc == -1) {
      switch_to_parent();  // the main greenlet fails a call of its own meanwhile
      after_switch = errno;
    }
  });
  g.switch_to();
  int fd = ::open("/nonexistent/tendril-test", O_RDONLY);
  int main_errno = errno;
  g.switch_to();
  int main_after = errno;
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(main_errno, ENOENT);
  EXPECT_EQ(main_after, ENOENT);
  EXPECT_EQ(after_switch, EBADF);
}

TEST(exception_state, a_greenlet_ending_with_a_value_leaves_its_parent_its_own_errno) {
  greenlet g([] {
    switch_to_parent();
    errno = EPIPE;  // its last errno: the parent must not see it
    return 7;
  });
  g.switch_to();
  errno = ENOENT;
  int result = std::any_cast<int>(g.switch_to());
  int after_end = errno;
  EXPECT_EQ(result, 7);
  EXPECT_TRUE(g.dead());
  EXPECT_EQ(after_end, ENOENT);
}

// --- killing greenlets that sit in catch blocks --------------------------------------------

TEST(exception_state, killing_a_greenlet_in_a_catch_block_unwinds_through_user_catch_blocks) {
  // Boost.Context's test_goodcatch: the kill passes a catch (greenlet_exit) that rethrows,
  // never reaches the catch (...) after it, and frees the exception being handled.
  counted_error::alive = 0;
  int stage = 0;
  bool local_destroyed = false;
  std::string current_in_handler;
  struct local {
    bool* destroyed;
    ~local() { *destroyed = true; }
  };
  {
    greenlet g([&] {
      local y{&local_destroyed};
      stage = 2;
      switch_to_parent();
      try {
        stage = 3;
        try {
          throw counted_error(1);
        } catch (const counted_error&) {
          switch_to_parent();  // killed here
          stage = 99;
        }
      } catch (const greenlet_exit&) {
        stage = 4;
        current_in_handler = current();
        throw;
      } catch (...) {
        stage = 5;
      }
      stage = 6;
    });
    g.switch_to();
    EXPECT_EQ(stage, 2);
    g.switch_to();
    EXPECT_EQ(stage, 3);
    EXPECT_EQ(counted_error::alive, 1);
    EXPECT_EQ(current(), "none");
  }
  EXPECT_EQ(stage, 4);
  EXPECT_EQ(current_in_handler, "greenlet_exit");
  EXPECT_TRUE(local_destroyed);
  EXPECT_EQ(counted_error::alive, 0);
  EXPECT_EQ(current(), "none");
  EXPECT_EQ(std::uncaught_exceptions(), 0);
}

TEST(exception_state, a_catch_all_that_swallows_greenlet_exit_lets_the_killed_greenlet_end) {
  // Boost.Context's test_badcatch: a catch (...) without a rethrow. For a greenlet that is
  // no harm: it ends normally, and the kill is complete.
  counted_error::alive = 0;
  int stage = 0;
  {
    greenlet g([&] {
      try {
        try {
          throw counted_error(2);
        } catch (const counted_error&) {
          switch_to_parent();  // killed here
          stage = 99;
        }
      } catch (...) {
        stage = 5;
      }
      stage = 6;
    });
    g.switch_to();
    EXPECT_EQ(counted_error::alive, 1);
  }
  EXPECT_EQ(stage, 6);
  EXPECT_EQ(counted_error::alive, 0);
  EXPECT_EQ(current(), "none");
}

TEST(exception_state, killing_greenlets_in_nested_catch_blocks_frees_every_caught_exception) {
  counted_error::alive = 0;
  std::vector<std::string> unwound;
  auto body = [&](int tag) {
    try {
      throw counted_error(tag * 10);
    } catch (const counted_error&) {
      try {
        throw counted_error(tag * 10 + 1);
      } catch (const counted_error&) {
        try {
          switch_to_parent();
        } catch (const greenlet_exit&) {
          unwound.push_back(std::to_string(tag) + ": " + current());
          throw;
        }
      }
    }
  };
  try {
    throw some_error("main's");
  } catch (...) {
    {
      greenlet a([&] { body(1); });
      greenlet b([&] { body(2); });
      a.switch_to();
      b.switch_to();
      EXPECT_EQ(counted_error::alive, 4);
      EXPECT_EQ(current(), "main's");
    }  // b, then a, killed here
    EXPECT_EQ(current(), "main's");
  }
  EXPECT_EQ(counted_error::alive, 0);
  EXPECT_EQ(unwound, (std::vector<std::string>{"2: greenlet_exit", "1: greenlet_exit"}));
  EXPECT_EQ(current(), "none");
}
