// tendril::offload(): run a blocking call on the thread pool while the greenlet waits
// (gevent's threadpool.apply), so that the hub's thread never blocks on it.
#ifndef TENDRIL_TASK_OFFLOAD_HPP
#define TENDRIL_TASK_OFFLOAD_HPP

#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace tendril {

namespace detail {

// A call handed to the pool. Shared by the waiting greenlet and the pool thread (two
// references): if the greenlet stops waiting (killed, timed out), the call still runs to its
// end on the pool thread and its result is dropped.
class offload_job {
 public:
  virtual ~offload_job() = default;
  virtual void call() noexcept = 0;
  // run_and_wait() submits the job, waits for it and returns once it ended; throws what
  // interrupts the greenlet meanwhile. Switches: yes.
  static void run_and_wait(offload_job* job);
  void release() noexcept;

 protected:
  std::exception_ptr error_;

 private:
  friend struct offload_access;
  std::atomic<int> refs_{2};
  alignas(std::max_align_t) unsigned char impl_[128];  // the pool node and the waiting side
                                                       // (offload.cpp)
};

}  // namespace detail

// offload() calls f(args...) (bound by value, and passed as rvalues as std::thread does) on a
// thread of the pool and returns its result or rethrows its exception; the calling greenlet
// waits, the others run. If the greenlet is
// killed or its timeout fires while it waits, that is raised at once and the call finishes
// unobserved. Called on a pool thread (from a call offloaded there), it calls f there and
// then, without waiting. Switches: yes. Throws std::system_error if no pool thread can be
// started, std::invalid_argument if TENDRIL_THREADPOOL_SIZE is not a whole number from 1, and
// blocking_switch_out on the hub itself (without calling f).
template <class F, class... Args>
auto offload(F&& f, Args&&... args) {
  using R = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&&...>;
  static_assert(!std::is_reference_v<R>,
                "tendril::offload: the callable returns a reference, which offload() cannot "
                "carry back; return a value, a pointer or a std::reference_wrapper");
  struct job final : detail::offload_job {
    std::decay_t<F> fn;
    std::tuple<std::decay_t<Args>...> a;
    std::optional<std::conditional_t<std::is_void_v<R>, bool, R>> result;
    job(F&& f_, Args&&... args_) : fn(std::forward<F>(f_)), a(std::forward<Args>(args_)...) {}
    void call() noexcept override {
      try {
        if constexpr (std::is_void_v<R>) {
          std::apply(fn, std::move(a));
          result.emplace(true);
        } else {
          result.emplace(std::apply(fn, std::move(a)));
        }
      } catch (...) {
        error_ = std::current_exception();
      }
    }
    R take() {
      // The exception leaves the job: its last reference then dies on this thread (with the
      // handler that caught it), never on the pool thread, which may drop the job later.
      if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
      if constexpr (!std::is_void_v<R>) return std::move(*result);
    }
  };
  auto* j = new job(std::forward<F>(f), std::forward<Args>(args)...);
  detail::offload_job::run_and_wait(j);  // on success we keep our reference to read the result
  struct drop {
    job* j;
    ~drop() { j->release(); }
  } guard{j};
  return j->take();
}

}  // namespace tendril

#endif
