// Bad input to the hooks gets libc's own result and errno, never a crash, a hang or a C++
// exception: bad descriptors (-1, a number that was open and was closed, 1<<20), null buffers
// with zero length, bad addresses where libc reports EFAULT, bad counts; and descriptors the
// hooks never saw being made (before patch_all(), or with raw system calls) work as libc's.
// Each call runs in a greenlet and, for the reference, on a thread that never used tendril
// (where the hooks are libc's calls), and the two outcomes must be equal.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "monkey_test_support.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using namespace tendril::test::monkey;
using tendril::spawn;

namespace {

class hooked_bad_input : public hooked_test {};

// A call whose outcome is compared; it may not block (with libc's semantics) on any input
// it is given here.
struct probe {
  std::string name;
  std::function<long()> call;
  bool may_wait = false;  // libc's call waits too (for its own time limit)
};

// Values the compiler cannot see through, so that it lets the bad calls be made.
template <class T>
T opaque(T v) {
  volatile T hidden = v;
  return hidden;
}

outcome run(const probe& p) {
  errno = 0;
  const long rc = p.call();
  return {rc, rc < 0 ? errno : 0};
}

std::string show(const outcome& o) {
  return std::to_string(o.rc) + " (" + (o.err ? std::strerror(o.err) : "no error") + ")";
}

// compare() runs each probe on a plain thread (libc) and in a greenlet (hooked), in that
// order, probe by probe, and expects the same outcomes. The greenlet run fails the test if a
// probe switched (it must not wait on any of these inputs) or threw.
void compare(const std::vector<probe>& probes) {
  for (const probe& p : probes) {
    SCOPED_TRACE(p.name);
    outcome libc{};
    on_plain_thread([&] { libc = run(p); });
    outcome hooked{};
    int ticks = 0;
    bool threw = false;
    auto t = spawn([&] {
      auto ticker = spawn([&] { ++ticks; });
      try {
        hooked = run(p);
      } catch (...) {
        threw = true;
      }
      if (!p.may_wait) {
        EXPECT_EQ(ticks, 0) << "the call waited";
      }
      ticker.join();
    });
    t.join();
    EXPECT_FALSE(threw);
    EXPECT_EQ(hooked, libc) << "hooked " << show(hooked) << ", libc " << show(libc);
  }
}

// Every hooked call on descriptor fd that fails at once on a bad one.
std::vector<probe> probes_on(int fd, const std::string& label) {
  auto named = [&](const char* what) { return label + ": " + what; };
  std::vector<probe> all = {
      {named("read"),
       [fd] {
         char b[4];
         return static_cast<long>(::read(fd, b, sizeof b));
       }},
      {named("write"), [fd] { return static_cast<long>(::write(fd, "abc", 3)); }},
      {named("readv"),
       [fd] {
         char b[4];
         iovec v{b, sizeof b};
         return static_cast<long>(::readv(fd, &v, 1));
       }},
      {named("writev"),
       [fd] {
         iovec v{const_cast<char*>("abc"), 3};
         return static_cast<long>(::writev(fd, &v, 1));
       }},
      {named("recv"),
       [fd] {
         char b[4];
         return static_cast<long>(::recv(fd, b, sizeof b, 0));
       }},
      {named("send"), [fd] { return static_cast<long>(::send(fd, "abc", 3, 0)); }},
      {named("recvfrom"),
       [fd] {
         char b[4];
         sockaddr_storage a{};
         socklen_t len = sizeof a;
         return static_cast<long>(
             ::recvfrom(fd, b, sizeof b, 0, reinterpret_cast<sockaddr*>(&a), &len));
       }},
      {named("sendto"), [fd] { return static_cast<long>(::sendto(fd, "abc", 3, 0, nullptr, 0)); }},
      {named("recvmsg"),
       [fd] {
         char b[4];
         iovec v{b, sizeof b};
         msghdr m{};
         m.msg_iov = &v;
         m.msg_iovlen = 1;
         return static_cast<long>(::recvmsg(fd, &m, 0));
       }},
      {named("sendmsg"),
       [fd] {
         iovec v{const_cast<char*>("abc"), 3};
         msghdr m{};
         m.msg_iov = &v;
         m.msg_iovlen = 1;
         return static_cast<long>(::sendmsg(fd, &m, 0));
       }},
      {named("accept"), [fd] { return static_cast<long>(::accept(fd, nullptr, nullptr)); }},
      {named("accept4"),
       [fd] { return static_cast<long>(::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC)); }},
      {named("connect"),
       [fd] {
         sockaddr_in a = loopback(9);
         return static_cast<long>(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a));
       }},
      {named("epoll_wait"),
       [fd] {
         epoll_event e[1];
         return static_cast<long>(::epoll_wait(fd, e, 1, 1000));
       }},
      {named("epoll_pwait"),
       [fd] {
         epoll_event e[1];
         return static_cast<long>(::epoll_pwait(fd, e, 1, -1, nullptr));
       }},
      {named("poll reports POLLNVAL"),
       [fd] {
         pollfd p{fd, POLLIN, 0};
         const int n = ::poll(&p, 1, 100);
         return n * 1000L + p.revents;
       },
       fd < 0},  // a negative descriptor is ignored: a sleep of 100 ms
      {named("ppoll reports POLLNVAL"),
       [fd] {
         pollfd p{fd, POLLIN, 0};
         timespec ts{0, 100'000'000};
         const int n = ::ppoll(&p, 1, &ts, nullptr);
         return n * 1000L + p.revents;
       },
       fd < 0},
      {named("fcntl F_GETFL"), [fd] { return static_cast<long>(::fcntl(fd, F_GETFL)); }},
      {named("fcntl F_SETFL"),
       [fd] { return static_cast<long>(::fcntl(fd, F_SETFL, O_NONBLOCK)); }},
      {named("fcntl F_DUPFD"), [fd] { return static_cast<long>(::fcntl(fd, F_DUPFD, 0)); }},
      {named("ioctl FIONBIO"),
       [fd] {
         int on = 1;
         return static_cast<long>(::ioctl(fd, FIONBIO, &on));
       }},
      {named("dup"), [fd] { return static_cast<long>(::dup(fd)); }},
      {named("dup2 from"), [fd] { return static_cast<long>(::dup2(fd, 900)); }},
      {named("close"), [fd] { return static_cast<long>(::close(fd)); }},
  };
  if (fd >= 0 && fd < FD_SETSIZE) {
    all.push_back({named("select"), [fd] {
                     fd_set rd;
                     FD_ZERO(&rd);
                     FD_SET(fd, &rd);
                     timeval tv{1, 0};
                     return static_cast<long>(::select(fd + 1, &rd, nullptr, nullptr, &tv));
                   }});
    all.push_back({named("pselect"), [fd] {
                     fd_set rd;
                     FD_ZERO(&rd);
                     FD_SET(fd, &rd);
                     timespec ts{1, 0};
                     return static_cast<long>(
                         ::pselect(fd + 1, &rd, nullptr, nullptr, &ts, nullptr));
                   }});
  }
  return all;
}

}  // namespace

TEST_F(hooked_bad_input, bad_descriptors_get_libcs_results_and_errno) {
  // A number that was open, known to the hooks (a greenlet waited on it), then closed.
  const int closed = 777;
  {
    fd_guard l(listening_socket());
    ASSERT_EQ(::dup2(l, closed), closed);
    fd_guard client;
    const std::uint16_t port = local_port(l);
    int a = -1;
    blocked_while_others_run([&] { a = ::accept(closed, nullptr, nullptr); },
                             [&] {
                               client = fd_guard(::socket(AF_INET, SOCK_STREAM, 0));
                               sockaddr_in to = loopback(port);
                               ::connect(client, reinterpret_cast<sockaddr*>(&to), sizeof to);
                             });
    ASSERT_GE(a, 0);
    ::close(a);
    ASSERT_EQ(::close(closed), 0);
  }
  compare(probes_on(-1, "-1"));
  compare(probes_on(closed, "closed"));
  compare(probes_on(1 << 20, "1<<20"));
}

TEST_F(hooked_bad_input, zero_lengths_and_null_buffers_get_libcs_results_at_once) {
  tcp_pair empty = connected_pair();  // nothing to read on either end
  int pfd[2];
  ASSERT_EQ(::pipe2(pfd, O_CLOEXEC), 0);
  fd_guard pr(pfd[0]);
  fd_guard pw(pfd[1]);
  const int s = empty.server;
  const int c = empty.client;
  const int r = pr;
  compare({
      {"read 0 from an empty socket", [s] { return static_cast<long>(::read(s, nullptr, 0)); }},
      {"read 0 from an empty pipe", [r] { return static_cast<long>(::read(r, nullptr, 0)); }},
      {"readv of nothing from an empty socket",
       [s] { return static_cast<long>(::readv(s, nullptr, 0)); }},
      {"readv of nothing from an empty pipe",
       [r] { return static_cast<long>(::readv(r, nullptr, 0)); }},
      {"readv of an empty buffer from an empty socket",
       [s] {
         iovec v{nullptr, 0};
         return static_cast<long>(::readv(s, &v, 1));
       }},
      {"write 0", [c] { return static_cast<long>(::write(c, nullptr, 0)); }},
      {"send 0", [c] { return static_cast<long>(::send(c, nullptr, 0, 0)); }},
      {"sendto 0", [c] { return static_cast<long>(::sendto(c, nullptr, 0, 0, nullptr, 0)); }},
      {"writev of nothing", [c] { return static_cast<long>(::writev(c, nullptr, 0)); }},
      {"write 0 to a pipe", [w = pw.get()] { return static_cast<long>(::write(w, nullptr, 0)); }},
      {"poll of nothing, no time", [] { return static_cast<long>(::poll(nullptr, 0, 0)); }},
  });
}

TEST_F(hooked_bad_input, bad_addresses_get_efault_as_with_libc) {
#if defined(__SANITIZE_ADDRESS__)
  // ASan's interceptors (which the hooks' libc calls go through in this build) read the bad
  // pointers themselves before the kernel can refuse them, and stop the process.
  GTEST_SKIP() << "bad pointers stop ASan's own interceptors";
#endif
  tcp_pair p = connected_pair();
  // Data waiting on the server end, so that no read waits (libc's or hooked).
  std::string lots(4096, 'd');
  ASSERT_EQ(::send(p.client, lots.data(), lots.size(), 0), static_cast<ssize_t>(lots.size()));
  int pfd[2];
  ASSERT_EQ(::pipe2(pfd, O_CLOEXEC), 0);
  fd_guard pr(pfd[0]);
  fd_guard pw(pfd[1]);
  ASSERT_EQ(::write(pw, "pipe data", 9), 9);
  fd_guard l(listening_socket());
  // Two connections waiting to be accepted: one for libc's accept, one for the hooked one.
  std::vector<fd_guard> queued;
  on_plain_thread([&] {
    for (int i = 0; i < 2; ++i) {
      queued.emplace_back(::socket(AF_INET, SOCK_STREAM, 0));
      sockaddr_in to = loopback(local_port(l));
      must(::connect(queued.back(), reinterpret_cast<sockaddr*>(&to), sizeof to) == 0, "connect");
    }
  });
  const int s = p.server;
  const int c = p.client;
  const int r = pr;
  void* const bad = reinterpret_cast<void*>(8);  // never mapped
  compare({
      {"recv into null",
       [s] { return static_cast<long>(::recv(s, opaque<void*>(nullptr), 16, 0)); }},
      {"read into null", [s] { return static_cast<long>(::read(s, opaque<void*>(nullptr), 16)); }},
      {"recvfrom into null",
       [s] {
         return static_cast<long>(::recvfrom(s, opaque<void*>(nullptr), 16, 0, nullptr, nullptr));
       }},
      {"read from a pipe into null",
       [r] { return static_cast<long>(::read(r, opaque<void*>(nullptr), 4)); }},
      {"readv with a null iovec array",
       [s] { return static_cast<long>(::readv(s, opaque<iovec*>(nullptr), 1)); }},
      {"readv with a bad buffer",
       [s, bad] {
         iovec v{bad, 16};
         return static_cast<long>(::readv(s, &v, 1));
       }},
      {"recvmsg with a null msghdr", [s] { return static_cast<long>(::recvmsg(s, nullptr, 0)); }},
      {"recvfrom with a bad address length",
       [s, bad] {
         char b[4];
         sockaddr_storage a{};
         return static_cast<long>(::recvfrom(s, b, sizeof b, 0, reinterpret_cast<sockaddr*>(&a),
                                             static_cast<socklen_t*>(bad)));
       }},
      {"write from null",
       [c] { return static_cast<long>(::write(c, opaque<void*>(nullptr), 16)); }},
      {"send from null",
       [c] { return static_cast<long>(::send(c, opaque<void*>(nullptr), 16, 0)); }},
      {"sendto from null",
       [c] { return static_cast<long>(::sendto(c, opaque<void*>(nullptr), 16, 0, nullptr, 0)); }},
      {"writev with a null iovec array",
       [c] { return static_cast<long>(::writev(c, opaque<iovec*>(nullptr), 1)); }},
      {"sendmsg with a null msghdr", [c] { return static_cast<long>(::sendmsg(c, nullptr, 0)); }},
      {"connect to a null address",
       [] {
         fd_guard x(::socket(AF_INET, SOCK_STREAM, 0));
         return static_cast<long>(::connect(x, nullptr, sizeof(sockaddr_in)));
       }},
      {"poll of a null array",
       [] { return static_cast<long>(::poll(opaque<pollfd*>(nullptr), 1, 1000)); }},
      {"ppoll of a null array",
       [] {
         timespec ts{1, 0};
         return static_cast<long>(::ppoll(opaque<pollfd*>(nullptr), 1, &ts, nullptr));
       }},
      {"epoll_wait into null",
       [] {
         fd_guard ep(::epoll_create1(0));
         fd_guard ev(::eventfd(1, 0));
         epoll_event e{};
         e.events = EPOLLIN;
         ::epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e);
         return static_cast<long>(::epoll_wait(ep, opaque<epoll_event*>(nullptr), 1, 1000));
       }},
      {"accept with a bad address length",
       [l = l.get(), bad] {
         sockaddr_storage a{};
         const int n = ::accept(l, reinterpret_cast<sockaddr*>(&a), static_cast<socklen_t*>(bad));
         if (n >= 0) ::close(n);
         return static_cast<long>(n);
       }},
  });
}

TEST_F(hooked_bad_input, bad_counts_and_sets_get_libcs_errors) {
  tcp_pair p = connected_pair();
  const int s = p.server;
  const int c = p.client;
  compare({
      {"readv with a negative count",
       [s] {
         char b[4];
         iovec v{b, sizeof b};
         return static_cast<long>(::readv(s, &v, opaque(-1)));
       }},
      {"writev with a negative count",
       [c] {
         iovec v{const_cast<char*>("x"), 1};
         return static_cast<long>(::writev(c, &v, opaque(-1)));
       }},
      {"readv with too many buffers",
       [s] {
         std::vector<iovec> v(IOV_MAX + 1, iovec{nullptr, 0});
         return static_cast<long>(::readv(s, v.data(), IOV_MAX + 1));
       }},
      {"writev with too many buffers",
       [c] {
         std::vector<iovec> v(IOV_MAX + 1, iovec{nullptr, 0});
         return static_cast<long>(::writev(c, v.data(), IOV_MAX + 1));
       }},
      {"select with a negative count",
       [] {
         timeval tv{1, 0};
         return static_cast<long>(::select(-1, nullptr, nullptr, nullptr, &tv));
       }},
      {"select with a negative time",
       [s] {
         fd_set rd;
         FD_ZERO(&rd);
         FD_SET(s, &rd);
         timeval tv{-1, 0};
         return static_cast<long>(::select(s + 1, &rd, nullptr, nullptr, &tv));
       }},
      {"ppoll with a bad time",
       [s] {
         pollfd f{s, POLLIN, 0};
         timespec ts{0, 2'000'000'000};
         return static_cast<long>(::ppoll(&f, 1, &ts, nullptr));
       }},
      {"epoll_wait with no room",
       [] {
         fd_guard ep(::epoll_create1(0));
         epoll_event e[1];
         return static_cast<long>(::epoll_wait(ep, e, 0, 1000));
       }},
      {"epoll_wait on a descriptor that is not an epoll one",
       [s] {
         epoll_event e[1];
         return static_cast<long>(::epoll_wait(s, e, 1, 1000));
       }},
      {"recv with unknown flags",
       [s] {
         char b[4];
         return static_cast<long>(::recv(s, b, sizeof b, MSG_OOB));
       }},
      {"recv on a listener",
       [] {
         fd_guard l(listening_socket());
         char b[4];
         return static_cast<long>(::recv(l, b, sizeof b, 0));
       }},
      {"send on an unconnected socket",
       [] {
         fd_guard x(::socket(AF_INET, SOCK_STREAM, 0));
         return static_cast<long>(::send(x, "x", 1, MSG_NOSIGNAL));
       }},
      {"accept on a socket that does not listen",
       [c] { return static_cast<long>(::accept(c, nullptr, nullptr)); }},
      {"accept4 with bad flags",
       [] {
         fd_guard l(listening_socket());
         return static_cast<long>(::accept4(l, nullptr, nullptr, 0x7));
       }},
      {"connect with a bad address family",
       [] {
         fd_guard x(::socket(AF_INET, SOCK_STREAM, 0));
         sockaddr_in a = loopback(9);
         a.sin_family = AF_UNIX;
         return static_cast<long>(::connect(x, reinterpret_cast<sockaddr*>(&a), sizeof a));
       }},
      {"connect with a short address",
       [] {
         fd_guard x(::socket(AF_INET, SOCK_STREAM, 0));
         sockaddr_in a = loopback(9);
         return static_cast<long>(::connect(x, reinterpret_cast<sockaddr*>(&a), 2));
       }},
      {"connect on a connected socket",
       [c] {
         sockaddr_in a = loopback(9);
         return static_cast<long>(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a));
       }},
      {"recv on a regular file",
       [] {
         fd_guard f(::open("/proc/self/stat", O_RDONLY));
         char b[4];
         return static_cast<long>(::recv(f, b, sizeof b, 0));
       }},
  });
}

TEST(hooked_bad_input_unseen, descriptors_made_before_patch_all_or_with_raw_calls_work) {
  // Made before patch_all() (when this test runs in a process of its own), and behind the
  // hooks' back with raw system calls.
  int early[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, early), 0);
  tendril::monkey::patch_all();
  watchdog dog;
  int raw[2];
  ASSERT_EQ(::syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, raw), 0);
  int raw_nb[2];
  ASSERT_EQ(
      ::syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, raw_nb), 0);
  int raw_pipe[2];
  ASSERT_EQ(::syscall(SYS_pipe2, raw_pipe, O_CLOEXEC), 0);
  const long raw_listener = ::syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(raw_listener, 0);
  const int rl = static_cast<int>(raw_listener);
  sockaddr_in any = loopback(0);
  ASSERT_EQ(::bind(rl, reinterpret_cast<sockaddr*>(&any), sizeof any), 0);
  ASSERT_EQ(::listen(rl, 8), 0);

  // Blocking ones wait, cooperatively, and get the data.
  struct waiting_read {
    const char* name;
    int rd;
    int wr;
  };
  for (const waiting_read& w : {waiting_read{"early socketpair", early[0], early[1]},
                                waiting_read{"raw socketpair", raw[0], raw[1]},
                                waiting_read{"raw pipe", raw_pipe[0], raw_pipe[1]}}) {
    SCOPED_TRACE(w.name);
    char buf[8] = {};
    ssize_t n = 0;
    EXPECT_EQ(blocked_while_others_run([&] { n = ::read(w.rd, buf, sizeof buf); },
                                       [&] { EXPECT_EQ(::write(w.wr, "raw", 3), 3); }),
              3);
    EXPECT_EQ(n, 3);
    EXPECT_EQ(std::string(buf, 3), "raw");
  }
  // A raw listener: a blocking accept waits for a connection.
  int a = -1;
  fd_guard client;
  EXPECT_EQ(blocked_while_others_run(
                [&] { a = ::accept(rl, nullptr, nullptr); },
                [&] {
                  client = fd_guard(::socket(AF_INET, SOCK_STREAM, 0));
                  sockaddr_in to = loopback(local_port(rl));
                  EXPECT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
                }),
            3);
  EXPECT_GE(a, 0);
  ::close(a);
  // A raw non-blocking one fails at once.
  auto t = spawn([&] {
    char b;
    errno = 0;
    EXPECT_EQ(::read(raw_nb[0], &b, 1), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(::recv(raw_nb[0], &b, 1, 0), -1);
    EXPECT_EQ(errno, EAGAIN);
  });
  t.join();
  for (int fd :
       {early[0], early[1], raw[0], raw[1], raw_nb[0], raw_nb[1], raw_pipe[0], raw_pipe[1], rl}) {
    EXPECT_EQ(::close(fd), 0);
  }
}

TEST_F(hooked_bad_input, a_number_closed_behind_the_hooks_back_and_reused_works) {
  // A listener the hooks made non-blocking underneath (a blocking accept), closed with a raw
  // system call; its number is taken by a raw socket the caller made non-blocking, then by a
  // raw blocking one.
  int l = listening_socket();
  const std::uint16_t port = local_port(l);
  {
    int a = -1;
    fd_guard client;
    blocked_while_others_run([&] { a = ::accept(l, nullptr, nullptr); },
                             [&] {
                               client = fd_guard(::socket(AF_INET, SOCK_STREAM, 0));
                               sockaddr_in to = loopback(port);
                               ::connect(client, reinterpret_cast<sockaddr*>(&to), sizeof to);
                             });
    ASSERT_GE(a, 0);
    ::close(a);
  }
  ASSERT_EQ(::syscall(SYS_close, l), 0);
  int sv[2];
  ASSERT_EQ(::syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  const int reused = sv[0] == l ? sv[0] : sv[1] == l ? sv[1] : -1;
  ASSERT_NE(reused, -1) << "the number was not reused";
  const int peer = reused == sv[0] ? sv[1] : sv[0];
  EXPECT_TRUE(::fcntl(reused, F_GETFL) & O_NONBLOCK);
  auto t = spawn([&] {
    char b;
    errno = 0;
    EXPECT_EQ(::recv(reused, &b, 1, 0), -1);
    EXPECT_EQ(errno, EAGAIN);
  });
  t.join();
  ASSERT_EQ(::syscall(SYS_close, reused), 0);
  ASSERT_EQ(::syscall(SYS_close, peer), 0);
  // Now a blocking one on the same number: a read waits for data.
  ASSERT_EQ(::syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ASSERT_TRUE(sv[0] == l || sv[1] == l);
  const int other = sv[0] == l ? sv[1] : sv[0];
  EXPECT_FALSE(::fcntl(l, F_GETFL) & O_NONBLOCK);
  char buf[4] = {};
  ssize_t n = 0;
  EXPECT_EQ(blocked_while_others_run([&] { n = ::read(l, buf, sizeof buf); },
                                     [&] { EXPECT_EQ(::write(other, "new", 3), 3); }),
            3);
  EXPECT_EQ(n, 3);
  ::close(l);
  ::close(other);
}
