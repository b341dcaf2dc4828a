// tendril::hub: the per-thread scheduler greenlet that runs the loop (gevent's Hub). Users
// rarely need it: every blocking call starts the calling thread's hub on first use.
#ifndef TENDRIL_HUB_HUB_HPP
#define TENDRIL_HUB_HUB_HPP

#include <exception>
#include <functional>
#include <string>

#include "tendril/hub/exceptions.hpp"

namespace tendril {

namespace detail {
class hub_impl;
}

class hub {
 public:
  // current() is the calling thread's hub, started on first use. Switches: no.
  static hub& current();

  // backend_name() is "epoll", "io_uring" or "poll": how this hub waits for descriptors
  // (TENDRIL_BACKEND=epoll|io_uring|poll chooses; the default is the best the kernel has).
  const char* backend_name() const noexcept;

  // An error handler receives each task that failed with an exception other than
  // greenlet_exit, once, called on the task's own greenlet right after the task ended (before
  // its links run), so it may block. The default prints "tendril: task '<name>' failed:
  // <what>" on stderr. It also receives the exception of a plain greenlet (not a task) whose
  // parent is the hub, named "a greenlet whose parent is the hub"; that call runs on the hub,
  // where a blocking call throws blocking_switch_out.
  using error_handler = std::function<void(const std::string& task_name, std::exception_ptr error)>;
  // set_error_handler() replaces it; an empty handler restores the default.
  void set_error_handler(error_handler h);

  detail::hub_impl& impl() noexcept { return *impl_; }

  hub(const hub&) = delete;
  hub& operator=(const hub&) = delete;

 private:
  friend class detail::hub_impl;
  explicit hub(detail::hub_impl* impl) : impl_(impl) {}
  detail::hub_impl* impl_;
};

}  // namespace tendril

#endif
