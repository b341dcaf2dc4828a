// The machinery every hook shares (L5): whether hooks are on for the calling thread, the
// caller's own view of O_NONBLOCK for descriptors whose mode the hooks changed, and the one
// wait every blocking hook funnels into (the I/O layer's descriptor wait), which turns a kill
// or a timeout scope into -1/ECANCELED (never a C++ exception across the C ABI) and keeps it
// pending for the greenlet's next cooperative call.
#ifndef TENDRIL_SRC_MONKEY_CORE_HPP
#define TENDRIL_SRC_MONKEY_CORE_HPP

#include <poll.h>
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "io/fd_table.hpp"
#include "monkey/real.hpp"
#include "tendril/hub/deadline.hpp"

namespace tendril::detail::monkey {

extern std::atomic<bool> g_patched;

// active() is true when a hook must make its call cooperative: patched, and the calling
// thread has a hub and is not running the hub itself (the loop's own calls are libc's).
bool active_slow() noexcept;
inline bool active() noexcept { return g_patched.load(std::memory_order_relaxed) && active_slow(); }

// Per-descriptor mode bits, process-wide (a descriptor is the process's, not a thread's).
// The hooks make a blocking socket non-blocking underneath only where they must (listeners
// and connecting sockets: accept and connect have no per-call flag) and remember the
// caller's own choice, which F_GETFL reports. For descriptors made through the hooks
// (socket, accept, socketpair, pipe, dup) they also know O_NONBLOCK as the caller set it and
// whether a time limit was ever set, so that the path of a call about to wait makes no
// system call to find out.
enum mode_bits : std::uint8_t {
  we_set_nonblock = 1,  // O_NONBLOCK is on because a hook put it there
  user_nonblock = 2,    // the caller asked for O_NONBLOCK (meaningful with 1 or 8)
  not_a_socket = 4,     // recv() said ENOTSOCK: use readiness, then the plain call
  mode_known = 8,       // made or last set through the hooks: bit 2 is the caller's flag
  no_timeouts = 16,     // no SO_RCVTIMEO / SO_SNDTIMEO was ever set through setsockopt
  drained = 32,         // the last hooked read was short: the socket's queue was empty
  stream = 64,          // a SOCK_STREAM socket made through the hooks: the only kind where a
                        // short read means an empty queue (not a datagram, not a record)
};
std::uint8_t bits(int fd) noexcept;
void set_bits(int fd, std::uint8_t b) noexcept;
void reset_bits(int fd) noexcept;
// checked_bits() is bits() after making sure the number still names the file the O_NONBLOCK
// bits were set for (an fstat when they are set); stale bits are dropped. For the rare calls
// that act on them: fcntl, ioctl, waits on descriptors that are not sockets.
std::uint8_t checked_bits(int fd) noexcept;
// fresh() starts the hooks' view of a number the kernel just handed out (socket, accept,
// pipe, dup...): whatever they kept for it belonged to a file closed where they did not see
// it (glibc's own fclose of an fdopen'd socket), so it is dropped, then the bits are set.
void fresh(int fd, std::uint8_t b) noexcept;

// note_read() records whether a hooked read of count bytes that returned n emptied the
// socket (a short read). wait_before_read() is true when the next read may wait for the
// backend's report before asking the kernel: the socket was emptied, the caller wants
// blocking reads, and no end of stream or error was reported since (an edge-triggered
// backend reports those once). It saves the system call that would say EAGAIN.
// Only stream sockets made through the hooks are noted; forget_drained() is for the other
// read calls (recv with flags, recvfrom, recvmsg, readv), which may take the backend's report
// or leave bytes queued without noting it: the next plain read asks the kernel first.
void note_read(int fd, ssize_t n, std::size_t count) noexcept;
bool wait_before_read(int fd) noexcept;
void forget_drained(int fd) noexcept;

// caller_nonblocking() is the caller's own view: O_NONBLOCK as the caller set it.
bool caller_nonblocking(int fd) noexcept;
// make_nonblocking() turns O_NONBLOCK on underneath if it is off (remembering that the
// caller wants blocking). False if the descriptor is bad.
bool make_nonblocking(int fd) noexcept;

// hooks_made_nonblocking() is true when O_NONBLOCK is on only because a hook put it there
// (the caller wants blocking). libc's call on such a descriptor, made where the hooks are off
// (a thread with no hub, the hub's own loop), would say EAGAIN where the caller expects it to
// wait: the hooks' inactive path then waits itself (wait_plain()). An fstat when the bit is set.
bool hooks_made_nonblocking(int fd) noexcept;

// plain_deadline() is the deadline SO_RCVTIMEO or SO_SNDTIMEO of fd sets for a call that
// starts now, on steady_clock (not the hub clock: no hub is involved), forever_ns if none.
// wait_plain() blocks the thread in a real poll() until fd is ready for events or the
// deadline passes: 0, -ETIMEDOUT, or -errno. A signal handler's EINTR waits on (as if
// SA_RESTART, as the hooks' cooperative waits do).
std::int64_t plain_deadline(int fd, int optname) noexcept;
int wait_plain(int fd, short events, std::int64_t deadline_ns) noexcept;
// pause_plain() blocks the thread for ns nanoseconds (a real nanosleep).
void pause_plain(std::int64_t ns) noexcept;

// wait_fd() parks the greenlet until fd is ready for d: 0, -ETIMEDOUT (deadline), -EBADF
// (closed meanwhile), -ECANCELED (a kill or timeout scope: kept pending), -errno.
int wait_fd(int fd, io_direction d, std::int64_t deadline_ns) noexcept;

// recv_native() reads a socket that wait_before_read() said is empty by handing the read to
// the backend (io_uring): the greenlet parks until the kernel has copied data into buf, which
// saves the system call a readiness wait is followed by. Returns the byte count or -errno:
// -ETIMEDOUT (deadline), -EBADF (closed meanwhile), -ECANCELED (a kill or timeout scope, kept
// pending; bytes that arrived anyway are returned instead); not_native when the backend has
// no such operation or the kernel would not wait (the caller then waits for readiness).
inline constexpr std::int64_t not_native = INT64_MIN;
std::int64_t recv_native(int fd, void* buf, std::size_t len, std::int64_t deadline_ns) noexcept;

// wait_many() parks until any of fds is ready as asked, or the deadline: 0, -ETIMEDOUT,
// -ECANCELED. The caller looks with a poll of its own afterwards.
int wait_many(const pollfd* fds, nfds_t n, std::int64_t deadline_ns) noexcept;

// sleep_until() parks until the deadline: 0, -EINTR (a signal handler ran on this thread
// meanwhile, while the hub waited), or -ECANCELED.
int sleep_until(std::int64_t deadline_ns) noexcept;

// option_deadline() is the deadline SO_RCVTIMEO or SO_SNDTIMEO of fd sets for a call that
// starts now (forever_ns if none).
std::int64_t option_deadline(int fd, int optname) noexcept;

// closing() ends the I/O layer's record of fd in this thread (waiters get EBADF) and clears
// the mode bits; the caller then closes the descriptor.
void closing(int fd) noexcept;

// on_pool() runs fn(ctx) on the thread pool and waits for it, uninterruptibly (fn writes into
// the caller's memory); a kill or timeout that arrives meanwhile stays pending.
void on_pool(void (*fn)(void*), void* ctx) noexcept;

inline int fail(int e) noexcept {
  errno = e;
  return -1;
}

}  // namespace tendril::detail::monkey

#endif
