#include "tendril/monkey/monkey.hpp"

#include <mutex>

#include "monkey/core.hpp"

// The link anchor: patch_all() refers to one symbol of every hook file, so that a static
// link that calls patch_all() keeps them all (and one that does not keeps none).
extern "C" char tendril_hook_anchor_sleep;
extern "C" char tendril_hook_anchor_io;
extern "C" char tendril_hook_anchor_socket;
extern "C" char tendril_hook_anchor_poll;
extern "C" char tendril_hook_anchor_dns;
extern "C" char tendril_hook_anchor_chk;

namespace tendril::monkey {

void patch_all() {
  // Kept by the compiler ([[gnu::used]]: without it the array was optimised away), so that
  // linking patch_all() links every hook's object file from the static library. Otherwise a
  // hook object is linked only if something else needs it: in an ASan build, where
  // libasan.so comes first and defines read, recv... itself, hook_io.o was left out.
  [[gnu::used]] static volatile const char* const anchors[] = {
      &tendril_hook_anchor_sleep, &tendril_hook_anchor_io,  &tendril_hook_anchor_socket,
      &tendril_hook_anchor_poll,  &tendril_hook_anchor_dns, &tendril_hook_anchor_chk,
  };
  static std::once_flag once;
  std::call_once(once, [] {
    detail::real::get();  // resolve every real function now, not inside a hook
    detail::monkey::g_patched.store(true, std::memory_order_release);
  });
}

bool is_patched() noexcept { return detail::monkey::g_patched.load(std::memory_order_acquire); }

}  // namespace tendril::monkey
