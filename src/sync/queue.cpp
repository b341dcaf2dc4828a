#include "tendril/sync/queue.hpp"

#include <unistd.h>

#include <string>

#include "tendril/greenlet/exceptions.hpp"

namespace tendril::detail {

int this_thread_id() noexcept {
  static thread_local const int tid = static_cast<int>(::gettid());
  return tid;
}

void queue_of_another_thread(int owner) {
  throw wrong_thread("tendril::queue: used from thread " + std::to_string(this_thread_id()) +
                     ", but greenlets of thread " + std::to_string(owner) +
                     " have waited in it; a queue is for the greenlets of one thread");
}

}  // namespace tendril::detail
