// tendril::queue<T>, channel<T> and joinable_queue<T>: FIFO queues between greenlets of one
// thread (gevent.queue.Queue, Channel, JoinableQueue).
#ifndef TENDRIL_SYNC_QUEUE_HPP
#define TENDRIL_SYNC_QUEUE_HPP

#include <chrono>
#include <cstddef>
#include <deque>
#include <iterator>
#include <limits>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "tendril/hub/deadline.hpp"
#include "tendril/sync/observer.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {

namespace detail {
// this_thread_id() is the calling thread's id (gettid(), read once per thread).
int this_thread_id() noexcept;
// queue_of_another_thread() throws wrong_thread: a queue in which greenlets of thread owner
// waited was used from the calling thread.
[[noreturn]] void queue_of_another_thread(int owner);
}  // namespace detail

// queue_closed: get() on a closed queue that has been drained, or put() on a closed queue.
class queue_closed : public std::runtime_error {
 public:
  queue_closed() : std::runtime_error("tendril::queue: the queue is closed") {}
};

// queue<T>(maxsize): items in the order they were put. put() waits while the queue holds
// maxsize items (back-pressure); get() waits while it is empty. A waiting getter receives an
// item directly from the putter, and a getter or putter whose wait ended by a time limit or a
// kill never receives or hands over an item. close() ends the queue: getters drain what is
// left and then get queue_closed, putters get it at once. What moving an item throws comes
// out of the put or get that moved it (docs/sync.md). For the greenlets of one thread: once
// one of them waited in it (also through wait() or iwait()), a call from another thread
// throws wrong_thread.
template <class T>
class queue {
 public:
  static constexpr std::size_t unbounded = std::numeric_limits<std::size_t>::max();

  explicit queue(std::size_t maxsize = unbounded) : maxsize_(maxsize) {}
  queue(const queue&) = delete;
  queue& operator=(const queue&) = delete;
  // Destroying it while greenlets wait in it (get(), put(), or wait() and iwait() over
  // several objects) stops the process with a message: they could never return.
  ~queue() { check_unwaited("tendril::queue"); }

  // put() appends item, waiting while the queue is full. Throws queue_closed. Switches: yes.
  void put(T item) { put_deadline(item, detail::forever_ns); }
  // put_for(): false if the time ran out. An lvalue T is moved from only when it was put,
  // so nothing is lost on a timeout.
  template <class U, class Rep, class Period>
  bool put_for(U&& item, std::chrono::duration<Rep, Period> d) {
    return put_as(std::forward<U>(item), detail::deadline_after(d));
  }
  template <class U, class Clock, class Duration>
  bool put_until(U&& item, std::chrono::time_point<Clock, Duration> tp) {
    return put_as(std::forward<U>(item), detail::deadline_at(tp));
  }
  // try_put() puts only if that needs no wait (an lvalue T is moved from only then).
  // Switches: no.
  template <class U>
  bool try_put(U&& item) {
    return put_as(std::forward<U>(item), 0);
  }

  // get() takes the oldest item, waiting while there is none. Throws queue_closed once the
  // queue is closed and empty. Switches: yes.
  T get() { return *get_deadline(detail::forever_ns); }
  // get_for() / get_until(): an empty optional if the time ran out.
  template <class Rep, class Period>
  std::optional<T> get_for(std::chrono::duration<Rep, Period> d) {
    return get_deadline(detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  std::optional<T> get_until(std::chrono::time_point<Clock, Duration> tp) {
    return get_deadline(detail::deadline_at(tp));
  }
  // try_get() takes an item only if that needs no wait (empty optional otherwise, also when
  // closed). Switches: no.
  std::optional<T> try_get() {
    check_thread();
    if (closed_ && items_.empty() && putters_.empty()) return std::nullopt;
    return get_deadline(0);
  }

  // size(), empty() and full() tell what the queue holds now; like every call that reads or
  // changes its state, they throw wrong_thread from another thread once a greenlet waited in
  // it. maxsize() never changes: any thread may read it. Switches: no.
  std::size_t size() const {
    check_thread();
    return items_.size();
  }
  bool empty() const {
    check_thread();
    return items_.empty();
  }
  bool full() const {
    check_thread();
    return items_.size() >= maxsize_;
  }
  std::size_t maxsize() const noexcept { return maxsize_; }

  // close() ends the queue (see above). Switches: no.
  void close() {
    check_thread();
    closed_ = true;
    while (detail::waiter* w = getters_.pop_front()) w->wake();  // their slots stay empty
    while (detail::waiter* w = putters_.pop_front()) {
      if (w->claim()) {
        w->payload = nullptr;  // tells the putter its item was refused
        w->schedule();
      }
    }
    observers_.notify_all();
  }
  // closed() tells whether close() was called. Throws wrong_thread. Switches: no.
  bool closed() const {
    check_thread();
    return closed_;
  }

  // Range-for takes items until the queue is closed and drained.
  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator& operator++() {
      next();
      return *this;
    }
    void operator++(int) { next(); }
    T& operator*() { return *item_; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.item_; }

   private:
    friend class queue;
    explicit iterator(queue* q) : q_(q) { next(); }
    void next() {
      try {
        item_ = q_->get();
      } catch (const queue_closed&) {
        item_.reset();
      }
    }
    queue* q_;
    std::optional<T> item_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() const noexcept { return {}; }

  // For wait() and iwait(): ready when a get() would not wait. A watching observer is a
  // wait in it like a get(): it names the queue's thread, whose calls alone notify it
  // (notify_all() lets it go at once), and unobserve() runs on that thread. Throws
  // wrong_thread.
  bool ready() const {
    check_thread();
    return ready_here();
  }
  void observe(detail::observer& o) {
    check_thread();
    if (ready_here()) {
      detail::notify_at_once(o);
    } else {
      note_thread();
      observers_.push_back(o);
    }
  }
  void unobserve(detail::observer& o) noexcept { observers_.remove(o); }

 protected:
  // check_unwaited() stops the process if greenlets wait in it, or others (joiners) wait in
  // the derived part (for the destructors; type names the class destroyed).
  void check_unwaited(const char* type, std::size_t others = 0) const noexcept {
    if (others != 0 || !getters_.empty() || !putters_.empty() || !observers_.empty()) [[unlikely]] {
      detail::destroyed_while_waited(
          type, others + getters_.size() + putters_.size() + observers_.size());
    }
  }

  // The wait lists belong to the hub of the thread whose greenlets wait in them: a call
  // from another thread would change them unguarded, and its wakes would not count as ones
  // another thread might make (so that thread's waits would end in a misleading loop_exit).
  void check_thread() const {
    if (thread_ != 0 && thread_ != detail::this_thread_id()) [[unlikely]]
      detail::queue_of_another_thread(thread_);
  }
  // note_thread() is called before a wait: the first one names the queue's thread.
  void note_thread() noexcept {
    if (thread_ == 0) thread_ = detail::this_thread_id();
  }

  template <class U>
  bool put_as(U&& item, std::int64_t deadline_ns) {
    if constexpr (std::is_same_v<U, T&>) {
      return put_deadline(item, deadline_ns);
    } else {
      T v(std::forward<U>(item));
      return put_deadline(v, deadline_ns);
    }
  }

  bool put_deadline(T& item, std::int64_t deadline_ns) {
    check_thread();
    if (closed_) throw queue_closed();
    if (detail::waiter* w = first_waiting(getters_)) {
      static_cast<std::optional<T>*>(w->payload)->emplace(std::move(item));
      take(getters_, w);
      ++unfinished_;
      return true;
    }
    if (items_.size() < maxsize_) {
      items_.push_back(std::move(item));
      ++unfinished_;
      observers_.notify_all();
      return true;
    }
    if (deadline_ns == 0) return false;
    note_thread();
    detail::waiter w;
    w.payload = &item;
    putters_.push_back(w);
    observers_.notify_all();  // a channel is ready for a getter once a putter waits
    struct unlink {
      detail::waiter_list& l;
      detail::waiter& w;
      ~unlink() { l.remove(w); }
    } guard{putters_, w};
    if (!w.wait(deadline_ns)) return false;
    if (w.payload == nullptr) throw queue_closed();
    return true;
  }

  std::optional<T> get_deadline(std::int64_t deadline_ns) {
    check_thread();
    if (!items_.empty()) {
      std::optional<T> v(std::move(items_.front()));
      items_.pop_front();
      refill();
      return v;
    }
    if (detail::waiter* w = first_waiting(putters_)) {
      std::optional<T> v(std::move(*static_cast<T*>(w->payload)));
      take(putters_, w);
      ++unfinished_;
      return v;
    }
    if (closed_) throw queue_closed();
    if (deadline_ns == 0) return std::nullopt;
    note_thread();
    std::optional<T> slot;
    detail::waiter w;
    w.payload = &slot;
    getters_.push_back(w);
    struct unlink {
      detail::waiter_list& l;
      detail::waiter& w;
      ~unlink() { l.remove(w); }
    } guard{getters_, w};
    bool woken = false;
    try {
      woken = w.wait(deadline_ns);
    } catch (...) {
      // Only a switch into this greenlet from outside the hub (invalid_switch) ends a wait
      // that a putter had already handed its item to: the item is not lost with it.
      if (slot) give_back(std::move(*slot));
      throw;
    }
    if (!woken) return std::nullopt;
    if (!slot) throw queue_closed();
    return slot;
  }

 private:
  // ready_here() is ready() for a caller that checked the thread.
  bool ready_here() const noexcept { return !items_.empty() || !putters_.empty() || closed_; }

  // first_waiting() is the longest waiter of l whose wait has not ended, left in l (those
  // that timed out or were killed unlink themselves when they resume: dropped here). Its
  // item moves first and take() claims it after, so a move that throws leaves it waiting
  // (channels, a_hand_off_whose_move_throws_leaves_the_other_side_waiting_for_the_next_one).
  // Nothing can end its wait in between: only this thread's hub ends the queue's waits.
  static detail::waiter* first_waiting(detail::waiter_list& l) noexcept {
    while (detail::waiter* w = l.front()) {
      if (w->current_state() == detail::waiter::waiting) return w;
      l.pop_front();
    }
    return nullptr;
  }
  static void take(detail::waiter_list& l, detail::waiter* w) noexcept {
    l.pop_front();
    w->wake();
  }

  // After a get() made room, the longest waiting putter's item moves into the queue. One
  // whose item fails to move gets that exception from its put(), not the getter.
  void refill() {
    while (items_.size() < maxsize_) {
      detail::waiter* w = first_waiting(putters_);
      if (w == nullptr) return;
      try {
        items_.push_back(std::move(*static_cast<T*>(w->payload)));
      } catch (...) {
        putters_.pop_front();
        w->interrupt(std::current_exception());
        continue;
      }
      take(putters_, w);
      ++unfinished_;
    }
  }

  // give_back() returns an item handed to a getter that could not take it: it goes to the
  // next waiting getter, or to the head of the queue (where it was first in line), even if
  // that puts a full queue one over its maxsize (or an item in a channel) for a while.
  void give_back(T&& item) {
    if (detail::waiter* w = first_waiting(getters_)) {
      static_cast<std::optional<T>*>(w->payload)->emplace(std::move(item));
      take(getters_, w);
      return;
    }
    items_.push_front(std::move(item));
    observers_.notify_all();
  }

  std::deque<T> items_;
  std::size_t maxsize_;
  bool closed_ = false;
  detail::waiter_list getters_;  // payload: std::optional<T>* to fill
  detail::waiter_list putters_;  // payload: T* to take from
  detail::observer_list observers_;
  int thread_ = 0;  // the thread of the first greenlet that waited in it (0: none yet)

 protected:
  // Items accepted (put, handed to a getter, or taken from a waiting putter), counted where
  // it happens so that any put through a queue<T>& counts; joinable_queue counts them down.
  std::size_t unfinished_ = 0;
};

// channel<T>: a queue of size 0, a hand-off: put() waits until a getter takes the item.
template <class T>
class channel : public queue<T> {
 public:
  channel() : queue<T>(0) {}
  ~channel() { this->check_unwaited("tendril::channel"); }
};

// joinable_queue<T>: a queue that also counts unfinished items: put() adds one, task_done()
// marks one finished, join() waits until none is unfinished (gevent's JoinableQueue).
template <class T>
class joinable_queue : public queue<T> {
 public:
  explicit joinable_queue(std::size_t maxsize = queue<T>::unbounded) : queue<T>(maxsize) {}
  ~joinable_queue() { this->check_unwaited("tendril::joinable_queue", joiners_.size()); }

  // put(), put_for(), try_put() and the rest are queue<T>'s: an item counts as unfinished
  // once the queue has accepted it (a put that timed out, was killed or was refused by
  // close() adds nothing), also when put through a queue<T>&.

  // task_done() marks one item finished; calling it more often than put() is a bug
  // (std::logic_error).
  void task_done() {
    this->check_thread();
    if (unfinished_ == 0) {
      throw std::logic_error(
          "tendril::joinable_queue::task_done: called more times than items were put");
    }
    if (--unfinished_ == 0) {
      while (detail::waiter* w = joiners_.pop_front()) w->wake();
    }
  }
  // unfinished() is how many items were put and not yet marked done. Throws wrong_thread.
  // Switches: no.
  std::size_t unfinished() const {
    this->check_thread();
    return unfinished_;
  }

  // join() waits until every item put was marked done. Switches: yes.
  void join() { join_deadline(detail::forever_ns); }
  template <class Rep, class Period>
  bool join_for(std::chrono::duration<Rep, Period> d) {
    return join_deadline(detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool join_until(std::chrono::time_point<Clock, Duration> tp) {
    return join_deadline(detail::deadline_at(tp));
  }

 private:
  bool join_deadline(std::int64_t deadline_ns) {
    this->check_thread();
    if (unfinished_ == 0) return true;
    this->note_thread();
    detail::waiter w;
    joiners_.push_back(w);
    struct unlink {
      detail::waiter_list& l;
      detail::waiter& w;
      ~unlink() { l.remove(w); }
    } guard{joiners_, w};
    return w.wait(deadline_ns);
  }

  using queue<T>::unfinished_;
  detail::waiter_list joiners_;
};

}  // namespace tendril

#endif
