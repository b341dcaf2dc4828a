// Hooks: poll, ppoll, select, pselect, epoll_wait, epoll_pwait, epoll_pwait2. A look without
// waiting first; if nothing is ready, the greenlet waits on every descriptor at once (or, for
// epoll, on the epoll descriptor itself, which is readable when it has events) within the caller's
// time limit, then looks again. A signal mask (ppoll, pselect, epoll_pwait*) applies to the
// final look only: a greenlet cannot change the mask of a thread other greenlets share.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "monkey/core.hpp"

extern "C" {
char tendril_hook_anchor_poll = 0;
}

namespace {
using namespace tendril::detail::monkey;
namespace real = tendril::detail::real;
using tendril::detail::deadline_after;
using tendril::detail::forever_ns;
using tendril::detail::hub_now_ns;
using tendril::detail::io_direction;

std::int64_t deadline_ms(int timeout) {
  return timeout < 0 ? forever_ns : deadline_after(std::chrono::milliseconds(timeout));
}
// A time limit the kernel rejects with EINVAL: such a call goes to libc as it is (it fails
// at once).
bool bad_ts(const timespec* t) {
  return t && (t->tv_sec < 0 || t->tv_nsec < 0 || t->tv_nsec >= 1'000'000'000);
}
bool bad_tv(const timeval* t) { return t && (t->tv_sec < 0 || t->tv_usec < 0); }

std::int64_t deadline_ts(const timespec* t) {
  if (t == nullptr) return forever_ns;
  return deadline_after(std::chrono::seconds(t->tv_sec) + std::chrono::nanoseconds(t->tv_nsec));
}

// The loop every poll-like hook shares: look(), and while nothing is ready and time is left,
// wait(deadline) then look again. look() returns what the caller gets.
template <class Look, class Wait>
int cooperative(std::int64_t deadline, Look look, Wait wait) {
  while (true) {
    const int r = look();
    if (r != 0) return r;
    if (deadline != forever_ns && hub_now_ns() >= deadline) return 0;
    const int rc = wait(deadline);
    if (rc == -ETIMEDOUT) return look();
    if (rc < 0) return fail(-rc);
  }
}

int poll_with(pollfd* fds, nfds_t n, std::int64_t deadline, const sigset_t* mask) {
  const int saved = errno;
  if (n == 0) {
    const int rc = sleep_until(deadline);
    if (rc < 0) return fail(-rc);
    errno = saved;
    return 0;
  }
  const timespec zero{0, 0};
  auto look = [&] {
    return mask ? real::get().ppoll(fds, n, &zero, mask) : real::get().poll(fds, n, 0);
  };
  const int r = cooperative(deadline, look, [&](std::int64_t d) { return wait_many(fds, n, d); });
  if (r >= 0) errno = saved;
  return r;
}

}  // namespace

extern "C" int poll(pollfd* fds, nfds_t nfds, int timeout) {
  if (!active() || timeout == 0) return real::get().poll(fds, nfds, timeout);
  return poll_with(fds, nfds, deadline_ms(timeout), nullptr);
}

extern "C" int ppoll(pollfd* fds, nfds_t nfds, const timespec* tmo, const sigset_t* mask) {
  if (!active() || bad_ts(tmo) || (tmo && tmo->tv_sec == 0 && tmo->tv_nsec == 0))
    return real::get().ppoll(fds, nfds, tmo, mask);
  return poll_with(fds, nfds, deadline_ts(tmo), mask);
}

namespace {

// The size of the calling process's descriptor table (/proc/self/status, FDSize), or -1.
int fd_table_size() {
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[4096];
  ssize_t got = 0;
  while (got < static_cast<ssize_t>(sizeof buf) - 1) {
    const ssize_t n =
        real::get().read(fd, buf + got, sizeof buf - 1 - static_cast<std::size_t>(got));
    if (n <= 0) break;
    got += n;
  }
  real::get().close(fd);
  buf[got > 0 ? got : 0] = '\0';
  const char* p = std::strstr(buf, "\nFDSize:");
  return p ? std::atoi(p + 8) : -1;
}

constexpr int word_bits = static_cast<int>(sizeof(unsigned long) * CHAR_BIT);

// The bits of descriptors [0, nfds) of a caller's set (which the kernel reads as an array of
// longs, however large the caller made it).
struct fd_bits {
  std::vector<unsigned long> words;
  void take(const fd_set* s, int nfds) {
    words.assign(static_cast<std::size_t>((nfds + word_bits - 1) / word_bits), 0);
    if (s) std::memcpy(words.data(), s, words.size() * sizeof(unsigned long));
  }
  void give(fd_set* s) const {
    if (s) std::memcpy(s, words.data(), words.size() * sizeof(unsigned long));
  }
  bool has(int fd) const {
    return (words[static_cast<std::size_t>(fd / word_bits)] >> (fd % word_bits)) & 1UL;
  }
};

int select_with(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, std::int64_t deadline,
                const sigset_t* mask) {
  if (nfds < 0) return fail(EINVAL);
  // The kernel reads no more of the sets than its descriptor table holds (a caller may pass
  // more than FD_SETSIZE with sets of its own size): the hook looks no further either, and
  // gives the real call that count, so that it never reads past the copies.
  if (nfds > FD_SETSIZE) {
    const int size = fd_table_size();
    if (size < 0) {  // no /proc: the real call, which blocks the thread
      timespec left{};
      if (deadline != forever_ns) {
        const std::int64_t ns = std::max<std::int64_t>(deadline - hub_now_ns(), 0);
        left = {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
      }
      return real::get().pselect(nfds, rd, wr, ex, deadline == forever_ns ? nullptr : &left, mask);
    }
    nfds = std::min(nfds, size);
  }
  // What to wait on, as pollfds; the result comes from the real call on copies of the sets.
  fd_bits r0, w0, e0;
  r0.take(rd, nfds);
  w0.take(wr, nfds);
  e0.take(ex, nfds);
  std::vector<pollfd> fds;
  for (int fd = 0; fd < nfds; ++fd) {
    short ev = 0;
    if (rd && r0.has(fd)) ev |= POLLIN;
    if (wr && w0.has(fd)) ev |= POLLOUT;
    if (ex && e0.has(fd)) ev |= POLLPRI;
    if (ev) fds.push_back({fd, ev, 0});
  }
  const int saved = errno;
  auto look = [&] {
    r0.give(rd);
    w0.give(wr);
    e0.give(ex);
    timespec zero{0, 0};
    return real::get().pselect(nfds, rd, wr, ex, &zero, mask);
  };
  int r;
  if (fds.empty()) {
    const int rc = sleep_until(deadline);
    r = rc < 0 ? fail(-rc) : look();
  } else {
    r = cooperative(deadline, look,
                    [&](std::int64_t d) { return wait_many(fds.data(), fds.size(), d); });
  }
  if (r >= 0) errno = saved;
  return r;
}

}  // namespace

extern "C" int select(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, timeval* timeout) {
  if (!active() || bad_tv(timeout) || (timeout && timeout->tv_sec == 0 && timeout->tv_usec == 0)) {
    return real::get().select(nfds, rd, wr, ex, timeout);
  }
  const std::int64_t deadline = timeout
                                    ? deadline_after(std::chrono::seconds(timeout->tv_sec) +
                                                     std::chrono::microseconds(timeout->tv_usec))
                                    : forever_ns;
  const int r = select_with(nfds, rd, wr, ex, deadline, nullptr);
  if (timeout && r >= 0) {
    // Linux's select leaves the time not slept in timeout.
    std::int64_t left = deadline - hub_now_ns();
    if (left < 0) left = 0;
    timeout->tv_sec = static_cast<time_t>(left / 1'000'000'000);
    timeout->tv_usec = static_cast<suseconds_t>((left % 1'000'000'000) / 1000);
  }
  return r;
}

extern "C" int pselect(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const timespec* timeout,
                       const sigset_t* mask) {
  if (!active() || bad_ts(timeout) || (timeout && timeout->tv_sec == 0 && timeout->tv_nsec == 0)) {
    return real::get().pselect(nfds, rd, wr, ex, timeout, mask);
  }
  return select_with(nfds, rd, wr, ex, deadline_ts(timeout), mask);
}

namespace {

int epoll_with(int epfd, epoll_event* events, int maxevents, std::int64_t deadline,
               const sigset_t* mask) {
  const int saved = errno;
  auto look = [&] {
    return mask ? real::get().epoll_pwait(epfd, events, maxevents, 0, mask)
                : real::get().epoll_wait(epfd, events, maxevents, 0);
  };
  const int r = cooperative(deadline, look,
                            [&](std::int64_t d) { return wait_fd(epfd, io_direction::read, d); });
  if (r >= 0) errno = saved;
  return r;
}

}  // namespace

extern "C" int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout) {
  if (!active() || timeout == 0) return real::get().epoll_wait(epfd, events, maxevents, timeout);
  return epoll_with(epfd, events, maxevents, deadline_ms(timeout), nullptr);
}

extern "C" int epoll_pwait(int epfd, epoll_event* events, int maxevents, int timeout,
                           const sigset_t* mask) {
  if (!active() || timeout == 0)
    return real::get().epoll_pwait(epfd, events, maxevents, timeout, mask);
  return epoll_with(epfd, events, maxevents, deadline_ms(timeout), mask);
}

// glibc 2.35's epoll_pwait2 (a timespec; null waits for ever). Declared here: older headers
// lack it, and a libc without it leaves real::get().epoll_pwait2 null.
extern "C" int epoll_pwait2(int epfd, epoll_event* events, int maxevents, const timespec* timeout,
                            const sigset_t* mask) {
  const auto real_pwait2 = real::get().epoll_pwait2;
  if (real_pwait2 == nullptr) return fail(ENOSYS);
  if (!active() || bad_ts(timeout) || (timeout && timeout->tv_sec == 0 && timeout->tv_nsec == 0))
    return real_pwait2(epfd, events, maxevents, timeout, mask);
  return epoll_with(epfd, events, maxevents, deadline_ts(timeout), mask);
}
