// The intrusive nodes by which waiting things sit in a hub's run queue and timer heap. They
// live inside whatever waits (a waiter on a parked greenlet's stack, a task), so scheduling
// never allocates. Not API: public only because the templates of the layers above embed them.
#ifndef TENDRIL_HUB_NODES_HPP
#define TENDRIL_HUB_NODES_HPP

#include <cstddef>
#include <cstdint>

namespace tendril::detail {

struct greenlet_record;

// A greenlet to resume, in a run queue (a circular doubly linked list with a sentinel).
struct ready_node {
  ready_node* prev = nullptr;
  ready_node* next = nullptr;
  greenlet_record* greenlet = nullptr;
  enum : std::uint8_t { in_no_list, in_run_queue, in_remote_queue };
  std::uint8_t list = in_no_list;
  bool queued() const noexcept { return list != in_no_list; }
};

// A timer in a hub's heap: fire(this) runs on the hub when the deadline passes.
struct timer_node {
  std::int64_t deadline_ns = 0;  // hub clock, nanoseconds
  std::uint64_t seq = 0;         // ties keep insertion order
  std::size_t heap_index = static_cast<std::size_t>(-1);
  void (*fire)(timer_node* self) = nullptr;
  void* context = nullptr;  // for fire(): whatever the timer belongs to
  bool armed() const noexcept { return heap_index != static_cast<std::size_t>(-1); }
};

// A thing that lives as long as the hub lets it (a task): when the hub goes away with its
// thread, it asks each one to stop.
struct hub_child {
  hub_child* prev = nullptr;
  hub_child* next = nullptr;
  void (*shutdown)(hub_child* self) = nullptr;
};

}  // namespace tendril::detail

#endif
