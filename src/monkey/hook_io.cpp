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

// How a call that would block waits: the greenlet parks (coop), or, on the inactive path of
// a descriptor the hooks made non-blocking under a caller who wants blocking, the thread
// blocks in a real poll() (plain), as libc's call would have blocked it.
enum class how { coop, plain };

// After a would-block on a socket: the caller's choice, or a wait. 0: try again; else the
// return value for the caller (with errno set). deadline: -1 until the first wait computes it
// from SO_RCVTIMEO / SO_SNDTIMEO (the hub clock for coop, steady_clock for plain).
int would_block(int fd, io_direction d, std::int64_t& deadline, how h = how::coop) {
  const int opt = d == io_direction::read ? SO_RCVTIMEO : SO_SNDTIMEO;
  int rc;
  if (h == how::plain) {
    if (deadline == -1) deadline = plain_deadline(fd, opt);
    rc = wait_plain(fd, d == io_direction::read ? POLLIN : POLLOUT, deadline);
  } else {
    if (caller_nonblocking(fd)) return fail(EAGAIN);
    if (deadline == -1) deadline = option_deadline(fd, opt);
    rc = wait_fd(fd, d, deadline);
  }
  if (rc == 0) return 0;
  if (rc == -ETIMEDOUT) return fail(EAGAIN);
  return fail(-rc);
}

// A socket call: try with MSG_DONTWAIT, wait while it would block. call(flags) makes it.
// tried: the caller has just made the call and it would have blocked (wait first).
// deadline: as for would_block(), kept across calls so that one time limit bounds them all.
template <class Call>
ssize_t on_socket_at(int fd, io_direction d, int flags, Call call, bool tried,
                     std::int64_t& deadline, how h) {
  const int saved = errno;
  if (flags & MSG_DONTWAIT) return call(flags);
  if (tried && would_block(fd, d, deadline, h) != 0) return -1;
  while (true) {
    const ssize_t n = call(flags | MSG_DONTWAIT);
    if (n >= 0) {
      errno = saved;
      return n;
    }
    const int e = errno;
    if (e == EINTR) continue;  // as if SA_RESTART
    if (e != EAGAIN && e != EWOULDBLOCK) return -1;
    if (would_block(fd, d, deadline, h) != 0) return -1;
  }
}

template <class Call>
ssize_t on_socket(int fd, io_direction d, int flags, Call call, bool tried = false,
                  std::int64_t deadline = -1) {
  return on_socket_at(fd, d, flags, call, tried, deadline, how::coop);
}

// Whether fd is a SOCK_STREAM socket (a system call: for the rare paths only).
bool is_stream(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  return real::get().getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

// Whether a read's flags ask it to wait for the whole length (MSG_WAITALL on a blocking
// call; with MSG_PEEK the kernel peeks once).
bool wants_all(int flags) { return (flags & MSG_WAITALL) && !(flags & (MSG_DONTWAIT | MSG_PEEK)); }

// read_on() is a socket read for a caller who may want blocking. With MSG_WAITALL on a
// blocking stream socket it goes on, as the kernel does, until len bytes, the end of the
// stream, an error or SO_RCVTIMEO (one limit for the whole call): then what was read, errno
// untouched, if anything was. read_some(done, flags) reads into what is left after done bytes.
// done, tried: what the caller's own first call gave (bytes; it would have blocked).
// deadline: as for would_block(); the caller's first call may have begun the limit already.
template <class Read>
ssize_t read_on(int fd, std::size_t len, int flags, Read read_some, how h, std::size_t done = 0,
                bool tried = false, std::int64_t deadline = -1) {
  const int saved = errno;
  if (!wants_all(flags)) {
    return on_socket_at(
        fd, io_direction::read, flags, [&](int f) { return read_some(0, f); }, tried, deadline, h);
  }
  const int f = flags & ~MSG_WAITALL;
  bool stream = false;  // known to be a stream socket
  while (done < len) {
    if (done > 0) {
      // A datagram (or a record) is one message: MSG_WAITALL does not join them, whichever
      // call read the first (io_test msg_waitall_reads_one_datagram_or_record).
      if (!stream && !is_stream(fd)) break;
      stream = true;
      if (h == how::coop && caller_nonblocking(fd)) break;
    }
    const ssize_t n = on_socket_at(
        fd, io_direction::read, f, [&](int g) { return read_some(done, g); }, tried, deadline, h);
    tried = false;
    if (n < 0) {
      if (done == 0) return -1;
      break;
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  errno = saved;
  return static_cast<ssize_t>(done);
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

// Sends everything, as a blocking send does: a short count only if an error or SO_SNDTIMEO
// stops it after some bytes went out (errno then as it was: the count is the answer). One
// time limit for the whole call, as in Linux. send_some(done, flags) sends what is left after
// done bytes. done, tried: what the caller's own first call sent (it would have blocked).
// deadline: as for read_on().
template <class Send>
ssize_t send_everything(int fd, std::size_t total, int flags, Send send_some, how h = how::coop,
                        std::size_t done = 0, bool tried = false, std::int64_t deadline = -1) {
  const int saved = errno;
  while (true) {
    const ssize_t n = on_socket_at(
        fd, io_direction::write, flags, [&](int f) { return send_some(done, f); }, tried, deadline,
        h);
    tried = false;
    if (n < 0) {
      if (done == 0) return -1;
      errno = saved;
      return static_cast<ssize_t>(done);
    }
    done += static_cast<std::size_t>(n);
    if (done >= total || (flags & MSG_DONTWAIT) || (h == how::coop && caller_nonblocking(fd)))
      return static_cast<ssize_t>(done);
  }
}

// The inactive path (hooks off for this thread) of a read: libc's call; if it would block,
// or MSG_WAITALL came back short, only because the hooks made the descriptor non-blocking
// under a caller who wants blocking, carry on as the blocking call would (a real poll()).
template <class Read>
ssize_t inactive_read(int fd, std::size_t len, int flags, Read read_some) {
  const int saved = errno;
  const ssize_t n = read_some(0, flags);
  if (n >= 0 ? (n == 0 || !wants_all(flags) || static_cast<std::size_t>(n) >= len)
             : (errno != EAGAIN && errno != EWOULDBLOCK))
    return n;
  if ((flags & MSG_DONTWAIT) || !hooks_made_nonblocking(fd)) return n;
  errno = saved;
  return read_on(fd, len, flags, read_some, how::plain, n > 0 ? static_cast<std::size_t>(n) : 0,
                 n < 0);
}

// The inactive path of a write: as inactive_read(), for a count short of total (total() is
// asked only after the kernel accepted the call: it may read the caller's iovec array).
template <class Send, class Total>
ssize_t inactive_send(int fd, int flags, Send send_some, Total total) {
  const int saved = errno;
  const ssize_t n = send_some(0, flags);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return n;
  if ((flags & MSG_DONTWAIT) || n == 0) return n;
  const std::size_t all = total();
  if (n > 0 && static_cast<std::size_t>(n) >= all) return n;
  if (!hooks_made_nonblocking(fd)) return n;
  errno = saved;
  return send_everything(fd, all, flags, send_some, how::plain,
                         n > 0 ? static_cast<std::size_t>(n) : 0, n < 0);
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
  if (count == 0) return real::get().read(fd, buf, count);
  if (!active()) {
    return inactive_read(fd, count, 0,
                         [&](std::size_t, int) { return real::get().read(fd, buf, count); });
  }
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
  if (bad_count(iovcnt)) return real::get().readv(fd, iov, iovcnt);
  if (!active()) {
    return inactive_read(fd, 0, 0,
                         [&](std::size_t, int) { return real::get().readv(fd, iov, iovcnt); });
  }
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
  const char* p = static_cast<const char*>(buf);
  if (!active()) {
    return inactive_send(
        fd, 0, [&](std::size_t done, int) { return real::get().write(fd, p + done, count - done); },
        [&] { return count; });
  }
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
      return send_everything(
          fd, count, 0,
          [&](std::size_t done, int f) { return real::get().send(fd, p + done, count - done, f); },
          how::coop, first);
    }
    errno = saved;
    mark_other(fd);
  }
  // Writing nothing to a pipe never waits, even when it is full.
  if (count == 0) return real::get().write(fd, buf, count);
  return on_other(fd, io_direction::write, [&] { return real::get().write(fd, buf, count); });
}

extern "C" ssize_t writev(int fd, const iovec* iov, int iovcnt) {
  if (bad_count(iovcnt)) return real::get().writev(fd, iov, iovcnt);
  if (!active()) {
    return inactive_send(
        fd, 0,
        [&](std::size_t done, int) {
          if (done == 0) return real::get().writev(fd, iov, iovcnt);
          std::vector<iovec> rest = advance(iov, iovcnt, done);
          return real::get().writev(fd, rest.data(), static_cast<int>(rest.size()));
        },
        [&] { return total_of(iov, iovcnt); });
  }
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
      return send_everything(
          fd, total, 0,
          [&](std::size_t done, int f) {
            std::vector<iovec> rest = advance(iov, iovcnt, done);
            msghdr m{};
            m.msg_iov = rest.data();
            m.msg_iovlen = rest.size();
            return real::get().sendmsg(fd, &m, f);
          },
          how::coop, first);
    }
    errno = saved;
    mark_other(fd);
  }
  if (total_of(iov, iovcnt) == 0) return real::get().writev(fd, iov, iovcnt);
  return on_other(fd, io_direction::write, [&] { return real::get().writev(fd, iov, iovcnt); });
}

extern "C" ssize_t recv(int fd, void* buf, size_t len, int flags) {
  auto some = [&](std::size_t done, int f) {
    return real::get().recv(fd, static_cast<char*>(buf) + done, len - done, f);
  };
  if (!active()) return inactive_read(fd, len, flags, some);
  auto call = [&](int f) { return real::get().recv(fd, buf, len, f); };
  if (flags != 0) {
    forget_drained(fd);  // MSG_PEEK leaves the bytes queued; the others may take the report
    return read_on(fd, len, flags, some, how::coop);
  }
  const ssize_t n = len > 0 && wait_before_read(fd) ? read_emptied(fd, buf, len, call)
                                                    : on_socket(fd, io_direction::read, 0, call);
  note_read(fd, n, len);
  return n;
}

// recvfrom and recvmsg: the kernel writes *addrlen, msg_namelen and msg_controllen back only
// when a call succeeds, so a retry finds them as the caller gave them; the hook never reads
// them itself (a bad pointer is the kernel's EFAULT, not a fault in the hook). With
// MSG_WAITALL, the calls after the first that read more of the stream ask for no address and
// no ancillary data: the first call's stand.
extern "C" ssize_t recvfrom(int fd, void* buf, size_t len, int flags, sockaddr* addr,
                            socklen_t* addrlen) {
  auto some = [&](std::size_t done, int f) {
    if (done == 0) return real::get().recvfrom(fd, buf, len, f, addr, addrlen);
    return real::get().recvfrom(fd, static_cast<char*>(buf) + done, len - done, f, nullptr,
                                nullptr);
  };
  if (!active()) return inactive_read(fd, len, flags, some);
  forget_drained(fd);
  return read_on(fd, len, flags, some, how::coop);
}

namespace {

// msg_rest is the data of msg past its first `done` bytes, as a message of its own: no
// address and no ancillary data (they went with the first call).
struct msg_rest {
  msg_rest(const msghdr* msg, std::size_t done)
      : iov(advance(msg->msg_iov, static_cast<int>(msg->msg_iovlen), done)) {
    m.msg_iov = iov.data();
    m.msg_iovlen = iov.size();
  }
  msg_rest(const msg_rest&) = delete;
  msg_rest& operator=(const msg_rest&) = delete;
  std::vector<iovec> iov;
  msghdr m{};
};

// recvmsg() for either path: the iovec array is read (for MSG_WAITALL) only once the kernel
// has accepted it.
ssize_t recvmsg_on(int fd, msghdr* msg, int flags, how h) {
  auto some = [&](std::size_t done, int f) {
    if (done == 0) return real::get().recvmsg(fd, msg, f);
    msg_rest rest(msg, done);
    return real::get().recvmsg(fd, &rest.m, f);
  };
  const int saved = errno;
  // The first call: one read, whatever MSG_WAITALL says; the rest follows below, within the
  // same SO_RCVTIMEO limit (io_test so_rcvtimeo_bounds_a_whole_msg_waitall_recvmsg).
  const int once = wants_all(flags) ? flags & ~MSG_WAITALL : flags;
  std::int64_t deadline = -1;
  auto first = [&](int f) { return some(0, f); };
  ssize_t n;
  if (h == how::plain) {
    n = some(0, flags);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !(flags & MSG_DONTWAIT) &&
        hooks_made_nonblocking(fd)) {
      errno = saved;
      n = on_socket_at(fd, io_direction::read, once, first, true, deadline, how::plain);
    } else if (n <= 0 || !wants_all(flags) || !hooks_made_nonblocking(fd)) {
      return n;
    }
  } else {
    n = on_socket_at(fd, io_direction::read, once, first, false, deadline, how::coop);
  }
  if (n <= 0 || !wants_all(flags)) return n;
  const std::size_t len = total_of(msg->msg_iov, static_cast<int>(msg->msg_iovlen));
  if (static_cast<std::size_t>(n) >= len) return n;
  errno = saved;
  return read_on(fd, len, flags, some, h, static_cast<std::size_t>(n), false, deadline);
}

// sendmsg() for either path: as send, everything for a blocking caller (a stream socket is
// the only kind that takes part of a message); the ancillary data and the address go with the
// first call only. The iovec array is read only once the kernel has accepted it.
ssize_t sendmsg_on(int fd, const msghdr* msg, int flags, how h) {
  auto some = [&](std::size_t done, int f) {
    if (done == 0) return real::get().sendmsg(fd, msg, f);
    msg_rest rest(msg, done);
    return real::get().sendmsg(fd, &rest.m, f);
  };
  auto total = [&] { return total_of(msg->msg_iov, static_cast<int>(msg->msg_iovlen)); };
  if (h == how::plain) return inactive_send(fd, flags, some, total);
  const int saved = errno;
  // One SO_SNDTIMEO limit for the first call and the rest (io_test
  // so_sndtimeo_bounds_a_whole_sendmsg).
  std::int64_t deadline = -1;
  const ssize_t n = on_socket_at(
      fd, io_direction::write, flags, [&](int f) { return some(0, f); }, false, deadline,
      how::coop);
  if (n <= 0 || (flags & MSG_DONTWAIT) || caller_nonblocking(fd)) return n;
  const std::size_t all = total();
  if (static_cast<std::size_t>(n) >= all) return n;
  errno = saved;
  return send_everything(fd, all, flags, some, how::coop, static_cast<std::size_t>(n), false,
                         deadline);
}

}  // namespace

extern "C" ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  if (!active()) return recvmsg_on(fd, msg, flags, how::plain);
  forget_drained(fd);
  return recvmsg_on(fd, msg, flags, how::coop);
}

extern "C" ssize_t send(int fd, const void* buf, size_t len, int flags) {
  const char* p = static_cast<const char*>(buf);
  auto some = [&](std::size_t done, int f) {
    return real::get().send(fd, p + done, len - done, f);
  };
  if (!active()) return inactive_send(fd, flags, some, [&] { return len; });
  return send_everything(fd, len, flags, some);
}

// sendto: as send (a datagram goes whole or not at all, so only a stream loops).
extern "C" ssize_t sendto(int fd, const void* buf, size_t len, int flags, const sockaddr* addr,
                          socklen_t addrlen) {
  const char* p = static_cast<const char*>(buf);
  auto some = [&](std::size_t done, int f) {
    return real::get().sendto(fd, p + done, len - done, f, addr, addrlen);
  };
  if (!active()) return inactive_send(fd, flags, some, [&] { return len; });
  return send_everything(fd, len, flags, some);
}

extern "C" ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  return sendmsg_on(fd, msg, flags, active() ? how::coop : how::plain);
}
