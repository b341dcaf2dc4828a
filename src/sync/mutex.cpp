#include "tendril/sync/mutex.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "greenlet/thread_state.hpp"

namespace tendril {
namespace {
detail::greenlet_record* current_greenlet() { return detail::thread_state::get().current(); }

// Its holder would unlock freed memory (or a greenlet handed it by unlock() resume in it).
[[noreturn]] void destroyed_while_held(std::uint64_t holder) noexcept {
  detail::greenlet_record* me = current_greenlet();
  if (holder == me->id) {
    std::fprintf(stderr, "tendril: greenlet '%s' destroyed a tendril::mutex that it holds\n",
                 detail::record_name(me).c_str());
  } else if (holder == 0) {  // passed on by a waiter that an exception ended
    std::fprintf(stderr,
                 "tendril: a tendril::mutex destroyed while a greenlet woken to take it "
                 "has yet to run\n");
  } else {
    std::fprintf(
        stderr,
        "tendril: a tendril::mutex destroyed while greenlet %llu (this_greenlet::get_id()) "
        "holds it\n",
        static_cast<unsigned long long>(holder));
  }
  std::abort();
}

}  // namespace

mutex::~mutex() {
  sem_.check_unwaited("tendril::mutex");
  std::lock_guard lock(sem_.mu_);
  if (sem_.count_ == 0) [[unlikely]]
    destroyed_while_held(owner_.load(std::memory_order_relaxed));
}

void mutex::lock() { lock_deadline(detail::forever_ns); }

void mutex::lock_shielded() { lock_deadline(detail::forever_ns, true); }

bool mutex::lock_deadline(std::int64_t deadline_ns, bool shielded) {
  detail::greenlet_record* me = current_greenlet();
  if (owner_.load(std::memory_order_relaxed) == me->id) {
    throw std::logic_error("tendril::mutex::lock: the greenlet '" + detail::record_name(me) +
                           "' already holds this mutex (it is not recursive)");
  }
  bool got = false;
  try {
    got = sem_.acquire_deadline(deadline_ns, shielded);
  } catch (...) {
    // Handed it by unlock(), then ended by an exception anyway: the semaphore passed it on.
    std::uint64_t mine = me->id;
    owner_.compare_exchange_strong(mine, no_owner, std::memory_order_relaxed);
    throw;
  }
  if (got) owner_.store(me->id, std::memory_order_relaxed);
  return got;
}

bool mutex::try_lock() {
  if (!sem_.try_acquire()) return false;
  owner_.store(current_greenlet()->id, std::memory_order_relaxed);
  return true;
}

void mutex::unlock() {
  detail::greenlet_record* me = current_greenlet();
  if (owner_.load(std::memory_order_relaxed) != me->id) {
    throw std::logic_error("tendril::mutex::unlock: greenlet '" + detail::record_name(me) +
                           "' does not hold this mutex");
  }
  detail::woken_batch woken;
  std::lock_guard lock(sem_.mu_);
  // The longest waiter holds it from now on, already named as its owner for a destructor
  // that runs before it does.
  if (detail::waiter* w = sem_.claim_longest(woken)) {
    owner_.store(w->greenlet()->id, std::memory_order_relaxed);
    w->schedule();
    return;
  }
  owner_.store(no_owner, std::memory_order_relaxed);
  ++sem_.count_;
}

condition_variable::~condition_variable() {
  if (!waiters_.empty()) [[unlikely]]
    detail::destroyed_while_waited("tendril::condition_variable", waiters_.size());
}

bool condition_variable::wait_deadline(std::unique_lock<mutex>& lock, std::int64_t deadline_ns) {
  if (!lock.owns_lock())
    throw std::logic_error("tendril::condition_variable::wait: the lock is not held");
  detail::waiter w(true);
  {
    std::lock_guard guard(mu_);
    waiters_.push_back(w);
  }
  // Whatever ends the wait, the mutex is taken again before returning or throwing; that
  // wait cannot be interrupted (an interrupt stays pending for the next blocking call). It
  // is done in the body, not in a destructor: retaking can itself throw (loop_exit when no
  // one can ever unlock), and that must come out as an exception, not std::terminate.
  auto relock = [&] {
    lock.mutex()->lock_shielded();
    std::unique_lock<mutex> retaken(*lock.mutex(), std::adopt_lock);
    lock.swap(retaken);
    retaken.release();
  };
  auto unlink = [&] {
    if (detail::let_go(w)) return;  // a notify unlinked it; the variable may be gone
    std::lock_guard guard(mu_);
    waiters_.remove(w);
  };
  try {
    lock.unlock();  // throws if another greenlet holds the mutex
  } catch (...) {
    unlink();
    throw;
  }
  bool woken = false;
  try {
    woken = w.wait(deadline_ns);
  } catch (...) {
    unlink();
    // A notify that reached this waiter just before the exception goes to the next one.
    if (w.current_state() == detail::waiter::woken) notify_one();
    relock();
    throw;
  }
  unlink();
  relock();
  return woken;
}

void condition_variable::notify_one() noexcept {
  detail::woken_batch woken;
  std::lock_guard guard(mu_);
  while (detail::waiter* w = waiters_.pop_front()) {
    if (woken.wake(*w)) return;
  }
}

void condition_variable::notify_all() noexcept {
  detail::woken_batch woken;
  std::lock_guard guard(mu_);
  while (detail::waiter* w = waiters_.pop_front()) woken.wake(*w);
}

}  // namespace tendril
