#include "tendril/task/sleep.hpp"

#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {
namespace detail {

void sleep_until_ns(std::int64_t deadline_ns) {
  waiter w;
  w.wait(deadline_ns);  // nothing wakes it: it returns once the deadline passed
}

void yield_now() {
  // A kill or a timeout that is pending is raised here, as by any other blocking call: the
  // wait below is woken before it starts, so it would let the wake win, and a loop that only
  // yields could never be killed or timed out (sleep_test's
  // a_greenlet_that_only_yields_can_be_killed). A wait whose deadline has passed raises what
  // is pending, or else returns at once.
  greenlet_record* self = thread_state::get().current();
  if (self->interrupt || self->timeouts) {
    waiter check;
    check.wait(0);
  }
  waiter w;
  w.wake();  // ready at once, behind every greenlet that is ready already
  w.wait();
}

}  // namespace detail

namespace this_greenlet {
std::string name() { return detail::record_name(detail::thread_state::get().current()); }
std::uint64_t get_id() { return detail::thread_state::get().current()->id; }
}  // namespace this_greenlet

}  // namespace tendril
