// The backend contract: how a hub's loop waits for descriptors and for other threads.
//
// One implementation per file, chosen when the hub starts (make_backend(), TENDRIL_BACKEND
// forces one): backend_epoll.cpp, backend_poll.cpp (a plain poll(2) loop kept for tests and
// odd platforms); the I/O layer adds backend_uring.cpp and operation-level I/O (accept,
// connect, recv, send, read, write completed by the backend) on top of this same interface.
//
// A backend belongs to one hub and is used from that hub's thread only, except wake().
// Readiness is reported once per change (edge-triggered): after ready() reported POLLIN, the
// backend may stay silent about POLLIN until the owner, having drained the descriptor to
// EAGAIN, calls rearm(). That is what lets epoll keep each descriptor registered once, for
// its whole life, with no system call per wait (Go's netpoll does the same).
//
//   watch(w)        Registers w.fd for w.events (POLLIN, POLLOUT) and reports to w.ready.
//                   One watch per descriptor. Returns 0, or -errno: -EEXIST if the
//                   descriptor is watched already, -EBADF for a closed one, -EPERM for one
//                   the kernel cannot wait on (a regular file, with epoll). Does not dispatch.
//   rearm(w, ev)    Asks for the next report of ev (after the owner saw EAGAIN). Cheap;
//                   epoll needs nothing, poll re-enables the events.
//   unwatch(w)      Stops it. Never fails, also for a descriptor closed meanwhile. After it,
//                   w is never touched again, not even by a wait() already under way.
//   wait(t)         Blocks at most t (t < 0: without limit, t == 0: only looks), then calls
//                   w.ready(&w, revents) for each ready watch, on this thread; revents is
//                   the ready subset of w.events plus POLLERR/POLLHUP. A callback may watch,
//                   rearm and unwatch anything, itself included. Returns the number of
//                   callbacks made (0 on timeout or wake), or -errno; EINTR counts as a wake.
//   wake()          From any thread, async-signal-safe: makes the current wait() return, or
//                   the next one return at once. Wakes that pile up are merged.
//   watching()      The number of watches, for the hub's "would block forever" check.
//
// What a backend may not do: switch greenlets, allocate inside wait(), call back into the
// hub except through w.ready, report a watch after unwatch().

#ifndef TENDRIL_SRC_HUB_BACKEND_HPP
#define TENDRIL_SRC_HUB_BACKEND_HPP

#include <chrono>
#include <cstdint>
#include <memory>

namespace tendril::detail {

struct io_watch {
  int fd = -1;
  std::uint32_t events = 0;  // POLLIN | POLLOUT
  void (*ready)(io_watch* self, std::uint32_t revents) = nullptr;
  // Backend bookkeeping.
  int slot = -1;
};

class backend {
 public:
  virtual ~backend() = default;
  virtual const char* name() const noexcept = 0;
  virtual int watch(io_watch& w) noexcept = 0;
  virtual void rearm(io_watch& w, std::uint32_t events) noexcept = 0;
  virtual void unwatch(io_watch& w) noexcept = 0;
  virtual int wait(std::chrono::nanoseconds timeout) noexcept = 0;
  virtual void wake() noexcept = 0;
  virtual std::size_t watching() const noexcept = 0;
};

// make_backend() is the backend named by TENDRIL_BACKEND (epoll, poll), or the best the
// kernel has. Throws std::system_error when it cannot be set up, std::invalid_argument for
// an unknown TENDRIL_BACKEND.
std::unique_ptr<backend> make_backend();
std::unique_ptr<backend> make_epoll_backend();
std::unique_ptr<backend> make_poll_backend();

}  // namespace tendril::detail

#endif
