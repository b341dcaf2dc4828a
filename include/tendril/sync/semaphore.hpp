// tendril::semaphore and bounded_semaphore: permits that greenlets wait for
// (gevent.lock.Semaphore, BoundedSemaphore), with std::counting_semaphore's names.
#ifndef TENDRIL_SYNC_SEMAPHORE_HPP
#define TENDRIL_SYNC_SEMAPHORE_HPP

#include <chrono>
#include <cstddef>
#include <mutex>

#include "tendril/hub/deadline.hpp"
#include "tendril/sync/observer.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril {

// semaphore(n) holds n permits. acquire() takes one, waiting while there is none; release()
// gives permits back. Waiters are served first come, first served: a released permit goes
// to the longest waiter, never to a greenlet that arrives later. release() may be called from
// any thread and wakes waiters through their own hubs. Once release() returned, its thread may
// destroy the semaphore while the greenlets it woke have yet to resume.
class semaphore {
 public:
  // Throws std::invalid_argument for a negative count.
  explicit semaphore(std::ptrdiff_t initial = 1);
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;
  // Destroying it while greenlets wait in it stops the process with a message.
  virtual ~semaphore();

  // acquire() takes a permit, waiting for one. Switches: yes (only when it waits).
  void acquire() { acquire_deadline(detail::forever_ns); }
  // try_acquire() takes one if one is free and nobody waits. Switches: no.
  bool try_acquire() noexcept;
  // try_acquire_for() / try_acquire_until() wait at most so long; false if the time ran out.
  template <class Rep, class Period>
  bool try_acquire_for(std::chrono::duration<Rep, Period> d) {
    return acquire_deadline(detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool try_acquire_until(std::chrono::time_point<Clock, Duration> tp) {
    return acquire_deadline(detail::deadline_at(tp));
  }
  // release() gives n permits back (std::invalid_argument for n < 0, std::overflow_error if
  // the free count would pass PTRDIFF_MAX; either changes nothing). Switches: no.
  virtual void release(std::ptrdiff_t n = 1);

  // count() is the number of free permits; waiting() the number of waiting greenlets.
  std::ptrdiff_t count() const noexcept;
  std::size_t waiting() const noexcept;

  // For the layers above: acquire with a hub deadline; shielded waits cannot be interrupted.
  bool acquire_deadline(std::int64_t deadline_ns, bool shielded = false);

 protected:
  // give() hands up to n permits to waiters, the rest to the count. With mu_ held.
  void give(std::ptrdiff_t n, detail::woken_batch& woken);
  // claim_longest() takes the longest waiter that can still be handed a permit, claimed but
  // not scheduled yet, or null if there is none. With mu_ held.
  detail::waiter* claim_longest(detail::woken_batch& woken) noexcept;
  // check_unwaited() stops the process if greenlets wait (for the destructors; type names
  // the class destroyed).
  void check_unwaited(const char* type) const noexcept {
    if (nwaiting_ != 0) [[unlikely]]
      detail::destroyed_while_waited(type, nwaiting_);
  }
  mutable std::mutex mu_;
  std::ptrdiff_t count_;

 private:
  friend class mutex;  // its destructor names itself
  detail::waiter_list waiters_;
  std::size_t nwaiting_ = 0;
};

// bounded_semaphore(n): a semaphore whose release() beyond its initial count is a bug:
// it throws std::logic_error and changes nothing.
class bounded_semaphore : public semaphore {
 public:
  explicit bounded_semaphore(std::ptrdiff_t initial = 1) : semaphore(initial), initial_(initial) {}
  ~bounded_semaphore() override { check_unwaited("tendril::bounded_semaphore"); }
  void release(std::ptrdiff_t n = 1) override;

 private:
  std::ptrdiff_t initial_;
};

}  // namespace tendril

#endif
