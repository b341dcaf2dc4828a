// Reads and writes under the hooks, call by call, on loopback TCP sockets, pipes and a regular
// file: inside a greenlet read/recv/recvfrom/recvmsg/readv wait for data and
// write/send/sendto/sendmsg/writev wait for room while a ticker greenlet keeps running; outside
// any hub the same calls are libc's; errno after a failure is libc's even when other greenlets
// failed with other errnos meanwhile; a descriptor the caller made non-blocking (fcntl,
// FIONBIO, SOCK_NONBLOCK, pipe2) fails with EAGAIN at once without a switch; SO_RCVTIMEO ends a
// read with EAGAIN (on the paused test clock); close() and dup2() over a descriptor a greenlet
// waits on wake it with EBADF; a kill ends a blocked recv with ECANCELED and stays pending;
// regular files use libc's call as it is, pipes wait for readiness.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "hub/clock.hpp"
#include "monkey_test_support.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using namespace tendril::test::monkey;
using tendril::spawn;

namespace {

class hooked_io : public hooked_test {};

// The read family, each reading into (buf, len) in its own way.
struct read_call {
  const char* name;
  std::function<ssize_t(int, char*, std::size_t)> call;
};

std::vector<read_call> read_calls() {
  return {
      {"read", [](int fd, char* b, std::size_t n) { return ::read(fd, b, n); }},
      {"recv", [](int fd, char* b, std::size_t n) { return ::recv(fd, b, n, 0); }},
      {"recvfrom",
       [](int fd, char* b, std::size_t n) {
         sockaddr_storage from{};
         socklen_t len = sizeof from;
         return ::recvfrom(fd, b, n, 0, reinterpret_cast<sockaddr*>(&from), &len);
       }},
      {"recvmsg",
       [](int fd, char* b, std::size_t n) {
         iovec v{b, n};
         msghdr m{};
         m.msg_iov = &v;
         m.msg_iovlen = 1;
         return ::recvmsg(fd, &m, 0);
       }},
      {"readv",
       [](int fd, char* b, std::size_t n) {
         iovec v[2] = {{b, 1}, {b + 1, n - 1}};
         return ::readv(fd, v, 2);
       }},
  };
}

// The write family, each writing (buf, len) in its own way.
struct write_call {
  const char* name;
  std::function<ssize_t(int, const char*, std::size_t)> call;
};

std::vector<write_call> write_calls() {
  return {
      {"write", [](int fd, const char* b, std::size_t n) { return ::write(fd, b, n); }},
      {"send", [](int fd, const char* b, std::size_t n) { return ::send(fd, b, n, 0); }},
      {"sendto",
       [](int fd, const char* b, std::size_t n) { return ::sendto(fd, b, n, 0, nullptr, 0); }},
      {"sendmsg",
       [](int fd, const char* b, std::size_t n) {
         iovec v{const_cast<char*>(b), n};
         msghdr m{};
         m.msg_iov = &v;
         m.msg_iovlen = 1;
         return ::sendmsg(fd, &m, 0);
       }},
      {"writev",
       [](int fd, const char* b, std::size_t n) {
         iovec v[2] = {{const_cast<char*>(b), 1}, {const_cast<char*>(b) + 1, n - 1}};
         return ::writev(fd, v, 2);
       }},
  };
}

// Reads exactly n bytes (hooked, blocking); false on an error or an early end.
bool read_exactly(int fd, std::size_t n) {
  std::vector<char> buf(65536);
  while (n > 0) {
    const ssize_t got = ::read(fd, buf.data(), std::min(n, buf.size()));
    if (got <= 0) return false;
    n -= static_cast<std::size_t>(got);
  }
  return true;
}

// The O_NONBLOCK the kernel has, whatever the hooks report.
bool kernel_nonblocking(int fd) { return (::syscall(SYS_fcntl, fd, F_GETFL) & O_NONBLOCK) != 0; }

// rc waits in read of p.server while a ticker runs, until p.client sends "hello".
void expect_read_waits_for_hello(const read_call& rc, int server, int client) {
  ssize_t n = 0;
  char buf[64] = {};
  const int ticks = blocked_while_others_run([&] { n = rc.call(server, buf, sizeof buf); },
                                             [&] { ASSERT_EQ(::send(client, "hello", 5, 0), 5); });
  EXPECT_EQ(ticks, 3);
  ASSERT_EQ(n, 5);
  EXPECT_EQ(std::string(buf, 5), "hello");
}

// A greenlet waiting in read(fd) while a ticker runs is woken with EBADF by close(fd).
void expect_close_wakes_the_reader_with_ebadf(
    int fd, const std::function<ssize_t(int, char*, std::size_t)>& read) {
  ssize_t n = 0;
  int err = 0;
  const int ticks = blocked_while_others_run(
      [&] {
        char buf[8];
        n = read(fd, buf, sizeof buf);
        err = errno;
      },
      [&] { EXPECT_EQ(::close(fd), 0); });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(err, EBADF);
}

}  // namespace

TEST_F(hooked_io, each_read_call_waits_for_data_while_a_ticker_runs) {
  for (const read_call& rc : read_calls()) {
    SCOPED_TRACE(rc.name);
    tcp_pair p = connected_pair();
    expect_read_waits_for_hello(rc, p.server, p.client);
    EXPECT_FALSE(kernel_nonblocking(p.server));  // MSG_DONTWAIT, the descriptor untouched
  }
}

TEST_F(hooked_io, each_write_call_waits_for_room_while_a_ticker_runs) {
  for (const write_call& wc : write_calls()) {
    SCOPED_TRACE(wc.name);
    tcp_pair p = connected_pair(65536);  // fixed buffers: no autotuning, full stays full
    const std::size_t filled = fill(p.client);
    ASSERT_GT(filled, 0u);
    // Every call sends all of a large payload on a blocking stream socket, as libc's.
    const std::size_t size = 300'000;
    std::string payload(size, 'p');
    ssize_t n = 0;
    const int ticks =
        blocked_while_others_run([&] { n = wc.call(p.client, payload.data(), payload.size()); },
                                 [&] { EXPECT_TRUE(read_exactly(p.server, filled + size)); });
    EXPECT_EQ(ticks, 3);
    EXPECT_EQ(n, static_cast<ssize_t>(size));
  }
}

TEST_F(hooked_io, outside_any_hub_reads_and_writes_are_libcs) {
  tcp_pair p = connected_pair();
  on_plain_thread([&] {
    // A blocking recv blocks this thread until another thread sends.
    std::thread sender([&] {
      std::this_thread::sleep_for(20ms);
      ::send(p.client, "abc", 3, 0);
    });
    char buf[8] = {};
    errno = ERANGE;
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(::recv(p.server, buf, sizeof buf, 0), 3);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 15ms);
    EXPECT_EQ(errno, ERANGE);
    sender.join();
    EXPECT_EQ(::recv(p.server, buf, sizeof buf, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(::read(-1, buf, 1), -1);
    EXPECT_EQ(errno, EBADF);
    EXPECT_EQ(::write(p.client, "xy", 2), 2);
    EXPECT_EQ(::read(p.server, buf, sizeof buf), 2);
    // SO_RCVTIMEO is the kernel's own here.
    timeval tv{0, 30'000};
    ASSERT_EQ(::setsockopt(p.server, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    const auto before = std::chrono::steady_clock::now();
    EXPECT_EQ(::recv(p.server, buf, sizeof buf, 0), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_GE(std::chrono::steady_clock::now() - before, 25ms);
    EXPECT_FALSE(kernel_nonblocking(p.server));
  });
}

TEST_F(hooked_io, a_successful_wait_keeps_the_callers_errno) {
  tcp_pair p = connected_pair();
  int after = 0;
  const int ticks = blocked_while_others_run(
      [&] {
        char buf[8];
        errno = ERANGE;
        EXPECT_EQ(::recv(p.server, buf, sizeof buf, 0), 2);  // EAGAIN underneath, then data
        after = errno;
      },
      [&] {
        errno = EPERM;
        ::send(p.client, "ok", 2, 0);
      });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(after, ERANGE);
}

TEST_F(hooked_io, errno_after_a_failure_is_libcs_even_when_other_greenlets_fail_in_between) {
  tcp_pair p = connected_pair();
  int reset_errno = 0;
  int reset_errno_later = 0;
  int other_errno = 0;
  int other_errno_later = 0;
  tendril::event other_failed;
  auto reader = spawn([&] {
    char buf[8];
    EXPECT_EQ(::recv(p.server, buf, sizeof buf, 0), -1);  // waits, then the reset
    reset_errno = errno;
    other_failed.wait();  // meanwhile another greenlet fails with EBADF, then ENOTSOCK
    tendril::sleep(1ms);
    reset_errno_later = errno;
  });
  auto other = spawn([&] {
    // Reset the connection the reader waits on (SO_LINGER 0: close sends RST).
    linger lg{1, 0};
    ASSERT_EQ(::setsockopt(p.client, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    ::close(p.client.get());
    tendril::sleep(1ms);
    char c;
    EXPECT_EQ(::read(-1, &c, 1), -1);
    EXPECT_EQ(errno, EBADF);
    int pfd[2];
    ASSERT_EQ(::pipe(pfd), 0);
    EXPECT_EQ(::recv(pfd[0], &c, 1, MSG_DONTWAIT), -1);
    other_errno = errno;
    other_failed.set();
    tendril::sleep(5ms);  // the reader runs, and sets no errno of ours
    other_errno_later = errno;
    ::close(pfd[0]);
    ::close(pfd[1]);
  });
  tendril::joinall(reader, other);
  (void)p.client.release();
  EXPECT_EQ(reset_errno, ECONNRESET);
  EXPECT_EQ(reset_errno_later, ECONNRESET);
  EXPECT_EQ(other_errno, ENOTSOCK);
  EXPECT_EQ(other_errno_later, ENOTSOCK);
}

TEST_F(hooked_io, a_descriptor_the_caller_made_non_blocking_fails_with_eagain_at_once) {
  struct way {
    const char* name;
    std::function<tcp_pair()> make;
  };
  const std::vector<way> ways = {
      {"fcntl O_NONBLOCK",
       [] {
         tcp_pair p = connected_pair(4096);
         const int fl = ::fcntl(p.client, F_GETFL);
         EXPECT_EQ(::fcntl(p.client, F_SETFL, fl | O_NONBLOCK), 0);
         return p;
       }},
      {"ioctl FIONBIO",
       [] {
         tcp_pair p = connected_pair(4096);
         int on = 1;
         EXPECT_EQ(::ioctl(p.client, FIONBIO, &on), 0);
         return p;
       }},
      {"SOCK_NONBLOCK",
       [] {
         int sv[2];
         EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
         return tcp_pair{fd_guard(sv[0]), fd_guard(sv[1])};
       }},
  };
  for (const way& w : ways) {
    SCOPED_TRACE(w.name);
    tcp_pair p = w.make();
    fill(p.client);  // before the greenlet: fill() may wait a little for the kernel
    int ticks = 0;
    auto t = spawn([&] {
      auto ticker = spawn([&] { ++ticks; });  // would run at the first switch
      for (const read_call& rc : read_calls()) {
        SCOPED_TRACE(rc.name);
        char buf[16];
        errno = 0;
        EXPECT_EQ(rc.call(p.client, buf, sizeof buf), -1);  // the server never sends
        EXPECT_EQ(errno, EAGAIN);
      }
      for (const write_call& wc : write_calls()) {
        SCOPED_TRACE(wc.name);
        char buf[512] = {};
        errno = 0;
        EXPECT_EQ(wc.call(p.client, buf, sizeof buf), -1);
        EXPECT_EQ(errno, EAGAIN);
      }
      EXPECT_EQ(ticks, 0);
      ticker.join();
    });
    t.join();
    EXPECT_EQ(ticks, 1);
  }
}

TEST_F(hooked_io, a_non_blocking_pipe_fails_with_eagain_at_once) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  fd_guard r(fds[0]);
  fd_guard w(fds[1]);
  int ticks = 0;
  auto t = spawn([&] {
    auto ticker = spawn([&] { ++ticks; });
    char buf[16];
    EXPECT_EQ(::read(r, buf, sizeof buf), -1);
    EXPECT_EQ(errno, EAGAIN);
    iovec v{buf, sizeof buf};
    EXPECT_EQ(::readv(r, &v, 1), -1);
    EXPECT_EQ(errno, EAGAIN);
    std::vector<char> big(4096, 'x');
    while (::write(w, big.data(), big.size()) > 0) {
    }
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(ticks, 0);
    ticker.join();
  });
  t.join();
  EXPECT_EQ(ticks, 1);
}

TEST_F(hooked_io, so_rcvtimeo_ends_a_blocked_read_with_eagain_after_the_limit) {
  tendril::detail::test_clock::pause();
  tcp_pair p = connected_pair();
  timeval tv{2, 0};
  ASSERT_EQ(::setsockopt(p.server, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  for (const read_call& rc : read_calls()) {
    SCOPED_TRACE(rc.name);
    const std::int64_t start = tendril::detail::hub_now_ns();
    std::int64_t took = 0;
    int ticks = 0;
    bool stop = false;
    auto ticker = spawn([&] {
      while (!stop) {
        ++ticks;
        tendril::sleep(100ms);
      }
    });
    auto t = spawn([&] {
      char buf[8];
      errno = 0;
      EXPECT_EQ(rc.call(p.server, buf, sizeof buf), -1);
      EXPECT_EQ(errno, EAGAIN);
      took = tendril::detail::hub_now_ns() - start;
      stop = true;
    });
    tendril::joinall(t, ticker);
    EXPECT_GE(took, 2'000'000'000);
    EXPECT_LT(took, 3'000'000'000);
    EXPECT_GE(ticks, 15);  // about 20 ticks of 100 ms ran during the 2 s
  }
}

TEST_F(hooked_io, close_wakes_a_greenlet_waiting_in_recv_with_ebadf) {
  tcp_pair p = connected_pair();
  expect_close_wakes_the_reader_with_ebadf(
      p.server.release(), [](int fd, char* b, std::size_t n) { return ::recv(fd, b, n, 0); });
}

TEST_F(hooked_io, close_wakes_a_greenlet_waiting_in_read_on_a_pipe_with_ebadf) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  fd_guard w(fds[1]);
  expect_close_wakes_the_reader_with_ebadf(
      fds[0], [](int fd, char* b, std::size_t n) { return ::read(fd, b, n); });
}

TEST_F(hooked_io, close_wakes_a_greenlet_waiting_in_a_blocked_write_with_ebadf) {
  tcp_pair p = connected_pair(4096);
  fill(p.client);
  const int fd = p.client.release();
  ssize_t n = 0;
  int err = 0;
  const int ticks = blocked_while_others_run(
      [&] {
        std::string big(100'000, 'b');
        n = ::send(fd, big.data(), big.size(), 0);
        err = errno;
      },
      [&] { EXPECT_EQ(::close(fd), 0); });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(err, EBADF);
}

TEST_F(hooked_io, dup2_over_a_descriptor_a_greenlet_waits_on_wakes_it_with_ebadf) {
  tcp_pair p = connected_pair();
  tcp_pair q = connected_pair();
  ssize_t n = 0;
  int err = 0;
  const int ticks = blocked_while_others_run(
      [&] {
        char buf[8];
        n = ::recv(p.server, buf, sizeof buf, 0);
        err = errno;
      },
      [&] { EXPECT_EQ(::dup2(q.server, p.server), p.server.get()); });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(err, EBADF);
  // The number now names q's socket, and a hooked read on it works.
  ASSERT_EQ(::send(q.client, "q", 1, 0), 1);
  auto t = spawn([&] {
    char c = 0;
    EXPECT_EQ(::recv(p.server, &c, 1, 0), 1);
    EXPECT_EQ(c, 'q');
  });
  t.join();
}

TEST_F(hooked_io, a_kill_ends_a_blocked_recv_with_ecanceled_and_stays_pending) {
  tcp_pair p = connected_pair();
  ssize_t rc = 0;
  int err = 0;
  ssize_t again = 0;
  int again_err = 0;
  bool reached_after = false;
  auto t = spawn([&] {
    char buf[8];
    rc = ::recv(p.server, buf, sizeof buf, 0);
    err = errno;
    // A second hooked call before the kill is raised fails the same way, without waiting.
    again = ::read(p.server, buf, sizeof buf);
    again_err = errno;
    tendril::sleep(0s);  // the next cooperative call raises the kill
    reached_after = true;
  });
  tendril::sleep(10ms);
  EXPECT_FALSE(t.ready());
  t.kill();
  EXPECT_TRUE(t.ready());
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(err, ECANCELED);
  EXPECT_EQ(again, -1);
  EXPECT_EQ(again_err, ECANCELED);
  EXPECT_FALSE(reached_after);
  // The socket is still usable afterwards.
  ASSERT_EQ(::send(p.client, "k", 1, 0), 1);
  auto u = spawn([&] {
    char c = 0;
    EXPECT_EQ(::recv(p.server, &c, 1, 0), 1);
  });
  u.join();
}

TEST_F(hooked_io, regular_files_are_read_and_written_with_libcs_call_without_a_switch) {
  char path[] = "/tmp/tendril-monkey-io-XXXXXX";
  fd_guard f(::mkstemp(path));
  ASSERT_GE(f.get(), 0);
  ::unlink(path);
  int ticks = 0;
  auto t = spawn([&] {
    auto ticker = spawn([&] { ++ticks; });
    std::string data(200'000, 'r');
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + i % 26);
    EXPECT_EQ(::write(f, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    iovec out[2] = {{data.data(), 10}, {data.data() + 10, 20}};
    EXPECT_EQ(::writev(f, out, 2), 30);
    EXPECT_EQ(::lseek(f, 0, SEEK_SET), 0);
    std::string back(data.size(), '\0');
    EXPECT_EQ(::read(f, back.data(), back.size()), static_cast<ssize_t>(back.size()));
    EXPECT_EQ(back, data);
    char tail[64];
    iovec in{tail, sizeof tail};
    EXPECT_EQ(::readv(f, &in, 1), 30);
    EXPECT_EQ(::read(f, tail, sizeof tail), 0);  // end of file: at once
    EXPECT_EQ(::recv(f, tail, sizeof tail, 0), -1);
    EXPECT_EQ(errno, ENOTSOCK);
    EXPECT_EQ(ticks, 0);
    ticker.join();
  });
  t.join();
  EXPECT_FALSE(kernel_nonblocking(f));
}

TEST_F(hooked_io, a_pipe_read_waits_for_data_while_a_ticker_runs) {
  for (bool vectored : {false, true}) {
    SCOPED_TRACE(vectored ? "readv" : "read");
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    fd_guard r(fds[0]);
    fd_guard w(fds[1]);
    char buf[16] = {};
    ssize_t n = 0;
    const int ticks = blocked_while_others_run(
        [&] {
          if (vectored) {
            iovec v[2] = {{buf, 2}, {buf + 2, sizeof buf - 2}};
            n = ::readv(r, v, 2);
          } else {
            n = ::read(r, buf, sizeof buf);
          }
        },
        [&] { EXPECT_EQ(::write(w, "pipe", 4), 4); });
    EXPECT_EQ(ticks, 3);
    ASSERT_EQ(n, 4);
    EXPECT_EQ(std::string(buf, 4), "pipe");
    EXPECT_FALSE(kernel_nonblocking(r));
  }
}

TEST_F(hooked_io, a_pipe_write_waits_for_room_while_a_ticker_runs) {
  for (bool vectored : {false, true}) {
    SCOPED_TRACE(vectored ? "writev" : "write");
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    fd_guard r(fds[0]);
    fd_guard w(fds[1]);
    // Fill it through a non-blocking twin of the write end (the same pipe, another open file
    // is not possible for a pipe: use /proc/self/fd to open one).
    const std::string twin_path = "/proc/self/fd/" + std::to_string(w.get());
    fd_guard twin(::open(twin_path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    ASSERT_GE(twin.get(), 0);
    std::size_t filled = 0;
    std::vector<char> chunk(4096, 'f');
    while (true) {
      const ssize_t n = ::write(twin, chunk.data(), chunk.size());
      if (n <= 0) break;
      filled += static_cast<std::size_t>(n);
    }
    ASSERT_GT(filled, 0u);
    char msg[512];
    std::memset(msg, 'm', sizeof msg);
    ssize_t n = 0;
    const int ticks = blocked_while_others_run(
        [&] {
          if (vectored) {
            iovec v[2] = {{msg, 100}, {msg + 100, sizeof msg - 100}};
            n = ::writev(w, v, 2);
          } else {
            n = ::write(w, msg, sizeof msg);
          }
        },
        [&] { EXPECT_TRUE(read_exactly(r, filled + sizeof msg)); });
    EXPECT_EQ(ticks, 3);
    EXPECT_EQ(n, static_cast<ssize_t>(sizeof msg));
    EXPECT_FALSE(kernel_nonblocking(w));
  }
}

namespace {
// pair_read_after_a_wait() makes a Unix socket pair of `type` under the hooks and reads its end
// sv[0] once in a greenlet that waits (so the socket is watched) until `sent` comes from
// sv[1], one send per string; returns what that read returned.
ssize_t pair_read_after_a_wait(int type, int sv[2], std::initializer_list<const char*> sent) {
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) {
    ADD_FAILURE() << "socketpair: " << std::strerror(errno);
    return -2;
  }
  char buf[100];
  ssize_t first = -2;
  auto t = spawn([&] { first = ::read(sv[0], buf, sizeof buf); });
  tendril::sleep(20ms);
  for (const char* m : sent) EXPECT_EQ(::send(sv[1], m, std::strlen(m), 0), std::strlen(m));
  t.join();
  return first;
}
}  // namespace

// After a short read the hooks wait for the backend before asking the kernel again; an end of
// stream that arrived together with the next data must still be seen at once (an
// edge-triggered backend reports it once).
TEST_F(hooked_io, a_short_read_then_the_end_of_stream_that_came_with_it) {
  int sv[2];
  const ssize_t first = pair_read_after_a_wait(SOCK_STREAM, sv, {"abc"});
  EXPECT_EQ(first, 3);  // short: the socket is empty now
  char buf[100];
  ASSERT_EQ(::write(sv[1], "def", 3), 3);
  ASSERT_EQ(::shutdown(sv[1], SHUT_WR), 0);
  tendril::sleep(50ms);  // the data and the end of stream arrive before the next reads
  ssize_t n1 = -2, n2 = -2, n3 = -2;
  spawn([&] {
    n1 = ::read(sv[0], buf, sizeof buf);
    n2 = ::read(sv[0], buf, sizeof buf);
    n3 = ::recv(sv[0], buf, sizeof buf, 0);
  }).join();
  EXPECT_EQ(n1, 3);
  EXPECT_EQ(n2, 0);
  EXPECT_EQ(n3, 0);
  ::close(sv[0]);
  ::close(sv[1]);
}

namespace {
// read_queued() reads fd in a new greenlet and expects `want` back at once: the bytes are in
// the socket's queue already. A read that waits for a report the backend will not make is
// ended after 2 s by closing fd (it then fails with EBADF) and reported.
void read_queued(int fd, const std::string& want) {
  char buf[100];
  ssize_t n = -2;
  auto r = spawn([&] { n = ::read(fd, buf, sizeof buf); });
  if (!r.join_for(2s)) {
    ADD_FAILURE() << "a read of bytes already queued waited for more";
    ::close(fd);
    r.join();
    return;
  }
  ASSERT_EQ(n, static_cast<ssize_t>(want.size()));
  EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)), want);
}
}  // namespace

// A datagram socket's short read does not mean its queue is empty: a datagram that arrived
// with the one read is read at once, not after a report that never comes (epoll reports the
// two arrivals as one edge, and the first read took it).
TEST_F(hooked_io, a_datagram_queued_behind_a_short_read_is_read_at_once) {
  int sv[2];
  EXPECT_EQ(pair_read_after_a_wait(SOCK_DGRAM, sv, {"one", "two"}), 3);  // short; "two" queued
  read_queued(sv[0], "two");
  ::close(sv[0]);
  ::close(sv[1]);
}

// A recvfrom (or recvmsg, readv, recv with flags) after a short read may wait, take the
// backend's report and leave bytes queued: the plain read after it reads them at once.
TEST_F(hooked_io, bytes_left_by_a_recvfrom_after_a_short_read_are_read_at_once) {
  int sv[2];
  ASSERT_EQ(pair_read_after_a_wait(SOCK_STREAM, sv, {"abc"}), 3);  // short: now empty
  char buf[100];
  ssize_t part = -2;
  blocked_while_others_run([&] { part = ::recvfrom(sv[0], buf, 2, 0, nullptr, nullptr); },
                           [&] { EXPECT_EQ(::write(sv[1], "world", 5), 5); });
  ASSERT_EQ(part, 2);  // "wo": the report of "world" was this wait's
  read_queued(sv[0], "rld");
  ::close(sv[0]);
  ::close(sv[1]);
}

// A socket read short, then closed by fclose() of an fdopen'd stream (glibc closes it inside,
// where close() is not interposed), its number then taken by a file the hooks do not see made
// (an eventfd, moved there with a raw dup3): a read of the number reads that file.
TEST_F(hooked_io, a_number_an_fclosed_socket_left_is_read_as_the_file_that_took_it) {
  int sv[2];
  // Short: the next read would wait for the backend first.
  ASSERT_EQ(pair_read_after_a_wait(SOCK_STREAM, sv, {"abc"}), 3);
  FILE* f = ::fdopen(sv[0], "r+");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(::fclose(f), 0);
  const int e = static_cast<int>(::syscall(SYS_eventfd2, 5, EFD_CLOEXEC));
  ASSERT_GE(e, 0);
  if (e != sv[0]) {  // the lowest free number is usually sv[0]'s already
    ASSERT_EQ(::syscall(SYS_dup3, e, sv[0], O_CLOEXEC), sv[0]);
    ::syscall(SYS_close, e);
  }
  const std::uint64_t five = 5;  // the eventfd's counter, as its read gives it
  read_queued(sv[0], std::string(reinterpret_cast<const char*>(&five), sizeof five));
  ::close(sv[0]);
  ::close(sv[1]);
}

// --- reads of a socket that the last read emptied -------------------------------------------
//
// After a short read the next plain read or recv of the socket goes to the backend before the
// kernel (on io_uring the kernel waits and copies the data into the caller's buffer itself).
// That path must behave as the first read does: wait while others run, keep to SO_RCVTIMEO,
// wake with EBADF when the socket is closed, end with ECANCELED on a kill, and never lose the
// bytes that arrive as the kill does.

namespace {

// A loopback TCP connection made under the hooks (so that they know the accepted end's mode),
// whose accepted end has been read short once, after a wait: the next read of `server` takes
// the emptied-socket path.
tcp_pair emptied_tcp_pair() {
  tcp_pair p;
  spawn([&] {
    fd_guard l(listening_socket(8));
    p.client = fd_guard(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a = loopback(local_port(l));
    ASSERT_EQ(::connect(p.client, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    p.server = fd_guard(::accept4(l, nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_GE(p.server.get(), 0);
  }).join();
  char buf[64];
  ssize_t n = 0;
  blocked_while_others_run([&] { n = ::read(p.server, buf, sizeof buf); },
                           [&] { EXPECT_EQ(::send(p.client, "abc", 3, 0), 3); });
  EXPECT_EQ(n, 3);  // short
  return p;
}

// The two calls that take the emptied-socket path.
std::vector<read_call> plain_read_calls() {
  return {
      {"read", [](int fd, char* b, std::size_t n) { return ::read(fd, b, n); }},
      {"recv", [](int fd, char* b, std::size_t n) { return ::recv(fd, b, n, 0); }},
  };
}

}  // namespace

TEST_F(hooked_io, a_read_after_a_short_read_waits_for_data_while_a_ticker_runs) {
  for (const read_call& rc : plain_read_calls()) {
    SCOPED_TRACE(rc.name);
    tcp_pair p = emptied_tcp_pair();
    for (int round = 0; round < 3; ++round) {  // each read short again: the path each time
      expect_read_waits_for_hello(rc, p.server, p.client);
    }
    // The end of stream ends it too.
    ssize_t n = -2;
    blocked_while_others_run(
        [&] {
          char buf[8];
          n = rc.call(p.server, buf, sizeof buf);
        },
        [&] { EXPECT_EQ(::shutdown(p.client, SHUT_WR), 0); });
    EXPECT_EQ(n, 0);
  }
}

TEST_F(hooked_io, so_rcvtimeo_ends_a_read_after_a_short_read_with_eagain_after_the_limit) {
  for (const read_call& rc : plain_read_calls()) {
    SCOPED_TRACE(rc.name);
    tcp_pair p = emptied_tcp_pair();
    tendril::detail::test_clock::pause();
    timeval tv{2, 0};
    ASSERT_EQ(::setsockopt(p.server, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    const std::int64_t start = tendril::detail::hub_now_ns();
    std::int64_t took = 0;
    ssize_t n = 0;
    int err = 0;
    spawn([&] {
      char buf[8];
      n = rc.call(p.server, buf, sizeof buf);
      err = errno;
      took = tendril::detail::hub_now_ns() - start;
    }).join();
    tendril::detail::test_clock::resume();
    EXPECT_EQ(n, -1);
    EXPECT_EQ(err, EAGAIN);
    EXPECT_GE(took, 2'000'000'000);
    EXPECT_LT(took, 3'000'000'000);
    // Data that comes later is read as usual.
    ASSERT_EQ(::send(p.client, "late", 4, 0), 4);
    spawn([&] {
      char buf[8];
      EXPECT_EQ(rc.call(p.server, buf, sizeof buf), 4);
    }).join();
  }
}

TEST_F(hooked_io, close_wakes_a_greenlet_in_a_read_after_a_short_read_with_ebadf) {
  for (const read_call& rc : plain_read_calls()) {
    SCOPED_TRACE(rc.name);
    tcp_pair p = emptied_tcp_pair();
    expect_close_wakes_the_reader_with_ebadf(p.server.release(), rc.call);
  }
}

TEST_F(hooked_io, a_kill_ends_a_read_after_a_short_read_with_ecanceled_and_stays_pending) {
  for (const read_call& rc : plain_read_calls()) {
    SCOPED_TRACE(rc.name);
    tcp_pair p = emptied_tcp_pair();
    ssize_t n = 0;
    int err = 0;
    bool reached_after = false;
    auto t = spawn([&] {
      char buf[8];
      n = rc.call(p.server, buf, sizeof buf);
      err = errno;
      tendril::sleep(0s);  // raises the kill
      reached_after = true;
    });
    tendril::sleep(10ms);
    EXPECT_FALSE(t.ready());
    t.kill();
    EXPECT_EQ(n, -1);
    EXPECT_EQ(err, ECANCELED);
    EXPECT_FALSE(reached_after);
    // The socket is still usable, by a new reader.
    ASSERT_EQ(::send(p.client, "k", 1, 0), 1);
    spawn([&] {
      char c = 0;
      EXPECT_EQ(rc.call(p.server, &c, 1), 1);
      EXPECT_EQ(c, 'k');
    }).join();
  }
}

TEST_F(hooked_io, bytes_that_arrive_as_a_read_after_a_short_read_is_killed_are_not_lost) {
  for (const read_call& rc : plain_read_calls()) {
    SCOPED_TRACE(rc.name);
    for (int round = 0; round < 20; ++round) {
      tcp_pair p = emptied_tcp_pair();
      ssize_t n = -2;
      int err = 0;
      char buf[16] = {};
      auto t = spawn([&] {
        n = rc.call(p.server, buf, sizeof buf);
        err = errno;
        tendril::sleep(10s);  // raises the kill, pending or yet to come
        ADD_FAILURE() << "the kill was lost";
      });
      tendril::sleep(0s);  // t waits in its read now
      ASSERT_FALSE(t.ready());
      // The bytes are in the socket before the kill; on io_uring the kernel may have copied
      // them into t's buffer already: then t's read returns them and the kill waits for its
      // next cooperative call.
      ASSERT_EQ(::send(p.client, "xyz", 3, 0), 3);
      if (round % 2 == 1) {
        // Let the kernel complete it, without a switch (libc's nanosleep is hooked).
        timespec ms{0, 1'000'000};
        ::syscall(SYS_nanosleep, &ms, nullptr);
      }
      t.kill();
      std::string got;
      if (n >= 0) {
        got.assign(buf, static_cast<std::size_t>(n));
      } else {
        EXPECT_EQ(err, ECANCELED);
      }
      // Whatever the read did not return is still in the socket.
      ASSERT_EQ(::shutdown(p.client, SHUT_WR), 0);
      spawn([&] {
        char rest[16];
        ssize_t m;
        while ((m = rc.call(p.server, rest, sizeof rest)) > 0) {
          got.append(rest, static_cast<std::size_t>(m));
        }
        EXPECT_EQ(m, 0);
      }).join();
      EXPECT_EQ(got, "xyz");
    }
  }
}

TEST_F(hooked_io, msg_waitall_reads_until_the_whole_length_while_a_ticker_runs) {
  for (const char* name : {"recv", "recvfrom", "recvmsg"}) {
    SCOPED_TRACE(name);
    tcp_pair p = connected_pair();
    ASSERT_EQ(::send(p.client, "hello", 5, 0), 5);
    char buf[10] = {};
    ssize_t n = 0;
    const int ticks = blocked_while_others_run(
        [&] {
          if (std::string(name) == "recv") {
            n = ::recv(p.server, buf, sizeof buf, MSG_WAITALL);
          } else if (std::string(name) == "recvfrom") {
            n = ::recvfrom(p.server, buf, sizeof buf, MSG_WAITALL, nullptr, nullptr);
          } else {
            iovec io[2] = {{buf, 3}, {buf + 3, 7}};
            msghdr m{};
            m.msg_iov = io;
            m.msg_iovlen = 2;
            n = ::recvmsg(p.server, &m, MSG_WAITALL);
          }
        },
        [&] { ::send(p.client, "world", 5, 0); });
    EXPECT_EQ(ticks, 3);
    EXPECT_EQ(n, 10);
    EXPECT_EQ(std::string(buf, 10), "helloworld");
  }
}

TEST_F(hooked_io, msg_waitall_stops_at_the_end_of_the_stream) {
  tcp_pair p = connected_pair();
  ASSERT_EQ(::send(p.client, "abc", 3, 0), 3);
  char buf[10] = {};
  ssize_t n = 0;
  blocked_while_others_run([&] { n = ::recv(p.server, buf, sizeof buf, MSG_WAITALL); },
                           [&] { ::shutdown(p.client, SHUT_WR); });
  EXPECT_EQ(n, 3);
}

// SO_SNDTIMEO bounds a whole blocking send, however many chunks go out meanwhile; a send
// that then returns a short count leaves errno as it was.
TEST_F(hooked_io, so_sndtimeo_bounds_a_whole_send_and_a_short_count_keeps_errno) {
  tcp_pair p = connected_pair(65536);
  timeval tv{0, 300'000};
  ASSERT_EQ(::setsockopt(p.client, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
  const std::size_t size = 64u << 20;
  std::vector<char> big(size, 'b');
  bool stop = false;
  ssize_t n = 0;
  int err = 0;
  auto reader = spawn([&] {
    std::vector<char> buf(65536);
    while (!stop) {  // 64 KiB every 20 ms: 3 MiB/s, a 64 MiB send would take 20 s
      tendril::sleep(20ms);
      ::recv(p.server, buf.data(), buf.size(), MSG_DONTWAIT);
    }
  });
  spawn([&] {
    errno = ERANGE;
    n = ::send(p.client, big.data(), big.size(), 0);
    err = errno;
    stop = true;
  }).join();
  reader.join();
  EXPECT_GT(n, 0);
  EXPECT_LT(n, static_cast<ssize_t>(size) / 2);
  EXPECT_EQ(err, ERANGE);
}

namespace {

// Two connected message sockets (UDP on loopback, or AF_UNIX SOCK_SEQPACKET) made under the
// hooks: `reader`'s connect() was hooked, so the hooks made it non-blocking underneath and a
// thread with no hub takes their inactive path on it.
struct message_pair {
  fd_guard reader;
  fd_guard writer;
};

message_pair message_pair_made_by_the_hooks(int type) {
  message_pair p;
  spawn([&] {
    if (type == SOCK_DGRAM) {
      p.writer = fd_guard(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      p.reader = fd_guard(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      sockaddr_in any = loopback(0);
      ASSERT_EQ(::bind(p.writer, reinterpret_cast<sockaddr*>(&any), sizeof any), 0);
      ASSERT_EQ(::bind(p.reader, reinterpret_cast<sockaddr*>(&any), sizeof any), 0);
      sockaddr_in w = loopback(local_port(p.writer));
      sockaddr_in r = loopback(local_port(p.reader));
      ASSERT_EQ(::connect(p.reader, reinterpret_cast<sockaddr*>(&w), sizeof w), 0);
      ASSERT_EQ(::connect(p.writer, reinterpret_cast<sockaddr*>(&r), sizeof r), 0);
    } else {
      fd_guard l(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      // The family alone: the kernel picks an abstract name.
      ASSERT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(sa_family_t)), 0);
      ASSERT_EQ(::listen(l, 1), 0);
      socklen_t len = sizeof a;
      ASSERT_EQ(::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len), 0);
      p.reader = fd_guard(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
      ASSERT_EQ(::connect(p.reader, reinterpret_cast<sockaddr*>(&a), len), 0);
      p.writer = fd_guard(::accept4(l, nullptr, nullptr, SOCK_CLOEXEC));
      ASSERT_GE(p.writer.get(), 0);
    }
  }).join();
  return p;
}

}  // namespace

// MSG_WAITALL does not join datagrams or records: each call reads one, as the kernel's, in a
// greenlet and on a thread with no hub (the inactive path), whichever of recv, recvfrom and
// recvmsg made the first read.
TEST_F(hooked_io, msg_waitall_reads_one_datagram_or_record) {
  for (int type : {SOCK_DGRAM, SOCK_SEQPACKET}) {
    message_pair p = message_pair_made_by_the_hooks(type);
    ASSERT_GE(p.reader.get(), 0);
    ASSERT_TRUE(kernel_nonblocking(p.reader));
    timeval tv{0, 200'000};  // a joining read stops here instead of hanging
    ASSERT_EQ(::setsockopt(p.reader, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    for (const char* name : {"recv", "recvfrom", "recvmsg"}) {
      for (bool hooked : {true, false}) {
        SCOPED_TRACE(std::string(type == SOCK_DGRAM ? "udp " : "seqpacket ") + name +
                     (hooked ? " in a greenlet" : " with no hub"));
        ASSERT_EQ(::send(p.writer, "abc", 3, 0), 3);
        ASSERT_EQ(::send(p.writer, "defg", 4, 0), 4);
        std::vector<std::string> got;
        auto read_two = [&] {
          for (int i = 0; i < 2; ++i) {
            char buf[100] = {};
            ssize_t n;
            if (std::string(name) == "recv") {
              n = ::recv(p.reader, buf, sizeof buf, MSG_WAITALL);
            } else if (std::string(name) == "recvfrom") {
              n = ::recvfrom(p.reader, buf, sizeof buf, MSG_WAITALL, nullptr, nullptr);
            } else {
              iovec io[2] = {{buf, 2}, {buf + 2, sizeof buf - 2}};
              msghdr m{};
              m.msg_iov = io;
              m.msg_iovlen = 2;
              n = ::recvmsg(p.reader, &m, MSG_WAITALL);
            }
            got.push_back(n < 0 ? "error" : std::string(buf, static_cast<std::size_t>(n)));
          }
        };
        if (hooked) {
          spawn(read_two).join();
        } else {
          on_plain_thread(read_two);
        }
        EXPECT_EQ(got, (std::vector<std::string>{"abc", "defg"}));
      }
    }
  }
}

// One SO_RCVTIMEO limit bounds a whole MSG_WAITALL recvmsg, its first read and the reads
// after it: bytes that came in the middle do not start the limit again (on the paused clock).
TEST_F(hooked_io, so_rcvtimeo_bounds_a_whole_msg_waitall_recvmsg) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  fd_guard reader(sv[0]);
  fd_guard writer(sv[1]);
  timeval tv{1, 0};
  ASSERT_EQ(::setsockopt(reader, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  tendril::detail::test_clock::pause();
  const std::int64_t start = tendril::detail::hub_now_ns();
  auto late = spawn([&] {
    tendril::sleep(600ms);
    EXPECT_EQ(::send(writer, "x", 1, 0), 1);
  });
  ssize_t n = 0;
  int err = 0;
  std::int64_t took = 0;
  spawn([&] {
    char buf[10];
    iovec io{buf, sizeof buf};
    msghdr m{};
    m.msg_iov = &io;
    m.msg_iovlen = 1;
    errno = ERANGE;
    n = ::recvmsg(reader, &m, MSG_WAITALL);
    err = errno;
    took = tendril::detail::hub_now_ns() - start;
  }).join();
  late.join();
  tendril::detail::test_clock::resume();
  EXPECT_EQ(n, 1);
  EXPECT_EQ(err, ERANGE);
  EXPECT_GE(took, 1'000'000'000);
  EXPECT_LT(took, 1'500'000'000);  // not 1.6 s: the limit from the start, not from the byte
}

// One SO_SNDTIMEO limit bounds a whole sendmsg, its first call and the ones after it (on the
// paused clock).
TEST_F(hooked_io, so_sndtimeo_bounds_a_whole_sendmsg) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  fd_guard sender(sv[0]);
  fd_guard peer(sv[1]);
  fill(sender);
  timeval tv{1, 0};
  ASSERT_EQ(::setsockopt(sender, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
  tendril::detail::test_clock::pause();
  const std::int64_t start = tendril::detail::hub_now_ns();
  auto drain = spawn([&] {
    tendril::sleep(600ms);
    std::vector<char> buf(65536);
    while (::recv(peer, buf.data(), buf.size(), MSG_DONTWAIT) > 0) {
    }
  });
  std::vector<char> big(16u << 20, 'm');
  ssize_t n = 0;
  int err = 0;
  std::int64_t took = 0;
  spawn([&] {
    iovec io{big.data(), big.size()};
    msghdr m{};
    m.msg_iov = &io;
    m.msg_iovlen = 1;
    errno = ERANGE;
    n = ::sendmsg(sender, &m, 0);
    err = errno;
    took = tendril::detail::hub_now_ns() - start;
  }).join();
  drain.join();
  tendril::detail::test_clock::resume();
  EXPECT_GT(n, 0);
  EXPECT_LT(n, static_cast<ssize_t>(big.size()));
  EXPECT_EQ(err, ERANGE);
  EXPECT_GE(took, 1'000'000'000);
  EXPECT_LT(took, 1'500'000'000);  // not 1.6 s
}

// io::wait_readable() on a descriptor the caller owns, and a hooked close() of it by another
// greenlet: the wait ran on to its time limit (the close hook ends only what the hooks
// borrowed), and on io_uring the poll in flight kept the file open, so the peer saw the end
// only then.
TEST_F(hooked_io, a_hooked_close_ends_an_io_wait_readable_on_that_descriptor_with_ebadf) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::error_code ec;
  bool ready = true;
  std::int64_t waited = 0;
  auto w = spawn([&] {
    const std::int64_t start = tendril::detail::hub_now_ns();
    ready = tendril::io::wait_readable_for(sv[0], 60s, ec);
    waited = tendril::detail::hub_now_ns() - start;
  });
  tendril::sleep(1ms);  // w is parked
  ASSERT_EQ(::close(sv[0]), 0);
  char c;
  EXPECT_EQ(::recv(sv[1], &c, 1, 0), 0);  // the peer sees the end at once
  w.join();
  EXPECT_FALSE(ready);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor) << ec.message();
  EXPECT_LT(waited, 30'000'000'000);  // ended by the close, not at the 60 s limit
  ::close(sv[1]);
}

// io::wait_readable_for() and a hooked read() of the same pipe: when the wait's time ran out it
// closed the record the read was parked on (the wait had opened it), and the read failed with
// EBADF instead of reading what came next.
TEST_F(hooked_io, an_io_wait_running_out_of_time_leaves_a_hooked_read_of_that_pipe_waiting) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  fd_guard r(fds[0]);
  fd_guard w(fds[1]);
  bool ready = true;
  auto waiting = spawn([&] { ready = tendril::io::wait_readable_for(r, 10ms); });
  ssize_t n = 0;
  int err = 0;
  char c = 0;
  auto reader = spawn([&] {
    n = ::read(r, &c, 1);
    err = errno;
  });
  waiting.join();
  EXPECT_FALSE(ready);
  EXPECT_FALSE(reader.ready());
  ASSERT_EQ(::write(w, "x", 1), 1);
  reader.join();
  EXPECT_EQ(n, 1) << std::strerror(err);
  EXPECT_EQ(c, 'x');
}
