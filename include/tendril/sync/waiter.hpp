// tendril::detail::waiter: one parked greenlet's wake slot, the single park/wake primitive
// every blocking call of tendril is built on (gevent's Waiter). Not API: public only because
// the templates (queue<T>, async_result<T>, task<R>) embed it.
//
// A waiter lives on the stack of the greenlet that waits in it. Exactly one of these ends a
// wait, whichever comes first:
//   wake()        what the greenlet waited for happened (any thread)
//   the deadline  the wait's own time limit passed
//   interrupt(e)  a kill, a timeout scope or loop_exit raises e in the greenlet
// The others then lose: a later wake is ignored by the waiter (the object that woke it can
// tell: wake() returns false), and a lost interrupt stays pending in the greenlet (or its
// timeout scope) and is raised at its next blocking call. Nothing that was handed to a
// waiter is therefore ever lost.
#ifndef TENDRIL_SYNC_WAITER_HPP
#define TENDRIL_SYNC_WAITER_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>

#include "tendril/hub/deadline.hpp"
#include "tendril/hub/nodes.hpp"
#include "tendril/sync/observer.hpp"

namespace tendril::detail {

class hub_impl;

class waiter {
 public:
  enum state : std::uint8_t { waiting, woken, timed_out, interrupted, cancelled };

  // A waiter belongs to the current greenlet and the current thread's hub (which it starts).
  // cross_thread: whether wake() may come from another thread (events, async results,
  // semaphores): the state then changes with atomic operations, and the hub counts the wait
  // as one another thread might end (it will not raise loop_exit while other threads live).
  // shielded: the wait cannot be interrupted (a kill or timeout stays pending for the next
  // blocking call); for the few waits that must complete, such as retaking a mutex.
  explicit waiter(bool cross_thread = false, bool shielded = false);
  waiter(const waiter&) = delete;
  waiter& operator=(const waiter&) = delete;
  ~waiter();

  // wait() parks the greenlet until the waiter is woken (returns true), the deadline (hub
  // clock, forever_ns for none) passes (returns false), or an interrupt arrives (throws it).
  // A pending interrupt is raised at once, before parking, unless the waiter was woken
  // already. A deadline already past returns false without parking. While the thread ends
  // (the hub unwinds its greenlets), a wait that is not shielded throws greenlet_exit at once
  // in a greenlet the thread's end has not asked to stop yet; one it asked waits, and gets
  // loop_exit if only I/O or another thread is left that could end it
  // (hub_impl::end_unbounded_waits()). Call once. Switches: yes.
  bool wait(std::int64_t deadline_ns = forever_ns);

  // claim() takes the waiter for a wake without scheduling it yet (so that the waker can
  // hand it something first); false if something else ended the wait. schedule() then
  // resumes its greenlet. wake() is both. Any thread for cross-thread waiters, the hub's
  // thread otherwise.
  bool claim() noexcept { return transition(woken); }
  void schedule() noexcept;
  bool wake() noexcept {
    if (!claim()) return false;
    schedule();
    return true;
  }

  // interrupt() ends the wait by raising e, if nothing else ended it first. Hub thread.
  bool interrupt(std::exception_ptr e) noexcept;

  state current_state() const noexcept { return state_.load(std::memory_order_acquire); }
  // What interrupt() ended the wait with, until the greenlet resumes and raises it. Hub thread.
  const std::exception_ptr& interrupted_with() const noexcept { return error_; }
  greenlet_record* greenlet() const noexcept { return node_.greenlet; }
  // The hub of the greenlet that waits.
  hub_impl* hub() const noexcept { return hub_; }

  // Intrusive links for the wait list of the object waited on, and a word for that object's
  // own use (a queue keeps a pointer to the item slot here).
  waiter* prev = nullptr;
  waiter* next = nullptr;
  bool linked = false;
  void* payload = nullptr;
  // Set by the woken_batch that woke it once the waker no longer touches the object.
  std::atomic<bool> waker_gone{false};

 private:
  bool transition(state to) noexcept {
    if (cross_thread_) {
      state expected = waiting;
      return state_.compare_exchange_strong(expected, to, std::memory_order_acq_rel);
    }
    if (state_.load(std::memory_order_relaxed) != waiting) return false;
    state_.store(to, std::memory_order_relaxed);
    return true;
  }
  static void on_deadline(timer_node* t);
  void finish_wait() noexcept;

  ready_node node_;
  timer_node timer_;
  std::atomic<state> state_{waiting};
  bool cross_thread_;
  bool shielded_;
  hub_impl* hub_;
  std::exception_ptr error_;
};

// parked_waiter() is the waiter g is parked in; for a greenlet inside a generator's next(),
// that of the generator's body if it is parked (it runs for g). Null if none is. Hub thread.
waiter* parked_waiter(greenlet_record* g) noexcept;

// pending_owner() is the greenlet whose pending kill or fired timeout a blocking call of g
// raises: g's own, else (g a generator's body, which runs for its consumer) its consumer's.
// Null if nothing is pending. Hub thread.
greenlet_record* pending_owner(greenlet_record* g) noexcept;

// An intrusive FIFO of waiters. Not thread-safe by itself: the owning object guards it.
class waiter_list {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept {
    std::size_t n = 0;
    for (const waiter* w = head_; w != nullptr; w = w->next) ++n;
    return n;
  }
  waiter* front() const noexcept { return head_; }
  void push_back(waiter& w) noexcept {
    w.prev = tail_;
    w.next = nullptr;
    (tail_ ? tail_->next : head_) = &w;
    tail_ = &w;
    w.linked = true;
  }
  // remove() unlinks w if it is in this list (a no-op otherwise).
  void remove(waiter& w) noexcept {
    if (!w.linked) return;
    (w.prev ? w.prev->next : head_) = w.next;
    (w.next ? w.next->prev : tail_) = w.prev;
    w.prev = w.next = nullptr;
    w.linked = false;
  }
  waiter* pop_front() noexcept {
    waiter* w = head_;
    if (w) remove(*w);
    return w;
  }

 private:
  waiter* head_ = nullptr;
  waiter* tail_ = nullptr;
};

// this_thread_token() identifies the calling thread (the address of a thread_local of its
// own).
std::uintptr_t this_thread_token() noexcept;

// this_thread_hub() is the calling thread's hub, null if it has none.
hub_impl* this_thread_hub() noexcept;

// An object whose waits may be woken from any thread, and that either side may destroy as
// soon as its own call returned (the waker once set() or release() returned, a waiter once its
// wait did), wakes through a woken_batch declared before its lock guard: the batch lets each
// waiter it woke go only once that guard has unlocked, the waker's last touch of the object.
// The woken waiter checks let_go() and, if true, never touches the object again; so do the
// observers of wait() and iwait() that the batch notifies (observer.hpp). A waiter of
// the waker's own thread is let go at once: its greenlet cannot run before the waker's call
// returns (and a second pass over many waiters' stacks cost 18% of an event broadcast).
class woken_batch {
 public:
  woken_batch() noexcept : here_(this_thread_hub()) {}
  woken_batch(const woken_batch&) = delete;
  woken_batch& operator=(const woken_batch&) = delete;
  ~woken_batch() {
    while (waiter* w = head_) {
      head_ = w->next;  // read first: once let go, w may be gone
      w->next = nullptr;
      w->waker_gone.store(true, std::memory_order_release);
    }
    while (observer* o = observers_) {
      observers_ = o->next;
      o->next = nullptr;
      o->state.store(observer::let_go, std::memory_order_release);
    }
  }
  // claim() is w.claim(), keeping a claimed w to let go; the caller then schedules it.
  bool claim(waiter& w) noexcept {
    if (!w.claim()) return false;
    if (w.hub() == here_) {
      w.waker_gone.store(true, std::memory_order_relaxed);
    } else {
      w.next = head_;  // w is off the object's list, its links free
      head_ = &w;
    }
    return true;
  }
  bool wake(waiter& w) noexcept {
    if (!claim(w)) return false;
    w.schedule();
    return true;
  }
  // notify_all() unlinks and notifies every observer in l, to let go with the waiters. The
  // state is stored before notify(), whose wake orders it before the observer's let_go().
  void notify_all(observer_list& l) noexcept {
    while (observer* o = l.pop_front()) {
      o->state.store(observer::notifying, std::memory_order_relaxed);
      o->notify(o);
      o->next = observers_;  // o is off the object's list, its links free
      observers_ = o;
    }
  }

 private:
  hub_impl* const here_;
  waiter* head_ = nullptr;
  observer* observers_ = nullptr;
};

// wait_for_waker() waits (yielding the thread) until a woken_batch of another thread lets w go.
void wait_for_waker(const waiter& w) noexcept;

// let_go() is true if a woken_batch woke w, once its waker no longer touches the object. A
// wake from this thread has returned by the time w's greenlet resumes; one from another
// thread may still be inside, about to unlock, and is waited for.
inline bool let_go(const waiter& w) noexcept {
  if (w.current_state() != waiter::woken) return false;
  if (!w.waker_gone.load(std::memory_order_acquire)) [[unlikely]]
    wait_for_waker(w);
  return true;
}

// wait_for_notifier() waits (yielding the thread) until a woken_batch of another thread lets o
// go.
void wait_for_notifier(const observer& o) noexcept;

// let_go() is true if an object notified o, once that call no longer touches the object: o is
// then off the object's list, and the object may be gone. False if o was not notified as far
// as this thread can tell: one on its way has readied nothing handed out yet, so the object
// is alive by contract, and taking its lock settles which came first.
inline bool let_go(const observer& o) noexcept {
  const observer::phase p = o.state.load(std::memory_order_acquire);
  if (p == observer::watching) return false;
  if (p == observer::notifying) [[unlikely]]
    wait_for_notifier(o);
  return true;
}

// destroyed_while_waited() stops the process: an object (type, such as "tendril::event") was
// destroyed while n greenlets wait in it, which would leave each to unlink itself from freed
// memory when it resumes. Called by the destructors, which check only whether a list is empty.
[[noreturn]] void destroyed_while_waited(const char* type, std::size_t n) noexcept;

}  // namespace tendril::detail

#endif
