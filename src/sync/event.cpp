#include "tendril/sync/event.hpp"

namespace tendril {

using detail::this_thread_token;

event::~event() {
  if (!waiters_.empty() || !observers_.empty()) [[unlikely]]
    detail::destroyed_while_waited("tendril::event", waiters_.size() + observers_.size());
}

void event::set() {
  detail::woken_batch woken;  // lets the waiters go once the lock is released
  std::lock_guard lock(mu_);
  flag_.store(this_thread_token(), std::memory_order_release);
  // Claim and schedule with the lock held: a waiter that times out meanwhile takes the same
  // lock to unlink itself, so it is either still here (and woken now) or gone.
  while (detail::waiter* w = waiters_.pop_front()) woken.wake(*w);
  woken.notify_all(observers_);
}

void event::clear() {
  std::lock_guard lock(mu_);
  flag_.store(0, std::memory_order_release);
}

bool event::is_set() const noexcept {
  const std::uintptr_t setter = flag_.load(std::memory_order_acquire);
  if (setter == 0) return false;
  // A set() of another thread stores the flag first and may still be waking waiters and
  // unlocking mu_: once the lock was ours, it is done with the event, and the caller may
  // destroy it (events_across_threads, a_waiter_may_destroy_the_event_as_soon_as_wait_returns).
  // A set() of this thread has returned already.
  if (setter != this_thread_token()) {
    std::lock_guard lock(mu_);
  }
  return true;
}

bool event::wait_deadline(std::int64_t deadline_ns) {
  if (is_set()) return true;
  detail::waiter w(true);
  {
    std::lock_guard lock(mu_);
    if (flag_.load(std::memory_order_relaxed)) return true;
    waiters_.push_back(w);
  }
  struct unlink {
    event* e;
    detail::waiter* w;
    ~unlink() {
      if (detail::let_go(*w)) return;  // set() unlinked it; the event may be gone
      std::lock_guard lock(e->mu_);
      e->waiters_.remove(*w);
    }
  } guard{this, &w};
  return w.wait(deadline_ns);
}

void event::observe(detail::observer& o) {
  std::lock_guard lock(mu_);
  if (flag_.load(std::memory_order_relaxed)) {
    detail::notify_at_once(o);
    return;
  }
  observers_.push_back(o);
}

void event::unobserve(detail::observer& o) noexcept {
  std::lock_guard lock(mu_);
  observers_.remove(o);
}

}  // namespace tendril
