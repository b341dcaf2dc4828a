// tendril::mutex and tendril::condition_variable: the standard library's Lockable and
// condition variable, for greenlets (gevent.lock.RLock's simple sibling). Usable with
// std::lock_guard, std::unique_lock and std::scoped_lock.
#ifndef TENDRIL_SYNC_MUTEX_HPP
#define TENDRIL_SYNC_MUTEX_HPP

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "tendril/hub/deadline.hpp"
#include "tendril/sync/semaphore.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {

// mutex: held by one greenlet at a time; lock() waits, first come first served. Locking it
// twice from the same greenlet, or unlocking it from one that does not hold it, throws
// std::logic_error (the standard makes both undefined; here they are reported). unlock()
// hands it straight to the longest waiter, which holds it from then on, before it runs.
class mutex {
 public:
  mutex() : sem_(1) {}
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;
  // Destroying it while a greenlet holds it (also one that unlock() handed it to and that has
  // yet to run), or while greenlets wait for it, stops the process with a message.
  ~mutex();

  // lock() takes the mutex, waiting for it. Switches: yes, when it waits.
  void lock();
  // try_lock() takes it if free. Switches: no.
  bool try_lock();
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return lock_deadline(detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> tp) {
    return lock_deadline(detail::deadline_at(tp));
  }
  // unlock() releases it; the longest waiter gets it next. Switches: no.
  void unlock();

  // For condition_variable: lock() that a kill or timeout cannot interrupt.
  void lock_shielded();

 private:
  bool lock_deadline(std::int64_t deadline_ns, bool shielded = false);
  semaphore sem_;
  // The id of the greenlet that holds it (this_greenlet::get_id(), unique in the process: a
  // record's address is reused by a later greenlet once the holder ended). Atomic: a
  // greenlet of another thread reads it (to refuse a recursive lock) while the holder sets
  // it; the semaphore orders the holders themselves.
  static constexpr std::uint64_t no_owner = 0;  // ids start at 1
  std::atomic<std::uint64_t> owner_{no_owner};
};

// condition_variable: wait(lock) releases the mutex and waits for notify_one() or
// notify_all(), then takes the mutex again before returning (also when it throws). Once a
// notify returned, its thread may destroy the variable while the greenlets it woke have yet
// to resume.
class condition_variable {
 public:
  condition_variable() = default;
  condition_variable(const condition_variable&) = delete;
  condition_variable& operator=(const condition_variable&) = delete;
  // Destroying it while greenlets wait in it stops the process with a message.
  ~condition_variable();

  // Switches: yes.
  void wait(std::unique_lock<mutex>& lock) { wait_deadline(lock, detail::forever_ns); }
  template <class Predicate>
  void wait(std::unique_lock<mutex>& lock, Predicate pred) {
    while (!pred()) wait(lock);
  }
  // wait_for() / wait_until(): false (std::cv_status::timeout for the plain forms) if the
  // time ran out.
  template <class Rep, class Period>
  std::cv_status wait_for(std::unique_lock<mutex>& lock, std::chrono::duration<Rep, Period> d) {
    return wait_deadline(lock, detail::deadline_after(d)) ? std::cv_status::no_timeout
                                                          : std::cv_status::timeout;
  }
  template <class Rep, class Period, class Predicate>
  bool wait_for(std::unique_lock<mutex>& lock, std::chrono::duration<Rep, Period> d,
                Predicate pred) {
    const std::int64_t deadline = detail::deadline_after(d);
    while (!pred()) {
      if (!wait_deadline(lock, deadline)) return pred();
    }
    return true;
  }
  template <class Clock, class Duration>
  std::cv_status wait_until(std::unique_lock<mutex>& lock,
                            std::chrono::time_point<Clock, Duration> tp) {
    return wait_deadline(lock, detail::deadline_at(tp)) ? std::cv_status::no_timeout
                                                        : std::cv_status::timeout;
  }

  // notify_one() wakes the longest waiter, notify_all() every one. Switches: no. Any thread.
  void notify_one() noexcept;
  void notify_all() noexcept;

 private:
  bool wait_deadline(std::unique_lock<mutex>& lock, std::int64_t deadline_ns);
  std::mutex mu_;
  detail::waiter_list waiters_;
};

}  // namespace tendril

#endif
