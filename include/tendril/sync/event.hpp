// tendril::event: a flag that greenlets wait for (gevent.event.Event).
#ifndef TENDRIL_SYNC_EVENT_HPP
#define TENDRIL_SYNC_EVENT_HPP

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

#include "tendril/hub/deadline.hpp"
#include "tendril/sync/observer.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {

// event: set() wakes every greenlet waiting, and later waits return at once until clear().
// set(), clear() and is_set() may be called from any thread: set() from another thread wakes
// the waiters through their own hubs. Waiters in several threads are allowed. Once wait() (or
// is_set() true) has returned, the caller may destroy the event even if the set() of another
// thread that ended the wait has not returned yet: that set() no longer touches it. Once a
// set() returned, its thread may destroy the event too while the greenlets it woke have yet
// to resume: they no longer touch it either.
class event {
 public:
  event() = default;
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  // Destroying it while greenlets wait in it (wait(), or wait() and iwait() over several
  // objects) stops the process with a message: they could never return.
  ~event();

  // set() sets the flag and wakes every waiter (even those that will find it cleared again
  // by the time they run: they return true). Switches: no. Any thread.
  void set();
  // clear() resets the flag. Switches: no. Any thread.
  void clear();
  // is_set() reads the flag. Switches: no. Any thread.
  bool is_set() const noexcept;

  // wait() blocks until the flag is set (at once if it is). Switches: yes. Throws what
  // interrupts the greenlet (greenlet_exit, timeout_error, loop_exit).
  void wait() { wait_deadline(detail::forever_ns); }
  // wait_for() / wait_until() return true once set, false if the time ran out first.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    return wait_deadline(detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool wait_until(std::chrono::time_point<Clock, Duration> tp) {
    return wait_deadline(detail::deadline_at(tp));
  }

  // For wait() and iwait() over several objects.
  bool ready() const noexcept { return is_set(); }
  void observe(detail::observer& o);
  void unobserve(detail::observer& o) noexcept;

 private:
  bool wait_deadline(std::int64_t deadline_ns);

  // 0 while clear; once set, a token of the thread whose set() set it, so that a reader of
  // another thread knows that set() may still be inside (event.cpp, is_set()).
  std::atomic<std::uintptr_t> flag_{0};
  mutable std::mutex mu_;
  detail::waiter_list waiters_;
  detail::observer_list observers_;
};

}  // namespace tendril

#endif
