// tendril::greenlet: a stackful coroutine that control is switched into explicitly, with
// the semantics of python's greenlet (docs/greenlets.md).
#ifndef TENDRIL_GREENLET_GREENLET_HPP
#define TENDRIL_GREENLET_GREENLET_HPP

#include <any>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "tendril/context/jump.hpp"
#include "tendril/greenlet/exceptions.hpp"
#include "tendril/greenlet/stack.hpp"
#include "tendril/greenlet/switch_core.hpp"

namespace tendril {

class greenlet;

namespace detail {

struct greenlet_record;

// How a greenlet calls and destroys the callable it was made with, which lives at the top
// of its own stack (no allocation).
struct callable_ops {
  std::any (*invoke)(void* callable, std::any&& first_value);
  void (*destroy)(void* callable) noexcept;
};

template <class F>
std::any invoke_callable(void* p, std::any&& first_value) {
  F& f = *static_cast<F*>(p);
  if constexpr (std::is_invocable_v<F&, std::any>) {
    if constexpr (std::is_void_v<std::invoke_result_t<F&, std::any>>) {
      f(std::move(first_value));
      return {};
    } else {
      return std::any(f(std::move(first_value)));
    }
  } else {
    static_assert(std::is_invocable_v<F&>,
                  "a greenlet's run must be callable with no argument or with one std::any");
    first_value.reset();  // handed to a run that takes none: dropped now, not when run ends
    if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
      f();
      return {};
    } else {
      return std::any(f());
    }
  }
}

template <class F>
void destroy_callable(void* p) noexcept {
  static_cast<F*>(p)->~F();
}

template <class F>
inline constexpr callable_ops callable_ops_for{&invoke_callable<F>, &destroy_callable<F>};

// greenlet_create() makes a greenlet record with a stack and returns where the callable
// must be constructed (`storage`, callable_size bytes aligned to callable_align, at the top
// of the new stack). parent == nullptr means the current greenlet.
greenlet_record* greenlet_create(std::size_t callable_size, std::size_t callable_align,
                                 const callable_ops* ops, const greenlet* parent,
                                 std::size_t stack_bytes, void** storage);
// greenlet_abandon_create() undoes greenlet_create() when the callable's constructor threw.
void greenlet_abandon_create(greenlet_record* r) noexcept;
void greenlet_retain(greenlet_record* r) noexcept;
void greenlet_release(greenlet_record* r) noexcept;
// A handle keeps its greenlet alive unless the handle lies on that greenlet's own stack
// (greenlet::current() inside the greenlet, say): such a reference would otherwise keep a
// suspended greenlet alive forever. These adjust the count for a handle at `where`.
void greenlet_handle_adopted(greenlet_record* r, const void* where) noexcept;
void greenlet_handle_copied(greenlet_record* r, const void* where) noexcept;
void greenlet_handle_moved(greenlet_record* r, const void* from, const void* to) noexcept;
void greenlet_handle_dropped(greenlet_record* r, const void* where) noexcept;

// The out-of-line switch (src/greenlet/greenlet.cpp), for everything the inline fast path of
// switch_core.hpp does not take: plan_switch() does every check and all bookkeeping and
// returns where to jump (to == nullptr: the target is the running greenlet itself, no jump);
// complete_switch() restores the resumed greenlet's state and returns the value handed to it,
// or throws the exception raised into it. land_with_mail() is complete_switch(true) for the
// fast path, whose jump returned non-null (switch_core.hpp: something waits in the inbox).
// `value` may be null: nothing to hand over.
switch_plan plan_switch(greenlet_record* target, std::any* value);
std::any complete_switch(bool jumped);
std::any land_with_mail();

inline std::any switch_inline(greenlet_record* target, std::any* value) {
#if TENDRIL_SWITCH_INLINE
  thread_core* t = t_thread_core;
  if (can_switch_fast(t, target)) [[likely]] {
    if (value != nullptr && value->has_value()) core_of(target)->inbox = std::move(*value);
    if (jump_to(plan_core<true>(t, target)) != nullptr) [[unlikely]]
      return land_with_mail();
    return {};
  }
#endif
  switch_plan p = plan_switch(target, value);
  if (p.to == nullptr) return complete_switch(false);
  jump_to(p);
  return complete_switch(true);
}

}  // namespace detail

// greenlet is a handle to a stackful coroutine: copying it shares the greenlet, and the
// greenlet lives while any handle refers to it. A child's parent link does not keep its
// parent alive (a parent holding its child's handle could never be freed otherwise): when
// the parent goes, its children's parent becomes the parent's own. Every OS thread
// has a root greenlet, its own stack, which greenlet::current() returns outside any other.
//
// All members must be called from the greenlet's own thread unless noted; doing otherwise
// throws wrong_thread.
class greenlet {
 public:
  // greenlet() is an empty handle: no greenlet.
  greenlet() noexcept = default;

  // greenlet(run, parent, stack) makes a greenlet that will call run when first switched
  // to, with the value of that switch if run takes a std::any. Nothing runs yet. parent
  // defaults to the current greenlet; the stack to default_stack_size.
  // Throws std::invalid_argument for a stack below min_stack_size, std::system_error (ENOMEM)
  // when no memory or address space is left for a stack, wrong_thread for a parent of another
  // thread. Switches: no (but for greenlets dropped on other threads, which are unwound here
  // first, as at any switch).
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, greenlet>>>
  explicit greenlet(F&& run, stack_size stack = {})
      : greenlet(std::forward<F>(run), nullptr, stack) {}
  template <class F>
  greenlet(F&& run, const greenlet& parent, stack_size stack = {})
      : greenlet(std::forward<F>(run), &parent, stack) {}

  greenlet(const greenlet& other) noexcept : rec_(other.rec_) {
    if (rec_) detail::greenlet_handle_copied(rec_, this);
  }
  greenlet(greenlet&& other) noexcept : rec_(std::exchange(other.rec_, nullptr)) {
    if (rec_) detail::greenlet_handle_moved(rec_, &other, this);
  }
  greenlet& operator=(const greenlet& other) noexcept {
    if (this != &other) {
      detail::greenlet_record* old = std::exchange(rec_, other.rec_);
      if (rec_) detail::greenlet_handle_copied(rec_, this);
      if (old) detail::greenlet_handle_dropped(old, this);
    }
    return *this;
  }
  greenlet& operator=(greenlet&& other) noexcept {
    if (this != &other) {
      detail::greenlet_record* old = std::exchange(rec_, std::exchange(other.rec_, nullptr));
      if (rec_) detail::greenlet_handle_moved(rec_, &other, this);
      if (old) detail::greenlet_handle_dropped(old, this);
    }
    return *this;
  }
  // ~greenlet() drops this handle. A handle kept on the greenlet's own stack (such as
  // greenlet::current() called inside it) does not keep it alive, and belongs to the
  // greenlet's thread: another thread may copy it, but must not move from it or destroy it
  // (it cannot tell that such a handle holds no reference). When this was the last
  // reference to a suspended greenlet,
  // greenlet_exit is raised inside it (its parent becomes the current greenlet) so that its
  // destructors run; switches: yes, in that case. Dropping the last handle on another thread
  // hands the greenlet back to its own thread, which unwinds it at its next switch.
  ~greenlet() {
    if (rec_) detail::greenlet_handle_dropped(rec_, this);
  }
  void swap(greenlet& other) noexcept {
    greenlet tmp(std::move(other));
    other = std::move(*this);
    *this = std::move(tmp);
  }

  // switch_to() starts this greenlet (first switch) or resumes it, handing it `value`: run()
  // receives it, or the greenlet's own pending switch_to() returns it. Returns the value
  // handed back by whoever switches to the caller next; if that side raised an exception
  // into the caller (its run() threw, or throw_into()), it is thrown here. Switching to a
  // dead greenlet goes to its first live ancestor instead; switching to the current greenlet
  // returns `value` at once. Switches: yes. Throws wrong_thread, greenlet_error (empty).
  // (Without a value, the same switch with nothing to hand over: no std::any to make.)
  std::any switch_to(std::any value) { return detail::switch_inline(rec_, &value); }
  std::any switch_to() { return detail::switch_inline(rec_, nullptr); }

  // throw_into() resumes this greenlet with `e` raised at its switch point and returns what
  // comes back, as switch_to(). Into a greenlet that has not started, run() never runs: the
  // greenlet dies at once and `e` surfaces in its parent (a greenlet_exit arrives there as a
  // value instead); a task's greenlet not started yet is the exception: its task ends with `e`
  // as kill(e) would, its links and the error handler running on the caller's greenlet, and
  // an empty value is returned. Into a dead greenlet, `e` is raised in its first live
  // ancestor, except that a greenlet_exit arrives there as a value; into a dead task's
  // greenlet, nothing happens (as kill() of an ended task) and an empty value is returned.
  // Throws std::invalid_argument for a null `e`, and greenlet_error, before anything changes,
  // if `e` would be raised in a thread's hub (thrown into the hub, or into a dead or unstarted
  // greenlet whose first live ancestor is the hub). Switches: yes; into an unstarted task only
  // if one of its links or the error handler blocks; into a dead task, no.
  std::any throw_into(std::exception_ptr e);
  template <class E, class = std::enable_if_t<!std::is_same_v<std::decay_t<E>, std::exception_ptr>>>
  std::any throw_into(E&& e) {
    return throw_into(std::make_exception_ptr(std::forward<E>(e)));
  }

  // current() is the greenlet running on the calling thread (its root outside any other).
  static greenlet current();

  // parent() is where control goes when this greenlet ends; empty for a root greenlet.
  greenlet parent() const;
  // set_parent() changes it. Throws parent_cycle if this greenlet would become its own
  // ancestor, wrong_thread for a parent of another thread, greenlet_error for a root.
  void set_parent(const greenlet& parent);

  // started() is true once the greenlet was first switched to (always, for a root), and for
  // one killed before it started (throw_into); dead() once run() returned or threw, or it
  // was killed before starting.
  bool started() const noexcept {
    return rec_ && detail::core_of(rec_)->status != detail::greenlet_status::unstarted;
  }
  bool dead() const noexcept {
    return rec_ && detail::core_of(rec_)->status == detail::greenlet_status::dead;
  }
  // A greenlet is true while it is started and not dead (python's bool(g)).
  explicit operator bool() const noexcept { return started() && !dead(); }
  // empty() is true for a handle that refers to no greenlet.
  bool empty() const noexcept { return rec_ == nullptr; }
  bool is_root() const noexcept;

  // name() is the greenlet's name for messages ("main" for the main thread's root,
  // "greenlet-<id>" unless set_name() gave another). Any thread, also while set_name() runs.
  std::string name() const;
  // set_name() renames it. Its own thread only (wrong_thread otherwise); greenlet_error for
  // an empty handle.
  void set_name(std::string name);
  // id() is unique among the greenlets of the process. Any thread.
  std::uint64_t id() const noexcept;

  friend bool operator==(const greenlet& a, const greenlet& b) noexcept { return a.rec_ == b.rec_; }

  // For the layers above: adopt a reference the caller owns, or look at the record.
  struct adopt_t {};
  greenlet(detail::greenlet_record* r, adopt_t) noexcept : rec_(r) {
    if (rec_) detail::greenlet_handle_adopted(rec_, this);
  }
  detail::greenlet_record* record() const noexcept { return rec_; }

 private:
  template <class F>
  greenlet(F&& run, const greenlet* parent, stack_size stack) {
    using fn = std::decay_t<F>;
    void* storage = nullptr;
    rec_ = detail::greenlet_create(sizeof(fn), alignof(fn), &detail::callable_ops_for<fn>, parent,
                                   stack.bytes, &storage);
    try {
      ::new (storage) fn(std::forward<F>(run));
    } catch (...) {
      detail::greenlet_abandon_create(std::exchange(rec_, nullptr));
      throw;
    }
  }

  detail::greenlet_record* rec_ = nullptr;
};

}  // namespace tendril

#endif
