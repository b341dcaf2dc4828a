// The backend contract: how a hub's loop waits for descriptors and for other threads.
//
// One implementation per file, chosen when the hub starts (make_backend(), TENDRIL_BACKEND
// forces one): backend_uring.cpp (io_uring, the default where the kernel allows it),
// backend_epoll.cpp, backend_poll.cpp (a plain poll(2) loop kept for tests and odd
// platforms).
//
// I/O is expressed at the level of operations (accept, connect, recv, send, read, write),
// so that each backend does what it does best: io_uring completes them itself (submit()),
// epoll and poll have the caller make the system call and wait for readiness in between
// (watch()). native_ops() tells which.
//
// A backend belongs to one hub and is used from that hub's thread only, except wake().
// Readiness is reported once per change (edge-triggered): after ready() reported POLLIN, the
// backend may stay silent about POLLIN until the owner, having drained the descriptor to
// EAGAIN, calls rearm(). A hang-up or an error is reported once too (never on every wait),
// and io_uring reports nothing more about a descriptor until rearm(). That is what lets epoll keep
// each descriptor registered once, for its whole life, with no system call per wait (Go's netpoll
// does the same).
//
//   watch(w)        Registers w.fd for w.events (POLLIN, POLLOUT) and reports to w.ready.
//                   One watch per descriptor. Returns 0, or -errno: -EEXIST if the
//                   descriptor is watched already (io_uring only tells for the same io_watch:
//                   it keeps no table by descriptor), -EBADF for a closed one, -EPERM for one
//                   the kernel cannot wait on (a regular file, with epoll). Does not dispatch.
//   rearm(w, ev)    Asks for the next report of ev (after the owner saw EAGAIN). Cheap;
//                   epoll needs nothing, poll re-enables the events.
//   unwatch(w)      Stops it. Never fails, also for a descriptor closed meanwhile. After it,
//                   w is never touched again, not even by a wait() already under way.
//   wait(t)         Blocks at most t (t < 0: without limit, t == 0: only looks), then calls
//                   w.ready(&w, revents) for each ready watch, on this thread; revents is
//                   the ready subset of w.events plus POLLERR/POLLHUP (and POLLRDHUP where
//                   the backend learns that the peer shut its side down). A callback may watch,
//                   rearm and unwatch anything, itself included. Returns the number of
//                   callbacks made (0 on timeout or wake), -EINTR when a signal handler
//                   interrupted the wait (callbacks may have been made too), or -errno.
//   wake()          From any thread, async-signal-safe: makes the current wait() return, or
//                   the next one return at once. Wakes that pile up are merged.
//   watching()      The number of watches (the hub looks for I/O between passes while any).
//   resources()     The backend's own descriptors and the mappings of its ring, the same for
//                   its whole life: a forked child closes and unmaps them for every hub of the
//                   parent, without touching the kernel objects they share with the parent (no
//                   epoll_ctl, no submission), and never uses or destroys those backends again.
//   persistent()    True when a watch stays in the kernel between waits, tied to the file
//                   the number named when it was made: epoll's registration, io_uring's poll
//                   in flight (it holds the file). If the number is closed where the owner
//                   does not see it (a raw system call) and reused, that watch still follows
//                   the old file (or is gone, with epoll) without telling: the owner must
//                   unwatch and watch again. (poll looks the number up on every wait.)
//
// Operations, where native_ops() is true (io_uring):
//   submit(op)      Starts op. It completes later: wait() sets op.result (>= 0, or -errno)
//                   and calls op.complete(&op) on this thread, exactly once, never from
//                   within submit(). The memory op points to must stay valid until then.
//   cancel(op)      Asks for op to end early; its completion still arrives (with -ECANCELED,
//                   or with its real result if it finished first). The owner must wait for
//                   that completion before op's memory goes away.
//   in_flight()     Operations submitted and not yet completed.
//   release_now()   Hands the kernel at once the cancellations that cancel() and unwatch()
//                   queued, and lets it finish them, so that the references their requests
//                   hold on files go now: a socket closed while a poll or an operation was in
//                   flight then ends at its close, not at the next wait() (the peer sees the
//                   end even if the thread blocks elsewhere first). May make a system call.
//
// What a backend may not do: switch greenlets, allocate inside wait(), call back into the
// hub except through w.ready and op.complete, report a watch after unwatch().

#ifndef TENDRIL_SRC_HUB_BACKEND_HPP
#define TENDRIL_SRC_HUB_BACKEND_HPP

#include <sys/socket.h>

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
  void* backend_data = nullptr;
};

// One I/O operation for a backend that completes operations itself.
struct io_op {
  enum class code : std::uint8_t { recv, send, recvmsg, sendmsg, accept, connect, read, write };
  code op = code::recv;
  int fd = -1;
  void* buf = nullptr;  // recv, send, read, write
  std::size_t len = 0;
  int flags = 0;             // recv, send, recvmsg, sendmsg, accept
  std::uint64_t offset = 0;  // read, write: file offset
  sockaddr* addr = nullptr;  // accept: where the peer goes; connect: the peer
  socklen_t* addrlen = nullptr;
  socklen_t peerlen = 0;    // connect
  msghdr* msg = nullptr;    // recvmsg, sendmsg
  std::int64_t result = 0;  // set before complete()
  void (*complete)(io_op* self) = nullptr;
  void* context = nullptr;  // for complete()
};

// What a backend holds of the process: its own descriptors and the mappings of a ring.
struct backend_resources {
  int fds[2] = {-1, -1};
  struct mapping {
    void* addr = nullptr;
    std::size_t len = 0;
  } maps[3];
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
  virtual backend_resources resources() const noexcept = 0;
  virtual bool persistent() const noexcept { return false; }

  virtual bool native_ops() const noexcept { return false; }
  virtual void submit(io_op& op) noexcept {
    op.result = -95;  // EOPNOTSUPP: never called when native_ops() is false
    op.complete(&op);
  }
  virtual void cancel(io_op&) noexcept {}
  virtual std::size_t in_flight() const noexcept { return 0; }
  virtual void release_now() noexcept {}
};

// make_backend() is the backend named by TENDRIL_BACKEND (epoll, io_uring, poll), or the
// best the kernel has. Throws std::system_error when it cannot be set up,
// std::invalid_argument for an unknown TENDRIL_BACKEND.
std::unique_ptr<backend> make_backend();
std::unique_ptr<backend> make_epoll_backend();
std::unique_ptr<backend> make_poll_backend();
// make_uring_backend() throws std::system_error when the kernel refuses io_uring.
std::unique_ptr<backend> make_uring_backend();

}  // namespace tendril::detail

#endif
