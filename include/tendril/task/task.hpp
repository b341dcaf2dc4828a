// tendril::task<R> and spawn(): greenlets scheduled on the hub, with a result
// (gevent.spawn and gevent.Greenlet).
#ifndef TENDRIL_TASK_TASK_HPP
#define TENDRIL_TASK_TASK_HPP

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#if defined(__GLIBCXX__)
#include <cxxabi.h>  // abi::__forced_unwind
#endif

#include "tendril/greenlet/greenlet.hpp"
#include "tendril/hub/deadline.hpp"
#include "tendril/hub/nodes.hpp"
#include "tendril/sync/copyable.hpp"
#include "tendril/sync/observer.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {

// task_killed: get() of a task that was killed (it ended with greenlet_exit and has no
// result to return).
class task_killed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class task_base;

namespace detail {

// The state of a task, kept in its greenlet's record (one allocation for both).
struct task_core {
  enum phase_t : std::uint8_t { pending, running, done };

  hub_child child;
  ready_node start;
  timer_node later;  // spawn_later's start
  std::uint64_t number = 0;
  // phase and entered may be read from other threads (ready(), started()): done is stored
  // with release once successful and error are final.
  std::atomic<phase_t> phase{pending};
  std::atomic<bool> entered{false};  // its body began (never, for a task killed before start)
  bool killed = false;               // ended by greenlet_exit (counts as successful, has no value)
  std::exception_ptr kill_sent;      // the last kill that ended a wait (see task_base::kill)
  bool successful = false;
  std::exception_ptr error;
  waiter_list joiners;
  observer_list observers;
  std::vector<std::function<void()>> links;
  tendril::greenlet self;  // keeps the task alive until it is done
};

template <class R>
struct task_state : task_core {
  static_assert(!std::is_reference_v<R>,
                "tendril::spawn: the callable returns a reference, which a task cannot hold; "
                "return a value, a pointer or a std::reference_wrapper");
  std::optional<std::conditional_t<std::is_void_v<R>, bool, R>> value;
  bool taken = false;  // a move-only result was moved out by get()
};

template <class R>
void destroy_task_state(void* p) noexcept {
  static_cast<task_state<R>*>(p)->~task_state<R>();
}

// task_create() makes the greenlet of a new task (its parent is the hub) with room for the
// task state; the caller constructs the state at *extra and the body at *storage, then calls
// task_start().
greenlet_record* task_create(std::size_t body_size, std::size_t body_align, const callable_ops* ops,
                             std::size_t state_size, void (*state_destroy)(void*), void** storage,
                             void** extra);
void task_abandon(greenlet_record* r) noexcept;
// task_start() numbers the task, hands it to the hub and schedules its start (now, or at
// deadline_ns for spawn_later). Throws std::bad_alloc if the hub has no room for
// spawn_later's timer; r is then freed.
void task_start(greenlet_record* r, std::int64_t deadline_ns);
task_core& task_of(greenlet_record* r) noexcept;
task_core& current_task();
// calling_task() is the record of the task the calling greenlet runs in: the caller itself,
// or the nearest of its parents that is a task (when the caller is a generator's body, which
// takes its consumer as parent, or a greenlet the task made); null outside tasks, and when
// that task has ended. Switches: no.
greenlet_record* calling_task() noexcept;
// task_enter() is false if the task was killed before it started (the body must not run).
bool task_enter(task_core& t) noexcept;
// task_leave() ends the task: wakes joiners, reports a failure, runs the links.
void task_leave(task_core& t) noexcept;

template <class R, class Fn>
struct task_body {
  Fn fn;
  // (The forced unwind of pthread_exit() has no object, which UBSan's null check would report
  // when the catch clause binds its reference.)
  __attribute__((no_sanitize("undefined"))) void operator()() {
    auto& st = static_cast<task_state<R>&>(current_task());
    if (!task_enter(st)) return;
    try {
      if constexpr (std::is_void_v<R>) {
        fn();
        st.value.emplace(true);
      } else {
        st.value.emplace(fn());
      }
      st.successful = true;
    } catch (const greenlet_exit&) {
      st.successful = true;
      st.killed = true;
#if defined(__GLIBCXX__)
    } catch (abi::__forced_unwind&) {
      throw;  // pthread_exit() or cancellation: the greenlet's entry stops the process
#endif
    } catch (...) {
      st.error = std::current_exception();
    }
    task_leave(st);
  }
};

template <class R, class Fn>
greenlet_record* make_task(Fn&& fn, std::int64_t start_deadline) {
  using body = task_body<R, std::decay_t<Fn>>;
  void* storage = nullptr;
  void* extra = nullptr;
  greenlet_record* r = task_create(sizeof(body), alignof(body), &callable_ops_for<body>,
                                   sizeof(task_state<R>), &destroy_task_state<R>, &storage, &extra);
  ::new (extra) task_state<R>();
  try {
    ::new (storage) body{std::forward<Fn>(fn)};
  } catch (...) {
    task_abandon(r);
    throw;
  }
  task_start(r, start_deadline);
  return r;
}

// Binds f and args by value, as std::thread does.
template <class F, class... Args>
auto bind_call(F&& f, Args&&... args) {
  return [f = std::decay_t<F>(std::forward<F>(f)),
          args = std::make_tuple(std::decay_t<Args>(std::forward<Args>(
              args))...)]() mutable -> decltype(auto) { return std::apply(f, std::move(args)); };
}

}  // namespace detail

// task_base is a handle to a task, whatever its result type: what joinall(), killall(),
// group and pool deal in. Copying it shares the task; the task runs to its end whether or
// not any handle is left. All members are for the task's own thread, but for ready(),
// successful(), exception() and started(), which any thread may ask.
class task_base {
 public:
  task_base() noexcept = default;

  // join() waits until the task has ended (at once if it has). Throws std::logic_error when a
  // task joins itself. Switches: yes.
  void join() { join_deadline(detail::forever_ns); }
  // join_for() / join_until(): false if the time ran out first.
  template <class Rep, class Period>
  bool join_for(std::chrono::duration<Rep, Period> d) {
    return join_deadline(detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool join_until(std::chrono::time_point<Clock, Duration> tp) {
    return join_deadline(detail::deadline_at(tp));
  }

  // ready() is true once the task has ended; successful() if it ended without an exception
  // (a kill with greenlet_exit counts as successful); exception() is what it failed with,
  // once it has ended. These four may also be asked from another thread.
  bool ready() const noexcept;
  bool successful() const noexcept;
  std::exception_ptr exception() const noexcept;
  // started() is true once the task began to run (false for one killed before it started).
  bool started() const noexcept;

  // kill() raises greenlet_exit (or e) in the task at its blocking point, so that its
  // destructors run; a task not started yet never runs. With block, waits until it has
  // ended. Killing an ended task does nothing. A task killing itself throws
  // std::logic_error. Switches: yes when block.
  void kill(bool block = true) { kill(nullptr, block); }
  void kill(std::exception_ptr e, bool block = true);

  // name() is "Greenlet-N" (in spawn order, from 1) unless set_name() gave another.
  std::string name() const;
  void set_name(std::string name);

  // link() calls callback once the task has ended, in the order linked, on the task's own
  // greenlet right after it ends (or on the killer's, for a task killed before it started:
  // the killer's own kill or fired timeout scope that ends a callback there is raised at
  // the killer's next blocking call); linking an ended task calls callback at once.
  void link(std::function<void()> callback);

  // For wait() and iwait().
  void observe(detail::observer& o);
  void unobserve(detail::observer& o) noexcept;

  // greenlet() is the task's greenlet. Entered by hand (docs/tasks.md): throw_into() before
  // the task started ends it as kill() would (no switch unless a link or the error handler
  // blocks), and after it ended does nothing; switch_to() before it started runs it at once
  // instead of at the hub's start; either, into a parked task, raises invalid_switch in it.
  tendril::greenlet greenlet() const noexcept { return g_; }
  explicit operator bool() const noexcept { return !g_.empty(); }
  friend bool operator==(const task_base& a, const task_base& b) noexcept { return a.g_ == b.g_; }

  bool join_deadline(std::int64_t deadline_ns);

 protected:
  friend class group;  // refuses a task of another thread at add()
  // core() is the task's state, for its own thread only: an empty handle throws
  // std::logic_error, a call from another thread wrong_thread (every member that can throw
  // goes through it).
  explicit task_base(tendril::greenlet g) noexcept : g_(std::move(g)) {}
  detail::task_core& core() const;
  tendril::greenlet g_;
};

// task<R>: a task_base that also knows its result type.
template <class R>
class task : public task_base {
 public:
  task() noexcept = default;

  // get() waits for the task, then returns its result (a copy) or rethrows its exception;
  // a killed task has none: task_killed. A result that cannot be copied (a unique_ptr) is
  // moved out by the first get(); a second get() throws std::logic_error. Switches: yes.
  R get() {
    join();
    auto& st = state();
    if (st.error) std::rethrow_exception(st.error);
    if (st.taken) {
      throw std::logic_error("tendril: task '" + name() +
                             "': its move-only result was already taken by get()");
    }
    if (!st.value) throw task_killed("tendril: task '" + name() + "' was killed and has no result");
    if constexpr (std::is_void_v<R>) {
      return;
    } else if constexpr (detail::copyable_v<R>) {
      return *st.value;
    } else {
      st.taken = true;
      return std::move(*st.value);
    }
  }
  // value() is the result once the task ended successfully, an empty optional otherwise
  // (also while it runs); a copy: for a result that cannot be copied, use get(). Switches: no.
  auto value() const {
    auto& st = state();
    if constexpr (std::is_void_v<R>) {
      return st.value.has_value();
    } else {
      static_assert(detail::copyable_v<R>,
                    "tendril::task<R>::value() returns a copy of the result, and R cannot be "
                    "copied: take it with get(), which moves it out");
      return st.phase.load(std::memory_order_relaxed) == detail::task_core::done
                 ? st.value
                 : std::optional<R>();
    }
  }

  // link() with a callback that receives the task.
  template <class F, class = std::enable_if_t<std::is_invocable_v<F&, task<R>&>>>
  void link(F callback) {
    task_base::link([callback = std::move(callback), self = *this]() mutable { callback(self); });
  }
  using task_base::link;

  // For spawn().
  explicit task(tendril::greenlet g) noexcept : task_base(std::move(g)) {}

 private:
  detail::task_state<R>& state() const { return static_cast<detail::task_state<R>&>(core()); }
};

// spawn() makes a task that calls f(args...) (bound by value, as std::thread does) on a
// greenlet of its own, whose parent is the hub; it starts at the next switch to the hub, in
// the order tasks were spawned. A task's exception does not reach the spawner: get()
// rethrows it and the hub's error handler reports it. Switches: no.
template <class F, class... Args>
auto spawn(F&& f, Args&&... args) {
  using R = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&&...>;
  auto body = detail::bind_call(std::forward<F>(f), std::forward<Args>(args)...);
  detail::greenlet_record* r = detail::make_task<R>(std::move(body), 0);
  return task<R>(tendril::greenlet(r, tendril::greenlet::adopt_t{}));
}

// spawn_later() is spawn() that starts the task once d has passed.
template <class Rep, class Period, class F, class... Args>
auto spawn_later(std::chrono::duration<Rep, Period> d, F&& f, Args&&... args) {
  using R = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&&...>;
  auto body = detail::bind_call(std::forward<F>(f), std::forward<Args>(args)...);
  detail::greenlet_record* r = detail::make_task<R>(std::move(body), detail::deadline_after(d));
  return task<R>(tendril::greenlet(r, tendril::greenlet::adopt_t{}));
}

// joinall() waits for every task (a pack of tasks, or a range of them, which may be a
// temporary). Switches: yes.
template <class... Tasks, class = std::enable_if_t<(std::is_base_of_v<task_base, Tasks> && ...)>>
void joinall(Tasks&... tasks) {
  (tasks.join(), ...);
}
template <class Range, class = decltype(std::begin(std::declval<Range&>()))>
void joinall(Range&& tasks) {
  for (auto& t : tasks) t.join();
}

// joinall_for() waits at most d for all of them (a pack or a range) and returns those that
// ended, in order: for a pack of tasks of different result types, as task_base handles.
// joinall_until() waits until tp.
template <class Range, class = decltype(std::begin(std::declval<Range&>()))>
auto joinall_deadline(std::int64_t deadline_ns, Range&& tasks) {
  std::vector<std::decay_t<decltype(*std::begin(tasks))>> done;
  for (auto& t : tasks) {
    if (t.join_deadline(deadline_ns)) done.push_back(t);
  }
  return done;
}
template <class First, class... Rest,
          class = std::enable_if_t<std::is_base_of_v<task_base, First> &&
                                   (std::is_base_of_v<task_base, Rest> && ...)>>
auto joinall_deadline(std::int64_t deadline_ns, First& first, Rest&... rest) {
  using T = std::conditional_t<(std::is_same_v<First, Rest> && ...), First, task_base>;
  std::vector<T> done;
  auto one = [&](auto& t) {
    if (t.join_deadline(deadline_ns)) done.push_back(t);
  };
  one(first);
  (one(rest), ...);
  return done;
}
template <class Rep, class Period, class... Tasks>
auto joinall_for(std::chrono::duration<Rep, Period> d, Tasks&&... tasks)
    -> decltype(joinall_deadline(0, std::forward<Tasks>(tasks)...)) {
  return joinall_deadline(detail::deadline_after(d), std::forward<Tasks>(tasks)...);
}
template <class Clock, class Duration, class... Tasks>
auto joinall_until(std::chrono::time_point<Clock, Duration> tp, Tasks&&... tasks)
    -> decltype(joinall_deadline(0, std::forward<Tasks>(tasks)...)) {
  return joinall_deadline(detail::deadline_at(tp), std::forward<Tasks>(tasks)...);
}

// killall() kills every task of a range (which may be a temporary), then (with block) waits
// for all of them. Called by one of those tasks, it kills and waits for the others only (as
// group::kill() does): killing itself would end it with the rest of the range not killed.
// Switches: when block.
template <class Range, class = decltype(std::begin(std::declval<Range&>()))>
void killall(Range&& tasks, bool block = true) {
  const detail::greenlet_record* me = detail::calling_task();
  auto other = [me](auto& t) { return me == nullptr || t.greenlet().record() != me; };
  for (auto& t : tasks) {
    if (other(t)) t.kill(false);
  }
  if (block) {
    for (auto& t : tasks) {
      if (other(t)) t.join();
    }
  }
}

}  // namespace tendril

#endif
