#include "tendril/task/task.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "hub/hub_impl.hpp"
#include "tendril/task/timeout.hpp"

namespace tendril {
namespace detail {
namespace {

std::atomic<std::uint64_t> g_task_number{0};

task_core* core_of_child(hub_child* c) {
  return reinterpret_cast<task_core*>(reinterpret_cast<char*>(c) - offsetof(task_core, child));
}

void start_later(timer_node* t) {
  auto* core = static_cast<task_core*>(t->context);
  hub_impl::current().schedule(core->start);
}

// Drops the task's reference to itself; the record may go with it.
void release_self(task_core& t) noexcept { tendril::greenlet gone = std::move(t.self); }

// Called by the hub once a task's greenlet has died and switched back to it.
void reap(greenlet_record* r) {
  task_core& t = task_of(r);
  if (hub_impl* hub = hub_impl::peek()) hub->disown(t.child);
  release_self(t);
}

bool is_exit(const std::exception_ptr& e) {
  if (!e) return true;
  try {
    std::rethrow_exception(e);
  } catch (const greenlet_exit&) {
    return true;
  } catch (...) {
    return false;
  }
}

// The error handler and the links of a task killed before it started run on its killer's
// greenlet: what interrupts that greenlet there is its own, not their failure. Its kill
// (whatever the exception) stays pending for it, and a scope of its that fired is pending
// again, for its next blocking call.
bool claim_own_interrupt(const std::exception_ptr& e) noexcept {
  greenlet_record* self = thread_state::get().current();
  if (greenlet_record* me = calling_task(); me != nullptr && e == task_of(me).kill_sent) {
    if (!self->interrupt) self->interrupt = e;
    return true;
  }
  try {
    std::rethrow_exception(e);
  } catch (const timeout_error& te) {
    return repend_timeout_of(self, te.source());
  } catch (...) {
  }
  return false;
}

// The task was killed before its body ran: it ends here, without a switch.
void end_unstarted(greenlet_record* r, task_core& t, std::exception_ptr e) noexcept {
  hub_impl* hub = hub_impl::peek();
  if (hub) {
    hub->unschedule(t.start);
    hub->cancel_timer(t.later);
    hub->disown(t.child);  // it has no greenlet left to unwind
  }
  greenlet_discard_unstarted(r);
  if (is_exit(e)) {
    t.successful = true;
    t.killed = true;
  } else {
    t.error = std::move(e);
  }
  task_leave(t);
  release_self(t);
}

// throw_into() on the greenlet of a task not started yet: the task ends as kill(e) would
// end it (gevent's Greenlet.throw). On that of an ended task: nothing, as kill(). Raised in
// its parent, the hub, e would leave the task pending for ever, or end the hub.
void thrown_unstarted_or_dead(greenlet_record* r, std::exception_ptr e) noexcept {
  task_core& t = task_of(r);
  if (t.phase.load(std::memory_order_relaxed) == task_core::pending)
    end_unstarted(r, t, std::move(e));
}

// The hub goes away with its thread: every task still alive is killed.
void shutdown_child(hub_child* c) {
  task_core* t = core_of_child(c);
  greenlet_record* r = t->self.record();
  const task_core::phase_t phase = t->phase.load(std::memory_order_relaxed);
  if (r == nullptr) return;
  if (phase == task_core::pending) {
    end_unstarted(r, *t, nullptr);
    return;
  }
  // Running, or ended and still in the error handler or a link (see task_leave()).
  // Its own wait, or (inside a generator's next()) that of the body parked for it, as kill().
  auto e = std::make_exception_ptr(greenlet_exit{});
  waiter* w = parked_waiter(r);
  if (!(w && w->interrupt(e)) && !r->interrupt) r->interrupt = e;
  // Asked once: its cleanup may then wait with a time limit (waiter::wait()).
  r->asked_to_end = true;
  if (w != nullptr) w->greenlet()->asked_to_end = true;
}

}  // namespace

task_core& task_of(greenlet_record* r) noexcept {
  return *static_cast<task_core*>(greenlet_extra(r));
}

task_core& current_task() { return task_of(thread_state::get().current()); }

greenlet_record* calling_task() noexcept {
  hub_impl* hub = hub_impl::peek();
  if (hub == nullptr) return nullptr;
  // A task is a child of the hub with a task state after its record (task_create()).
  greenlet_record* h = hub->greenlet();
  for (greenlet_record* r = thread_state::get().current(); r != nullptr; r = r->parent) {
    // (A plain greenlet keeps the parent it was made with: if that task has ended, the
    // greenlet runs for another one, which the chain cannot tell.)
    if (r->parent == h && r->extra_destroy != nullptr) {
      return task_of(r).phase.load(std::memory_order_relaxed) == task_core::done ? nullptr : r;
    }
  }
  return nullptr;
}

greenlet_record* task_create(std::size_t body_size, std::size_t body_align, const callable_ops* ops,
                             std::size_t state_size, void (*state_destroy)(void*), void** storage,
                             void** extra) {
  hub_impl& hub = hub_impl::current();
  return greenlet_create_ex(body_size, body_align, ops, hub.greenlet(), 0, state_size,
                            state_destroy, storage, extra, true);
}

void task_abandon(greenlet_record* r) noexcept { greenlet_abandon_create(r); }

namespace {
// The hub could not give a task a stack when it was to start: the task fails with ENOMEM.
void start_failed(greenlet_record* r, int err) noexcept {
  task_core& t = task_of(r);
  std::exception_ptr e;
  try {
    throw std::system_error(err, std::generic_category(),
                            "tendril: no memory for the stack of task '" + record_name(r) + "'");
  } catch (...) {
    e = std::current_exception();
  }
  end_unstarted(r, t, e);
}
}  // namespace

void task_start(greenlet_record* r, std::int64_t deadline_ns) {
  hub_impl& hub = hub_impl::current();
  static const bool hooked = (hub_impl::set_start_failed_hook(&start_failed), true);
  (void)hooked;
  task_core& t = task_of(r);
  t.start.greenlet = r;
  // spawn() passes 0: no need to read the clock (a system call on some machines).
  const bool now = deadline_ns == 0 || deadline_ns <= hub_now_ns();
  // A delay too long for the clock (forever_ns): the task never starts by itself, and no timer
  // keeps the hub from raising loop_exit in a wait that nothing else can end (as sleep does).
  if (!now && deadline_ns != forever_ns) {
    t.later.deadline_ns = deadline_ns;
    t.later.fire = &start_later;
    t.later.context = &t;
    try {
      hub.add_timer(t.later);  // first: the only step that throws
    } catch (...) {
      greenlet_discard_unstarted(r);
      greenlet_abandon_create(r);
      throw;
    }
  }
  t.number = g_task_number.fetch_add(1, std::memory_order_relaxed) + 1;
  r->name_prefix = "Greenlet-";
  r->name_number = t.number;
  r->on_dead = &reap;
  r->on_thrown_unstarted_or_dead = &thrown_unstarted_or_dead;
  greenlet_retain(r);
  t.self = tendril::greenlet(r, tendril::greenlet::adopt_t{});
  t.child.shutdown = &shutdown_child;
  hub.adopt(t.child);
  if (hub.ending()) [[unlikely]] {
    // Spawned by a cleanup while the thread ends: a task that has not started never runs
    // then, and a spawn_later() would keep the thread alive until its time (hub_test's
    // an_ending_thread_never_runs_a_task_a_cleanup_spawns).
    shutdown_child(&t.child);
    return;
  }
  if (now) hub.schedule(t.start);
}

bool task_enter(task_core& t) noexcept {
  if (t.phase.load(std::memory_order_relaxed) != task_core::pending) return false;
  if (t.start.queued() || t.later.armed()) [[unlikely]] {
    // Started by a switch_to() by hand: the hub's start must not come later and resume the
    // task wherever it then waits (task_test's
    // a_task_started_by_hand_is_not_started_again_by_the_hub).
    if (hub_impl* hub = hub_impl::peek()) {
      hub->unschedule(t.start);
      hub->cancel_timer(t.later);
    }
  }
  t.phase.store(task_core::running, std::memory_order_relaxed);
  t.entered.store(true, std::memory_order_relaxed);
  return true;
}

// (The forced unwind of pthread_exit() has no object, which UBSan's null check would report
// when the catch clause binds its reference.)
__attribute__((no_sanitize("undefined"))) void task_leave(task_core& t) noexcept {
  t.phase.store(task_core::done, std::memory_order_release);
  while (waiter* w = t.joiners.pop_front()) w->wake();
  t.observers.notify_all();
  greenlet_record* r = t.self.record();
  // The error handler and the links may block: the task stays among the hub's children until
  // its greenlet is dead (reap()), so that the end of its thread unwinds them too (hub_test's
  // an_ending_thread_unwinds_a_task_blocked_in_its_error_handler_or_a_link). A greenlet_exit
  // that cuts one short stays pending while the rest run, so that none of them blocks again.
  greenlet_record* self = thread_state::get().current();
  std::exception_ptr exit;
  auto keep_exit_pending = [&] {
    if (exit && !self->interrupt) self->interrupt = exit;
  };
  if (t.error && r) {
    try {
      hub_impl::current().report_task_error(record_name(r), t.error,
                                            self == r ? nullptr : &claim_own_interrupt);
    } catch (const greenlet_exit&) {
      exit = std::current_exception();
    }
  }
  // Links run in the order they were added; one that throws is reported and the rest run.
  std::vector<std::function<void()>> links = std::move(t.links);
  t.links.clear();
  for (auto& f : links) {
    keep_exit_pending();
    try {
      f();
    } catch (const greenlet_exit&) {
      exit = std::current_exception();
#if defined(__GLIBCXX__)
    } catch (abi::__forced_unwind&) {
      // pthread_exit() or cancellation: it cannot unwind the thread past the task's stack.
      std::fprintf(stderr,
                   "tendril: pthread_exit() or thread cancellation inside a link callback of "
                   "task '%s': it cannot unwind the thread past the task's own stack\n",
                   r ? record_name(r).c_str() : "?");
      std::abort();
#endif
    } catch (...) {
      if (self == r || !claim_own_interrupt(std::current_exception())) {
        std::fprintf(stderr, "tendril: a link callback of task '%s' threw; ignored\n",
                     r ? record_name(r).c_str() : "?");
      }
    }
  }
  if (self == r) {
    self->interrupt = nullptr;  // the greenlet ends now
  } else {
    keep_exit_pending();  // a kill of the greenlet that ended a task not started yet
  }
}

}  // namespace detail

using detail::task_core;

detail::task_core& task_base::core() const {
  if (g_.empty()) throw std::logic_error("tendril::task: an empty task handle");
  detail::greenlet_record* r = g_.record();
  const detail::thread_state* here = detail::thread_state::peek();
  if (r->owner != here) {
    // Its state belongs to the other thread's hub, which no lock guards. (Named by its
    // number: a name set_name() gave it may be changing in its own thread right now.)
    const std::string id = r->name_prefix ? r->name_prefix + std::to_string(r->name_number)
                                          : "greenlet-" + std::to_string(r->id);
    throw wrong_thread("tendril: task '" + id + "' belongs to thread " +
                       std::to_string(detail::owner_of(r)->tid()) +
                       "; a task handle is for the thread that spawned it (this is thread " +
                       std::to_string(::gettid()) + ")");
  }
  return detail::task_of(r);
}

bool task_base::ready() const noexcept {
  return !g_.empty() &&
         detail::task_of(g_.record()).phase.load(std::memory_order_acquire) == task_core::done;
}
bool task_base::successful() const noexcept {
  return ready() && detail::task_of(g_.record()).successful;
}
std::exception_ptr task_base::exception() const noexcept {
  return ready() ? detail::task_of(g_.record()).error : nullptr;
}
// Not g_.started(): a greenlet discarded before it ran counts as started in the greenlet
// layer (task_test's kill_before_start_never_runs_the_body).
bool task_base::started() const noexcept {
  return !g_.empty() && detail::task_of(g_.record()).entered.load(std::memory_order_relaxed);
}

std::string task_base::name() const {
  core();  // its own thread only: set_name() may be changing it there
  return g_.name();
}
void task_base::set_name(std::string name) {
  core();
  g_.set_name(std::move(name));
}

bool task_base::join_deadline(std::int64_t deadline_ns) {
  task_core& t = core();
  if (t.phase.load(std::memory_order_relaxed) == task_core::done) return true;
  detail::greenlet_record* me = detail::thread_state::get().current();
  if (me == g_.record() || detail::calling_task() == g_.record()) {
    throw std::logic_error("tendril: task '" + name() +
                           "' cannot join itself: it would wait forever");
  }
  detail::waiter w;
  t.joiners.push_back(w);
  struct unlink {
    detail::waiter_list& l;
    detail::waiter& w;
    ~unlink() { l.remove(w); }
  } guard{t.joiners, w};
  return w.wait(deadline_ns);
}

void task_base::kill(std::exception_ptr e, bool block) {
  task_core& t = core();
  if (t.phase.load(std::memory_order_relaxed) == task_core::done) return;
  detail::greenlet_record* r = g_.record();
  if (detail::thread_state::get().current() == r || detail::calling_task() == r) {
    throw std::logic_error("tendril: task '" + name() +
                           "' cannot kill itself (throw greenlet_exit to end it)");
  }
  if (!e) e = std::make_exception_ptr(greenlet_exit{});
  if (t.phase.load(std::memory_order_relaxed) == task_core::pending) {
    detail::end_unstarted(r, t, std::move(e));
    return;
  }
  // The task's own wait, or (switched into a generator's next() or a greenlet it made) the
  // wait of the greenlet parked for it.
  detail::waiter* w = detail::parked_waiter(r);
  // A kill already on its way (it ended the wait the task is still parked in, or is pending)
  // is not doubled: a second greenlet_exit would cut the task's cleanup short at its first
  // blocking call (killall() of a list naming a task twice, kill(false) then kill()).
  const bool on_its_way =
      (w != nullptr && t.kill_sent && w->interrupted_with() == t.kill_sent) || r->interrupt;
  if (!on_its_way) {
    if (w && w->interrupt(e)) {
      t.kill_sent = std::move(e);
    } else {
      r->interrupt = std::move(e);
    }
  }
  if (block) join();
}

void task_base::link(std::function<void()> callback) {
  task_core& t = core();
  if (t.phase.load(std::memory_order_relaxed) == task_core::done) {
    callback();
    return;
  }
  t.links.push_back(std::move(callback));
}

void task_base::observe(detail::observer& o) {
  task_core& t = core();
  if (t.phase.load(std::memory_order_relaxed) == task_core::done) {
    detail::notify_at_once(o);
  } else {
    t.observers.push_back(o);
  }
}

void task_base::unobserve(detail::observer& o) noexcept {
  if (!g_.empty()) detail::task_of(g_.record()).observers.remove(o);
}

}  // namespace tendril
