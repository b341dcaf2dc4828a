// A hub's timers: a 4-ary min-heap of intrusive timer nodes ordered by (deadline, seq),
// each node knowing its index, so that insert, cancel and pop are O(log n) with no search
// and no allocation beyond the heap's own array. Four children per node keep the heap
// shallow and its sift-down within a cache line or two: with a million timers it is ten
// levels deep. Equal deadlines fire in the order they were added.
#ifndef TENDRIL_SRC_HUB_TIMER_HEAP_HPP
#define TENDRIL_SRC_HUB_TIMER_HEAP_HPP

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tendril/hub/nodes.hpp"

namespace tendril::detail {

class timer_heap {
 public:
  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }
  timer_node* top() const noexcept { return heap_.front(); }
  // next_seq() is the sequence number the next push() will give.
  std::uint64_t next_seq() const noexcept { return next_seq_; }

  // push() adds t (not armed) with its deadline set. Throws std::bad_alloc.
  void push(timer_node& t) {
    t.seq = next_seq_++;
    heap_.push_back(&t);
    t.heap_index = heap_.size() - 1;
    sift_up(t.heap_index);
  }

  // remove() takes t out wherever it is; a no-op if it is not armed.
  void remove(timer_node& t) noexcept {
    if (!t.armed()) return;
    const std::size_t i = t.heap_index;
    const std::size_t last = heap_.size() - 1;
    t.heap_index = npos;
    if (i != last) {
      heap_[i] = heap_[last];
      heap_[i]->heap_index = i;
      heap_.pop_back();
      if (i > 0 && less(heap_[i], heap_[parent(i)])) {
        sift_up(i);
      } else {
        sift_down(i);
      }
    } else {
      heap_.pop_back();
    }
  }

  // pop() removes and returns the earliest timer.
  timer_node* pop() noexcept {
    timer_node* t = heap_.front();
    remove(*t);
    return t;
  }

 private:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  static constexpr std::size_t arity = 4;

  static std::size_t parent(std::size_t i) noexcept { return (i - 1) / arity; }
  static bool less(const timer_node* a, const timer_node* b) noexcept {
    return a->deadline_ns < b->deadline_ns || (a->deadline_ns == b->deadline_ns && a->seq < b->seq);
  }

  void sift_up(std::size_t i) noexcept {
    timer_node* t = heap_[i];
    while (i > 0) {
      std::size_t p = parent(i);
      if (!less(t, heap_[p])) break;
      heap_[i] = heap_[p];
      heap_[i]->heap_index = i;
      i = p;
    }
    heap_[i] = t;
    t->heap_index = i;
  }

  void sift_down(std::size_t i) noexcept {
    timer_node* t = heap_[i];
    const std::size_t n = heap_.size();
    while (true) {
      std::size_t first = i * arity + 1;
      if (first >= n) break;
      std::size_t best = first;
      std::size_t end = first + arity < n ? first + arity : n;
      for (std::size_t c = first + 1; c < end; ++c) {
        if (less(heap_[c], heap_[best])) best = c;
      }
      if (!less(heap_[best], t)) break;
      heap_[i] = heap_[best];
      heap_[i]->heap_index = i;
      i = best;
    }
    heap_[i] = t;
    t->heap_index = i;
  }

  std::vector<timer_node*> heap_;
  std::uint64_t next_seq_ = 0;
};

}  // namespace tendril::detail

#endif
