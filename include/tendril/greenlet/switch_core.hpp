// The part of a greenlet and of its thread that every switch reads and writes, and the fast
// path of the switch over it, inline so that greenlet::switch_to() and generator make no call
// but the jump (include/tendril/context/jump.hpp says why the jump itself is inline; this is
// the bookkeeping around it). Nothing here is API: src/greenlet/ owns both structures and
// keeps their other fields to itself (greenlet_record.hpp, thread_state.hpp).
//
// A switch from A to B when every check passes (otherwise the out-of-line functions of
// src/greenlet/greenlet.cpp do all of it, with the same steps):
//   plan   B becomes active and current; A's errno and C++ exception state go into A.
//   jump   context::jump() saves A's context in A.ctx and resumes B.ctx.
//   land   B restores its errno and exception state; a value handed to it or an exception
//          raised into it (its inbox) is taken out of line, when there is one.
// Under ASan or TSan every switch takes the out-of-line path, where the sanitizers' fiber
// notes are made (src/context/sanitizer.hpp); code that includes this header must be built
// with the same sanitizer settings as the library.
#ifndef TENDRIL_GREENLET_SWITCH_CORE_HPP
#define TENDRIL_GREENLET_SWITCH_CORE_HPP

#include <any>
#include <atomic>
#include <cstdint>
#include <exception>

#include "tendril/context/jump.hpp"

#if defined(__SANITIZE_THREAD__)
#define TENDRIL_TSAN_FIBERS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TENDRIL_TSAN_FIBERS 1
#endif
#endif
#if defined(TENDRIL_TSAN_FIBERS)
extern "C" void __tsan_switch_to_fiber(void* fiber, unsigned flags);
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TENDRIL_SWITCH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TENDRIL_SWITCH_ASAN 1
#endif
#endif

// 1 when the switch's fast path is inline (every build but ASan and TSan ones).
#if defined(TENDRIL_TSAN_FIBERS) || defined(TENDRIL_SWITCH_ASAN)
#define TENDRIL_SWITCH_INLINE 0
#else
#define TENDRIL_SWITCH_INLINE 1
#endif

namespace tendril::detail {

struct greenlet_record;

enum class greenlet_status : std::uint8_t {
  unstarted,  // made, never switched to: ctx is a made context, the callable is alive
  active,     // running (the thread's current) or suspended in a switch
  dead,       // run returned or threw, or killed before starting: no stack, no callable
};

// The C++ runtime's per-thread exception state that each greenlet keeps its own copy of
// (src/greenlet/exception_state.hpp): the exceptions being handled and the count in flight.
struct exception_state {
  void* caught = nullptr;     // __cxa_eh_globals::caughtExceptions
  unsigned int uncaught = 0;  // __cxa_eh_globals::uncaughtExceptions
};

// The prefix of __cxa_eh_globals that libstdc++ and libc++abi share.
struct eh_globals_prefix {
  void* caught;
  unsigned int uncaught;
};

// thread_core is the switch's part of a thread's state (the base of thread_state).
//
// current_ and from_ are kept apart: side by side, compilers (GCC from -O2) merge the two
// stores of every switch into one 16-byte vector store, and the resumed side's 8-byte load
// of current_ from it cannot be forwarded from the store buffer on this project's machine
// (AMD Zen 5): a switch measured 3.6 ns instead of 3.2 (docs/benchmarks.md).
struct thread_core {
  greenlet_record* current_ = nullptr;  // the running greenlet, never null once made
  eh_globals_prefix* eh_ = nullptr;     // this thread's __cxa_eh_globals
  int* errno_ = nullptr;                // this thread's errno
  greenlet_record* from_ = nullptr;     // the greenlet that switched to it last
  // Set when another thread queued a greenlet of this one for unwinding: the next switch
  // runs it (out of line).
  std::atomic<bool> has_deferred_{false};
};

static_assert(__builtin_offsetof(thread_core, from_) !=
                  __builtin_offsetof(thread_core, current_) + sizeof(void*),
              "current_ and from_ must not be adjacent (see thread_core)");

// The calling thread's state, null until it first uses a greenlet and after it exited.
extern constinit thread_local thread_core* t_thread_core __attribute__((tls_model("initial-exec")));

// switch_core is the switch's part of a greenlet's record (the first base of
// greenlet_record, at offset 0, which src/greenlet/greenlet_record.hpp checks).
struct switch_core {
  thread_core* owner = nullptr;       // its thread's state, which it holds a reference on
  greenlet_record* parent = nullptr;  // null only for roots
  void* ctx = nullptr;  // where it resumes (unstarted: its made context, once it has a stack)
  greenlet_status status = greenlet_status::unstarted;
  int saved_errno = 0;         // saved while it is not running
  exception_state eh;          // saved while it is not running
  std::any inbox;              // the value of the switch that resumes it
  std::exception_ptr pending;  // raised at its switch point when it resumes
};

inline switch_core* core_of(greenlet_record* r) noexcept {
  return reinterpret_cast<switch_core*>(r);
}

// A switch is plan, jump, land. The plan says where to jump: to == nullptr means no jump
// (the target is the running greenlet itself).
//
// Under ThreadSanitizer the plan also names the target's TSan fiber, and jump_to() switches
// TSan to it in the same frame as the jump: a switch made inside the out-of-line plan would
// pop the plan's own TSan frame off the target's shadow stack instead of the caller's.
struct switch_plan {
  void** save;
  void* to;
#if defined(TENDRIL_TSAN_FIBERS)
  void* tsan_fiber = nullptr;
#endif
};

[[gnu::always_inline]] inline void jump_to(const switch_plan& p) noexcept {
#if defined(TENDRIL_TSAN_FIBERS)
  __tsan_switch_to_fiber(p.tsan_fiber, 0);
#endif
  context::jump(p.save, p.to, nullptr);
}

// plan_core() is the plan of a switch from the running greenlet to `target`, a live greenlet
// of thread t other than the running one that has a context, its inbox already filled.
[[gnu::always_inline]] inline switch_plan plan_core(thread_core* t,
                                                    greenlet_record* target) noexcept {
  switch_core* self = core_of(t->current_);
  switch_core* to = core_of(target);
  to->status = greenlet_status::active;
  self->eh.caught = t->eh_->caught;
  self->eh.uncaught = t->eh_->uncaught;
  self->saved_errno = *t->errno_;
  t->from_ = t->current_;
  t->current_ = target;
  return {&self->ctx, to->ctx};
}

// land_core() is the first thing a greenlet does on its own stack after a jump: its errno and
// exception state come back. Returns whether its inbox holds something to take. The inline
// paths pass t_thread_core read afresh: keeping the planning side's pointers across the jump
// instead measured slower (6.4 against 5.3 ns a switch), since they would be spilled before it.
[[gnu::always_inline]] inline bool land_core(thread_core* t) noexcept {
  switch_core* self = core_of(t->current_);
  t->eh_->caught = self->eh.caught;
  t->eh_->uncaught = self->eh.uncaught;
  *t->errno_ = self->saved_errno;
  return self->pending || self->inbox.has_value();
}

// can_switch_fast() is true when a switch of the calling thread to `target` needs none of
// the out-of-line path's work: no check fails, nothing is queued for unwinding, the target
// is live, has a context and is not the running greenlet.
[[gnu::always_inline]] inline bool can_switch_fast(thread_core* t,
                                                   greenlet_record* target) noexcept {
  if (target == nullptr) return false;
  switch_core* to = core_of(target);
  // A record's owner is never null, so the first test also fails when the thread has no
  // state (t null) before t is read.
  return to->owner == t && to->status != greenlet_status::dead && to->ctx != nullptr &&
         target != t->current_ && !t->has_deferred_.load(std::memory_order_relaxed);
}

}  // namespace tendril::detail

#endif
