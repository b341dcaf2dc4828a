// poll, ppoll, select, pselect, epoll_wait, epoll_pwait and epoll_pwait2 under the hooks, on
// loopback TCP: inside a greenlet each waits for readiness while a ticker greenlet keeps running
// and reports what libc would (revents, the sets, the events); its own time limit ends it with 0
// (on the paused test clock), select leaves the time not slept in its timeval as Linux does;
// several greenlets waiting on one descriptor all wake; outside any hub each call is libc's.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
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

class hooked_poll : public hooked_test {};

constexpr std::int64_t ms_ns = 1'000'000;

// One member of the family waiting for fd to be readable within timeout_ms (-1: no limit).
// Returns the call's result, and checks that what it reports names fd (when it is > 0).
struct poll_call {
  const char* name;
  std::function<int(int fd, int timeout_ms)> call;
};

timespec to_ts(int ms) { return {ms / 1000, (ms % 1000) * 1'000'000L}; }

enum class epoll_call { wait, pwait, pwait2 };

int epoll_on(int fd, epoll_call how, int timeout_ms) {
  fd_guard ep(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = 4242;
  EXPECT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
  epoll_event out[4] = {};
  sigset_t mask;
  sigemptyset(&mask);
  const timespec ts = to_ts(timeout_ms);
  int n = -1;
  switch (how) {
    case epoll_call::wait:
      n = ::epoll_wait(ep, out, 4, timeout_ms);
      break;
    case epoll_call::pwait:
      n = ::epoll_pwait(ep, out, 4, timeout_ms, &mask);
      break;
    case epoll_call::pwait2:
      n = ::epoll_pwait2(ep, out, 4, timeout_ms < 0 ? nullptr : &ts, &mask);
      break;
  }
  if (n > 0) {
    EXPECT_EQ(out[0].data.u32, 4242u);
    EXPECT_TRUE(out[0].events & EPOLLIN);
  }
  return n;
}

std::vector<poll_call> poll_calls() {
  return {
      {"poll",
       [](int fd, int ms) {
         pollfd p[2] = {{-1, POLLIN, 0}, {fd, POLLIN, 0}};  // a negative fd is ignored
         const int n = ::poll(p, 2, ms);
         if (n > 0) {
           EXPECT_EQ(p[0].revents, 0);
           EXPECT_EQ(p[1].revents, POLLIN);
         }
         return n;
       }},
      {"ppoll",
       [](int fd, int ms) {
         pollfd p{fd, POLLIN, 0};
         const timespec ts = to_ts(ms);
         sigset_t mask;
         sigemptyset(&mask);
         const int n = ::ppoll(&p, 1, ms < 0 ? nullptr : &ts, &mask);
         if (n > 0) {
           EXPECT_EQ(p.revents, POLLIN);
         }
         return n;
       }},
      {"select",
       [](int fd, int ms) {
         fd_set rd;
         FD_ZERO(&rd);
         FD_SET(fd, &rd);
         timeval tv{ms / 1000, (ms % 1000) * 1000};
         const int n = ::select(fd + 1, &rd, nullptr, nullptr, ms < 0 ? nullptr : &tv);
         if (n > 0) {
           EXPECT_TRUE(FD_ISSET(fd, &rd));
         } else if (n == 0) {
           EXPECT_FALSE(FD_ISSET(fd, &rd));
         }
         return n;
       }},
      {"pselect",
       [](int fd, int ms) {
         fd_set rd;
         FD_ZERO(&rd);
         FD_SET(fd, &rd);
         const timespec ts = to_ts(ms);
         const int n = ::pselect(fd + 1, &rd, nullptr, nullptr, ms < 0 ? nullptr : &ts, nullptr);
         if (n > 0) {
           EXPECT_TRUE(FD_ISSET(fd, &rd));
         }
         return n;
       }},
      {"epoll_wait", [](int fd, int ms) { return epoll_on(fd, epoll_call::wait, ms); }},
      {"epoll_pwait", [](int fd, int ms) { return epoll_on(fd, epoll_call::pwait, ms); }},
      // Not hooked before: it blocked the thread, the ticker stopped (and with no time limit
      // the test hung).
      {"epoll_pwait2", [](int fd, int ms) { return epoll_on(fd, epoll_call::pwait2, ms); }},
  };
}

}  // namespace

TEST_F(hooked_poll, each_call_waits_for_readiness_while_a_ticker_runs) {
  for (const poll_call& pc : poll_calls()) {
    SCOPED_TRACE(pc.name);
    tcp_pair p = connected_pair();
    int n = -2;
    const int ticks = blocked_while_others_run([&] { n = pc.call(p.server, -1); },
                                               [&] { ASSERT_EQ(::send(p.client, "r", 1, 0), 1); });
    EXPECT_EQ(ticks, 3);
    EXPECT_EQ(n, 1);
  }
}

TEST_F(hooked_poll, each_calls_own_time_limit_ends_it_with_zero) {
  tendril::detail::test_clock::pause();
  for (const poll_call& pc : poll_calls()) {
    SCOPED_TRACE(pc.name);
    tcp_pair p = connected_pair();
    int n = -2;
    int ticks = 0;
    bool stop = false;
    const std::int64_t start = tendril::detail::hub_now_ns();
    std::int64_t took = 0;
    auto ticker = spawn([&] {
      while (!stop) {
        ++ticks;
        tendril::sleep(100ms);
      }
    });
    auto t = spawn([&] {
      errno = ERANGE;
      n = pc.call(p.server, 1500);
      EXPECT_EQ(errno, ERANGE);
      took = tendril::detail::hub_now_ns() - start;
      stop = true;
    });
    tendril::joinall(t, ticker);
    EXPECT_EQ(n, 0);
    EXPECT_GE(took, 1500 * ms_ns);
    EXPECT_LT(took, 2500 * ms_ns);
    EXPECT_GE(ticks, 10);
  }
}

TEST_F(hooked_poll, no_descriptors_at_all_is_a_sleep) {
  tendril::detail::test_clock::pause();
  auto t = spawn([] {
    std::int64_t start = tendril::detail::hub_now_ns();
    EXPECT_EQ(::poll(nullptr, 0, 700), 0);
    EXPECT_GE(tendril::detail::hub_now_ns() - start, 700 * ms_ns);
    start = tendril::detail::hub_now_ns();
    timeval tv{0, 300'000};
    EXPECT_EQ(::select(0, nullptr, nullptr, nullptr, &tv), 0);
    EXPECT_GE(tendril::detail::hub_now_ns() - start, 300 * ms_ns);
    EXPECT_EQ(tv.tv_sec, 0);
    EXPECT_EQ(tv.tv_usec, 0);
  });
  t.join();
}

TEST_F(hooked_poll, select_leaves_the_time_not_slept_in_its_timeval) {
  tendril::detail::test_clock::pause();
  tcp_pair p = connected_pair();
  timeval tv{10, 0};
  int n = -2;
  fd_set rd;
  const int ticks = blocked_while_others_run(
      [&] {
        FD_ZERO(&rd);
        FD_SET(p.server.get(), &rd);
        n = ::select(p.server + 1, &rd, nullptr, nullptr, &tv);
      },
      [&] {
        tendril::sleep(2s);
        ::send(p.client, "s", 1, 0);
      });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(n, 1);
  EXPECT_TRUE(FD_ISSET(p.server.get(), &rd));
  // About 10 s - 2 s left (the ticker's 3 ms and 2 s on the paused clock).
  EXPECT_GE(tv.tv_sec, 7);
  EXPECT_LE(tv.tv_sec, 8);
}

TEST_F(hooked_poll, one_poll_over_many_descriptors_reports_the_one_that_became_ready) {
  tcp_pair a = connected_pair();
  tcp_pair b = connected_pair();
  tcp_pair c = connected_pair();
  pollfd fds[3] = {{a.server, POLLIN, 0}, {b.server, POLLIN, 0}, {c.server, POLLIN | POLLOUT, 0}};
  fds[2].events = POLLIN;
  int n = -2;
  const int ticks = blocked_while_others_run([&] { n = ::poll(fds, 3, -1); },
                                             [&] { ::send(b.client, "b", 1, 0); });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(n, 1);
  EXPECT_EQ(fds[0].revents, 0);
  EXPECT_EQ(fds[1].revents, POLLIN);
  EXPECT_EQ(fds[2].revents, 0);
  // A descriptor that is ready already: at once.
  pollfd w{a.client, POLLOUT, 0};
  auto t = spawn([&] { EXPECT_EQ(::poll(&w, 1, -1), 1); });
  t.join();
  EXPECT_EQ(w.revents, POLLOUT);
}

TEST_F(hooked_poll, several_greenlets_polling_one_descriptor_all_wake) {
  tcp_pair p = connected_pair();
  constexpr int waiters = 5;
  std::vector<int> results;
  std::vector<tendril::task<void>> tasks;
  for (int i = 0; i < waiters; ++i) {
    tasks.push_back(spawn([&, i] {
      if (i % 2) {
        pollfd f{p.server, POLLIN, 0};
        results.push_back(::poll(&f, 1, -1));
      } else {
        results.push_back(epoll_on(p.server, epoll_call::wait, -1));
      }
    }));
  }
  tendril::sleep(5ms);
  EXPECT_TRUE(results.empty());
  ASSERT_EQ(::send(p.client, "x", 1, 0), 1);
  tendril::joinall(tasks);
  EXPECT_EQ(results, std::vector<int>(waiters, 1));
}

TEST_F(hooked_poll, outside_any_hub_each_call_is_libcs) {
  tcp_pair p = connected_pair();
  on_plain_thread([&] {
    for (const poll_call& pc : poll_calls()) {
      SCOPED_TRACE(pc.name);
      const auto start = std::chrono::steady_clock::now();
      EXPECT_EQ(pc.call(p.server, 30), 0);
      EXPECT_GE(std::chrono::steady_clock::now() - start, 25ms);
    }
    std::thread sender([&] {
      std::this_thread::sleep_for(20ms);
      ::send(p.client, "o", 1, 0);
    });
    EXPECT_EQ(poll_calls()[0].call(p.server, -1), 1);
    sender.join();
    for (const poll_call& pc : poll_calls()) {
      SCOPED_TRACE(pc.name);
      EXPECT_EQ(pc.call(p.server, -1), 1);
    }
  });
}

// A descriptor the hooks never saw made (a raw pipe), polled until its time limit: the
// backend's watch on it may still be in flight (io_uring's poll holds the file). Its number is
// then closed and reused behind the hooks' back, by another raw pipe: a poll of the number
// waits for the new file, not the old one (whose writer stays open and silent).
TEST_F(hooked_poll, a_number_closed_and_reused_by_raw_calls_is_polled_as_the_new_file) {
  tendril::detail::test_clock::pause();
  int old_pipe[2];
  ASSERT_EQ(::syscall(SYS_pipe2, old_pipe, O_CLOEXEC), 0);
  auto first = spawn([&] {
    pollfd p{old_pipe[0], POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 200), 0);
  });
  first.join();
  const int number = old_pipe[0];
  ASSERT_EQ(::syscall(SYS_close, number), 0);
  int new_pipe[2];
  ASSERT_EQ(::syscall(SYS_pipe2, new_pipe, O_CLOEXEC), 0);
  if (new_pipe[0] != number) {
    ASSERT_EQ(::syscall(SYS_dup3, new_pipe[0], number, O_CLOEXEC), number);
    ASSERT_EQ(::syscall(SYS_close, new_pipe[0]), 0);
  }
  int n = -2;
  pollfd p{number, POLLIN, 0};
  std::int64_t took = 0;
  const int ticks = blocked_while_others_run(
      [&] {
        const std::int64_t start = tendril::detail::hub_now_ns();
        n = ::poll(&p, 1, 60'000);
        took = tendril::detail::hub_now_ns() - start;
      },
      [&] { ASSERT_EQ(::write(new_pipe[1], "n", 1), 1); });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(n, 1);
  // Woken by the write, not by its time limit (which the paused clock reaches at once when
  // nothing else is left to run) and the look after it.
  EXPECT_LT(took, 30'000 * ms_ns);
  EXPECT_EQ(p.revents, POLLIN);
  for (int fd : {number, new_pipe[1], old_pipe[1]}) EXPECT_EQ(::close(fd), 0);
}

// The same in two threads, each with its own hub and its own watch on the old file: each
// notices that the number names another file now (the check is per thread, not per number).
TEST_F(hooked_poll, a_number_reused_behind_the_hooks_back_is_noticed_by_every_thread) {
  int old_pipe[2];
  ASSERT_EQ(::syscall(SYS_pipe2, old_pipe, O_CLOEXEC), 0);
  const int number = old_pipe[0];
  int new_pipe[2] = {-1, -1};
  std::mutex mu;
  std::condition_variable cv;
  int timed_out = 0;
  bool reused = false;
  std::int64_t took[2] = {0, 0};
  int results[2] = {-2, -2};
  auto poller = [&](int i) {
    tendril::spawn([&, i] {
      pollfd p{number, POLLIN, 0};
      EXPECT_EQ(::poll(&p, 1, 20), 0);  // leaves this thread's watch on the old file
      {
        std::unique_lock lock(mu);
        ++timed_out;
        cv.notify_all();
      }
      {
        // Blocks this thread (and its hub) until the number is reused: nothing else runs here.
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return reused; });
      }
      const std::int64_t start = tendril::detail::hub_now_ns();
      results[i] = ::poll(&p, 1, 5'000);
      took[i] = tendril::detail::hub_now_ns() - start;
    }).join();
  };
  std::thread a(poller, 0);
  std::thread b(poller, 1);
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return timed_out == 2; });
  }
  ASSERT_EQ(::syscall(SYS_close, number), 0);
  ASSERT_EQ(::syscall(SYS_pipe2, new_pipe, O_CLOEXEC), 0);
  if (new_pipe[0] != number) {
    ASSERT_EQ(::syscall(SYS_dup3, new_pipe[0], number, O_CLOEXEC), number);
    ASSERT_EQ(::syscall(SYS_close, new_pipe[0]), 0);
  }
  {
    std::lock_guard lock(mu);
    reused = true;
  }
  cv.notify_all();
  std::this_thread::sleep_for(50ms);  // both wait (a write before that is seen by the look)
  ASSERT_EQ(::write(new_pipe[1], "n", 1), 1);
  a.join();
  b.join();
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(results[i], 1);
    // Woken by the write, not at the 5 s limit (and the look after it).
    EXPECT_LT(took[i], 4'000 * ms_ns);
  }
  for (int fd : {number, new_pipe[1], old_pipe[1]}) EXPECT_EQ(::close(fd), 0);
}

namespace {

// waits_for_out_of_band_data() waits in poll() for POLLPRI or in select() on exceptfds
// (`how`) on p.server while another greenlet sends a byte of out-of-band data, and checks
// that the data, not the 60 s limit, ended the wait.
void waits_for_out_of_band_data(const tcp_pair& p, const std::string& how) {
  int rc = 0;
  short revents = 0;
  std::int64_t took = 0;
  const int ticks = blocked_while_others_run(
      [&] {
        const auto start = std::chrono::steady_clock::now();
        if (how == "poll") {
          pollfd pr{p.server, POLLPRI, 0};
          rc = ::poll(&pr, 1, 60'000);
          revents = pr.revents;
        } else {
          fd_set ex;
          FD_ZERO(&ex);
          FD_SET(p.server, &ex);
          timeval tv{60, 0};
          rc = ::select(p.server + 1, nullptr, nullptr, &ex, &tv);
          revents = FD_ISSET(p.server, &ex) ? POLLPRI : 0;
        }
        took = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start)
                   .count();
      },
      [&] { ::send(p.client, "!", 1, MSG_OOB); });
  EXPECT_EQ(ticks, 3);
  EXPECT_EQ(rc, 1);
  EXPECT_TRUE(revents & POLLPRI);
  EXPECT_LT(took, 30'000);  // woken by the data, not at the 60 s limit
}

}  // namespace

TEST_F(hooked_poll, poll_for_pollpri_and_select_on_exceptfds_wake_on_out_of_band_data) {
  for (const char* how : {"poll", "select"}) {
    SCOPED_TRACE(how);
    tcp_pair p = connected_pair();
    waits_for_out_of_band_data(p, how);
  }
}

// The same on a socket a greenlet already waited on: its watch exists and POLLPRI is added to
// it (io_uring never woke a poll for POLLPRI alone).
TEST_F(hooked_poll, exceptfds_on_a_socket_already_waited_on_wakes_on_out_of_band_data) {
  for (const char* how : {"poll", "select"}) {
    SCOPED_TRACE(how);
    tcp_pair p = connected_pair();
    char c = 0;
    ssize_t got = -1;
    ASSERT_EQ(blocked_while_others_run([&] { got = ::recv(p.server, &c, 1, 0); },
                                       [&] { ::send(p.client, "x", 1, 0); }),
              3);
    ASSERT_EQ(got, 1);
    waits_for_out_of_band_data(p, how);
  }
}

TEST_F(hooked_poll, poll_for_no_events_on_a_readable_descriptor_does_not_spin) {
  tcp_pair p = connected_pair();
  ASSERT_EQ(::send(p.client, "x", 1, 0), 1);
  timespec cpu0{}, cpu1{};
  int rc = -1;
  spawn([&] {
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    pollfd pr{p.server, 0, 0};
    rc = ::poll(&pr, 1, 500);
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
  }).join();
  EXPECT_EQ(rc, 0);
  const std::int64_t used =
      (cpu1.tv_sec - cpu0.tv_sec) * 1'000'000'000LL + (cpu1.tv_nsec - cpu0.tv_nsec);
  EXPECT_LT(used, 250'000'000);  // a spin burns most of the 500 ms
}

TEST_F(hooked_poll, select_takes_nfds_above_fd_setsize_as_the_kernel_does) {
  tcp_pair p = connected_pair();
  fd_set rd[2];  // a set of the caller's own size, larger than FD_SETSIZE
  std::memset(rd, 0, sizeof rd);
  FD_SET(p.server, &rd[0]);
  int rc = -1, e = 0;
  spawn([&] {
    timeval tv{0, 50'000};
    rc = ::select(FD_SETSIZE + 1, rd, nullptr, nullptr, &tv);
    e = errno;
  }).join();
  EXPECT_EQ(rc, 0) << std::strerror(e);
  ASSERT_EQ(::send(p.client, "x", 1, 0), 1);
  std::memset(rd, 0, sizeof rd);
  FD_SET(p.server, &rd[0]);
  spawn([&] {
    timeval tv{30, 0};
    rc = ::select(FD_SETSIZE + 1, rd, nullptr, nullptr, &tv);
    e = errno;
  }).join();
  EXPECT_EQ(rc, 1) << std::strerror(e);
  EXPECT_TRUE(FD_ISSET(p.server, &rd[0]));
}
