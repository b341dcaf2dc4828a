#include "tendril/task/timeout.hpp"

#include <cstddef>
#include <new>

#include "greenlet/greenlet_record.hpp"
#include "hub/hub_impl.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {

timeout::timeout(std::int64_t deadline_ns, int) {
  detail::hub_impl& hub = detail::hub_impl::current();
  owner_ = hub.threads().current();
  outer_ = static_cast<timeout*>(owner_->timeouts);
  if (deadline_ns != detail::forever_ns) {
    timer_.deadline_ns = deadline_ns;
    timer_.fire = &on_fire;
    timer_.context = this;
    hub.add_timer(timer_);  // may throw: before the greenlet's chain points here
  }
  owner_->timeouts = this;
}

timeout::~timeout() {
  cancel();
  // Normally the innermost scope; tolerate others (a scope kept past an inner one).
  auto** link = reinterpret_cast<timeout**>(&owner_->timeouts);
  while (*link && *link != this) link = &(*link)->outer_;
  if (*link == this) *link = outer_;
}

void timeout::cancel() noexcept {
  if (timer_.armed()) {
    if (detail::hub_impl* hub = detail::hub_impl::peek()) hub->cancel_timer(timer_);
  }
  timer_.fire = nullptr;  // never re-armed (rearm_after_fork())
  pending_ = false;
}

void timeout::rearm_after_fork() noexcept {
  // The process forked inside the scope: the parent's hub, abandoned, disarmed the timer. The
  // deadline is on the same clock in the child, and the scope limits the child's work too.
  if (detail::hub_impl* hub = detail::hub_impl::peek()) {
    try {
      hub->add_timer(timer_);
      return;
    } catch (const std::bad_alloc&) {
    }
  }
  // No room for the timer: the scope ends early rather than never.
  fired_ = pending_ = true;
}

void timeout::on_fire(detail::timer_node* t) {
  auto* self = static_cast<timeout*>(t->context);
  self->fired_ = true;
  // Its greenlet's wait, or that of the greenlet parked for it (a generator body it runs).
  detail::waiter* w = detail::parked_waiter(self->owner_);
  if (w != nullptr && w->interrupt(std::make_exception_ptr(timeout_error(self)))) return;
  // Its greenlet is running or about to: the next blocking call inside the scope raises it.
  self->pending_ = true;
}

namespace detail {

timeout* pending_timeout(greenlet_record* g) noexcept {
  timeout* found = nullptr;
  for (auto* t = static_cast<timeout*>(g->timeouts); t; t = t->outer_) {
    // A scope that still has to fire but has no timer lost it in a fork (the waits of the
    // greenlet that forked, in the child, all come here first).
    if (t->timer_.fire != nullptr && !t->fired_ && !t->timer_.armed()) [[unlikely]]
      t->rearm_after_fork();
    if (t->pending_) found = t;
  }
  return found;
}

void repend_timeout(timeout* t) noexcept { t->pending_ = true; }

bool repend_timeout_of(greenlet_record* g, const timeout* t) noexcept {
  for (auto* s = static_cast<timeout*>(g->timeouts); s; s = s->outer_) {
    if (s == t) {
      s->pending_ = true;
      return true;
    }
  }
  return false;
}

timeout_error take_pending_timeout(timeout* t) noexcept {
  t->pending_ = false;
  return timeout_error(t);
}

}  // namespace detail
}  // namespace tendril
