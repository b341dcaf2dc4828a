// The part of a greenlet and of its thread that every switch reads and writes, and the fast
// path of the switch over it, inline so that greenlet::switch_to() and generator make no call
// but the jump (include/tendril/context/jump.hpp says why the jump itself is inline; this is
// the bookkeeping around it). Nothing here is API: src/greenlet/ owns both structures and
// keeps their other fields to itself (greenlet_record.hpp, thread_state.hpp).
//
// A switch from A to B when every check passes (otherwise the out-of-line functions of
// src/greenlet/greenlet.cpp do all of it, with the same steps):
//   plan   B becomes active and current; A's errno goes into A and B's comes back from B,
//          and so do their C++ exception states when the thread's is not empty or a
//          greenlet of the thread kept one (the inline switch leaves those switches to the
//          out-of-line path).
//   jump   context::jump() saves A's context in A.ctx and resumes B.ctx, handing B a
//          non-null word only when B's inbox holds something.
//   land   B goes on; a value handed to it or an exception raised into it (its inbox) is
//          taken out of line, when the jump returned non-null.
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
// __cxa_eh_globals of libstdc++ and of libc++abi is these two fields and nothing else on
// x86-64 and aarch64 (a third comes only with the 32-bit ARM EHABI unwinder): 16 bytes with
// the tail padding, copied whole. It is empty (no exception caught or in flight) but in a
// catch block or during unwinding, and a switch between greenlets whose states are both
// empty copies nothing (keep_exception_state()).
struct exception_state {
  void* caught = nullptr;     // __cxa_eh_globals::caughtExceptions
  unsigned int uncaught = 0;  // __cxa_eh_globals::uncaughtExceptions
  unsigned int padding = 0;   // __cxa_eh_globals's tail padding, copied with the rest

  bool empty() const noexcept { return caught == nullptr && uncaught == 0; }
};
static_assert(sizeof(void*) == 8 && sizeof(exception_state) == 16,
              "the switch copies __cxa_eh_globals as 16 bytes (LP64 only)");
#if defined(__ARM_EABI_UNWINDER__)
#error "tendril: __cxa_eh_globals has a third field with the ARM EHABI unwinder"
#endif

// thread_core is the switch's part of a thread's state (the base of thread_state).
//
// current_ and from_ are kept apart: side by side, compilers (GCC from -O2) merge the two
// stores of every switch into one 16-byte vector store, and the resumed side's 8-byte load
// of current_ from it cannot be forwarded from the store buffer on this project's machine
// (AMD Zen 5): a switch measured 3.7 ns instead of 3.45 (docs/design/context.md).
struct thread_core {
  greenlet_record* current_ = nullptr;  // the running greenlet, never null once made
  exception_state* eh_ = nullptr;       // this thread's __cxa_eh_globals
  int* errno_ = nullptr;                // this thread's errno
  greenlet_record* from_ = nullptr;     // the greenlet that switched to it last
  // What sends a switch out of line, one word so that the inline switch tests it with the
  // exception state at once: deferred_bit, set when another thread queued a greenlet of this
  // one for unwinding (the next switch runs it), and below it how many greenlets of this
  // thread have eh_kept set (switch_core; while none has, a switch out of an empty exception
  // state copies nothing). Other threads only set deferred_bit.
  static constexpr std::uint32_t deferred_bit = 1u << 31;
  std::atomic<std::uint32_t> slow_{0};

  bool has_deferred() const noexcept {
    return (slow_.load(std::memory_order_relaxed) & deferred_bit) != 0;
  }
  std::uint32_t kept_count() const noexcept {
    return slow_.load(std::memory_order_relaxed) & ~deferred_bit;
  }
  // quiet() is true when a switch of this thread needs neither the exception state copied nor
  // the out-of-line path: the thread's state is empty, no greenlet of it kept one, and
  // nothing is queued for unwinding.
  bool quiet() const noexcept {
    std::uintptr_t any = reinterpret_cast<std::uintptr_t>(eh_->caught) | eh_->uncaught |
                         slow_.load(std::memory_order_relaxed);
    return any == 0;
  }
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
  // True when it was last left with an exception state that was not empty (its thread's
  // slow_ counts it until it is left empty or ends); false means eh is empty
  // (keep_exception_state() keeps it so), and a switch to it need not restore it.
  bool eh_kept = false;
  int saved_errno = 0;         // saved while it is not running
  exception_state eh;          // saved while it is not running
  std::any inbox;              // the value of the switch that resumes it
  std::exception_ptr pending;  // raised at its switch point when it resumes
};

inline switch_core* core_of(greenlet_record* r) noexcept {
  return reinterpret_cast<switch_core*>(r);
}

// A switch is plan, jump, land. The plan says where to jump: to == nullptr means no jump
// (the target is the running greenlet itself). It also says what the jump hands over, which
// the resumed side's jump returns: null when it has nothing to do but go on (its errno and
// exception state are already back, and its inbox is empty), else it lands out of line
// (complete_switch(), complete_bare(), landed()). Every jump to a greenlet suspended in a
// switch hands over a plan's data or something non-null (finish() does: after_death()).
//
// Under ThreadSanitizer the plan also names the target's TSan fiber, and jump_to() switches
// TSan to it in the same frame as the jump: a switch made inside the out-of-line plan would
// pop the plan's own TSan frame off the target's shadow stack instead of the caller's.
struct switch_plan {
  void** save;
  void* to;
  void* data;
#if defined(TENDRIL_TSAN_FIBERS)
  void* tsan_fiber = nullptr;
#endif
};

// jump_to() makes the planned jump and returns what the switch that resumes this side hands
// over: null when there is nothing to land out of line.
[[gnu::always_inline]] inline void* jump_to(const switch_plan& p) noexcept {
#if defined(TENDRIL_TSAN_FIBERS)
  __tsan_switch_to_fiber(p.tsan_fiber, 0);
#endif
  return context::jump(p.save, p.to, p.data);
}

// restore_state() gives the thread the errno and C++ exception state that `self` saved when
// it was last left. The plan of a switch does it for the target before the jump (nothing
// between them touches either; the exception state only when either side's is not empty,
// keep_exception_state(), and otherwise both are empty already); landing out of line does
// it again, which changes nothing then, and covers the jumps that are not planned (a
// greenlet's end: after_death()).
[[gnu::always_inline]] inline void restore_state(thread_core* t, switch_core* self) noexcept {
  *t->eh_ = self->eh;
  *t->errno_ = self->saved_errno;
}

// keep_exception_state() is the part of a plan for a switch in which the thread's exception
// state (*t->eh_, the running greenlet's) is not empty, or a greenlet of the thread last
// left with one (thread_core::slow_ counts them; it may also hold the deferred bit, which
// costs only this call): the running greenlet keeps it and the target's is put back. A
// greenlet's eh_kept stays set while it runs, and is cleared when it is next left with an
// empty state or ends (thread_state::finish()). Every other switch copies nothing: the
// thread's state is empty, and so are all greenlets' copies. Measured: a switch 0.87-0.96
// and a generator item 0.94-0.95 of the time with both copies made on every switch; the
// count in one word with the deferred bit, tested once by can_switch_fast(), 0.86 and 0.98
// of the time with a flag per greenlet (docs/design/context.md).
[[gnu::cold, gnu::noinline]] inline void keep_exception_state(thread_core* t, switch_core* self,
                                                              switch_core* to) noexcept {
  exception_state now = *t->eh_;
  bool kept = !now.empty();
  if (kept != self->eh_kept) t->slow_.fetch_add(kept ? 1u : ~0u, std::memory_order_relaxed);
  self->eh = now;
  self->eh_kept = kept;
  *t->eh_ = to->eh;  // empty unless to->eh_kept
}

// plan_core() is the plan of a switch from the running greenlet to `target`, a live greenlet
// of thread t other than the running one that has a context, its inbox already filled: the
// running greenlet's errno and exception state are saved, the target's put back, and the
// target becomes current. The resumed side then has nothing to do after the jump unless its
// inbox holds something (data non-null). Planned this way, a switch measured 3.1 ns against
// 3.45 with the state put back after the jump (docs/design/context.md).
// Quiet: the caller checked t->quiet(), so there is no exception state to copy.
template <bool Quiet = false>
[[gnu::always_inline]] inline switch_plan plan_core(thread_core* t,
                                                    greenlet_record* target) noexcept {
  greenlet_record* cur = t->current_;
  switch_core* self = core_of(cur);
  switch_core* to = core_of(target);
  int* err = t->errno_;
  to->status = greenlet_status::active;
  if constexpr (!Quiet) {
    if (!t->quiet()) [[unlikely]]
      keep_exception_state(t, self, to);
  }
  self->saved_errno = *err;
  *err = to->saved_errno;
  t->from_ = cur;
  t->current_ = target;
  bool mail = to->pending || to->inbox.has_value();
  return {&self->ctx, to->ctx, mail ? target : nullptr};
}

// can_switch_fast() is true when a switch of the calling thread to `target` needs none of
// the out-of-line path's work: no check fails, the target is live, has a context and is not
// the running greenlet, and the thread is quiet() (no exception state to copy, nothing
// queued for unwinding): the plan is then plan_core<true>().
[[gnu::always_inline]] inline bool can_switch_fast(thread_core* t,
                                                   greenlet_record* target) noexcept {
  if (target == nullptr) return false;
  switch_core* to = core_of(target);
  // A record's owner is never null, so the first test also fails when the thread has no
  // state (t null) before t is read. A dead greenlet has no context (after_death() and
  // greenlet_discard_unstarted() clear it), so the second test also fails for one.
  return to->owner == t && to->ctx != nullptr && target != t->current_ && t->quiet();
}

}  // namespace tendril::detail

#endif
