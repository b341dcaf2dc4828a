// local<T>: one value per greenlet, made on first use and destroyed when the greenlet ends
// (however it ends), apart for every local and every thread. Modelled on gevent's
// test__local.py.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hub/clock.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::local;
using tendril::spawn;
using tendril::task;

namespace {

class locals : public ::testing::Test {
 protected:
  void SetUp() override { tendril::detail::test_clock::pause(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

// Counts live instances, and notes each destruction.
struct tracked {
  static inline int alive = 0;
  static inline int destroyed = 0;
  int value = 0;
  tracked() { ++alive; }
  ~tracked() {
    --alive;
    ++destroyed;
  }
  tracked(const tracked&) = delete;
  tracked& operator=(const tracked&) = delete;
};

struct reset_tracked {
  reset_tracked() { tracked::alive = tracked::destroyed = 0; }
};

}  // namespace

TEST_F(locals, each_greenlet_sees_its_own_value) {
  local<int> n;
  n.set(100);
  std::vector<task<int>> all;
  for (int i = 0; i < 5; ++i)
    all.push_back(spawn([&n, i] {
      n.set(i);
      tendril::sleep(std::chrono::seconds(5 - i));  // the others change theirs meanwhile
      return *n;
    }));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(all[i].get(), i);
  EXPECT_EQ(*n, 100);
}

TEST_F(locals, a_value_is_made_value_initialised_on_first_use) {
  local<int> n;
  local<std::string> s;
  auto t = spawn([&] {
    EXPECT_FALSE(n.has_value());
    EXPECT_EQ(n.get(), 0);
    EXPECT_TRUE(n.has_value());
    EXPECT_TRUE(s->empty());
    s->append("x");
    return *s;
  });
  EXPECT_EQ(t.get(), "x");
  EXPECT_FALSE(s.has_value());  // main never asked
}

TEST_F(locals, values_are_destroyed_when_the_greenlet_ends) {
  reset_tracked reset;
  local<tracked> l;
  auto t = spawn([&] {
    l->value = 1;
    EXPECT_EQ(tracked::alive, 1);
  });
  t.join();
  EXPECT_EQ(tracked::alive, 0);
  EXPECT_EQ(tracked::destroyed, 1);
}

TEST_F(locals, values_are_destroyed_when_the_greenlet_is_killed_or_fails) {
  reset_tracked reset;
  local<tracked> l;
  tendril::hub::current().set_error_handler([](const std::string&, std::exception_ptr) {});
  auto killed = spawn([&] {
    l->value = 1;
    tendril::sleep(1h);
  });
  auto failed = spawn([&] {
    l->value = 2;
    throw std::runtime_error("fails");
  });
  tendril::sleep(0s);
  EXPECT_EQ(tracked::alive, 1);  // the failed one is gone already
  killed.kill();
  EXPECT_EQ(tracked::alive, 0);
  EXPECT_EQ(tracked::destroyed, 2);
  failed.join();
  tendril::hub::current().set_error_handler({});
}

TEST_F(locals, values_of_a_plain_greenlet_are_destroyed_when_it_ends) {
  reset_tracked reset;
  local<tracked> l;
  tendril::greenlet g([&] { l->value = 3; });
  g.switch_to();
  EXPECT_TRUE(g.dead());
  EXPECT_EQ(tracked::alive, 0);
  EXPECT_EQ(tracked::destroyed, 1);
}

TEST_F(locals, locals_are_independent_of_each_other) {
  local<int> a;
  local<int> b;
  a.set(1);
  b.set(2);
  EXPECT_EQ(*a, 1);
  EXPECT_EQ(*b, 2);
  a.reset();
  EXPECT_FALSE(a.has_value());
  EXPECT_EQ(*b, 2);
  b.reset();
}

TEST_F(locals, reset_destroys_this_greenlets_value_only) {
  reset_tracked reset;
  local<tracked> l;
  l->value = 1;
  tendril::event go;
  auto t = spawn([&] {
    l->value = 2;
    go.wait();
    return l->value;
  });
  tendril::sleep(0s);
  EXPECT_EQ(tracked::alive, 2);
  l.reset();
  EXPECT_EQ(tracked::alive, 1);
  EXPECT_FALSE(l.has_value());
  go.set();
  EXPECT_EQ(t.get(), 2);
  EXPECT_EQ(tracked::alive, 0);
}

TEST_F(locals, destroying_the_local_leaves_values_to_their_greenlets) {
  reset_tracked reset;
  tendril::event go;
  auto l = std::make_unique<local<tracked>>();
  auto t = spawn([&, p = l.get()] {
    (*p)->value = 1;
    go.wait();
  });
  tendril::sleep(0s);
  l.reset();
  EXPECT_EQ(tracked::alive, 1);
  go.set();
  t.join();
  EXPECT_EQ(tracked::alive, 0);
}

TEST_F(locals, a_destructor_that_makes_another_local_value_is_cleaned_up_too) {
  reset_tracked reset;
  local<tracked> late;
  struct makes_late {
    local<tracked>* late;
    ~makes_late() { (*late)->value = 9; }
  };
  local<std::unique_ptr<makes_late>> maker;
  auto t = spawn([&] {
    maker.set(std::unique_ptr<makes_late>(new makes_late{&late}));
    EXPECT_FALSE(late.has_value());
  });
  t.join();
  EXPECT_EQ(tracked::alive, 0);
  EXPECT_EQ(tracked::destroyed, 1);
}

// The table was taken away before the values were destroyed: a destructor that used a value
// made earlier (so still alive) got a fresh value-initialised one, leaked until the loop's
// next round.
TEST_F(locals, a_destructor_sees_the_values_made_before_its_own) {
  reset_tracked reset;
  local<tracked> log;
  struct uses_log {
    local<tracked>* log;
    int* seen;
    ~uses_log() { *seen = (*log)->value; }
  };
  local<std::unique_ptr<uses_log>> conn;
  int seen = -1;
  auto t = spawn([&] {
    log->value = 41;
    conn.set(std::unique_ptr<uses_log>(new uses_log{&log, &seen}));
  });
  t.join();
  EXPECT_EQ(seen, 41);
  EXPECT_EQ(tracked::alive, 0);
  EXPECT_EQ(tracked::destroyed, 1);
}

TEST_F(locals, the_value_of_a_threads_root_is_destroyed_when_the_thread_ends) {
  reset_tracked reset;
  local<tracked> l;
  int seen_alive = -1;
  std::thread th([&] {
    l->value = 5;
    seen_alive = tracked::alive;
  });
  th.join();
  EXPECT_EQ(seen_alive, 1);
  EXPECT_EQ(tracked::alive, 0);
  EXPECT_FALSE(l.has_value());  // main's own was never made
}

TEST_F(locals, many_greenlets_each_keep_their_own_value) {
  local<int> n;
  std::vector<task<bool>> all;
  for (int i = 0; i < 200; ++i)
    all.push_back(spawn([&n, i] {
      n.set(i);
      for (int round = 0; round < 3; ++round) {
        tendril::sleep(0s);
        if (*n != i) return false;
      }
      return true;
    }));
  for (auto& t : all) EXPECT_TRUE(t.get());
}
