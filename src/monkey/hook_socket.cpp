// Hooks: accept and connect (which block), and the bookkeeping calls that keep the hooks'
// view of each descriptor right: creation, close, dup, fcntl (and fcntl64), ioctl(FIONBIO).
//
// accept and connect have no per-call "don't wait" flag, so the hooks turn O_NONBLOCK on
// underneath a blocking listener or connecting socket, and remember that the caller wants
// blocking: fcntl(F_GETFL) then reports the caller's own view, F_SETFL and FIONBIO record it.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>

#include "monkey/core.hpp"

extern "C" {
char tendril_hook_anchor_socket = 0;
}

namespace {
using namespace tendril::detail::monkey;
namespace real = tendril::detail::real;
using tendril::detail::io_direction;

// Copies the mode bits of a descriptor to its duplicate (they share O_NONBLOCK).
void share_bits(int from, int to) { fresh(to, bits(from)); }

// The bits of a socket made through the hooks: the caller's O_NONBLOCK, no time limits yet,
// and whether it is a stream (type as given to socket(), flags included).
std::uint8_t made(bool nonblocking, int type = 0) {
  const bool is_stream = (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) == SOCK_STREAM;
  return static_cast<std::uint8_t>(mode_known | no_timeouts | (nonblocking ? user_nonblock : 0) |
                                   (is_stream ? stream : 0));
}

// Whether fd is a listening socket (a system call: made once, before the hooks first turn
// O_NONBLOCK on underneath it).
bool listening(int fd) {
  int on = 0;
  socklen_t len = sizeof on;
  return real::get().getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on != 0;
}

// The kernel writes *addrlen only when a connection is taken, so a retry finds it as the
// caller gave it; the hook never reads it (a bad pointer is the kernel's EFAULT).
// h: the greenlet parks (coop), or the thread blocks in a real poll() (plain: the inactive
// path of a listener the hooks made non-blocking under a caller who wants blocking).
int accept_common(int fd, sockaddr* addr, socklen_t* addrlen, int flags, bool coop) {
  const int saved = errno;
  const bool caller_nb = caller_nonblocking(fd);
  // Not a listener (EINVAL, ENOTSOCK...): libc's answer, the descriptor's mode left alone.
  if (coop && !caller_nb && !(bits(fd) & we_set_nonblock) &&
      (!listening(fd) || !make_nonblocking(fd)))
    return real::get().accept4(fd, addr, addrlen, flags);
  std::int64_t deadline = -1;
  while (true) {
    const int c = real::get().accept4(fd, addr, addrlen, flags);
    if (c >= 0) {
      // The new socket has the listener's time limits (the kernel copies them).
      // It has the listener's type too.
      if (g_patched.load(std::memory_order_relaxed)) {
        fresh(c, static_cast<std::uint8_t>((made((flags & SOCK_NONBLOCK) != 0) & ~no_timeouts) |
                                           (bits(fd) & (no_timeouts | stream))));
      }
      errno = saved;
      return c;
    }
    const int e = errno;
    if (e == EINTR || e == ECONNABORTED) continue;
    if (e != EAGAIN && e != EWOULDBLOCK) return -1;
    if (caller_nb) return -1;
    int rc;
    if (coop) {
      if (deadline == -1) deadline = option_deadline(fd, SO_RCVTIMEO);
      rc = wait_fd(fd, io_direction::read, deadline);
    } else {
      if (deadline == -1) deadline = plain_deadline(fd, SO_RCVTIMEO);
      rc = wait_plain(fd, POLLIN, deadline);
    }
    if (rc == -ETIMEDOUT) return fail(EAGAIN);
    if (rc < 0) return fail(-rc);
  }
}

// The inactive path of accept: libc's call, and if it would block only because the hooks made
// the listener non-blocking, the wait libc's blocking accept makes.
int accept_inactive(int fd, sockaddr* addr, socklen_t* addrlen, int flags) {
  const int saved = errno;
  const int c = real::get().accept4(fd, addr, addrlen, flags);
  if (c >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || !hooks_made_nonblocking(fd)) return c;
  errno = saved;
  return accept_common(fd, addr, addrlen, flags, false);
}

// The wait of a blocking connect under way (EINPROGRESS, or EALREADY from a second call,
// which Linux's blocking connect waits through too): until the handshake is done, then its
// outcome (SO_ERROR). Past SO_SNDTIMEO, Linux's blocking connect fails with EINPROGRESS (still
// under way). Once it is done, one more connect: it moves the socket to "connected" as the
// kernel's blocking connect does, so that the caller's next connect says EISCONN.
int connect_wait(int fd, const sockaddr* addr, socklen_t len, int saved, bool coop) {
  const std::int64_t deadline =
      coop ? option_deadline(fd, SO_SNDTIMEO) : plain_deadline(fd, SO_SNDTIMEO);
  while (true) {
    const int rc =
        coop ? wait_fd(fd, io_direction::write, deadline) : wait_plain(fd, POLLOUT, deadline);
    if (rc == -ETIMEDOUT) return fail(EINPROGRESS);
    if (rc < 0) return fail(-rc);
    int err = 0;
    socklen_t elen = sizeof err;
    if (real::get().getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) return -1;
    if (err != 0) return fail(err);
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) {
      real::get().connect(fd, addr, len);
      errno = saved;
      return 0;
    }
    if (errno != ENOTCONN) return -1;  // else the wake was early: wait again
  }
}

// An AF_UNIX listener whose queue is full: a non-blocking connect says EAGAIN where libc's
// blocking one waits for room (the kernel gives no readiness for it). A blocking caller tries
// again after a short pause that grows (1 ms doubling to 64 ms), within SO_SNDTIMEO (then
// EAGAIN, as Linux says).
int connect_unix_full(int fd, const sockaddr* addr, socklen_t len, int saved, bool coop) {
  const std::int64_t deadline =
      coop ? option_deadline(fd, SO_SNDTIMEO) : plain_deadline(fd, SO_SNDTIMEO);
  std::int64_t pause = 1'000'000;
  while (true) {
    if (coop) {
      const std::int64_t now = tendril::detail::hub_now_ns();
      if (now >= deadline) return fail(EAGAIN);
      const int rc = sleep_until(deadline - now < pause ? deadline : now + pause);
      if (rc == -ECANCELED) return fail(ECANCELED);
    } else {
      const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count();
      if (now >= deadline) return fail(EAGAIN);
      pause_plain(deadline - now < pause ? deadline - now : pause);
    }
    pause = std::min<std::int64_t>(pause * 2, 64'000'000);
    if (real::get().connect(fd, addr, len) == 0) {
      errno = saved;
      return 0;
    }
    if (errno == EINPROGRESS || errno == EALREADY) return connect_wait(fd, addr, len, saved, coop);
    if (errno != EAGAIN && errno != EINTR) return -1;
  }
}

// After a connect that did not finish at once, for a caller who wants blocking.
int connect_blocking(int fd, const sockaddr* addr, socklen_t len, int saved, bool coop) {
  const int e = errno;
  if (e == EINPROGRESS || e == EALREADY || e == EINTR)
    return connect_wait(fd, addr, len, saved, coop);
  if (e == EAGAIN && addr != nullptr && len >= sizeof(sa_family_t) && addr->sa_family == AF_UNIX) {
    errno = saved;
    return connect_unix_full(fd, addr, len, saved, coop);
  }
  return -1;
}

}  // namespace

extern "C" int accept(int fd, sockaddr* addr, socklen_t* addrlen) {
  if (!active()) return accept_inactive(fd, addr, addrlen, 0);
  return accept_common(fd, addr, addrlen, 0, true);
}

extern "C" int accept4(int fd, sockaddr* addr, socklen_t* addrlen, int flags) {
  if (!active()) return accept_inactive(fd, addr, addrlen, flags);
  return accept_common(fd, addr, addrlen, flags, true);
}

extern "C" int connect(int fd, const sockaddr* addr, socklen_t len) {
  const int saved = errno;
  if (!active()) {
    if (real::get().connect(fd, addr, len) == 0) return 0;
    if (errno != EINPROGRESS && errno != EALREADY && errno != EAGAIN) return -1;
    if (!hooks_made_nonblocking(fd)) return -1;
    return connect_blocking(fd, addr, len, saved, false);
  }
  if (caller_nonblocking(fd)) return real::get().connect(fd, addr, len);
  if (!make_nonblocking(fd)) return real::get().connect(fd, addr, len);
  if (real::get().connect(fd, addr, len) == 0) {
    errno = saved;
    return 0;
  }
  return connect_blocking(fd, addr, len, saved, true);
}

extern "C" int socket(int domain, int type, int protocol) {
  const int fd = real::get().socket(domain, type, protocol);
  if (fd >= 0 && g_patched.load(std::memory_order_relaxed))
    fresh(fd, made(type & SOCK_NONBLOCK, type));
  return fd;
}

extern "C" int socketpair(int domain, int type, int protocol, int sv[2]) {
  const int rc = real::get().socketpair(domain, type, protocol, sv);
  if (rc == 0 && g_patched.load(std::memory_order_relaxed)) {
    fresh(sv[0], made(type & SOCK_NONBLOCK, type));
    fresh(sv[1], made(type & SOCK_NONBLOCK, type));
  }
  return rc;
}

extern "C" int pipe(int fds[2]) {
  const int rc = real::get().pipe(fds);
  if (rc == 0 && g_patched.load(std::memory_order_relaxed)) {
    fresh(fds[0], not_a_socket | mode_known);
    fresh(fds[1], not_a_socket | mode_known);
  }
  return rc;
}

extern "C" int pipe2(int fds[2], int flags) {
  const int rc = real::get().pipe2(fds, flags);
  if (rc == 0 && g_patched.load(std::memory_order_relaxed)) {
    const auto b = static_cast<std::uint8_t>(not_a_socket | mode_known |
                                             ((flags & O_NONBLOCK) ? user_nonblock : 0));
    fresh(fds[0], b);
    fresh(fds[1], b);
  }
  return rc;
}

extern "C" int close(int fd) {
  // Whoever waits on fd in this thread wakes with EBADF, before the number can be reused.
  if (g_patched.load(std::memory_order_relaxed)) closing(fd);
  return real::get().close(fd);
}

// fclose() closes its descriptor inside glibc, where close() is not interposed: an fdopen'd
// socket would be closed behind the hooks' back, its number free for a file they never see
// made (open, eventfd), which a read would then take for the old socket.
extern "C" int fclose(FILE* stream) {
  if (stream != nullptr && g_patched.load(std::memory_order_relaxed)) {
    if (const int fd = ::fileno(stream); fd >= 0) closing(fd);
  }
  return real::get().fclose(stream);
}

extern "C" int dup(int fd) {
  const int n = real::get().dup(fd);
  if (n >= 0 && g_patched.load(std::memory_order_relaxed)) share_bits(fd, n);
  return n;
}

extern "C" int dup2(int oldfd, int newfd) {
  if (!g_patched.load(std::memory_order_relaxed)) return real::get().dup2(oldfd, newfd);
  // Only once the call succeeded: a failed dup2 leaves newfd as it was. share_bits() ends
  // the record of the file newfd named (its waiters get EBADF) before taking oldfd's bits.
  const int n = real::get().dup2(oldfd, newfd);
  if (n >= 0 && oldfd != newfd) share_bits(oldfd, n);
  return n;
}

extern "C" int dup3(int oldfd, int newfd, int flags) {
  if (!g_patched.load(std::memory_order_relaxed)) return real::get().dup3(oldfd, newfd, flags);
  const int n = real::get().dup3(oldfd, newfd, flags);  // as dup2: newfd's record after
  if (n >= 0) share_bits(oldfd, n);
  return n;
}

namespace {

// fcntl and fcntl64 share this: glibc's <fcntl.h> names fcntl64 where a program is built with
// _FILE_OFFSET_BITS=64 (Meson's default), so both must keep the caller's O_NONBLOCK view.
// real_fcntl is the libc function the caller named.
int fcntl_common(int (*real_fcntl)(int, int, ...), int fd, int cmd, void* arg) {
  if (!g_patched.load(std::memory_order_relaxed)) return real_fcntl(fd, cmd, arg);
  const std::uint8_t b = (cmd == F_GETFL || cmd == F_SETFL) ? checked_bits(fd) : bits(fd);
  switch (cmd) {
    case F_GETFL: {
      int fl = real_fcntl(fd, cmd);
      if (fl < 0 || !(b & we_set_nonblock)) return fl;
      if (!(fl & O_NONBLOCK)) {
        // Stale bits: the number was closed where no hook saw it and now names another file.
        set_bits(fd, static_cast<std::uint8_t>(b & not_a_socket));
        return fl;
      }
      if (!(b & user_nonblock)) fl &= ~O_NONBLOCK;
      return fl;
    }
    case F_SETFL: {
      const auto want = static_cast<int>(reinterpret_cast<std::intptr_t>(arg));
      // The hooks need O_NONBLOCK on underneath where they set it: keep it there. Either way,
      // remember what the caller asked.
      const int rc = real_fcntl(fd, cmd, (b & we_set_nonblock) ? want | O_NONBLOCK : want);
      if (rc == 0) {
        set_bits(fd, static_cast<std::uint8_t>((b & ~user_nonblock) | mode_known |
                                               ((want & O_NONBLOCK) ? user_nonblock : 0)));
      }
      return rc;
    }
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
      const int n = real_fcntl(fd, cmd, arg);
      if (n >= 0) share_bits(fd, n);
      return n;
    }
    default:
      return real_fcntl(fd, cmd, arg);
  }
}

}  // namespace

extern "C" int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);  // an int or a pointer: the same register either way
  va_end(ap);
  return fcntl_common(real::get().fcntl, fd, cmd, arg);
}

extern "C" int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return fcntl_common(real::get().fcntl64, fd, cmd, arg);
}

extern "C" int ioctl(int fd, unsigned long request, ...) {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (g_patched.load(std::memory_order_relaxed) && request == FIONBIO && arg != nullptr) {
    const std::uint8_t b = checked_bits(fd);
    const bool on = *static_cast<int*>(arg) != 0;
    int one = 1;
    // Where the hooks set O_NONBLOCK underneath, it stays on; the caller's wish is recorded.
    const int rc = real::get().ioctl(fd, request, (b & we_set_nonblock) ? &one : arg);
    if (rc == 0) {
      set_bits(fd, static_cast<std::uint8_t>((b & ~user_nonblock) | mode_known |
                                             (on ? user_nonblock : 0)));
    }
    return rc;
  }
  return real::get().ioctl(fd, request, arg);
}

// setsockopt: libc's, and a time limit set on a socket is remembered, so that the calls that
// wait look it up (getsockopt) only on sockets that have one.
extern "C" int setsockopt(int fd, int level, int optname, const void* optval, socklen_t optlen) {
  const int rc = real::get().setsockopt(fd, level, optname, optval, optlen);
  if (rc == 0 && level == SOL_SOCKET && g_patched.load(std::memory_order_relaxed)) {
    switch (optname) {
      case SO_RCVTIMEO_OLD:
      case SO_SNDTIMEO_OLD:
      case SO_RCVTIMEO_NEW:
      case SO_SNDTIMEO_NEW:
        set_bits(fd, static_cast<std::uint8_t>(bits(fd) & ~no_timeouts));
        break;
      default:
        break;
    }
  }
  return rc;
}
