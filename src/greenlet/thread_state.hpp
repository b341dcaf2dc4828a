// The greenlet layer's state of one OS thread: its root greenlet, the running greenlet,
// and the switch itself.
//
// Invariants (each checked where it can break):
//  1. current is never null and never dead; it is the root outside any other greenlet.
//  2. Only current runs; every other active greenlet of the thread is suspended in a jump,
//     with its context in ctx.
//  3. A greenlet is switched to only from its own thread (plan_switch() checks).
//  4. A dead greenlet owns no stack and no callable; its stack went back to the pool from its
//     successor's stack, after the jump (finish()), never from its own.
//  5. The root is never dead while its thread runs, so every chain of parents ends in a live
//     greenlet.
//  6. An inbox is empty except between the plan of a switch and its completion.
#ifndef TENDRIL_SRC_GREENLET_THREAD_STATE_HPP
#define TENDRIL_SRC_GREENLET_THREAD_STATE_HPP

#include <any>
#include <atomic>
#include <exception>
#include <mutex>
#include <vector>

#include "context/context.hpp"
#include "context/sanitizer.hpp"
#include "greenlet/exception_state.hpp"
#include "greenlet/greenlet_record.hpp"

namespace tendril::detail {

// thread_state derives from thread_core, the part of it the inline switch reads and writes
// (include/tendril/greenlet/switch_core.hpp): current_, from_, eh_, errno_, slow_.
class thread_state : public thread_core {
 public:
  // get() is the calling thread's state, made on first use.
  static thread_state& get() {
    thread_state* ts = peek();
    return ts ? *ts : make_for_this_thread();
  }
  // peek() is the calling thread's state, or null if it has none (yet, or any more).
  static thread_state* peek() noexcept { return static_cast<thread_state*>(t_thread_core); }

  greenlet_record* current() const noexcept { return current_; }
  greenlet_record* root() const noexcept { return root_; }
  int tid() const noexcept { return tid_; }
  // made_in_parent() tells whether r was made before this process was forked from its parent
  // (on this thread, the one that forked): such greenlets never run in the child.
  bool made_in_parent(const greenlet_record* r) const noexcept { return r->id < first_own_id_; }
  bool exited() const noexcept { return exited_.load(std::memory_order_acquire); }

  // A switch is plan(), the jump, landed() and take_inbox() (see switch_to()).
  //
  // plan() resolves a dead target to its first live ancestor, hands it `value` and `error`
  // (either may be null), saves the running greenlet's state and makes the target current;
  // a lazy target gets its stack (no memory for it ends the process).
  // Returns where to jump, or to == nullptr when the target is the running greenlet (the
  // value and error then wait in its own inbox).
  switch_plan plan(greenlet_record* target, std::any* value, std::exception_ptr* error) noexcept {
    greenlet_record* self = current_;
    while (target->status == greenlet_status::dead) target = target->parent;
    if (value && value->has_value()) [[unlikely]]
      target->inbox = std::move(*value);
    if (error && *error) [[unlikely]]
      target->pending = std::move(*error);
    if (target == self) [[unlikely]]
      return {nullptr, nullptr, nullptr};
    if (target->ctx == nullptr) [[unlikely]]
      start_lazy(target);
    return plan_fast(target);
  }

  // plan_fast() is plan() for the common case the caller has checked: a live target other
  // than the running greenlet, its value (if any) already in its inbox, no error.
  switch_plan plan_fast(greenlet_record* target) noexcept {
    greenlet_record* self = current_;
    switch_plan p = plan_core(this, target);
    note_leaving(self, target, false);
#if defined(TENDRIL_TSAN_FIBERS)
    p.tsan_fiber = target->tsan_fiber;  // jump_to() switches TSan
#endif
    return p;
  }

  // switched_from() is the greenlet that switched to the running one last.
  greenlet_record* switched_from() const noexcept { return from_; }
  // set_switched_from() lets the hub resume a greenlet from another greenlet's stack in its
  // own name (a hand-off within a pass of its run queue); called between plan and jump.
  void set_switched_from(greenlet_record* r) noexcept { from_ = r; }
  // handing_off() is the greenlet the hub last left for another without going through itself
  // (set_handing_off(), between plan and jump): the jump still pushes onto its stack, and the
  // overflow report must name it then. Null once that greenlet is destroyed.
  greenlet_record* handing_off() const noexcept { return handing_off_; }
  void set_handing_off(greenlet_record* r) noexcept { handing_off_ = r; }
  // forget() drops what this thread remembers of r, which is being destroyed.
  void forget(const greenlet_record* r) noexcept {
    if (from_ == r) from_ = nullptr;
    if (handing_off_ == r) handing_off_ = nullptr;
  }

  // landed() is the first thing a greenlet does on its own stack after a jump.
  void landed([[maybe_unused]] greenlet_record* self) noexcept {
#if defined(TENDRIL_HAS_ASAN)
    asan_landed(self);
#endif
    restore_state(this, core_of(current_));
  }

  // clear_inbox() drops what was handed to the running greenlet (after invalid_switch).
  void clear_inbox() noexcept {
    current_->pending = nullptr;
    current_->inbox.reset();
  }

  // take_inbox() ends a switch: it throws what was raised into the running greenlet, or
  // returns the value it was handed. drop_inbox() is the same for switches without values.
  std::any take_inbox() {
    greenlet_record* self = current_;
    if (self->pending) [[unlikely]]
      raise_pending(self);
    if (!self->inbox.has_value()) [[likely]]
      return {};
    return std::move(self->inbox);
  }
  void drop_inbox() {
    greenlet_record* self = current_;
    if (self->pending) [[unlikely]]
      raise_pending(self);
    if (self->inbox.has_value()) [[unlikely]]
      self->inbox.reset();
  }

  // switch_to() is the whole switch, for tendril's own callers.
  std::any switch_to(greenlet_record* target, std::any&& value, std::exception_ptr&& error) {
    switch_plan p = plan(target, &value, &error);
    if (p.to != nullptr) {
      jump_to(p);
      landed(current_);
    }
    return take_inbox();
  }

  // finish() ends the current greenlet: its result or exception goes to its first live
  // ancestor, which resumes, and its stack is released from there. Never returns.
  [[noreturn]] void finish(greenlet_record* self, std::any&& result,
                           std::exception_ptr&& error) noexcept;

  // defer_destruction() queues a greenlet whose last reference was dropped where it could
  // not be unwound (on another thread, or while it was running) for its own thread. The
  // queue takes over that reference (the count never reached zero), so a greenlet queued
  // twice holds two.
  void defer_destruction(greenlet_record* r) noexcept;
  // run_deferred() unwinds what was queued; a no-op unless something was.
  void run_deferred() noexcept {
    if (has_deferred()) [[unlikely]]
      run_deferred_slow();
  }

  void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept;

 private:
  // The sanitizer notes of a switch away from self (for good: it has ended).
  void note_leaving([[maybe_unused]] greenlet_record* self,
                    [[maybe_unused]] greenlet_record* target,
                    [[maybe_unused]] bool for_good) noexcept {
#if defined(TENDRIL_HAS_ASAN)
    const void* bottom = target->is_root ? root_asan_bottom_ : target->stk.base;
    std::size_t size = target->is_root ? root_asan_size_ : target->stk.size;
    sanitizer::asan_start_switch(for_good ? nullptr : &self->asan_fake_stack, bottom, size);
#endif
#if defined(TENDRIL_HAS_TSAN)
    if (for_good) sanitizer::tsan_switch(target->tsan_fiber);  // else jump_to() does it
#endif
  }

  // start_lazy() gives a lazy greenlet that a switch or an end has to start its stack, or
  // ends the process (callers that can throw give it one first: plan_switch_slow()).
  static void start_lazy(greenlet_record* r) noexcept;

  thread_state();
  ~thread_state();
  static thread_state& make_for_this_thread();
  static void forget_after_fork() noexcept;
  struct holder;
  void asan_landed(greenlet_record* self) noexcept;
  [[noreturn]] static void raise_pending(greenlet_record* self);
  void run_deferred_slow() noexcept;
  void exit_thread() noexcept;

  greenlet_record* root_ = nullptr;
  greenlet_record* handing_off_ = nullptr;  // see handing_off()
#if defined(TENDRIL_HAS_ASAN)
  const void* root_asan_bottom_ = nullptr;  // learned at the first switch away from the root
  std::size_t root_asan_size_ = 0;
#endif
  int tid_ = 0;
  std::uint64_t first_own_id_ = 0;  // see made_in_parent()
  std::atomic<bool> exited_{false};
  std::atomic<std::uint32_t> refs_{1};

  std::mutex deferred_mu_;
  std::vector<greenlet_record*> deferred_;
};

// owner_of() is the thread state a record belongs to.
inline thread_state* owner_of(const greenlet_record* r) noexcept {
  return static_cast<thread_state*>(r->owner);
}

// unwind_at_exit() unwinds every greenlet still suspended on the ending thread, from its root,
// whatever still refers to it: a handle on another thread or in a thread_local, or a cycle of
// handles. Its frames could never run again, and the handles on its stack would keep their
// records (the root's too, and with it this state) for ever.
void unwind_at_exit(thread_state& ts) noexcept;

// destroy_record() frees a record whose last reference is gone and that has no frames to
// unwind (unstarted, dead, or of a thread that ended).
void destroy_record(greenlet_record* r) noexcept;

}  // namespace tendril::detail

#endif
