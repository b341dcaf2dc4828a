#include "model.hpp"
#include "models_impl.hpp"

namespace tendril::lab {

std::span<const model> models() {
  static const model all[] = {
      threads_model(),  thread_pool_model(),      nonblocking_model(),   select_model(),
      poll_model(),     epoll_lt_model(),         epoll_et_model(),      signal_model(),
      io_uring_model(), tendril_io_uring_model(), tendril_epoll_model(), tendril_poll_model(),
  };
  return all;
}

const model* find_model(std::string_view name) {
  for (const model& m : models()) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

}  // namespace tendril::lab
