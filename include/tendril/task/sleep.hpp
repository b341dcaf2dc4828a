// tendril::sleep(), and the current greenlet's name and id (gevent.sleep, and what
// threading.current_thread() shows under gevent's monkey patching).
#ifndef TENDRIL_TASK_SLEEP_HPP
#define TENDRIL_TASK_SLEEP_HPP

#include <chrono>
#include <cstdint>
#include <string>

#include "tendril/hub/deadline.hpp"

namespace tendril {

namespace detail {
void sleep_until_ns(std::int64_t deadline_ns);
void yield_now();
}  // namespace detail

// sleep() blocks only the calling greenlet for d; other greenlets of the thread run
// meanwhile. sleep(0s) (or any d <= 0, or a d that has passed by the time it looks) lets
// every greenlet that is ready run once, in the order they became ready, and then continues;
// so does sleep_until() a time point already past. Switches: yes, always. Throws what
// interrupts the greenlet (greenlet_exit, timeout_error, loop_exit).
template <class Rep, class Period>
void sleep(std::chrono::duration<Rep, Period> d) {
  if (d <= std::chrono::duration<Rep, Period>::zero()) {
    detail::yield_now();
  } else {
    detail::sleep_until_ns(detail::deadline_after(d));
  }
}
template <class Clock, class Duration>
void sleep_until(std::chrono::time_point<Clock, Duration> tp) {
  detail::sleep_until_ns(detail::deadline_at(tp));
}

namespace this_greenlet {
// name() is the running greenlet's name: "Greenlet-N" for a task, "main" for the main
// thread's root, or what set_name() gave. Switches: no.
std::string name();
// get_id() is its id, unique in the process. Switches: no.
std::uint64_t get_id();
}  // namespace this_greenlet

}  // namespace tendril

#endif
