#include "tendril/task/sleep.hpp"

#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "hub/hub_impl.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {
namespace detail {

void sleep_until_ns(std::int64_t deadline_ns) {
  // Always through the hub, as gevent's sleep: a loop of sleeps too short to wait (1 ns, or
  // until a time gone by) must not starve the timers and greenlets that would end it
  // (sleep_test's a_loop_of_tiny_sleeps_cannot_starve_a_timer). A deadline already past is
  // sleep(0); one still ahead gets a timer that wakes the waiter, not the waiter's own
  // deadline, which returns without parking once passed, as it may be by the time it looks.
  if (deadline_ns <= hub_now_ns()) {
    yield_now();
    return;
  }
  waiter w;
  if (deadline_ns == forever_ns) {
    w.wait();  // no timer: nothing keeps the hub from raising loop_exit
    return;
  }
  hub_impl& hub = hub_impl::current();
  timer_node t;
  t.deadline_ns = deadline_ns;
  t.fire = [](timer_node* self) { static_cast<waiter*>(self->context)->wake(); };
  t.context = &w;
  hub.add_timer(t);
  struct cancel {
    hub_impl& h;
    timer_node& t;
    ~cancel() {
      if (t.armed()) h.cancel_timer(t);
    }
  } guard{hub, t};
  w.wait();
}

void yield_now() {
  // A kill or a timeout that is pending is raised here, as by any other blocking call: the
  // wait below is woken before it starts, so it would let the wake win, and a loop that only
  // yields could never be killed or timed out, nor could the consumer a generator's body
  // yields for (sleep_test's a_greenlet_that_only_yields_can_be_killed and
  // a_generator_body_that_only_yields_is_ended_by_its_consumers_kill_or_timeout). A wait
  // whose deadline has passed raises what is pending.
  if (pending_owner(thread_state::get().current()) != nullptr) {
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
