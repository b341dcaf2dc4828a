// The hub clock: steady_clock, or a paused clock that tests move by hand or let the hub
// move to the next timer when nothing else can happen (tokio's paused clock).
#include "hub/clock.hpp"

#include <atomic>
#include <chrono>

#include "tendril/hub/deadline.hpp"

namespace tendril::detail {
namespace {
std::atomic<bool> g_paused{false};
std::atomic<std::int64_t> g_paused_now{0};

std::int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

std::int64_t hub_now_ns() noexcept {
  if (g_paused.load(std::memory_order_relaxed)) [[unlikely]] {
    return g_paused_now.load(std::memory_order_relaxed);
  }
  return steady_ns();
}

bool hub_clock_is_steady() noexcept { return !g_paused.load(std::memory_order_relaxed); }

namespace test_clock {
void pause() noexcept {
  g_paused_now.store(steady_ns(), std::memory_order_relaxed);
  g_paused.store(true, std::memory_order_release);
}
void resume() noexcept { g_paused.store(false, std::memory_order_release); }
bool paused() noexcept { return g_paused.load(std::memory_order_relaxed); }
void advance_to(std::int64_t ns) noexcept {
  std::int64_t cur = g_paused_now.load(std::memory_order_relaxed);
  while (ns > cur && !g_paused_now.compare_exchange_weak(cur, ns, std::memory_order_relaxed)) {
  }
}
}  // namespace test_clock

}  // namespace tendril::detail
