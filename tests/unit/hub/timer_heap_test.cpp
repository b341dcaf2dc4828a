// The hub's timer heap on its own: pops in (deadline, insertion) order, removal from any
// position keeps it a heap (checked against a std::multimap model under random operations),
// and a million timers with half of them cancelled still fire in deadline order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "hub/timer_heap.hpp"
#include "tendril/hub/nodes.hpp"
#include "test_scale.hpp"

using tendril::detail::timer_heap;
using tendril::detail::timer_node;

namespace {

// Nodes that stay where they are while the heap points at them.
std::vector<std::unique_ptr<timer_node>> make_nodes(std::size_t n) {
  std::vector<std::unique_ptr<timer_node>> nodes;
  nodes.reserve(n);
  for (std::size_t i = 0; i < n; ++i) nodes.push_back(std::make_unique<timer_node>());
  return nodes;
}

void push_at(timer_heap& h, timer_node& t, std::int64_t deadline) {
  t.deadline_ns = deadline;
  h.push(t);
}

// Pops everything, in the order the heap gives.
std::vector<timer_node*> drain(timer_heap& h) {
  std::vector<timer_node*> out;
  while (!h.empty()) out.push_back(h.pop());
  return out;
}

bool fires_before(const timer_node* a, const timer_node* b) {
  return a->deadline_ns < b->deadline_ns || (a->deadline_ns == b->deadline_ns && a->seq < b->seq);
}

}  // namespace

TEST(timer_heap, new_heap_is_empty) {
  timer_heap h;
  EXPECT_TRUE(h.empty());
  EXPECT_EQ(h.size(), 0u);
  EXPECT_EQ(h.next_seq(), 0u);
}

TEST(timer_heap, pops_timers_in_deadline_order) {
  const std::vector<std::int64_t> deadlines = {50, 10, 40, 30, 90, 20, 70, 60, 80, 0, 100, 5};
  auto nodes = make_nodes(deadlines.size());
  timer_heap h;
  for (std::size_t i = 0; i < deadlines.size(); ++i) push_at(h, *nodes[i], deadlines[i]);
  EXPECT_EQ(h.size(), deadlines.size());
  EXPECT_EQ(h.top()->deadline_ns, 0);

  std::vector<std::int64_t> popped;
  for (timer_node* t : drain(h)) popped.push_back(t->deadline_ns);
  std::vector<std::int64_t> sorted = deadlines;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(popped, sorted);
  EXPECT_TRUE(h.empty());
}

TEST(timer_heap, equal_deadlines_fire_in_insertion_order) {
  constexpr std::size_t count = 200;
  auto nodes = make_nodes(count);
  timer_heap h;
  // Two deadlines interleaved, so that equal ones are not pushed next to each other.
  for (std::size_t i = 0; i < count; ++i) push_at(h, *nodes[i], i % 2 == 0 ? 7 : 3);
  std::vector<timer_node*> order = drain(h);
  ASSERT_EQ(order.size(), count);
  std::vector<timer_node*> expected;
  for (std::size_t i = 1; i < count; i += 2) expected.push_back(nodes[i].get());
  for (std::size_t i = 0; i < count; i += 2) expected.push_back(nodes[i].get());
  EXPECT_EQ(order, expected);
}

TEST(timer_heap, push_numbers_timers_in_sequence) {
  auto nodes = make_nodes(3);
  timer_heap h;
  for (auto& n : nodes) push_at(h, *n, 1);
  EXPECT_EQ(nodes[0]->seq, 0u);
  EXPECT_EQ(nodes[1]->seq, 1u);
  EXPECT_EQ(nodes[2]->seq, 2u);
  EXPECT_EQ(h.next_seq(), 3u);
  drain(h);
}

TEST(timer_heap, a_timer_is_armed_while_in_the_heap_only) {
  timer_node t;
  timer_heap h;
  EXPECT_FALSE(t.armed());
  push_at(h, t, 5);
  EXPECT_TRUE(t.armed());
  h.remove(t);
  EXPECT_FALSE(t.armed());
  EXPECT_TRUE(h.empty());
  push_at(h, t, 5);
  EXPECT_EQ(h.pop(), &t);
  EXPECT_FALSE(t.armed());
}

TEST(timer_heap, removing_a_timer_that_is_not_armed_does_nothing) {
  auto nodes = make_nodes(3);
  timer_node stray;
  timer_heap h;
  push_at(h, *nodes[0], 3);
  push_at(h, *nodes[1], 1);
  push_at(h, *nodes[2], 2);
  h.remove(stray);
  h.remove(*nodes[1]);
  h.remove(*nodes[1]);  // twice: the second is a no-op
  EXPECT_EQ(h.size(), 2u);
  EXPECT_EQ(drain(h), (std::vector<timer_node*>{nodes[2].get(), nodes[0].get()}));
}

TEST(timer_heap, removing_the_top_the_last_or_a_middle_timer_keeps_the_order) {
  for (std::size_t victim = 0; victim < 40; ++victim) {
    auto nodes = make_nodes(40);
    timer_heap h;
    // Deadlines in a scrambled order, so that node i sits somewhere inside the heap.
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      push_at(h, *nodes[i], static_cast<std::int64_t>((i * 17) % 40));
    }
    h.remove(*nodes[victim]);
    std::vector<timer_node*> order = drain(h);
    ASSERT_EQ(order.size(), 39u) << "victim " << victim;
    EXPECT_TRUE(std::is_sorted(order.begin(), order.end(), fires_before)) << "victim " << victim;
    EXPECT_EQ(std::find(order.begin(), order.end(), nodes[victim].get()), order.end());
  }
}

TEST(timer_heap, removal_that_must_move_the_last_timer_up_keeps_the_order) {
  // Pushed in heap order (each deadline at least its parent's, so nothing moves and node i
  // sits at index i): the subtree under index 1 holds large deadlines, the rest small ones.
  // Removing a node under index 1 puts the last node, a small one from another subtree, in
  // its place, below larger parents: it has to move up, not down.
  constexpr std::size_t count = 38;
  auto under_first_child = [](std::size_t i) {
    while (i > 1) i = (i - 1) / 4;
    return i == 1;
  };
  auto nodes = make_nodes(count);
  timer_heap h;
  for (std::size_t i = 0; i < count; ++i) {
    push_at(h, *nodes[i], static_cast<std::int64_t>(under_first_child(i) ? 1000 + i : i));
  }
  ASSERT_TRUE(under_first_child(21));
  ASSERT_FALSE(under_first_child(count - 1));
  h.remove(*nodes[21]);
  std::vector<timer_node*> order = drain(h);
  ASSERT_EQ(order.size(), count - 1);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end(), fires_before));
  EXPECT_EQ(std::find(order.begin(), order.end(), nodes[21].get()), order.end());
}

TEST(timer_heap, random_pushes_removals_and_pops_match_an_ordered_model) {
  std::mt19937_64 rng(20240611);
  const std::size_t steps = tendril::test::scaled(200'000, 2'000);
  constexpr std::size_t pool_size = 512;
  auto nodes = make_nodes(pool_size);
  timer_heap h;
  std::multimap<std::pair<std::int64_t, std::uint64_t>, timer_node*> model;
  std::vector<timer_node*> armed;  // for picking a random one to remove
  std::vector<timer_node*> idle;
  for (auto& n : nodes) idle.push_back(n.get());

  auto forget = [&](timer_node* t) {
    auto it = std::find(armed.begin(), armed.end(), t);
    ASSERT_NE(it, armed.end());
    *it = armed.back();
    armed.pop_back();
    idle.push_back(t);
  };

  for (std::size_t step = 0; step < steps; ++step) {
    const auto op = rng() % 10;
    if (op < 5 && !idle.empty()) {
      timer_node* t = idle.back();
      idle.pop_back();
      // A narrow range of deadlines, so that ties are common.
      push_at(h, *t, static_cast<std::int64_t>(rng() % 64));
      model.emplace(std::make_pair(t->deadline_ns, t->seq), t);
      armed.push_back(t);
    } else if (op < 8 && !armed.empty()) {
      timer_node* t = armed[rng() % armed.size()];
      const auto key = std::make_pair(t->deadline_ns, t->seq);
      h.remove(*t);
      ASSERT_FALSE(t->armed());
      model.erase(key);
      forget(t);
    } else if (!armed.empty()) {
      timer_node* t = h.pop();
      ASSERT_EQ(t, model.begin()->second) << "step " << step;
      ASSERT_FALSE(t->armed());
      model.erase(model.begin());
      forget(t);
    }
    ASSERT_EQ(h.size(), model.size()) << "step " << step;
    if (!model.empty()) {
      ASSERT_EQ(h.top(), model.begin()->second) << "step " << step;
    }
  }
  for (auto& [key, t] : model) {
    ASSERT_EQ(h.pop(), t);
  }
  EXPECT_TRUE(h.empty());
}

TEST(timer_heap, a_million_timers_with_half_cancelled_fire_in_deadline_order) {
  const std::size_t count = tendril::test::scaled(1'000'000, 1'000);
  std::mt19937_64 rng(7);
  std::vector<timer_node> nodes(count);  // never resized: the heap points into it
  timer_heap h;
  for (auto& t : nodes) {
    // About one tie per deadline on average.
    push_at(h, t, static_cast<std::int64_t>(rng() % count));
  }
  ASSERT_EQ(h.size(), count);

  std::vector<bool> cancelled(count, false);
  std::vector<std::size_t> indexes(count);
  for (std::size_t i = 0; i < count; ++i) indexes[i] = i;
  std::shuffle(indexes.begin(), indexes.end(), rng);
  for (std::size_t k = 0; k < count / 2; ++k) {
    h.remove(nodes[indexes[k]]);
    cancelled[indexes[k]] = true;
  }
  ASSERT_EQ(h.size(), count - count / 2);

  std::size_t fired = 0;
  std::size_t out_of_order = 0;
  std::size_t fired_cancelled = 0;
  const timer_node* previous = nullptr;
  while (!h.empty()) {
    timer_node* t = h.pop();
    ++fired;
    if (cancelled[static_cast<std::size_t>(t - nodes.data())]) ++fired_cancelled;
    if (previous != nullptr && !fires_before(previous, t)) ++out_of_order;
    previous = t;
  }
  EXPECT_EQ(fired, count - count / 2);
  EXPECT_EQ(fired_cancelled, 0u);
  EXPECT_EQ(out_of_order, 0u);
}
