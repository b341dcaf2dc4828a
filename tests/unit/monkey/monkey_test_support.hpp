// What the tests of the hooks share: descriptors made with plain libc calls (loopback TCP
// pairs, listeners, a listener whose queue is full), filling a socket's send buffer, running
// something on a thread that never used tendril (where every hook is libc's call), a ticker
// greenlet that proves a blocked call let the hub run others, and a watchdog that turns a
// hang into a failure with a message.
#ifndef TENDRIL_TESTS_UNIT_MONKEY_MONKEY_TEST_SUPPORT_HPP
#define TENDRIL_TESTS_UNIT_MONKEY_MONKEY_TEST_SUPPORT_HPP

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "hub/clock.hpp"
#include "hub/hub_impl.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

namespace tendril::test::monkey {

// A call's outcome as libc reports it: the return value and errno right after it.
struct outcome {
  long rc;
  int err;
  bool operator==(const outcome&) const = default;
};

// A descriptor closed when it goes, with libc's close (descriptors the test closed itself
// are released first).
class fd_guard {
 public:
  explicit fd_guard(int fd = -1) noexcept : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  fd_guard(fd_guard&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  fd_guard& operator=(fd_guard&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  operator int() const noexcept { return fd_; }

 private:
  int fd_;
};

inline sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

inline std::uint16_t local_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("getsockname failed");
  return ntohs(a.sin_port);
}

inline void must(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string(what) + " failed: " + std::strerror(errno));
}

// listening_socket() is a TCP listener on 127.0.0.1, an ephemeral port.
inline int listening_socket(int backlog = 128, int type_flags = 0) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0);
  must(fd >= 0, "socket");
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = loopback(0);
  must(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "bind");
  must(::listen(fd, backlog) == 0, "listen");
  return fd;
}

// on_plain_thread() runs fn on a new thread that never used tendril (no hub: every hook is
// libc's call there) and waits for it, blocking the caller's thread.
inline void on_plain_thread(const std::function<void()>& fn) {
  std::thread t([&] {
    fn();
    if (tendril::detail::hub_impl::peek() != nullptr) {
      std::fprintf(stderr, "a hook made a hub on a thread that never used tendril\n");
      std::abort();
    }
  });
  t.join();
}

// A connected loopback TCP pair, made on a plain thread (libc's blocking calls, so the
// hooks never touched either end).
struct tcp_pair {
  fd_guard client;
  fd_guard server;
};

inline tcp_pair connected_pair(int sndbuf = 0) {
  int c = -1;
  int s = -1;
  on_plain_thread([&] {
    const int l = listening_socket(8);
    c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sndbuf > 0) {
      ::setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    }
    sockaddr_in a = loopback(local_port(l));
    if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::abort();
    s = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    if (s < 0) std::abort();
    if (sndbuf > 0) ::setsockopt(s, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf);
    ::close(l);
  });
  return {fd_guard(c), fd_guard(s)};
}

// fill() sends with MSG_DONTWAIT until the socket's send buffer (and the peer's receive
// buffer) is full; the number of bytes sent.
inline std::size_t fill(int fd) {
  std::vector<char> chunk(65536, 'f');
  std::size_t total = 0;
  while (true) {
    const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_DONTWAIT);
    if (n > 0) {
      total += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // The kernel may still be moving bytes from the send queue to the peer: one more look.
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 50) > 0 && (p.revents & POLLOUT)) continue;
      return total;
    }
    throw std::runtime_error("fill: send failed");
  }
}

// A listener with a backlog of 0 that never accepts, whose queue is full (the connections
// that filled it are kept): the kernel drops further SYNs, so a connect to it hangs until its
// time limit. Made on a plain thread.
struct full_listener {
  fd_guard listener;
  std::vector<fd_guard> queued;
  std::uint16_t port = 0;
};

inline full_listener make_full_listener() {
  full_listener f;
  on_plain_thread([&] {
    f.listener = fd_guard(listening_socket(0));
    f.port = local_port(f.listener);
    sockaddr_in a = loopback(f.port);
    for (int i = 0; i < 64; ++i) {
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      f.queued.emplace_back(c);
      const int rc = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
      if (rc != 0 && errno != EINPROGRESS) std::abort();
      pollfd p{c, POLLOUT, 0};
      if (::poll(&p, 1, 250) == 0) return;  // unanswered: the queue is full
    }
    std::fprintf(stderr, "the queue of a listener with backlog 0 never filled\n");
    std::abort();
  });
  return f;
}

// A watchdog: if the test is still running after `limit`, it says which and ends the
// process (a hook that blocked the thread would otherwise hang until ctest's timeout).
class watchdog {
 public:
  explicit watchdog(std::chrono::seconds limit = std::chrono::seconds(120)) {
    thread_ = std::thread([this, limit] {
      std::unique_lock lock(mu_);
      if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
        std::fprintf(stderr, "watchdog: the test hung (a hooked call blocked the thread?)\n");
        std::_Exit(3);
      }
    });
  }
  ~watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// blocked_while_others_run() runs blocked() in one greenlet and, in a second, `ticks` ticks
// (each a hub round trip) followed by unblock(); blocked() must wait in its hooked call until
// unblock() has run. Returns the ticks counted when blocked() returned: `ticks` if the hooked
// call let the hub run the ticker, 0 if it blocked the thread (it then hangs until the
// watchdog).
inline int blocked_while_others_run(const std::function<void()>& blocked,
                                    const std::function<void()>& unblock, int ticks = 3) {
  int count = 0;
  int seen = -1;
  auto a = tendril::spawn([&] {
    blocked();
    seen = count;
  });
  auto b = tendril::spawn([&] {
    for (int i = 0; i < ticks; ++i) {
      ++count;
      tendril::sleep(std::chrono::milliseconds(1));
    }
    unblock();
  });
  tendril::joinall(a, b);
  return seen;
}

// The fixture of the hook tests: hooks on, the real clock back after each test (some pause
// it), and a watchdog that ends a test which hangs.
class hooked_test : public ::testing::Test {
 protected:
  void SetUp() override { tendril::monkey::patch_all(); }
  void TearDown() override { tendril::detail::test_clock::resume(); }
  watchdog dog_;
};

}  // namespace tendril::test::monkey

#endif
