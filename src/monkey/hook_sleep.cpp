// Hooks: the sleep family. Inside a greenlet, the calling greenlet sleeps and the others
// run; a kill or a timeout scope ends the sleep early with ECANCELED (the interruption stays
// pending for the greenlet's next cooperative call), and a signal handler that runs on the
// thread while the hub waits ends it early with EINTR, as libc's sleep ends.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>

#include "monkey/core.hpp"

extern "C" {
char tendril_hook_anchor_sleep = 0;
}

namespace {
using namespace tendril::detail::monkey;
namespace real = tendril::detail::real;
using tendril::detail::deadline_after;
using tendril::detail::hub_now_ns;

std::int64_t timespec_ns(const timespec& t) {
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

void remaining(std::int64_t deadline, timespec* rem) {
  if (rem == nullptr) return;
  std::int64_t left = deadline - hub_now_ns();
  if (left < 0) left = 0;
  rem->tv_sec = static_cast<time_t>(left / 1'000'000'000);
  rem->tv_nsec = static_cast<long>(left % 1'000'000'000);
}

bool valid(const timespec* t) {
  return t && t->tv_nsec >= 0 && t->tv_nsec < 1'000'000'000 && t->tv_sec >= 0;
}

}  // namespace

extern "C" unsigned sleep(unsigned seconds) {
  if (!active()) return real::get().sleep(seconds);
  const int saved = errno;
  const std::int64_t deadline = deadline_after(std::chrono::seconds(seconds));
  if (const int rc = sleep_until(deadline); rc != 0) {
    // glibc's sleep: errno from its nanosleep (EINTR), and the seconds left rounded to the
    // nearest (half a second up).
    const std::int64_t left = deadline - hub_now_ns();
    errno = -rc;
    return left <= 0 ? 0 : static_cast<unsigned>((left + 500'000'000) / 1'000'000'000);
  }
  errno = saved;
  return 0;
}

extern "C" int usleep(useconds_t usec) {
  if (!active()) return real::get().usleep(usec);
  const int saved = errno;
  if (const int rc = sleep_until(deadline_after(std::chrono::microseconds(usec))); rc != 0)
    return fail(-rc);
  errno = saved;
  return 0;
}

extern "C" int nanosleep(const timespec* req, timespec* rem) {
  if (!active()) return real::get().nanosleep(req, rem);
  if (req == nullptr) return fail(EFAULT);  // as the kernel says
  if (!valid(req)) return fail(EINVAL);
  const int saved = errno;
  const std::int64_t deadline = deadline_after(std::chrono::nanoseconds(timespec_ns(*req)));
  if (const int rc = sleep_until(deadline); rc != 0) {
    remaining(deadline, rem);
    return fail(-rc);
  }
  errno = saved;
  return 0;
}

extern "C" int clock_nanosleep(clockid_t clock, int flags, const timespec* req, timespec* rem) {
  if (!active() ||
      (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME && clock != CLOCK_BOOTTIME)) {
    return real::get().clock_nanosleep(clock, flags, req, rem);
  }
  if (req == nullptr) return EFAULT;
  if (!valid(req)) return EINVAL;
  std::int64_t ns = timespec_ns(*req);
  if (flags & TIMER_ABSTIME) {
    timespec now{};
    clock_gettime(clock, &now);
    ns -= timespec_ns(now);
  }
  const std::int64_t deadline = deadline_after(std::chrono::nanoseconds(ns));
  // clock_nanosleep returns the error number rather than setting errno.
  if (const int rc = sleep_until(deadline); rc != 0) {
    if (!(flags & TIMER_ABSTIME)) remaining(deadline, rem);
    return -rc;
  }
  return 0;
}
