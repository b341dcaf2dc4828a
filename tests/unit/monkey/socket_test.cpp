// accept, accept4 and connect under the hooks, on loopback TCP: inside a greenlet they wait
// while a ticker greenlet keeps running, outside any hub they are libc's; fcntl(F_GETFL)
// reports the caller's own O_NONBLOCK although the hooks set it underneath a blocking listener
// or connecting socket (F_SETFL, FIONBIO and dup keep that view); a non-blocking listener or
// socket gives EAGAIN or EINPROGRESS at once without a switch; SO_RCVTIMEO ends an accept with
// EAGAIN, a connect past SO_SNDTIMEO fails with EINPROGRESS (a listener whose queue is full
// drops the SYN; both on the paused test clock); a refused connect fails with ECONNREFUSED,
// never a stale EINPROGRESS; close() and dup2() over a listener wake its acceptors with EBADF;
// 50 greenlets accepting on one listener take each of 5,000 connections exactly once; and
// fcntl64 (fcntl under _FILE_OFFSET_BITS=64) keeps the same view as fcntl.
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "hub/clock.hpp"
#include "monkey_test_support.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"
#include "test_scale.hpp"

using namespace std::chrono_literals;
using namespace tendril::test::monkey;
using tendril::spawn;

namespace {

class hooked_socket : public hooked_test {};

bool kernel_nonblocking(int fd) { return (::syscall(SYS_fcntl, fd, F_GETFL) & O_NONBLOCK) != 0; }
bool caller_nonblocking(int fd) { return (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

// A connect to 127.0.0.1:port (hooked where the caller is a greenlet); the new socket, or -1
// with errno.
int connect_to(std::uint16_t port, int type_flags = 0) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0);
  if (fd < 0) return -1;
  sockaddr_in a = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

// A port nobody listens on (bound, so nobody else takes it meanwhile): a connect is refused.
fd_guard bound_not_listening(std::uint16_t& port) {
  fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a = loopback(0);
  must(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "bind");
  port = local_port(s);
  return s;
}

// The number of greenlets that ran (ticked) while fn ran in a greenlet of its own: 0 means fn
// made no switch.
int switches_during(const std::function<void()>& fn) {
  int ticks = 0;
  auto t = spawn([&] {
    auto ticker = spawn([&] { ++ticks; });
    fn();
    const int seen = ticks;
    ticker.join();
    ticks = seen;
  });
  t.join();
  return ticks;
}

}  // namespace

TEST_F(hooked_socket, accept_waits_for_a_connection_while_a_ticker_runs) {
  fd_guard l(listening_socket());
  const std::uint16_t port = local_port(l);
  int accepted = -1;
  sockaddr_in peer{};
  socklen_t peer_len = sizeof peer;
  fd_guard client;
  const int ticks = blocked_while_others_run(
      [&] { accepted = ::accept(l, reinterpret_cast<sockaddr*>(&peer), &peer_len); },
      [&] { client = fd_guard(connect_to(port)); });
  fd_guard a(accepted);
  EXPECT_EQ(ticks, 3);
  ASSERT_GE(accepted, 0);
  ASSERT_GE(client.get(), 0);
  EXPECT_EQ(peer_len, sizeof peer);
  EXPECT_EQ(ntohs(peer.sin_port), local_port(client));
  // The accepted socket is libc's blocking one; the listener blocking in the caller's view.
  EXPECT_FALSE(caller_nonblocking(a));
  EXPECT_FALSE(kernel_nonblocking(a));
  EXPECT_FALSE(caller_nonblocking(l));
  EXPECT_TRUE(kernel_nonblocking(l));  // set underneath by the hook
}

TEST_F(hooked_socket, accept4_waits_and_applies_its_flags) {
  fd_guard l(listening_socket());
  const std::uint16_t port = local_port(l);
  int accepted = -1;
  fd_guard client;
  const int ticks = blocked_while_others_run(
      [&] { accepted = ::accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); },
      [&] { client = fd_guard(connect_to(port)); });
  fd_guard a(accepted);
  EXPECT_EQ(ticks, 3);
  ASSERT_GE(accepted, 0);
  EXPECT_TRUE(caller_nonblocking(a));
  EXPECT_TRUE(kernel_nonblocking(a));
  EXPECT_TRUE(::fcntl(a, F_GETFD) & FD_CLOEXEC);
  // Non-blocking as asked: a read with nothing there fails at once.
  char c;
  const int ticks_in_read = switches_during([&] {
    EXPECT_EQ(::read(a, &c, 1), -1);
    EXPECT_EQ(errno, EAGAIN);
  });
  EXPECT_EQ(ticks_in_read, 0);
}

TEST_F(hooked_socket, connect_waits_for_the_handshake_while_a_ticker_runs) {
  // The queue is full, so the SYN is dropped; once the ticker has emptied it (closed the
  // fillers, accepted the one queued connection), the SYN's retransmit (after about a second)
  // gets through.
  full_listener f = make_full_listener();
  int rc = -2;
  int err = 0;
  fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int ticks = blocked_while_others_run(
      [&] {
        sockaddr_in a = loopback(f.port);
        rc = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
        err = errno;
      },
      [&] {
        f.queued.clear();
        ::close(::accept(f.listener, nullptr, nullptr));
      });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(rc, 0) << std::strerror(err);
  EXPECT_FALSE(caller_nonblocking(s));
  EXPECT_TRUE(kernel_nonblocking(s));
  // Blocking in the caller's view: a recv waits (and gets what the other end sends).
  int server = -1;
  while (server < 0) {
    const int c = ::accept(f.listener, nullptr, nullptr);
    ASSERT_GE(c, 0);
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    ::getpeername(c, reinterpret_cast<sockaddr*>(&peer), &len);
    if (ntohs(peer.sin_port) == local_port(s)) {
      server = c;
    } else {
      ::close(c);
    }
  }
  fd_guard sv(server);
  char buf[4] = {};
  ssize_t n = 0;
  EXPECT_EQ(blocked_while_others_run([&] { n = ::recv(s, buf, sizeof buf, 0); },
                                     [&] { ::send(sv, "hey", 3, 0); }),
            3);
  EXPECT_EQ(n, 3);
}

TEST_F(hooked_socket, outside_any_hub_accept_and_connect_are_libcs) {
  fd_guard l(listening_socket());
  const std::uint16_t port = local_port(l);
  on_plain_thread([&] {
    std::thread client([&] {
      std::this_thread::sleep_for(20ms);
      const int c = connect_to(port);
      ASSERT_GE(c, 0);
      EXPECT_FALSE(kernel_nonblocking(c));
      ::close(c);
    });
    const auto start = std::chrono::steady_clock::now();
    const int a = ::accept(l, nullptr, nullptr);
    EXPECT_GE(a, 0);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 15ms);
    ::close(a);
    client.join();
    EXPECT_FALSE(kernel_nonblocking(l));
    std::uint16_t refused = 0;
    fd_guard keep = bound_not_listening(refused);
    errno = 0;
    EXPECT_EQ(connect_to(refused), -1);
    EXPECT_EQ(errno, ECONNREFUSED);
    const int nb = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in a2 = loopback(port);
    EXPECT_EQ(::connect(nb, reinterpret_cast<sockaddr*>(&a2), sizeof a2), -1);
    EXPECT_EQ(errno, EINPROGRESS);
    ::close(nb);
  });
}

TEST_F(hooked_socket, a_non_blocking_listener_or_socket_fails_at_once_without_a_switch) {
  fd_guard l(listening_socket(128, SOCK_NONBLOCK));
  fd_guard l2(listening_socket());
  int on = 1;
  ASSERT_EQ(::ioctl(l2, FIONBIO, &on), 0);
  EXPECT_EQ(switches_during([&] {
              errno = 0;
              EXPECT_EQ(::accept(l, nullptr, nullptr), -1);
              EXPECT_EQ(errno, EAGAIN);
              EXPECT_EQ(::accept4(l2, nullptr, nullptr, SOCK_CLOEXEC), -1);
              EXPECT_EQ(errno, EAGAIN);
              // A non-blocking connect starts the handshake and returns at once.
              errno = 0;
              const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
              sockaddr_in a = loopback(local_port(l));
              EXPECT_EQ(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a), -1);
              EXPECT_EQ(errno, EINPROGRESS);
              ::close(s);
            }),
            0);
}

TEST_F(hooked_socket, fcntl_reports_the_callers_o_nonblock_set_with_f_setfl_fionbio_and_dup) {
  fd_guard l(listening_socket());
  const std::uint16_t port = local_port(l);
  auto accept_once = [&] {
    int a = -1;
    fd_guard client;
    const int ticks = blocked_while_others_run([&] { a = ::accept(l, nullptr, nullptr); },
                                               [&] { client = fd_guard(connect_to(port)); });
    EXPECT_EQ(ticks, 3);
    EXPECT_GE(a, 0);
    ::close(a);
  };
  accept_once();
  EXPECT_FALSE(caller_nonblocking(l));
  EXPECT_TRUE(kernel_nonblocking(l));

  // The caller asks for non-blocking: reported, and accept fails at once.
  ASSERT_EQ(::fcntl(l, F_SETFL, ::fcntl(l, F_GETFL) | O_NONBLOCK), 0);
  EXPECT_TRUE(caller_nonblocking(l));
  EXPECT_EQ(switches_during([&] {
              EXPECT_EQ(::accept(l, nullptr, nullptr), -1);
              EXPECT_EQ(errno, EAGAIN);
            }),
            0);
  // ...and back to blocking: reported, the kernel's flag stays on, accept waits again.
  ASSERT_EQ(::fcntl(l, F_SETFL, ::fcntl(l, F_GETFL) & ~O_NONBLOCK), 0);
  EXPECT_FALSE(caller_nonblocking(l));
  EXPECT_TRUE(kernel_nonblocking(l));
  accept_once();

  // FIONBIO says the same.
  int on = 1;
  ASSERT_EQ(::ioctl(l, FIONBIO, &on), 0);
  EXPECT_TRUE(caller_nonblocking(l));
  EXPECT_EQ(switches_during([&] {
              EXPECT_EQ(::accept4(l, nullptr, nullptr, 0), -1);
              EXPECT_EQ(errno, EAGAIN);
            }),
            0);
  int off = 0;
  ASSERT_EQ(::ioctl(l, FIONBIO, &off), 0);
  EXPECT_FALSE(caller_nonblocking(l));
  EXPECT_TRUE(kernel_nonblocking(l));

  // A duplicate shares the open file, and so the caller's view.
  fd_guard d(::dup(l));
  EXPECT_FALSE(caller_nonblocking(d));
  fd_guard d2(::fcntl(l, F_DUPFD_CLOEXEC, 100));
  EXPECT_GE(d2.get(), 100);
  EXPECT_FALSE(caller_nonblocking(d2));
  ASSERT_EQ(::fcntl(d, F_SETFL, O_NONBLOCK), 0);
  EXPECT_TRUE(caller_nonblocking(d));
  // Other F_GETFL bits are the kernel's.
  EXPECT_EQ(::fcntl(l, F_GETFL) & O_ACCMODE, O_RDWR);
}

TEST_F(hooked_socket, so_rcvtimeo_ends_a_blocked_accept_with_eagain_after_the_limit) {
  tendril::detail::test_clock::pause();
  fd_guard l(listening_socket());
  timeval tv{3, 0};
  ASSERT_EQ(::setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  const std::int64_t start = tendril::detail::hub_now_ns();
  int rc = 0;
  int err = 0;
  auto t = spawn([&] {
    rc = ::accept(l, nullptr, nullptr);
    err = errno;
  });
  t.join();
  const std::int64_t took = tendril::detail::hub_now_ns() - start;
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(err, EAGAIN);
  EXPECT_GE(took, 3'000'000'000);
  EXPECT_LT(took, 4'000'000'000);
  EXPECT_FALSE(caller_nonblocking(l));
}

TEST_F(hooked_socket, a_blocking_connect_past_so_sndtimeo_fails_with_einprogress) {
  full_listener f = make_full_listener();
  tendril::detail::test_clock::pause();
  fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{5, 0};
  ASSERT_EQ(::setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
  const std::int64_t start = tendril::detail::hub_now_ns();
  int rc = 0;
  int err = 0;
  int ticks = 0;
  bool stop = false;
  auto ticker = spawn([&] {
    while (!stop) {
      ++ticks;
      tendril::sleep(100ms);
    }
  });
  auto t = spawn([&] {
    sockaddr_in a = loopback(f.port);
    rc = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    err = errno;
    stop = true;
  });
  tendril::joinall(t, ticker);
  const std::int64_t took = tendril::detail::hub_now_ns() - start;
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(err, EINPROGRESS);
  EXPECT_GE(took, 5'000'000'000);
  EXPECT_LT(took, 6'000'000'000);
  EXPECT_GE(ticks, 40);
  EXPECT_FALSE(caller_nonblocking(s));
}

TEST_F(hooked_socket, a_refused_connect_fails_with_econnrefused_never_einprogress) {
  std::uint16_t port = 0;
  fd_guard keep = bound_not_listening(port);
  std::vector<int> errs;
  std::vector<tendril::task<void>> tasks;
  for (int i = 0; i < 20; ++i) {
    tasks.push_back(spawn([&, i] {
      fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (i % 2) {
        timeval tv{10, 0};
        ::setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      }
      sockaddr_in a = loopback(port);
      errno = 0;
      const int rc = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
      EXPECT_EQ(rc, -1);
      errs.push_back(errno);
    }));
  }
  tendril::joinall(tasks);
  ASSERT_EQ(errs.size(), 20u);
  for (int e : errs) EXPECT_EQ(e, ECONNREFUSED) << std::strerror(e);
}

TEST_F(hooked_socket, close_wakes_greenlets_waiting_in_accept_with_ebadf) {
  const int l = listening_socket();
  std::vector<int> errs;
  std::vector<tendril::task<void>> waiting;
  for (int i = 0; i < 3; ++i) {
    waiting.push_back(spawn([&] {
      EXPECT_EQ(::accept(l, nullptr, nullptr), -1);
      errs.push_back(errno);
    }));
  }
  tendril::sleep(5ms);
  EXPECT_TRUE(errs.empty());
  EXPECT_EQ(::close(l), 0);
  tendril::joinall(waiting);
  EXPECT_EQ(errs, (std::vector<int>{EBADF, EBADF, EBADF}));
}

TEST_F(hooked_socket, dup2_over_a_listener_wakes_its_acceptor_with_ebadf) {
  fd_guard l(listening_socket());
  fd_guard other(listening_socket());
  int rc = 0;
  int err = 0;
  const int ticks = blocked_while_others_run(
      [&] {
        rc = ::accept(l, nullptr, nullptr);
        err = errno;
      },
      [&] { EXPECT_EQ(::dup3(other, l, O_CLOEXEC), l.get()); });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(err, EBADF);
  // The number now names the other listener; an accept on it works.
  const std::uint16_t port = local_port(other);
  fd_guard client;
  int a = -1;
  EXPECT_EQ(blocked_while_others_run([&] { a = ::accept(l, nullptr, nullptr); },
                                     [&] { client = fd_guard(connect_to(port)); }),
            3);
  EXPECT_GE(a, 0);
  ::close(a);
}

namespace {

// 50 greenlets accept on one listener; each connection's client sends its number (4 bytes),
// the acceptor reads it and closes; the client waits for that close. At the end the listener
// is closed, which ends every acceptor with EBADF. seen[i] counts how often connection i was
// accepted.
struct accept_crowd {
  static constexpr int acceptors = 50;
  int listener = listening_socket(1024);
  std::uint16_t port = local_port(listener);
  std::vector<int> seen;
  int accepted = 0;
  std::vector<int> end_errnos;
  std::vector<tendril::task<void>> tasks;

  explicit accept_crowd(int connections) : seen(static_cast<std::size_t>(connections), 0) {
    for (int i = 0; i < acceptors; ++i) {
      tasks.push_back(spawn([this] {
        while (true) {
          const int c = ::accept(listener, nullptr, nullptr);
          if (c < 0) {
            end_errnos.push_back(errno);
            return;
          }
          std::uint32_t id = 0;
          ssize_t got = 0;
          while (got < 4) {
            const ssize_t n = ::read(c, reinterpret_cast<char*>(&id) + got, 4 - got);
            if (n <= 0) break;
            got += n;
          }
          EXPECT_EQ(got, 4);
          if (got == 4 && id < seen.size()) ++seen[id];
          ++accepted;
          ::close(c);
        }
      }));
    }
  }

  void finish() {
    const auto give_up = std::chrono::steady_clock::now() + 60s;
    while (accepted < static_cast<int>(seen.size()) && std::chrono::steady_clock::now() < give_up)
      tendril::sleep(1ms);
    ::close(listener);
    tendril::joinall(tasks);
    EXPECT_EQ(end_errnos, std::vector<int>(acceptors, EBADF));
    int once = 0;
    for (int n : seen) once += n == 1;
    EXPECT_EQ(once, static_cast<int>(seen.size()));
    EXPECT_EQ(accepted, static_cast<int>(seen.size()));
  }
};

// One client connection: connect, send id, wait for the server's close. Hooked or libc's,
// depending on the calling thread.
void one_client(std::uint16_t port, std::uint32_t id) {
  const int c = connect_to(port);
  ASSERT_GE(c, 0) << std::strerror(errno);
  ASSERT_EQ(::write(c, &id, sizeof id), 4);
  char b;
  EXPECT_EQ(::read(c, &b, 1), 0);
  ::close(c);
}

}  // namespace

TEST_F(hooked_socket, fifty_greenlets_accept_each_of_5000_connections_from_greenlets_once) {
  const int n = static_cast<int>(tendril::test::scaled(5000, 100));
  accept_crowd crowd(n);
  std::vector<tendril::task<void>> clients;
  constexpr int client_greenlets = 50;
  for (int k = 0; k < client_greenlets; ++k) {
    clients.push_back(spawn([&, k] {
      for (int id = k; id < n; id += client_greenlets)
        one_client(crowd.port, static_cast<std::uint32_t>(id));
    }));
  }
  tendril::joinall(clients);
  crowd.finish();
}

TEST_F(hooked_socket, fifty_greenlets_accept_each_of_5000_connections_from_a_thread_once) {
  const int n = static_cast<int>(tendril::test::scaled(5000, 100));
  accept_crowd crowd(n);
  std::atomic<bool> done{false};
  std::thread client([&] {
    for (int id = 0; id < n; ++id) one_client(crowd.port, static_cast<std::uint32_t>(id));
    done = true;
  });
  crowd.finish();
  client.join();
  EXPECT_TRUE(done);
}

// Sockets the hooks made non-blocking underneath (a connect and an accept in a greenlet) still
// block a thread with no hub, as libc's sockets: the hooks' inactive path waits for them.
TEST_F(hooked_socket, sockets_connected_and_accepted_in_a_greenlet_block_on_a_plain_thread) {
  fd_guard l(listening_socket());
  const std::uint16_t port = local_port(l);
  fd_guard c, s;
  spawn([&] {
    c = fd_guard(connect_to(port));
    s = fd_guard(::accept(l, nullptr, nullptr));
  }).join();
  ASSERT_GE(c.get(), 0);
  ASSERT_GE(s.get(), 0);
  ASSERT_TRUE(kernel_nonblocking(c));
  ASSERT_TRUE(kernel_nonblocking(l));
  std::atomic<bool> sent{false};
  ssize_t n = 0;
  int e = 0, a = -1;
  on_plain_thread([&] {
    std::thread peer([&] {
      std::this_thread::sleep_for(50ms);
      sent = true;
      ::send(s, "hi", 2, MSG_DONTWAIT);
    });
    char buf[8];
    errno = 0;
    n = ::read(c, buf, sizeof buf);
    e = errno;
    peer.join();
    // And an accept waits for a client.
    std::thread client([&] {
      std::this_thread::sleep_for(50ms);
      sent = true;
      ::close(connect_to(port));
    });
    sent = false;
    a = ::accept(l, nullptr, nullptr);
    EXPECT_TRUE(sent.load());
    client.join();
  });
  EXPECT_EQ(n, 2);
  EXPECT_EQ(e, 0);
  EXPECT_GE(a, 0);
  if (a >= 0) ::close(a);
}

TEST_F(hooked_socket, accept_on_a_socket_not_listening_leaves_its_mode_alone) {
  fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int rc = 0, e = 0;
  spawn([&] {
    rc = ::accept(s, nullptr, nullptr);
    e = errno;
  }).join();
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(e, EINVAL);
  EXPECT_FALSE(kernel_nonblocking(s));
}

TEST_F(hooked_socket, a_failed_dup2_or_dup3_leaves_the_target_as_it_was) {
  fd_guard l(listening_socket());
  fd_guard c;
  spawn([&] { c = fd_guard(connect_to(local_port(l))); }).join();
  ASSERT_GE(c.get(), 0);
  fd_guard s(::accept(l, nullptr, nullptr));
  int rc2 = 0, e2 = 0, rc3 = 0, e3 = 0;
  spawn([&] {
    rc2 = ::dup2(9999, c);  // not open: EBADF
    e2 = errno;
    rc3 = ::dup3(9999, c, O_CLOEXEC);
    e3 = errno;
  }).join();
  EXPECT_EQ(rc2, -1);
  EXPECT_EQ(e2, EBADF);
  EXPECT_EQ(rc3, -1);
  EXPECT_EQ(e3, EBADF);
  // The hooks still know the caller wants blocking: F_GETFL says so, and a read waits.
  EXPECT_FALSE(caller_nonblocking(c));
  ssize_t n = 0;
  const int ticks = blocked_while_others_run(
      [&] {
        char buf[4];
        n = ::read(c, buf, sizeof buf);
      },
      [&] { ::send(s, "x", 1, 0); });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(n, 1);
}

TEST_F(hooked_socket, a_second_blocking_connect_waits_for_the_handshake_under_way) {
  full_listener f = make_full_listener();
  fd_guard c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a = loopback(f.port);
  int rc1 = 0, e1 = 0, rc2 = 0, e2 = 0, rc3 = 0, e3 = 0;
  spawn([&] {
    timeval tv{0, 200'000};
    ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    rc1 = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
    e1 = errno;
    // Room in the queue: the SYN the kernel sends again completes the handshake.
    for (int i = 0; i < 2; ++i) ::close(::accept(f.listener, nullptr, nullptr));
    timeval longer{60, 0};
    ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &longer, sizeof longer);
    rc2 = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
    e2 = errno;
    rc3 = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
    e3 = errno;
  }).join();
  EXPECT_EQ(rc1, -1);
  EXPECT_EQ(e1, EINPROGRESS);
  EXPECT_EQ(rc2, 0) << std::strerror(e2);  // not EALREADY at once
  EXPECT_EQ(rc3, -1);
  EXPECT_EQ(e3, EISCONN);
}

TEST_F(hooked_socket, a_blocking_connect_to_a_full_unix_listener_waits_for_room) {
  const std::string path = "/tmp/tendril_unix_full_" + std::to_string(::getpid());
  ::unlink(path.c_str());
  sockaddr_un ua{};
  ua.sun_family = AF_UNIX;
  std::strncpy(ua.sun_path, path.c_str(), sizeof ua.sun_path - 1);
  fd_guard l(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&ua), sizeof ua), 0);
  ASSERT_EQ(::listen(l, 0), 0);
  fd_guard c1(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  fd_guard c2(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(c1, reinterpret_cast<sockaddr*>(&ua), sizeof ua), 0);  // fills the queue
  int rc = -1, e = 0;
  fd_guard taken;
  const int ticks = blocked_while_others_run(
      [&] {
        rc = ::connect(c2, reinterpret_cast<sockaddr*>(&ua), sizeof ua);
        e = errno;
      },
      [&] { taken = fd_guard(::accept(l, nullptr, nullptr)); });
  ::unlink(path.c_str());
  EXPECT_EQ(rc, 0) << std::strerror(e);
  EXPECT_EQ(ticks, 3);
}

// fcntl64 is what <fcntl.h> calls fcntl under _FILE_OFFSET_BITS=64 (Meson's default, and
// libglib, libgio, libsystemd here). It was not hooked: F_GETFL reported the O_NONBLOCK the
// hooks set underneath, and a caller's F_SETFL was not recorded, so recv parked (for ever).
TEST_F(hooked_socket, fcntl64_reports_and_records_the_callers_o_nonblock_as_fcntl_does) {
  fd_guard l(listening_socket());
  const std::uint16_t port = local_port(l);
  int a = -1;
  fd_guard client;
  EXPECT_EQ(blocked_while_others_run([&] { a = ::accept(l, nullptr, nullptr); },
                                     [&] { client = fd_guard(connect_to(port)); }),
            3);
  fd_guard accepted(a);
  ASSERT_TRUE(kernel_nonblocking(l));
  EXPECT_EQ(::fcntl64(l, F_GETFL) & O_NONBLOCK, 0);

  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  fd_guard s0(sv[0]), s1(sv[1]);
  ASSERT_EQ(::fcntl64(s0, F_SETFL, ::fcntl64(s0, F_GETFL) | O_NONBLOCK), 0);
  EXPECT_TRUE(caller_nonblocking(s0));
  int err = 0;
  EXPECT_EQ(switches_during([&] {
              tendril::timeout limit(2s);  // bounds the wait the bug made
              char b[4];
              EXPECT_EQ(::recv(s0, b, sizeof b, 0), -1);
              err = errno;
            }),
            0);
  EXPECT_EQ(err, EAGAIN);
  // And back to blocking, through fcntl64 too: a recv waits for the peer.
  ASSERT_EQ(::fcntl64(s0, F_SETFL, ::fcntl64(s0, F_GETFL) & ~O_NONBLOCK), 0);
  EXPECT_EQ(::fcntl64(s0, F_GETFL) & O_NONBLOCK, 0);
  char b[4] = {};
  ssize_t n = -2;
  EXPECT_EQ(blocked_while_others_run([&] { n = ::recv(s0, b, sizeof b, 0); },
                                     [&] { ASSERT_EQ(::send(s1, "x", 1, 0), 1); }),
            3);
  EXPECT_EQ(n, 1);
}
