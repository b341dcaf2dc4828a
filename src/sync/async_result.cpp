#include "tendril/sync/async_result.hpp"

namespace tendril::detail {

async_core::~async_core() {
  if (!waiters_.empty() || !observers_.empty()) [[unlikely]]
    destroyed_while_waited("tendril::async_result", waiters_.size() + observers_.size());
}

void async_core::settle(void (*store)(void* ctx), void* ctx) {
  woken_batch woken;  // lets the waiters go once the lock is released
  std::lock_guard lock(mu_);
  store(ctx);
  ready_ = true;
  while (waiter* w = waiters_.pop_front()) woken.wake(*w);
  observers_.notify_all();
}

bool async_core::ready() const noexcept {
  std::lock_guard lock(mu_);
  return ready_;
}

bool async_core::wait_deadline(std::int64_t deadline_ns) {
  waiter w(true);
  {
    std::lock_guard lock(mu_);
    if (ready_) return true;
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
  return w.wait(deadline_ns);
}

void async_core::observe(observer& o) {
  std::lock_guard lock(mu_);
  if (ready_) {
    o.notify(&o);
    return;
  }
  observers_.push_back(o);
}

void async_core::unobserve(observer& o) noexcept {
  std::lock_guard lock(mu_);
  observers_.remove(o);
}

}  // namespace tendril::detail
