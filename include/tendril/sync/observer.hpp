// Observers: how wait() and iwait() watch several objects at once (tasks, events, async
// results, queues). An object that can become ready keeps a list of observers and calls
// notify() on each when it does. Not API: public because the templates embed it.
#ifndef TENDRIL_SYNC_OBSERVER_HPP
#define TENDRIL_SYNC_OBSERVER_HPP

#include <cstddef>

namespace tendril::detail {

struct observer {
  observer* prev = nullptr;
  observer* next = nullptr;
  bool linked = false;
  // notify() is called with the object's lock held, possibly on another thread (events,
  // async results): it must be quick and must not block.
  void (*notify)(observer* self) noexcept = nullptr;
};

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
  }
  void remove(observer& o) noexcept {
    if (!o.linked) return;
    (o.prev ? o.prev->next : head_) = o.next;
    (o.next ? o.next->prev : tail_) = o.prev;
    o.prev = o.next = nullptr;
    o.linked = false;
  }
  // notify_all() unlinks every observer and notifies it.
  void notify_all() noexcept {
    while (observer* o = head_) {
      remove(*o);
      o->notify(o);
    }
  }

 private:
  observer* head_ = nullptr;
  observer* tail_ = nullptr;
};

}  // namespace tendril::detail

#endif
