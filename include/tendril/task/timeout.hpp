// tendril::timeout: a time limit on every blocking call a greenlet makes within a scope
// (gevent's Timeout), and with_timeout().
#ifndef TENDRIL_TASK_TIMEOUT_HPP
#define TENDRIL_TASK_TIMEOUT_HPP

#include <chrono>
#include <functional>
#include <utility>

#include "tendril/hub/deadline.hpp"
#include "tendril/hub/nodes.hpp"

namespace tendril {

class timeout;
class timeout_error;

namespace detail {
struct greenlet_record;
// For the waiter: the outermost scope of g that fired while g was not parked, or null. It
// first re-arms, on the thread's new hub, the scopes a fork() left without their timer.
timeout* pending_timeout(greenlet_record* g) noexcept;
// Takes that scope's pending state and returns the error to raise.
timeout_error take_pending_timeout(timeout* t) noexcept;
// Marks a scope that fired as pending again (the hooks could not raise it through C code).
void repend_timeout(timeout* t) noexcept;
// The same if t is one of g's scopes; false (nothing done) if it is not.
bool repend_timeout_of(greenlet_record* g, const timeout* t) noexcept;
}  // namespace detail

// timeout_error is what a blocking call throws when a timeout scope of its greenlet ran
// out. It does not derive from std::exception, so that `catch (const std::exception&)` in
// user code does not swallow it (gevent's Timeout is a BaseException). source() is the scope
// that fired: with nested scopes, each fires its own.
class timeout_error {
 public:
  explicit timeout_error(const timeout* source) noexcept : source_(source) {}
  const timeout* source() const noexcept { return source_; }
  const char* what() const noexcept { return "tendril::timeout_error: a timeout scope ran out"; }

 private:
  const timeout* source_;
};

// timeout t(d) limits the greenlet that makes it: once d has passed, its blocking call then
// under way, or its next one while t lives, throws timeout_error with source() == &t. The
// scope fires once. Negative durations fire at once; a duration too large for the clock
// never fires. Destroying t (leaving the scope) cancels it. Must be made and destroyed by
// the same greenlet; scopes nest. Switches: no.
class timeout {
 public:
  template <class Rep, class Period>
  explicit timeout(std::chrono::duration<Rep, Period> d) : timeout(detail::deadline_after(d), 0) {}
  template <class Clock, class Duration>
  explicit timeout(std::chrono::time_point<Clock, Duration> tp)
      : timeout(detail::deadline_at(tp), 0) {}
  ~timeout();
  timeout(const timeout&) = delete;
  timeout& operator=(const timeout&) = delete;

  // fired() is true once the time ran out (whether or not a call was interrupted yet).
  bool fired() const noexcept { return fired_; }
  // cancel() stops it early; a pending, undelivered timeout_error of this scope is dropped.
  void cancel() noexcept;

 private:
  friend timeout* detail::pending_timeout(detail::greenlet_record* g) noexcept;
  friend timeout_error detail::take_pending_timeout(timeout* t) noexcept;
  friend void detail::repend_timeout(timeout* t) noexcept;
  friend bool detail::repend_timeout_of(detail::greenlet_record* g, const timeout* t) noexcept;
  timeout(std::int64_t deadline_ns, int);
  static void on_fire(detail::timer_node* t);
  // rearm_after_fork() gives the scope's timer to the child's hub (see pending_timeout()).
  void rearm_after_fork() noexcept;

  detail::timer_node timer_;
  detail::greenlet_record* owner_;
  timeout* outer_ = nullptr;
  bool fired_ = false;
  bool pending_ = false;  // fired while its greenlet was not parked: raise at the next block
};

// with_timeout() calls f(args...) inside a timeout scope of d and returns its result; if the
// time runs out first, the timeout_error reaches the caller (its source() names the scope,
// which no longer exists by then: catch it by type).
template <class Rep, class Period, class F, class... Args>
decltype(auto) with_timeout(std::chrono::duration<Rep, Period> d, F&& f, Args&&... args) {
  timeout t(d);
  return std::invoke(std::forward<F>(f), std::forward<Args>(args)...);
}

}  // namespace tendril

#endif
