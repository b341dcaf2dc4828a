#include "tendril/sync/semaphore.hpp"

#include <limits>
#include <stdexcept>
#include <string>

namespace tendril {

semaphore::semaphore(std::ptrdiff_t initial) : count_(initial) {
  if (initial < 0) {
    throw std::invalid_argument("tendril::semaphore: a negative count (" + std::to_string(initial) +
                                ")");
  }
}

semaphore::~semaphore() { check_unwaited("tendril::semaphore"); }

bool semaphore::try_acquire() noexcept {
  std::lock_guard lock(mu_);
  if (count_ > 0 && waiters_.empty()) {
    --count_;
    return true;
  }
  return false;
}

bool semaphore::acquire_deadline(std::int64_t deadline_ns, bool shielded) {
  {
    std::lock_guard lock(mu_);
    if (count_ > 0 && waiters_.empty()) {
      --count_;
      return true;
    }
  }
  detail::waiter w(true, shielded);
  {
    std::lock_guard lock(mu_);
    if (count_ > 0 && waiters_.empty()) {
      --count_;
      return true;
    }
    waiters_.push_back(w);
    ++nwaiting_;
  }
  struct unlink {
    semaphore* s;
    detail::waiter* w;
    ~unlink() {
      if (detail::let_go(*w)) return;  // give() unlinked it; the semaphore may be gone
      std::lock_guard lock(s->mu_);
      if (w->linked) {
        s->waiters_.remove(*w);
        --s->nwaiting_;
      }
    }
  } guard{this, &w};
  // A woken waiter was handed its permit by release(): count_ was not raised for it.
  try {
    return w.wait(deadline_ns);
  } catch (...) {
    // Handed a permit, then ended by an exception anyway (a greenlet destroyed while its
    // wake was on the run queue): the permit goes to the next waiter, not with it.
    if (w.current_state() == detail::waiter::woken) {
      detail::woken_batch woken;
      std::lock_guard lock(mu_);
      give(1, woken);
    }
    throw;
  }
}

detail::waiter* semaphore::claim_longest(detail::woken_batch& woken) noexcept {
  // A waiter that just timed out or was killed cannot be claimed and is skipped (it unlinks
  // itself).
  while (detail::waiter* w = waiters_.pop_front()) {
    --nwaiting_;
    if (woken.claim(*w)) return w;
  }
  return nullptr;
}

void semaphore::give(std::ptrdiff_t n, detail::woken_batch& woken) {
  // Permits go to the longest waiters first.
  for (; n > 0; --n) {
    detail::waiter* w = claim_longest(woken);
    if (w == nullptr) break;
    w->schedule();
  }
  count_ += n;
}

void semaphore::release(std::ptrdiff_t n) {
  if (n < 0) throw std::invalid_argument("tendril::semaphore::release: a negative count");
  detail::woken_batch woken;
  std::lock_guard lock(mu_);
  if (n > std::numeric_limits<std::ptrdiff_t>::max() - count_) {
    throw std::overflow_error("tendril::semaphore::release: " + std::to_string(count_) +
                              " free plus " + std::to_string(n) +
                              " released is more than a ptrdiff_t holds");
  }
  give(n, woken);
}

std::ptrdiff_t semaphore::count() const noexcept {
  std::lock_guard lock(mu_);
  return count_;
}

std::size_t semaphore::waiting() const noexcept {
  std::lock_guard lock(mu_);
  return nwaiting_;
}

void bounded_semaphore::release(std::ptrdiff_t n) {
  if (n < 0) throw std::invalid_argument("tendril::bounded_semaphore::release: a negative count");
  detail::woken_batch woken;
  std::lock_guard lock(mu_);
  // Permits handed to waiters are in use, not free: count_ + n may not exceed the start.
  if (n > initial_ - count_) {
    throw std::logic_error("tendril::bounded_semaphore::release: released more than acquired (" +
                           std::to_string(count_) + " free of " + std::to_string(initial_) +
                           ", releasing " + std::to_string(n) + ")");
  }
  give(n, woken);
}

}  // namespace tendril
