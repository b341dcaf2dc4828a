// The record behind a greenlet handle. Private to the greenlet layer and to the layers above,
// which reach it through greenlet::record().
#ifndef TENDRIL_SRC_GREENLET_GREENLET_RECORD_HPP
#define TENDRIL_SRC_GREENLET_GREENLET_RECORD_HPP

#include <any>
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>

#include "context/context.hpp"
#include "context/stack_pool.hpp"
#include "greenlet/exception_state.hpp"
#include "tendril/greenlet/greenlet.hpp"

namespace tendril::detail {

class thread_state;

enum class greenlet_status : std::uint8_t {
  unstarted,  // made, never switched to: ctx is a made context, the callable is alive
  active,     // running (the thread's current) or suspended in a switch
  dead,       // run returned or threw, or killed before starting: no stack, no callable
};

struct greenlet_record {
  // References: handles, children's parent links, and the thread state's link to its root.
  std::atomic<std::uint32_t> refs{1};
  greenlet_status status = greenlet_status::unstarted;
  bool is_root = false;
  // Set while greenlet_exit is being raised into it because its last handle went away.
  bool being_destroyed = false;

  thread_state* owner = nullptr;      // holds a reference on its thread state
  greenlet_record* parent = nullptr;  // a reference; null only for roots

  context::handle ctx = nullptr;  // where it resumes (unstarted: its made context)
  stack stk;                      // none for roots and dead greenlets
  void* callable = nullptr;       // at the top of stk while unstarted or active
  const callable_ops* ops = nullptr;

  std::any inbox;              // the value of the switch that resumes it
  std::exception_ptr pending;  // raised at its switch point when it resumes

  exception_state eh;  // saved while it is not running
  int saved_errno = 0;

  std::uint64_t id = 0;
  std::unique_ptr<std::string> name;  // set_name(); otherwise made up from id

  void* asan_fake_stack = nullptr;
  const void* asan_stack_bottom = nullptr;  // learned for roots, stk otherwise
  std::size_t asan_stack_size = 0;
  void* tsan_fiber = nullptr;

  // user_data: one pointer for the layers above (the task of a hub greenlet).
  void* user_data = nullptr;
};

// next_greenlet_id() is a process-wide unique id (taken in blocks per thread).
std::uint64_t next_greenlet_id() noexcept;

// The name written into messages, without allocating when none was set: "greenlet-<id>",
// "main" for the main thread's root, "root-<id>" for another thread's.
std::string record_name(const greenlet_record* r);

}  // namespace tendril::detail

#endif
