// The hub clock (hub_now_ns() in tendril/hub/deadline.hpp) and its test controls.
#ifndef TENDRIL_SRC_HUB_CLOCK_HPP
#define TENDRIL_SRC_HUB_CLOCK_HPP

#include <cstdint>

namespace tendril::detail::test_clock {

// pause() freezes the hub clock at the current time, for every thread. While paused, a hub
// that has nothing to do but wait for a timer moves the clock to that timer's deadline
// instead of sleeping, so timer tests run in no time and in a deterministic order.
void pause() noexcept;
void resume() noexcept;
bool paused() noexcept;
// advance_to() moves the paused clock forward (never back).
void advance_to(std::int64_t ns) noexcept;

}  // namespace tendril::detail::test_clock

#endif
