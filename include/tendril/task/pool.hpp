// tendril::group and tendril::pool: sets of tasks handled together (gevent.pool.Group and
// gevent.pool.Pool).
#ifndef TENDRIL_TASK_POOL_HPP
#define TENDRIL_TASK_POOL_HPP

#include <chrono>
#include <cstddef>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tendril/greenlet/generator.hpp"
#include "tendril/sync/queue.hpp"
#include "tendril/sync/semaphore.hpp"
#include "tendril/task/task.hpp"

namespace tendril {

// group: the tasks added to it (or spawned through it) until they end. join() waits for all
// of them, kill() kills all of them. For the greenlets of one thread.
class group {
 public:
  group() = default;
  group(const group&) = delete;
  group& operator=(const group&) = delete;
  virtual ~group() = default;

  // add() tracks a task (an ended one is forgotten at once, one already tracked is not
  // counted again). A task of another thread throws wrong_thread, an empty handle
  // std::logic_error. Switches: no (a pool's may wait for a slot).
  virtual void add(const task_base& t) {
    check_owned(t);
    if (!tracks(t)) track(t);
  }
  // spawn() spawns f(args...) and adds the task. Switches: no (a pool's may wait for a
  // slot, also when called through a group&).
  template <class F, class... Args>
  auto spawn(F&& f, Args&&... args) {
    reserve();
    return spawn_reserved(std::forward<F>(f), std::forward<Args>(args)...);
  }
  // size() is the number of tasks that have not ended.
  std::size_t size() {
    prune();
    return tasks_.size();
  }
  // join() waits until every task ended; join_for() returns false if the time ran out.
  // Called by one of the group's own tasks, they wait for the others (a task cannot wait for
  // itself to end). Switches: yes.
  void join() {
    while (std::optional<task_base> t = next_other()) t->join();
  }
  template <class Rep, class Period>
  bool join_for(std::chrono::duration<Rep, Period> d) {
    return join_deadline(detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool join_until(std::chrono::time_point<Clock, Duration> tp) {
    return join_deadline(detail::deadline_at(tp));
  }
  bool join_deadline(std::int64_t deadline_ns) {
    while (std::optional<task_base> t = next_other()) {
      if (!t->join_deadline(deadline_ns)) return false;
    }
    return true;
  }
  // kill() kills every task, then (with block) waits for them all, and kills those added
  // meanwhile too, until none is left (gevent's Group.kill). Called by one of the group's
  // own tasks, it kills the others (that task ends when it returns). Switches: when block.
  void kill(bool block = true) {
    const detail::greenlet_record* me = detail::calling_task();
    while (true) {
      prune();
      std::vector<task_base> round;
      for (const task_base& t : tasks_) {
        if (t.greenlet().record() != me) round.push_back(t);
      }
      if (round.empty()) return;
      for (auto& t : round) t.kill(false);
      if (!block) return;
      // Once these have ended, any member left was added while they were dying.
      for (auto& t : round) t.join();
    }
  }

 protected:
  // For pool: reserve() takes a slot before spawn() spawns (may wait), unreserve() gives it
  // back if spawning failed, adopt() tracks a task that has its slot.
  virtual void reserve() {}
  virtual void unreserve() noexcept {}
  virtual void adopt(const task_base& t) { track(t); }
  // spawn_reserved() spawns once reserve() succeeded, giving the reservation back if that
  // fails.
  template <class F, class... Args>
  auto spawn_reserved(F&& f, Args&&... args) {
    decltype(tendril::spawn(std::forward<F>(f), std::forward<Args>(args)...)) t;
    try {
      t = tendril::spawn(std::forward<F>(f), std::forward<Args>(args)...);
    } catch (...) {
      unreserve();
      throw;
    }
    adopt(t);
    return t;
  }
  void track(const task_base& t) {
    prune();
    if (!t.ready()) tasks_.push_back(t);
  }
  // check_owned() refuses a task that join() and kill() could not handle later: one of
  // another thread (wrong_thread, naming it) or an empty handle (std::logic_error).
  static void check_owned(const task_base& t) { (void)t.core(); }
  bool tracks(const task_base& t) const noexcept {
    for (const task_base& u : tasks_) {
      if (u.greenlet().record() == t.greenlet().record()) return true;
    }
    return false;
  }
  void prune() {
    std::erase_if(tasks_, [](const task_base& t) { return t.ready(); });
  }
  // next_other() is a task of the group that has not ended and is not the one the caller runs
  // in (detail::calling_task()).
  std::optional<task_base> next_other() {
    prune();
    const detail::greenlet_record* me = detail::calling_task();
    for (const task_base& t : tasks_) {
      if (t.greenlet().record() != me) return t;
    }
    return std::nullopt;
  }
  std::vector<task_base> tasks_;
};

// pool(n): a group that never runs more than n tasks at once: spawn() waits for a free slot
// (first come, first served), and so does add() of a task spawned elsewhere (which counts
// from then on), also through a group&. A slot is given back when its task ends, however
// it ends (returned, threw, was killed before or after it started).
class pool : public group {
 public:
  // Throws std::invalid_argument for a size above PTRDIFF_MAX (a semaphore's largest count).
  explicit pool(std::size_t size)
      : size_(size), slots_(std::make_shared<semaphore>(slot_count(size))) {}

  // spawn() (group's) waits for a free slot, then spawns. pool(0) has none ever: spawn()
  // and add() throw std::logic_error at once rather than wait forever (spawn_for() waits and
  // returns an empty optional). Switches: yes, while the pool is full.
  using group::spawn;
  // add() waits for a free slot for a task spawned elsewhere (one already in the pool, or
  // ended, takes none; one of another thread throws wrong_thread and takes none either).
  // Switches: yes, while the pool is full.
  void add(const task_base& t) override {
    check_owned(t);  // before reserve(): adopt() would refuse it and keep the slot
    if (t.ready() || (prune(), tracks(t))) return;
    reserve();
    adopt(t);
  }
  template <class Rep, class Period, class F, class... Args>
  auto spawn_for(std::chrono::duration<Rep, Period> d, F&& f, Args&&... args)
      -> std::optional<decltype(this->spawn(std::forward<F>(f), std::forward<Args>(args)...))> {
    if (!slots_->try_acquire_for(d)) return std::nullopt;
    return spawn_reserved(std::forward<F>(f), std::forward<Args>(args)...);
  }

  // free_count() is the number of free slots.
  std::size_t free_count() const noexcept { return static_cast<std::size_t>(slots_->count()); }
  std::size_t capacity() const noexcept { return size_; }

  // map() runs f on every item, at most size() at a time, and returns the results in the
  // order of the items; the first exception (in item order) is rethrown after all ended.
  // Switches: yes.
  template <class F, class Range>
  auto map(F f, const Range& items) {
    using item_t = std::decay_t<decltype(*std::begin(items))>;
    using R = std::invoke_result_t<F&, const item_t&>;
    std::vector<task<R>> tasks;
    for (const auto& item : items) tasks.push_back(spawn(f, item));
    for (auto& t : tasks) t.join();
    if constexpr (std::is_void_v<R>) {
      for (auto& t : tasks) t.get();
    } else {
      std::vector<R> out;
      out.reserve(tasks.size());
      for (auto& t : tasks) out.push_back(t.get());
      return out;
    }
  }

  // imap_unordered() runs f on every item, at most size() at a time, and yields the results
  // as the tasks end. A task's exception comes out of the step that reaches it.
  template <class F, class Range>
  auto imap_unordered(F f, const Range& items) {
    using item_t = std::decay_t<decltype(*std::begin(items))>;
    using R = std::invoke_result_t<F&, const item_t&>;
    static_assert(!std::is_void_v<R>, "imap_unordered needs a function that returns a value");
    std::vector<item_t> copy(std::begin(items), std::end(items));
    return generator<R>(
        [this, f = std::move(f), copy = std::move(copy)](typename generator<R>::yielder& y) {
          // Shared with the links: tasks still running when the body ends early (a task's
          // exception, or the consumer dropping the generator) put into it afterwards
          // (pool_test's leaving_imap_unordered_early_leaves_the_running_tasks_unharmed).
          auto finished = std::make_shared<queue<task<R>>>();
          std::size_t n = 0;
          for (const auto& item : copy) {
            auto t = spawn(f, item);
            t.link([finished](task<R>& done) { finished->put(done); });
            ++n;
            while (auto ready = finished->try_get()) {
              y.yield(ready->get());
              --n;
            }
          }
          for (; n > 0; --n) y.yield(finished->get().get());
        });
  }

 protected:
  void reserve() override {
    if (size_ == 0) throw std::logic_error("tendril::pool: a pool of size 0 can never run a task");
    slots_->acquire();
  }
  void unreserve() noexcept override { slots_->release(); }
  void adopt(const task_base& t) override {
    // The slot goes back whenever the task ends (at once if it has); the semaphore outlives
    // the pool if needed.
    task_base handle = t;
    handle.link([slots = slots_] { slots->release(); });
    track(t);
  }

 private:
  static std::ptrdiff_t slot_count(std::size_t size) {
    if (size > static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max())) {
      throw std::invalid_argument("tendril::pool: a size of " + std::to_string(size) +
                                  " is more than a pool counts (PTRDIFF_MAX)");
    }
    return static_cast<std::ptrdiff_t>(size);
  }

  std::size_t size_;
  std::shared_ptr<semaphore> slots_;
};

}  // namespace tendril

#endif
