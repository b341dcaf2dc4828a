#include "tendril/sync/waiter.hpp"

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "greenlet/greenlet_record.hpp"
#include "hub/hub_impl.hpp"
#include "tendril/hub/exceptions.hpp"
#include "tendril/task/timeout.hpp"

namespace tendril::detail {
namespace {

bool has_pending_interrupt(greenlet_record* g) noexcept { return g->interrupt || g->timeouts; }

// Raises what is pending for g: a kill first, then the outermost timeout scope that fired.
// Returns normally if nothing turned out to be pending (scopes that did not fire).
void raise_pending_interrupt(greenlet_record* g) {
  if (g->interrupt) {
    std::exception_ptr e = std::move(g->interrupt);
    g->interrupt = nullptr;
    std::rethrow_exception(std::move(e));
  }
  if (timeout* t = pending_timeout(g)) throw take_pending_timeout(t);
}

bool pending_for_real(greenlet_record* g) noexcept { return g->interrupt || pending_timeout(g); }

// Whether the end of g's thread asked g to stop, or (g a generator's body) its consumer.
bool asked_to_end(const greenlet_record* g) noexcept {
  for (const greenlet_record* r = g; r != nullptr; r = r->parent) {
    if (r->asked_to_end) return true;
    if (!r->generator_body) break;
  }
  return false;
}

}  // namespace

// A kill or a timeout that came while the consumer was inside next() is raised at the first
// blocking call made for it.
greenlet_record* pending_owner(greenlet_record* g) noexcept {
  for (greenlet_record* r = g; r != nullptr; r = r->parent) {
    if (has_pending_interrupt(r) && pending_for_real(r)) return r;
    if (!r->generator_body) break;
  }
  return nullptr;
}

namespace {

// The hub's way to deliver loop_exit (and anything else) to a parked greenlet.
bool interrupt_parked(greenlet_record* g, std::exception_ptr e) {
  auto* w = static_cast<waiter*>(g->waiter);
  return w != nullptr && w->interrupt(std::move(e));
}

}  // namespace

waiter::waiter(bool cross_thread, bool shielded)
    : cross_thread_(cross_thread), shielded_(shielded), hub_(&hub_impl::current()) {
  static const bool hooked = (hub_impl::set_interrupt_hook(&interrupt_parked), true);
  (void)hooked;
  node_.greenlet = hub_->threads().current();
}

waiter::~waiter() {
  if (node_.queued()) hub_->unschedule(node_);
  if (timer_.armed()) hub_->cancel_timer(timer_);
}

void waiter::schedule() noexcept {
  if (hub_impl::peek() == hub_) {
    hub_->schedule(node_);
  } else {
    hub_->schedule_remote(node_);
  }
}

bool waiter::interrupt(std::exception_ptr e) noexcept {
  if (shielded_ || !transition(interrupted)) return false;
  error_ = std::move(e);
  schedule();
  return true;
}

void waiter::on_deadline(timer_node* t) {
  auto* w = static_cast<waiter*>(t->context);
  if (w->transition(timed_out)) w->schedule();
}

void waiter::finish_wait() noexcept {
  if (timer_.armed()) hub_->cancel_timer(timer_);
  if (cross_thread_) hub_->add_cross_thread_waits(-1);
  if (shielded_) hub_->add_shielded_waits(-1);
  node_.greenlet->waiter = nullptr;
}

std::uintptr_t this_thread_token() noexcept {
  static thread_local const char token = 0;
  return reinterpret_cast<std::uintptr_t>(&token);
}

hub_impl* this_thread_hub() noexcept { return hub_impl::peek(); }

void wait_for_waker(const waiter& w) noexcept {
  while (!w.waker_gone.load(std::memory_order_acquire)) std::this_thread::yield();
}

void wait_for_notifier(const observer& o) noexcept {
  while (o.state.load(std::memory_order_acquire) != observer::let_go) std::this_thread::yield();
}

void destroyed_while_waited(const char* type, std::size_t n) noexcept {
  std::fprintf(stderr, "tendril: a %s destroyed while %zu greenlet%s in it\n", type, n,
               n == 1 ? " waits" : "s wait");
  std::abort();
}

waiter* parked_waiter(greenlet_record* g) noexcept {
  if (g->waiter != nullptr) return static_cast<waiter*>(g->waiter);
  // Inside a generator's next(), not parked: the generator's body may be parked for it.
  for (greenlet_record* c = g->first_child; c != nullptr; c = c->next_sibling) {
    if (!c->generator_body) continue;
    if (waiter* w = parked_waiter(c)) return w;
  }
  return nullptr;
}

bool waiter::wait(std::int64_t deadline_ns) {
  greenlet_record* self = node_.greenlet;
  greenlet_record* owner = nullptr;
  if (!shielded_ && (owner = pending_owner(self)) != nullptr) [[unlikely]] {
    // Woken already: the interrupt stays pending for the next blocking call.
    if (transition(cancelled)) raise_pending_interrupt(owner);
  } else if (current_state() == waiting && deadline_ns != forever_ns &&
             deadline_ns <= hub_now_ns()) {
    if (transition(timed_out)) return false;
  } else if (!shielded_ && hub_->ending() && current_state() == waiting && !asked_to_end(self))
      [[unlikely]] {
    // Its thread is ending and the hub unwinds its greenlets. One never asked to stop (it
    // was not parked when the drain began: a greenlet its parked child ended into) gets
    // greenlet_exit now, once, or it could go on for ever (hub_test's
    // an_ending_thread_stops_a_greenlet_that_blocks_after_its_parked_child_was_unwound).
    // One that was asked and caught it may wait: the drain ends its wait with loop_exit
    // once nothing but I/O or another thread could (hub_impl::end_unbounded_waits()).
    if (transition(cancelled)) {
      self->asked_to_end = true;
      throw greenlet_exit{};
    }
  } else if (current_state() == waiting && deadline_ns != forever_ns) {
    timer_.deadline_ns = deadline_ns;
    timer_.fire = &on_deadline;
    timer_.context = this;
    hub_->add_timer(timer_);
  }
  // Park even when already woken: the wake scheduled this greenlet, and only the hub may
  // take it off the run queue by resuming it.
  if (cross_thread_) hub_->add_cross_thread_waits(1);
  if (shielded_) hub_->add_shielded_waits(1);
  self->waiter = this;
  // Switched in by someone else (invalid_switch) or parked on the hub itself: end the wait
  // here, taking the node back if a wake got it scheduled meanwhile. True if a waker had
  // claimed the wait first.
  auto end_here = [this] {
    const bool claimed = !transition(cancelled) && current_state() == woken;
    if (node_.queued()) hub_->unschedule(node_);
    finish_wait();
    return claimed;
  };
  try {
    hub_->park();
  } catch (const invalid_switch&) {
    if (end_here()) {
      // The wake came first and may have handed this greenlet something (a permit, a lock,
      // an item taken from its put): the wait succeeded. The intruder's error is raised at
      // the next blocking call instead, as a lost interrupt is (unless a kill is pending).
      if (!self->interrupt) self->interrupt = std::current_exception();
      return true;
    }
    throw;
  } catch (...) {
    end_here();
    throw;
  }
  finish_wait();
  switch (current_state()) {
    case woken:
      return true;
    case timed_out:
      return false;
    default: {
      std::exception_ptr e = std::move(error_);
      error_ = nullptr;
      std::rethrow_exception(std::move(e));
    }
  }
}

}  // namespace tendril::detail
