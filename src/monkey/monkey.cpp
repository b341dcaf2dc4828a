#include "tendril/monkey/monkey.hpp"

#include <pthread.h>

#include <mutex>

#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "hub/hub_impl.hpp"
#include "hub/thread_pool.hpp"
#include "io/fd_table.hpp"
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
namespace {

// The child of a fork runs only the greenlet that forked: the parent's hub, descriptor table
// and pool are left behind, and a fresh hub starts on first use. The greenlet that forked now
// ends into the thread's root (its parent may have been the parent's hub).
void after_fork_child() {
  detail::hub_impl::forget_after_fork();
  detail::fd_table::forget_after_fork();
  detail::thread_pool::forget_after_fork();
  if (detail::thread_state* ts = detail::thread_state::peek()) {
    detail::greenlet_record* cur = ts->current();
    if (cur != ts->root()) {
      detail::unlink_child(cur);
      detail::link_child(ts->root(), cur);
    }
  }
}

}  // namespace

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
    pthread_atfork(nullptr, nullptr, &after_fork_child);
    detail::monkey::g_patched.store(true, std::memory_order_release);
  });
}

bool is_patched() noexcept { return detail::monkey::g_patched.load(std::memory_order_acquire); }

}  // namespace tendril::monkey
