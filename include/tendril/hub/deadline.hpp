// Deadlines on the hub's clock, made from any std::chrono duration or time point without
// overflow: a negative duration acts as zero, one too large for the clock as "forever"; a NaN
// one (or time point) throws std::invalid_argument.
#ifndef TENDRIL_HUB_DEADLINE_HPP
#define TENDRIL_HUB_DEADLINE_HPP

#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace tendril::detail {

inline constexpr std::int64_t forever_ns = std::numeric_limits<std::int64_t>::max();

// hub_now_ns() is the hub clock: steady_clock, unless a test paused it;
// hub_clock_is_steady() tells which.
std::int64_t hub_now_ns() noexcept;
bool hub_clock_is_steady() noexcept;

// A NaN compares false with everything: it read as "forever" (never fires, never wakes).
[[noreturn]] inline void throw_nan_time(const char* what) {
  throw std::invalid_argument(std::string("tendril: a NaN ") + what +
                              " is no time limit (a timeout, sleep, spawn_later or *_for/_until)");
}

// saturating_ns() is d in nanoseconds, clamped to [0, forever_ns]. Throws
// std::invalid_argument for a NaN d.
template <class Rep, class Period>
constexpr std::int64_t saturating_ns(std::chrono::duration<Rep, Period> d) {
  if constexpr (std::is_floating_point_v<Rep>) {
    if (d.count() != d.count()) throw_nan_time("duration");
  }
  if (d <= std::chrono::duration<Rep, Period>::zero()) return 0;
  const long double ns = std::chrono::duration<long double, std::nano>(d).count();
  if (!(ns < static_cast<long double>(forever_ns / 2))) return forever_ns;
  return static_cast<std::int64_t>(ns);
}

// deadline_after() is now + d on the hub clock, forever_ns for "never".
template <class Rep, class Period>
std::int64_t deadline_after(std::chrono::duration<Rep, Period> d) {
  const std::int64_t ns = saturating_ns(d);
  if (ns == forever_ns) return forever_ns;
  const std::int64_t now = hub_now_ns();
  return ns > forever_ns - now ? forever_ns : now + ns;
}

// deadline_at() turns a time point of any clock into a hub deadline (through that clock's
// own now(), so the two clocks need not agree).
// The difference is taken in long double nanoseconds: in the time point's common type it
// could overflow (time_point<steady_clock, seconds>::max() in nanoseconds, or sys_days).
template <class Clock, class Duration>
std::int64_t deadline_at(std::chrono::time_point<Clock, Duration> tp) {
  using ld_ns = std::chrono::duration<long double, std::nano>;
  if constexpr (std::is_floating_point_v<typename Duration::rep>) {
    if (tp.time_since_epoch().count() != tp.time_since_epoch().count()) {
      throw_nan_time("time point");
    }
  }
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    // The hub's own clock: the time point is the deadline, with no clock read in between, so
    // that one time point is always the same deadline (sleepers until it wake in the order
    // they slept; hub_test's deadline_at_a_steady_time_point_is_that_time_point).
    if (hub_clock_is_steady()) {
      const long double ns = ld_ns(tp.time_since_epoch()).count();
      if (!(ns > 0)) return 0;
      if (!(ns < static_cast<long double>(forever_ns / 2))) return forever_ns;
      return static_cast<std::int64_t>(ns);
    }
  }
  const long double left =
      ld_ns(tp.time_since_epoch()).count() - ld_ns(Clock::now().time_since_epoch()).count();
  if (!(left > 0)) return hub_now_ns();
  return deadline_after(ld_ns(left));
}

}  // namespace tendril::detail

#endif
