// Hooks: reads and writes, on sockets and other descriptors.
//
// Sockets: the call is made with MSG_DONTWAIT, so the descriptor's own mode is never
// touched; while it would block (and the caller did not ask for non-blocking), the greenlet
// waits for readiness, within SO_RCVTIMEO / SO_SNDTIMEO if set (EAGAIN when they run out, as
// Linux does). A blocking write or send keeps going until all of it is written, as the
// kernel would. Other descriptors (pipes, terminals, eventfds): wait until ready, then make
// the caller's own call. Regular files are always "ready": libc's call runs as it is.
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include "monkey/core.hpp"

extern "C" {
char tendril_hook_anchor_io = 0;
}

namespace {
using namespace tendril::detail::monkey;
namespace real = tendril::detail::real;
using tendril::detail::forever_ns;
using tendril::detail::io_direction;

// After a would-block on a socket: the caller's choice, or a wait. 0: try again; else the
// return value for the caller (with errno set).
int would_block(int fd, io_direction d, std::int64_t& deadline) {
  if (caller_nonblocking(fd)) return fail(EAGAIN);
  if (deadline == -1)
    deadline = option_deadline(fd, d == io_direction::read ? SO_RCVTIMEO : SO_SNDTIMEO);
  const int rc = wait_fd(fd, d, deadline);
  if (rc == 0) return 0;
  if (rc == -ETIMEDOUT) return fail(EAGAIN);
  return fail(-rc);
}

// A socket call: try with MSG_DONTWAIT, wait while it would block. call(flags) makes it.
// tried: the caller has just made the call and it would have blocked (wait first).
// deadline: the one the caller computed already (-1: from SO_RCVTIMEO / SO_SNDTIMEO now).
template <class Call>
ssize_t on_socket(int fd, io_direction d, int flags, Call call, bool tried = false,
                  std::int64_t deadline = -1) {
  const int saved = errno;
  if (flags & MSG_DONTWAIT) return call(flags);
  if (tried && would_block(fd, d, deadline) != 0) return -1;
  while (true) {
    const ssize_t n = call(flags | MSG_DONTWAIT);
    if (n >= 0) {
      errno = saved;
      return n;
    }
    const int e = errno;
    if (e == EINTR) continue;  // as if SA_RESTART
    if (e != EAGAIN && e != EWOULDBLOCK) return -1;
    if (would_block(fd, d, deadline) != 0) return -1;
  }
}

// A plain read of a socket that the last read emptied (wait_before_read()): on io_uring the
// kernel waits and copies the data itself (recv_native(), one system call less, as the net
// API reads); elsewhere, or where it cannot, a readiness wait and then the call.
template <class Call>
ssize_t read_emptied(int fd, void* buf, std::size_t len, Call call) {
  const int saved = errno;
  const std::int64_t deadline = option_deadline(fd, SO_RCVTIMEO);
  const std::int64_t n = recv_native(fd, buf, len, deadline);
  // Not native, or the kernel did not wait: readiness, within the same time limit.
  if (n == not_native || n == -EINTR)
    return on_socket(fd, io_direction::read, 0, call, true, deadline);
  if (n >= 0) {
    errno = saved;
    return static_cast<ssize_t>(n);
  }
  return fail(n == -ETIMEDOUT ? EAGAIN : static_cast<int>(-n));
}

// A call on a descriptor that is not a socket: wait until ready, then the call itself.
template <class Call>
ssize_t on_other(int fd, io_direction d, Call call) {
  const int saved = errno;
  if (!caller_nonblocking(fd)) {
    pollfd p{fd, static_cast<short>(d == io_direction::read ? POLLIN : POLLOUT), 0};
    if (real::get().poll(&p, 1, 0) == 0) {
      const int rc = wait_fd(fd, d, forever_ns);
      if (rc < 0) return fail(-rc);
    }
  }
  while (true) {
    const ssize_t n = call();
    if (n >= 0) {
      errno = saved;
      return n;
    }
    if (errno != EINTR) return -1;
  }
}

// Whether fd was found not to be a socket before (ENOTSOCK).
bool known_other(int fd) { return bits(fd) & not_a_socket; }
void mark_other(int fd) { set_bits(fd, static_cast<std::uint8_t>(bits(fd) | not_a_socket)); }

// Sends everything, as a blocking send does: a short count only if an error stops it after
// some bytes went out.
template <class Send>
ssize_t send_everything(int fd, std::size_t total, int flags, Send send_some) {
  std::size_t done = 0;
  while (true) {
    const ssize_t n =
        on_socket(fd, io_direction::write, flags, [&](int f) { return send_some(done, f); });
    if (n < 0) return done > 0 ? static_cast<ssize_t>(done) : -1;
    done += static_cast<std::size_t>(n);
    if (done >= total || (flags & MSG_DONTWAIT) || caller_nonblocking(fd))
      return static_cast<ssize_t>(done);
  }
}

// An iovec array with the first `skip` bytes dropped.
std::vector<iovec> advance(const iovec* iov, int cnt, std::size_t skip) {
  std::vector<iovec> out;
  for (int i = 0; i < cnt; ++i) {
    if (skip >= iov[i].iov_len) {
      skip -= iov[i].iov_len;
      continue;
    }
    out.push_back({static_cast<char*>(iov[i].iov_base) + skip, iov[i].iov_len - skip});
    skip = 0;
  }
  return out;
}

std::size_t total_of(const iovec* iov, int cnt) {
  std::size_t t = 0;
  for (int i = 0; i < cnt; ++i) t += iov[i].iov_len;
  return t;
}

// An iovec count libc's readv/writev reject (EINVAL, or EBADF first for a bad descriptor)
// where sendmsg/recvmsg would say EMSGSIZE: such a call goes to libc as it is.
bool bad_count(int cnt) { return cnt < 0 || cnt > IOV_MAX; }

}  // namespace

extern "C" ssize_t read(int fd, void* buf, size_t count) {
  // Reading nothing never waits, even with nothing to read (sockets, pipes): libc's call.
  if (!active() || count == 0) return real::get().read(fd, buf, count);
  if (!known_other(fd)) {
    const int saved = errno;
    auto call = [&](int f) { return real::get().recv(fd, buf, count, f); };
    if (wait_before_read(fd)) {
      const ssize_t n = read_emptied(fd, buf, count, call);
      if (n >= 0 || errno != ENOTSOCK) {
        note_read(fd, n, count);
        return n;
      }
      // The number names another file now (the socket was closed where the hooks did not
      // see it, and, say, open() reused the number): read it as what it is.
      errno = saved;
      reset_bits(fd);
      mark_other(fd);
      return on_other(fd, io_direction::read, [&] { return real::get().read(fd, buf, count); });
    }
    const ssize_t n = real::get().recv(fd, buf, count, MSG_DONTWAIT);
    if (n >= 0) {
      note_read(fd, n, count);
      errno = saved;
      return n;
    }
    const int e = errno;
    if (e != ENOTSOCK) {
      // An error is the call's answer (ECONNRESET is reported once: asking again would say
      // end of stream); a would-block waits without asking again.
      if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR) return -1;
      errno = saved;
      const ssize_t m = on_socket(fd, io_direction::read, 0, call, e != EINTR);
      note_read(fd, m, count);
      return m;
    }
    errno = saved;
    mark_other(fd);
  }
  return on_other(fd, io_direction::read, [&] { return real::get().read(fd, buf, count); });
}

extern "C" ssize_t readv(int fd, const iovec* iov, int iovcnt) {
  if (!active() || bad_count(iovcnt)) return real::get().readv(fd, iov, iovcnt);
  if (!known_other(fd)) {
    forget_drained(fd);
    msghdr m{};
    m.msg_iov = const_cast<iovec*>(iov);
    m.msg_iovlen = static_cast<std::size_t>(iovcnt);
    const int saved = errno;
    const ssize_t n = real::get().recvmsg(fd, &m, MSG_DONTWAIT);
    if (n >= 0) return n;
    const int e = errno;
    if (e != ENOTSOCK) {
      if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR) return -1;  // the call's answer
      // Reading nothing never waits (libc's readv returns 0 at once). The kernel has read
      // the iovec array by now, so it can be looked at without faulting.
      if (e != EINTR && total_of(iov, iovcnt) == 0) return real::get().readv(fd, iov, iovcnt);
      errno = saved;
      return on_socket(
          fd, io_direction::read, 0, [&](int f) { return real::get().recvmsg(fd, &m, f); },
          e != EINTR);
    }
    errno = saved;
    mark_other(fd);
  }
  if (total_of(iov, iovcnt) == 0) return real::get().readv(fd, iov, iovcnt);
  return on_other(fd, io_direction::read, [&] { return real::get().readv(fd, iov, iovcnt); });
}

extern "C" ssize_t write(int fd, const void* buf, size_t count) {
  if (!active()) return real::get().write(fd, buf, count);
  if (!known_other(fd)) {
    const int saved = errno;
    // No MSG_NOSIGNAL: write() raises SIGPIPE on a broken socket, whatever the caller chose.
    const ssize_t n = real::get().send(fd, buf, count, MSG_DONTWAIT);
    if (n >= 0 && static_cast<std::size_t>(n) == count) {
      errno = saved;
      return n;
    }
    // An error is the call's answer (once: asking again would raise a second SIGPIPE).
    if (n < 0 && errno != ENOTSOCK && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return -1;
    if (n >= 0 || errno != ENOTSOCK) {
      errno = saved;
      const std::size_t first = n > 0 ? static_cast<std::size_t>(n) : 0;
      const char* p = static_cast<const char*>(buf);
      const ssize_t more = send_everything(fd, count - first, 0, [&](std::size_t done, int f) {
        return real::get().send(fd, p + first + done, count - first - done, f);
      });
      if (more < 0) return first > 0 ? static_cast<ssize_t>(first) : -1;
      return static_cast<ssize_t>(first) + more;
    }
    errno = saved;
    mark_other(fd);
  }
  // Writing nothing to a pipe never waits, even when it is full.
  if (count == 0) return real::get().write(fd, buf, count);
  return on_other(fd, io_direction::write, [&] { return real::get().write(fd, buf, count); });
}

extern "C" ssize_t writev(int fd, const iovec* iov, int iovcnt) {
  if (!active() || bad_count(iovcnt)) return real::get().writev(fd, iov, iovcnt);
  if (!known_other(fd)) {
    const int saved = errno;
    msghdr probe{};
    probe.msg_iov = const_cast<iovec*>(iov);
    probe.msg_iovlen = static_cast<std::size_t>(iovcnt);
    const ssize_t n = real::get().sendmsg(fd, &probe, MSG_DONTWAIT);
    // A bad iovec array (EFAULT) and the like: the kernel's answer, before the hook reads it.
    if (n < 0 && errno != ENOTSOCK && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return -1;
    const std::size_t total = total_of(iov, iovcnt);
    if (n >= 0 && static_cast<std::size_t>(n) == total) {
      errno = saved;
      return n;
    }
    if (n >= 0 || errno != ENOTSOCK) {
      errno = saved;
      const std::size_t first = n > 0 ? static_cast<std::size_t>(n) : 0;
      const ssize_t more = send_everything(fd, total - first, 0, [&](std::size_t done, int f) {
        std::vector<iovec> rest = advance(iov, iovcnt, first + done);
        msghdr m{};
        m.msg_iov = rest.data();
        m.msg_iovlen = rest.size();
        return real::get().sendmsg(fd, &m, f);
      });
      if (more < 0) return first > 0 ? static_cast<ssize_t>(first) : -1;
      return static_cast<ssize_t>(first) + more;
    }
    errno = saved;
    mark_other(fd);
  }
  if (total_of(iov, iovcnt) == 0) return real::get().writev(fd, iov, iovcnt);
  return on_other(fd, io_direction::write, [&] { return real::get().writev(fd, iov, iovcnt); });
}

extern "C" ssize_t recv(int fd, void* buf, size_t len, int flags) {
  if (!active()) return real::get().recv(fd, buf, len, flags);
  auto call = [&](int f) { return real::get().recv(fd, buf, len, f); };
  if (flags != 0) {
    forget_drained(fd);  // MSG_PEEK leaves the bytes queued; the others may take the report
    return on_socket(fd, io_direction::read, flags, call);
  }
  const ssize_t n = len > 0 && wait_before_read(fd) ? read_emptied(fd, buf, len, call)
                                                    : on_socket(fd, io_direction::read, 0, call);
  note_read(fd, n, len);
  return n;
}

// recvfrom and recvmsg: the kernel writes *addrlen, msg_namelen and msg_controllen back only
// when a call succeeds, so a retry finds them as the caller gave them; the hook never reads
// them itself (a bad pointer is the kernel's EFAULT, not a fault in the hook).
extern "C" ssize_t recvfrom(int fd, void* buf, size_t len, int flags, sockaddr* addr,
                            socklen_t* addrlen) {
  if (!active()) return real::get().recvfrom(fd, buf, len, flags, addr, addrlen);
  forget_drained(fd);
  return on_socket(fd, io_direction::read, flags,
                   [&](int f) { return real::get().recvfrom(fd, buf, len, f, addr, addrlen); });
}

extern "C" ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  if (!active()) return real::get().recvmsg(fd, msg, flags);
  forget_drained(fd);
  return on_socket(fd, io_direction::read, flags,
                   [&](int f) { return real::get().recvmsg(fd, msg, f); });
}

extern "C" ssize_t send(int fd, const void* buf, size_t len, int flags) {
  if (!active()) return real::get().send(fd, buf, len, flags);
  const char* p = static_cast<const char*>(buf);
  return send_everything(fd, len, flags, [&](std::size_t done, int f) {
    return real::get().send(fd, p + done, len - done, f);
  });
}

extern "C" ssize_t sendto(int fd, const void* buf, size_t len, int flags, const sockaddr* addr,
                          socklen_t addrlen) {
  if (!active()) return real::get().sendto(fd, buf, len, flags, addr, addrlen);
  // One datagram (or, for a stream, like send): no splitting of what the kernel took.
  return on_socket(fd, io_direction::write, flags,
                   [&](int f) { return real::get().sendto(fd, buf, len, f, addr, addrlen); });
}

extern "C" ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  if (!active()) return real::get().sendmsg(fd, msg, flags);
  return on_socket(fd, io_direction::write, flags,
                   [&](int f) { return real::get().sendmsg(fd, msg, f); });
}
