// Observers: how wait() and iwait() watch several objects at once (tasks, events, async
// results, queues). An object that can become ready keeps a list of observers and calls
// notify() on each when it does. Not API: public because the templates embed it.
//
// Once an object notified an observer, whoever observes never touches the object again (the
// object's own thread may destroy it at once, as with its own waits): let_go() in waiter.hpp
// tells, and the observer is then off the object's list. An object notifying from any thread
// does so through a woken_batch, which lets the observer go once the object is unlocked.
#ifndef TENDRIL_SYNC_OBSERVER_HPP
#define TENDRIL_SYNC_OBSERVER_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace tendril::detail {

struct observer {
  observer* prev = nullptr;
  observer* next = nullptr;
  bool linked = false;
  // notify() is called with the object's lock held, possibly on another thread (events,
  // async results): it must be quick and must not block.
  void (*notify)(observer* self) noexcept = nullptr;
  // How far the object that notified it has got: inside the call that did (notifying), or
  // done with the object for good (let_go, stored last: the observer may be gone after).
  enum phase : std::uint8_t { watching, notifying, let_go };
  std::atomic<phase> state{watching};
};

// notify_at_once() notifies o for an object that is ready as o starts observing: o is never
// linked, and nothing of the object is touched for it again.
inline void notify_at_once(observer& o) noexcept {
  o.state.store(observer::let_go, std::memory_order_relaxed);
  o.notify(&o);
}

class observer_list {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept {
    std::size_t n = 0;
    for (const observer* o = head_; o != nullptr; o = o->next) ++n;
    return n;
  }
  void push_back(observer& o) noexcept {
    o.prev = tail_;
    o.next = nullptr;
    (tail_ ? tail_->next : head_) = &o;
    tail_ = &o;
    o.linked = true;
    o.state.store(observer::watching, std::memory_order_relaxed);
  }
  void remove(observer& o) noexcept {
    if (!o.linked) return;
    (o.prev ? o.prev->next : head_) = o.next;
    (o.next ? o.next->prev : tail_) = o.prev;
    o.prev = o.next = nullptr;
    o.linked = false;
  }
  observer* pop_front() noexcept {
    observer* o = head_;
    if (o) remove(*o);
    return o;
  }
  // notify_all() unlinks every observer, lets it go and notifies it. For an object notified
  // only on its observers' own thread, whose greenlets cannot run before the call returns
  // (others notify through a woken_batch).
  void notify_all() noexcept {
    while (observer* o = pop_front()) notify_at_once(*o);
  }

 private:
  observer* head_ = nullptr;
  observer* tail_ = nullptr;
};

}  // namespace tendril::detail

#endif
