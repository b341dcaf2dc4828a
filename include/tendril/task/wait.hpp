// tendril::wait() and tendril::iwait(): wait for several objects at once (gevent.wait,
// gevent.iwait): tasks, events, async results, queues.
#ifndef TENDRIL_TASK_WAIT_HPP
#define TENDRIL_TASK_WAIT_HPP

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <vector>

#include "tendril/hub/deadline.hpp"
#include "tendril/sync/observer.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {

// waitable_ref refers to any object that can tell when it is ready: a task, an event, an
// async_result, a queue (ready when a get() would not wait). It does not own the object.
class waitable_ref {
 public:
  template <class W, class = std::enable_if_t<!std::is_same_v<std::remove_cv_t<W>, waitable_ref>>,
            class = decltype(std::declval<W&>().observe(std::declval<detail::observer&>()))>
  waitable_ref(W& w)  // NOLINT(google-explicit-constructor): lists of mixed objects
      : obj_(&w),
        observe_([](void* o, detail::observer& ob) { static_cast<W*>(o)->observe(ob); }),
        unobserve_(
            [](void* o, detail::observer& ob) noexcept { static_cast<W*>(o)->unobserve(ob); }) {}

  // is() tells whether this refers to w.
  template <class W>
  bool is(const W& w) const noexcept {
    return obj_ == static_cast<const void*>(&w);
  }
  void* get() const noexcept { return obj_; }

  void observe(detail::observer& o) const { observe_(obj_, o); }
  void unobserve(detail::observer& o) const noexcept { unobserve_(obj_, o); }

 private:
  void* obj_;
  void (*observe_)(void*, detail::observer&);
  void (*unobserve_)(void*, detail::observer&) noexcept;
};

namespace detail {

// Watches a set of objects and collects them in the order they became ready; the greenlet
// that owns it waits with next_ready(). Objects may notify from other threads.
class ready_collector {
 public:
  explicit ready_collector(const std::vector<waitable_ref>& objects);
  ~ready_collector();
  ready_collector(const ready_collector&) = delete;
  ready_collector& operator=(const ready_collector&) = delete;

  // next_ready() returns the next object to become ready, waiting until the deadline;
  // empty once every object was returned, or if the time ran out. Switches: yes.
  std::optional<waitable_ref> next_ready(std::int64_t deadline_ns);

 private:
  struct watch {
    observer obs;
    ready_collector* owner;
    std::size_t index;
  };
  static void on_ready(observer* o) noexcept;
  void unobserve(std::size_t i) noexcept;
  waitable_ref hand_out(std::size_t i) noexcept;

  std::vector<waitable_ref> objects_;
  std::unique_ptr<watch[]> watches_;
  std::mutex mu_;
  std::vector<std::size_t> ready_;  // indices, in order; grown to capacity up front
  std::size_t handed_out_ = 0;
  waiter* sleeper_ = nullptr;
};

}  // namespace detail

// wait() waits until `count` of the objects are ready (all of them by default) or the time
// limit passes, and returns the ready ones in the order they became ready. Switches: yes.
// It never touches a returned object again: the thread whose set() readied one may destroy
// it once that set() returned, this greenlet as soon as wait() did. The objects not returned
// must outlive the call. iwait() likewise for each object it yields, the others living on
// until it is destroyed. A task or queue of another thread throws wrong_thread (from wait(),
// or from constructing the iwait).
std::vector<waitable_ref> wait(const std::vector<waitable_ref>& objects,
                               std::size_t count = std::numeric_limits<std::size_t>::max());
template <class Rep, class Period>
std::vector<waitable_ref> wait_for(const std::vector<waitable_ref>& objects,
                                   std::chrono::duration<Rep, Period> d,
                                   std::size_t count = std::numeric_limits<std::size_t>::max());

// iwait() yields the objects one by one as they become ready; with a limit, the iteration
// ends once it has passed (for all the steps together, as gevent's timeout). Switches: yes,
// in each step.
//   for (tendril::waitable_ref r : tendril::iwait({t1, t2, e})) { ... r.is(t1) ... }
class iwait {
 public:
  explicit iwait(std::vector<waitable_ref> objects)
      : objects_(std::move(objects)), collector_(objects_), deadline_(detail::forever_ns) {}
  iwait(std::initializer_list<waitable_ref> objects) : iwait(std::vector<waitable_ref>(objects)) {}
  template <class Rep, class Period>
  iwait(std::vector<waitable_ref> objects, std::chrono::duration<Rep, Period> limit)
      : objects_(std::move(objects)),
        collector_(objects_),
        deadline_(detail::deadline_after(limit)) {}

  class iterator {
   public:
    using value_type = waitable_ref;
    using difference_type = std::ptrdiff_t;
    const waitable_ref& operator*() const { return *current_; }
    iterator& operator++() {
      current_ = owner_->collector_.next_ready(owner_->deadline_);
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.current_; }

   private:
    friend class iwait;
    explicit iterator(iwait* o) : owner_(o), current_(o->collector_.next_ready(o->deadline_)) {}
    iwait* owner_;
    std::optional<waitable_ref> current_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  std::vector<waitable_ref> objects_;
  detail::ready_collector collector_;
  std::int64_t deadline_;
};

std::vector<waitable_ref> wait_deadline(const std::vector<waitable_ref>& objects, std::size_t count,
                                        std::int64_t deadline_ns);

template <class Rep, class Period>
std::vector<waitable_ref> wait_for(const std::vector<waitable_ref>& objects,
                                   std::chrono::duration<Rep, Period> d, std::size_t count) {
  return wait_deadline(objects, count, detail::deadline_after(d));
}

}  // namespace tendril

#endif
