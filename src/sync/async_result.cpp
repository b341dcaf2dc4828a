#include "tendril/sync/async_result.hpp"

#include <cstdio>
#include <cstdlib>

namespace tendril::detail {
namespace {

// The getters would read the value from freed memory when they resume.
[[noreturn]] void destroyed_before_taken(std::size_t n) noexcept {
  std::fprintf(stderr,
               "tendril: a tendril::async_result destroyed while %zu greenlet%s it woke %s yet to "
               "take its value\n",
               n, n == 1 ? "" : "s", n == 1 ? "has" : "have");
  std::abort();
}

}  // namespace

async_core::~async_core() {
  if (!waiters_.empty() || !observers_.empty()) [[unlikely]]
    destroyed_while_waited("tendril::async_result", waiters_.size() + observers_.size());
  std::lock_guard lock(mu_);  // a getter of another thread counts itself out under it
  if (to_take_ != 0) [[unlikely]]
    destroyed_before_taken(to_take_);
}

void async_core::settle(void (*store)(void* ctx), void* ctx) {
  woken_batch woken;  // lets the waiters go once the lock is released
  std::lock_guard lock(mu_);
  store(ctx);
  ready_ = true;
  while (waiter* w = waiters_.pop_front()) {
    const bool getter = w->payload != nullptr;
    if (woken.wake(*w) && getter) ++to_take_;
  }
  woken.notify_all(observers_);
}

bool async_core::ready() const noexcept {
  std::lock_guard lock(mu_);
  return ready_;
}

bool async_core::wait_deadline(std::int64_t deadline_ns, bool* woken) {
  waiter w(true);
  {
    std::lock_guard lock(mu_);
    if (ready_) return true;
    if (woken != nullptr) w.payload = this;  // a getter, for settle() to count
    waiters_.push_back(w);
  }
  struct unlink {
    async_core* c;
    waiter* w;
    ~unlink() {
      if (let_go(*w)) return;  // settle() unlinked it; the result may be gone
      std::lock_guard lock(c->mu_);
      c->waiters_.remove(*w);
    }
  } guard{this, &w};
  bool got = false;
  try {
    got = w.wait(deadline_ns);
  } catch (...) {
    // Woken, then ended by an exception anyway (its greenlet destroyed while the wake was on
    // the run queue): it will not take the value.
    if (woken != nullptr && w.current_state() == waiter::woken) {
      std::lock_guard lock(mu_);
      took();
    }
    throw;
  }
  if (woken != nullptr) *woken = got;
  return got;
}

void async_core::observe(observer& o) {
  std::lock_guard lock(mu_);
  if (ready_) {
    notify_at_once(o);
    return;
  }
  observers_.push_back(o);
}

void async_core::unobserve(observer& o) noexcept {
  std::lock_guard lock(mu_);
  observers_.remove(o);
}

}  // namespace tendril::detail
