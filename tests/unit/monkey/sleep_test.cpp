// The sleep family under the hooks: inside a greenlet a libc sleep parks only the caller (the
// seed's example: two greenlets sleeping 2 s and 3 s finish together after 3 s, on the hub's
// paused test clock); outside any hub it is libc's own sleep; a kill ends a hooked sleep with
// ECANCELED and stays pending for the greenlet's next cooperative call.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "hub/clock.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;

namespace {

constexpr std::int64_t ms_ns = 1'000'000;
constexpr std::int64_t second_ns = 1'000'000'000;

std::int64_t now_ns() { return tendril::detail::hub_now_ns(); }

class hooked_sleep : public ::testing::Test {
 protected:
  void SetUp() override {
    tendril::monkey::patch_all();
    tendril::detail::test_clock::pause();
  }
  void TearDown() override { tendril::detail::test_clock::resume(); }
};

}  // namespace

TEST_F(hooked_sleep, two_greenlets_sleeping_two_and_three_seconds_end_after_three) {
  ASSERT_TRUE(tendril::monkey::is_patched());
  const std::int64_t start = now_ns();
  std::vector<std::string> order;
  auto a = spawn([&] {
    EXPECT_EQ(::sleep(2), 0u);
    order.push_back("2s");
  });
  auto b = spawn([&] {
    EXPECT_EQ(::sleep(3), 0u);
    order.push_back("3s");
  });
  tendril::joinall(a, b);
  const std::int64_t took = now_ns() - start;
  EXPECT_GE(took, 3 * second_ns);
  EXPECT_LT(took, 5 * second_ns);  // 5 s would mean the sleeps ran one after the other
  EXPECT_EQ(order, (std::vector<std::string>{"2s", "3s"}));
}

TEST_F(hooked_sleep, every_member_of_the_family_lets_a_ticker_run) {
  int ticks = 0;
  bool done = false;
  auto ticker = spawn([&] {
    while (!done) {
      ++ticks;
      tendril::sleep(10ms);
    }
  });
  auto sleeper = spawn([&] {
    EXPECT_EQ(::usleep(100'000), 0);
    timespec req{0, 100 * ms_ns};
    timespec rem{9, 9};
    EXPECT_EQ(::nanosleep(&req, &rem), 0);
    EXPECT_EQ(::clock_nanosleep(CLOCK_MONOTONIC, 0, &req, nullptr), 0);
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    EXPECT_EQ(::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &now, nullptr), 0);  // in the past
    std::this_thread::sleep_for(100ms);
    done = true;
  });
  const std::int64_t start = now_ns();
  sleeper.join();
  ticker.join();
  EXPECT_GE(now_ns() - start, 400 * ms_ns);
  EXPECT_GE(ticks, 20);  // about 40 in 400 ms of 10 ms ticks
}

TEST_F(hooked_sleep, a_sleep_keeps_errno) {
  auto t = spawn([] {
    errno = ERANGE;
    ::usleep(1000);
    EXPECT_EQ(errno, ERANGE);
  });
  auto other = spawn([] {
    errno = EPERM;
    tendril::sleep(0s);
  });
  t.join();
  other.join();
}

TEST_F(hooked_sleep, bad_arguments_get_libcs_errors) {
  auto t = spawn([] {
    timespec bad{0, 2'000'000'000};
    errno = 0;
    EXPECT_EQ(::nanosleep(&bad, nullptr), -1);
    EXPECT_EQ(errno, EINVAL);
    timespec negative{-1, 0};
    EXPECT_EQ(::nanosleep(&negative, nullptr), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(::clock_nanosleep(CLOCK_MONOTONIC, 0, &bad, nullptr), EINVAL);
  });
  t.join();
}

TEST_F(hooked_sleep, a_kill_ends_the_sleep_with_ecanceled_and_stays_pending) {
  int seen_errno = 0;
  bool reached_after = false;
  auto t = spawn([&] {
    timespec req{60, 0};
    timespec rem{};
    const int rc = ::nanosleep(&req, &rem);
    seen_errno = errno;
    EXPECT_EQ(rc, -1);
    EXPECT_GT(rem.tv_sec, 50);  // most of the minute was left
    // Another hooked call before the kill is raised fails the same way, without waiting.
    const std::int64_t before = now_ns();
    errno = 0;
    EXPECT_EQ(::usleep(30'000'000), -1);
    EXPECT_EQ(errno, ECANCELED);
    EXPECT_LT(now_ns() - before, 10 * second_ns);
    tendril::sleep(0s);  // the next cooperative call raises the kill
    reached_after = true;
  });
  tendril::sleep(10ms);
  t.kill();
  EXPECT_EQ(seen_errno, ECANCELED);
  EXPECT_FALSE(reached_after);
  EXPECT_TRUE(t.ready());
}

TEST(hooked_sleep_outside, a_thread_without_a_hub_sleeps_with_libc) {
  tendril::monkey::patch_all();
  std::thread th([] {
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(::usleep(20'000), 0);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);
    timespec bad{0, -1};
    errno = 0;
    EXPECT_EQ(::nanosleep(&bad, nullptr), -1);
    EXPECT_EQ(errno, EINVAL);
  });
  th.join();
}

TEST_F(hooked_sleep, a_timeout_scope_ends_the_sleep_and_is_raised_by_the_next_cooperative_call) {
  unsigned left = 0;
  bool caught = false;
  bool reached_after = false;
  const std::int64_t start = now_ns();
  auto t = spawn([&] {
    try {
      tendril::timeout limit(100ms);
      left = ::sleep(60);  // cut short: returns the seconds left, as libc's does on a signal
      tendril::sleep(0s);  // raises the timeout
      reached_after = true;
    } catch (const tendril::timeout_error&) {
      caught = true;
    }
  });
  t.join();
  EXPECT_TRUE(caught);
  EXPECT_FALSE(reached_after);
  EXPECT_GT(left, 50u);
  EXPECT_GE(now_ns() - start, 100 * ms_ns);
  EXPECT_LT(now_ns() - start, 10 * second_ns);
}

namespace {
std::atomic<int> g_usr1{0};
extern "C" void count_usr1(int) { g_usr1.fetch_add(1, std::memory_order_relaxed); }

// Sends SIGUSR1 to a thread every 10 ms until stopped: one of them lands while that thread's
// hub waits in the backend, however busy the machine.
class signaller {
 public:
  explicit signaller(pthread_t to)
      : t_([this, to] {
          while (!stop_.load()) {
            ::pthread_kill(to, SIGUSR1);
            std::this_thread::sleep_for(10ms);  // no hub on this thread: libc's
          }
        }) {}
  ~signaller() {
    stop_ = true;
    t_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread t_;
};
}  // namespace

TEST(hooked_sleep_signals, a_signal_handler_ends_each_sleep_early_with_eintr_and_nothing_else) {
  tendril::monkey::patch_all();
  struct sigaction sa {};
  sa.sa_handler = count_usr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // libc's sleeps end with EINTR even so
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  // A greenlet blocked in a hooked read is not disturbed: reads restart, as with SA_RESTART.
  std::string got;
  auto reader = spawn([&] {
    char buf[8] = {};
    const ssize_t n = ::read(p[0], buf, sizeof buf);
    if (n > 0) got.assign(buf, static_cast<std::size_t>(n));
  });
  const std::int64_t start = now_ns();
  unsigned left_s = 0;
  int sleep_errno = 0;
  int usleep_rc = 0, usleep_errno = 0, nanosleep_rc = 0, nanosleep_errno = 0, clock_rc = 0;
  timespec rem{}, clock_rem{};
  {
    signaller s(pthread_self());
    spawn([&] {
      errno = 0;
      left_s = ::sleep(30);
      sleep_errno = errno;
    }).join();
    spawn([&] {
      usleep_rc = ::usleep(30'000'000);
      usleep_errno = errno;
    }).join();
    spawn([&] {
      const timespec req{30, 0};
      nanosleep_rc = ::nanosleep(&req, &rem);
      nanosleep_errno = errno;
    }).join();
    spawn([&] {
      const timespec req{30, 0};
      clock_rc = ::clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &clock_rem);
    }).join();
  }
  EXPECT_GT(g_usr1.load(), 0);
  EXPECT_LT(now_ns() - start, 25 * second_ns);  // each ended long before its 30 s
  EXPECT_GT(left_s, 0u);
  EXPECT_LE(left_s, 30u);
  EXPECT_EQ(sleep_errno, EINTR);  // glibc's sleep leaves its nanosleep's errno
  EXPECT_EQ(usleep_rc, -1);
  EXPECT_EQ(usleep_errno, EINTR);
  EXPECT_EQ(nanosleep_rc, -1);
  EXPECT_EQ(nanosleep_errno, EINTR);
  EXPECT_GT(rem.tv_sec * second_ns + rem.tv_nsec, 0);
  EXPECT_LE(rem.tv_sec, 30);
  EXPECT_EQ(clock_rc, EINTR);
  EXPECT_GT(clock_rem.tv_sec * second_ns + clock_rem.tv_nsec, 0);
  EXPECT_FALSE(reader.ready());
  ASSERT_EQ(::write(p[1], "data", 4), 4);
  reader.join();
  EXPECT_EQ(got, "data");
  ::close(p[0]);
  ::close(p[1]);
  ::sigaction(SIGUSR1, &old, nullptr);
}

TEST_F(hooked_sleep, a_null_request_is_efault_as_in_libc) {
  int rc = 0, err = 0, clock_rc = 0;
  spawn([&] {
    rc = ::nanosleep(nullptr, nullptr);
    err = errno;
    clock_rc = ::clock_nanosleep(CLOCK_MONOTONIC, 0, nullptr, nullptr);
  }).join();
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(err, EFAULT);
  EXPECT_EQ(clock_rc, EFAULT);
}
