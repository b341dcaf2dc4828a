// tendril::async_result<T>: a value, or an exception, that greenlets wait for
// (gevent.event.AsyncResult).
#ifndef TENDRIL_SYNC_ASYNC_RESULT_HPP
#define TENDRIL_SYNC_ASYNC_RESULT_HPP

#include <chrono>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "tendril/hub/deadline.hpp"
#include "tendril/sync/copyable.hpp"
#include "tendril/sync/observer.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {

namespace detail {

// The part of async_result that does not depend on T.
class async_core {
 public:
  async_core() = default;
  async_core(const async_core&) = delete;
  async_core& operator=(const async_core&) = delete;
  // Destroying it while greenlets wait in it, or before the getters it woke took the value,
  // stops the process with a message.
  ~async_core();
  // settle() runs store(ctx) under the lock, marks the result ready and wakes everyone.
  void settle(void (*store)(void* ctx), void* ctx);
  bool ready() const noexcept;
  // wait_deadline() returns true once ready. A getter passes woken: set true if settle()
  // woke it, when it must call took() as it takes the value.
  bool wait_deadline(std::int64_t deadline_ns, bool* woken = nullptr);
  // took() counts a woken getter out. With mutex() held.
  void took() noexcept { --to_take_; }
  void observe(observer& o);
  void unobserve(observer& o) noexcept;
  std::mutex& mutex() noexcept { return mu_; }

 private:
  mutable std::mutex mu_;
  bool ready_ = false;
  // Getters that settle() woke and that have yet to take the value (they read it from here).
  std::size_t to_take_ = 0;
  waiter_list waiters_;
  observer_list observers_;
};

}  // namespace detail

// async_result<T>: set(v) or set_exception(e) once it is known; get() waits and returns the
// value or rethrows. set() and set_exception() may be called from any thread; a later set
// replaces the earlier result. T = void has set() without an argument. Once a set returned,
// its thread may destroy the result while greenlets it woke in wait() have yet to resume.
template <class T>
class async_result {
  using stored = std::conditional_t<std::is_void_v<T>, bool, T>;

 public:
  async_result() = default;
  async_result(const async_result&) = delete;
  async_result& operator=(const async_result&) = delete;
  // Destroying it while greenlets wait in it (get(), wait(), or wait() and iwait() over
  // several objects) stops the process with a message: they could never return. So does
  // destroying it after a set woke greenlets in get() that have yet to take the value.
  ~async_result() = default;

  // set() stores the value and wakes every waiter. What making the value throws (a copy of v
  // that fails) comes out of set(), and the result stays as it was. Switches: no. Any thread.
  template <class U = T, class = std::enable_if_t<!std::is_void_v<U>>>
  void set(U&& v) {
    // Made before the old value goes: emplace() would destroy that first.
    stored fresh(std::forward<U>(v));
    struct ctx {
      async_result* self;
      stored* fresh;
    } args{this, &fresh};
    core_.settle(
        [](void* p) {
          auto* c = static_cast<ctx*>(p);
          c->self->replace_value(std::move(*c->fresh));
          c->self->error_ = nullptr;
          c->self->taken_ = false;
        },
        &args);
  }
  template <class U = T, class = std::enable_if_t<std::is_void_v<U>>>
  void set() {
    core_.settle(
        [](void* p) {
          auto* self = static_cast<async_result*>(p);
          self->value_.emplace(true);
          self->error_ = nullptr;
          self->taken_ = false;
        },
        this);
  }
  // set_exception() stores e (which get() rethrows) and wakes every waiter. Throws
  // std::invalid_argument for a null e. Any thread.
  void set_exception(std::exception_ptr e) {
    if (!e) throw std::invalid_argument("tendril::async_result::set_exception: null exception_ptr");
    struct ctx {
      async_result* self;
      std::exception_ptr e;
    } args{this, std::move(e)};
    core_.settle(
        [](void* p) {
          auto* c = static_cast<ctx*>(p);
          c->self->value_.reset();
          c->self->error_ = std::move(c->e);
          c->self->taken_ = false;
        },
        &args);
  }

  // ready() is true once set.
  bool ready() const noexcept { return core_.ready(); }

  // wait() blocks until ready; wait_for() returns false if the time ran out first.
  // Switches: yes.
  void wait() { core_.wait_deadline(detail::forever_ns); }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    return core_.wait_deadline(detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool wait_until(std::chrono::time_point<Clock, Duration> tp) {
    return core_.wait_deadline(detail::deadline_at(tp));
  }

  // get() waits, then returns the value (a copy; a move-only value is moved out by the first
  // get(), and a second one throws std::logic_error) or rethrows the exception. Switches: yes.
  T get() {
    bool woken = false;
    core_.wait_deadline(detail::forever_ns, &woken);
    return take(woken);
  }
  // get_for() is get() with a time limit: an empty optional if it ran out (T = void: false).
  template <class Rep, class Period>
  auto get_for(std::chrono::duration<Rep, Period> d) {
    return get_deadline(detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  auto get_until(std::chrono::time_point<Clock, Duration> tp) {
    return get_deadline(detail::deadline_at(tp));
  }

  void observe(detail::observer& o) { core_.observe(o); }
  void unobserve(detail::observer& o) noexcept { core_.unobserve(o); }

 private:
  // replace_value() moves v in. A move that can throw (a copy-only T) goes through T's own
  // assignment, which never leaves an empty optional behind in a ready result.
  void replace_value(stored&& v) {
    if constexpr (!std::is_nothrow_move_constructible_v<stored> &&
                  std::is_move_assignable_v<stored>) {
      if (value_) {
        *value_ = std::move(v);
        return;
      }
    }
    value_.emplace(std::move(v));
  }
  auto get_deadline(std::int64_t deadline_ns) {
    bool woken = false;
    if constexpr (std::is_void_v<T>) {
      if (!core_.wait_deadline(deadline_ns, &woken)) return false;
      take(woken);
      return true;
    } else {
      if (!core_.wait_deadline(deadline_ns, &woken)) return std::optional<T>();
      return std::optional<T>(take(woken));
    }
  }
  T take(bool woken) {
    std::unique_lock lock(core_.mutex());
    if (woken) core_.took();
    if (error_) std::rethrow_exception(error_);
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (detail::copyable_v<T>) {
      return *value_;
    } else {
      if (taken_) {
        throw std::logic_error(
            "tendril::async_result: its move-only value was already taken by get()");
      }
      taken_ = true;
      return std::move(*value_);
    }
  }

  detail::async_core core_;
  std::optional<stored> value_;
  std::exception_ptr error_;
  bool taken_ = false;  // a move-only value was moved out by get()
};

}  // namespace tendril

#endif
