// fork() from inside a greenlet after patch_all(): the child starts with a fresh hub and only
// the greenlet that forked. In the child that greenlet can spawn and join tasks, sleep (hooked
// and tendril's), use hooked I/O and the resolver's thread pool, while the parent's other
// greenlets never run there; descriptors made before the fork, through the hooks or
// tendril's sockets, work there. The child reports over a pipe; the parent waits for it with
// waitpid and carries on with its own greenlets.
#include <gtest/gtest.h>
#include <netdb.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "monkey_test_support.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using namespace tendril::test::monkey;
using tendril::spawn;

namespace {

class hooked_fork : public hooked_test {};

using tendril::test::say;

std::string read_all(int fd) {
  std::string out;
  char buf[256];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

// What the child does: everything a fresh hub must support, reported line by line.
void child_work(int report) {
  std::string r;
  // Tasks spawned and joined.
  int sum = 0;
  auto a = spawn([&] {
    ::usleep(20'000);  // hooked: lets b run
    sum += 1;
  });
  auto b = spawn([&] {
    tendril::sleep(5ms);
    sum += 10;
  });
  tendril::joinall(a, b);
  r += "tasks=" + std::to_string(sum) + "\n";
  // Hooked I/O on a new pipe, between two greenlets.
  int fds[2];
  if (::pipe(fds) == 0) {
    std::string got;
    auto reader = spawn([&] {
      char buf[8];
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n > 0) got.assign(buf, static_cast<std::size_t>(n));
    });
    auto writer = spawn([&] {
      tendril::sleep(1ms);
      say(fds[1], "pipe");
    });
    tendril::joinall(reader, writer);
    r += "io=" + got + "\n";
    ::close(fds[0]);
    ::close(fds[1]);
  }
  // The resolver runs on a thread pool of the child's own.
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo("127.0.0.1", "80", nullptr, &res);
  if (res) ::freeaddrinfo(res);
  r += "resolve=" + std::to_string(rc) + "\n";
  // A sleep long enough for the parent's ticker to have run many times, had it come along.
  std::this_thread::sleep_for(50ms);
  r += "done\n";
  say(report, r);
}

}  // namespace

TEST_F(hooked_fork, a_child_forked_in_a_greenlet_gets_a_fresh_hub_without_the_parents_greenlets) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t parent = ::getpid();
  // The parent's pool is in use before the fork: the child must not wait for its threads.
  addrinfo* res = nullptr;
  auto warm = spawn([&] { EXPECT_EQ(::getaddrinfo("localhost", "80", nullptr, &res), 0); });
  warm.join();
  if (res) ::freeaddrinfo(res);

  bool stop = false;
  int parent_ticks = 0;
  auto ticker = spawn([&] {
    while (!stop) {
      if (::getpid() != parent) {
        say(fds[1], "the parent's ticker ran in the child\n");
        ::_exit(2);
      }
      ++parent_ticks;
      tendril::sleep(1ms);
    }
  });
  pid_t child = -1;
  auto forker = spawn([&] {
    tendril::sleep(3ms);
    child = ::fork();
    if (child == 0) {
      ::close(fds[0]);
      child_work(fds[1]);
      ::_exit(0);
    }
  });
  forker.join();
  ASSERT_GT(child, 0);
  ::close(fds[1]);
  // The parent carries on: its ticker still runs while it reads the child's report.
  const int before = parent_ticks;
  std::string report;
  auto reader = spawn([&] { report = read_all(fds[0]); });
  reader.join();
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  stop = true;
  ticker.join();
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(report, "tasks=11\nio=pipe\nresolve=0\ndone\n");
  EXPECT_GT(parent_ticks, before);
}

TEST_F(hooked_fork, a_child_forked_from_the_root_greenlet_gets_a_fresh_hub_too) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t parent = ::getpid();
  bool stop = false;
  auto ticker = spawn([&] {
    while (!stop) {
      if (::getpid() != parent) {
        say(fds[1], "the parent's ticker ran in the child\n");
        ::_exit(2);
      }
      tendril::sleep(1ms);
    }
  });
  tendril::sleep(3ms);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(fds[0]);
    child_work(fds[1]);
    ::_exit(0);
  }
  ASSERT_GT(child, 0);
  ::close(fds[1]);
  const std::string report = read_all(fds[0]);
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  stop = true;
  ticker.join();
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(report, "tasks=11\nio=pipe\nresolve=0\ndone\n");
}

// The pre-fork server under the hooks: a listener made with libc's calls and a tendril socket
// pair, both waited on in the parent before it forks in a greenlet; the child accepts with
// libc's blocking accept() and answers on the pair. The tendril socket failed with EBADF in
// the child (its table had no record of it).
TEST_F(hooked_fork, descriptors_made_before_the_fork_work_in_the_child) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  fd_guard listener(listening_socket());
  const std::uint16_t port = local_port(listener);
  auto [mine, theirs] = tendril::net::unix_stream::pair();
  auto connect_and_send = [port](const char* what) {
    fd_guard c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a = loopback(port);
    if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) say(c, what);
    return c;
  };
  {  // the parent waits on both in its hub first
    auto first = spawn([&] { return ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC); });
    auto ping = spawn([&, &theirs = theirs] { return theirs.recv_exact(4); });
    tendril::sleep(1ms);
    fd_guard c = connect_and_send("x");
    mine.send_all(std::string("ping"));
    fd_guard accepted(first.get());
    EXPECT_GE(accepted.get(), 0);
    EXPECT_EQ(ping.get(), "ping");
  }
  pid_t child = -1;
  auto forker = spawn([&, &mine = mine] {
    child = ::fork();
    if (child == 0) {
      ::close(fds[0]);
      std::string r;
      try {
        tendril::timeout limit(10s);
        fd_guard conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
        char buf[8] = {};
        const ssize_t n = conn >= 0 ? ::read(conn, buf, 5) : -1;
        r += "accepted: " + (n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "nothing") +
             "\n";
        mine.send_all(std::string("child"));
        r += "sent on the pair\n";
      } catch (const tendril::timeout_error&) {
        r += "timed out\n";
      } catch (const std::exception& e) {
        r += std::string("error: ") + e.what() + "\n";
      }
      say(fds[1], r);
      ::_exit(0);
    }
  });
  forker.join();
  ASSERT_GT(child, 0);
  ::close(fds[1]);
  fd_guard c = connect_and_send("hello");
  std::string report;
  auto reader = spawn([&] { report = read_all(fds[0]); });
  reader.join();
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(report, "accepted: hello\nsent on the pair\n");
  tendril::timeout limit(10s);
  EXPECT_EQ(theirs.recv_exact(5), "child");
}
