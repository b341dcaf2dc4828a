// Model 1b, blocking I/O with a fixed pool of threads.
//
// What it is: the same blocking calls as the "threads" model, but the threads are made once:
// N threads, each accepting a connection and serving it to the end before it accepts the
// next. The cost of a thread is paid N times, not once per connection.
//
// How it works: the N threads all block in accept() on the same listener; the kernel hands
// each new connection to one of them. That thread then blocks in recv() and send() for that
// connection until the client closes.
//
// Its limits: N connections are served at once, no more. Connection N+1 is accepted by the
// kernel (the handshake completes: it sits in the listen backlog) but nobody reads it until
// one of the N clients leaves; with long-lived connections it waits for ever. A pool only
// fits short requests, or a pool as large as the connections, which is the threads model
// again.
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "model.hpp"
#include "models_impl.hpp"
#include "service.hpp"

namespace tendril::lab {
namespace {

constexpr int default_threads = 8;

int pool_size(const serve_options& o) { return o.threads > 0 ? o.threads : default_threads; }

void serve(const serve_options& o) {
  std::atomic<int> error{0};
  auto worker = [fd = o.listen_fd, &error] {
    while (true) {
      int conn = accept_connection(fd, false);
      if (conn >= 0) {
        echo_blocking(conn);
      } else if (!pause_after_accept_error(errno)) {
        error = errno;  // the listener is broken: this worker ends
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  try {
    for (int i = 0; i < pool_size(o); ++i) pool.emplace_back(worker);
  } catch (const std::system_error& e) {
    // Out of threads (RLIMIT_NPROC, memory): the workers made so far are ended (a shut-down
    // listener fails their accept) and joined, then the pool reports what stopped it.
    const std::string why = "cannot start thread " + std::to_string(pool.size() + 1) + " of " +
                            std::to_string(pool_size(o)) + ": " + e.what();
    ::shutdown(o.listen_fd, SHUT_RDWR);
    for (auto& t : pool) t.join();
    throw std::system_error(e.code(), why);
  }
  for (auto& t : pool) t.join();
  throw std::system_error(error, std::generic_category(), "accept");
}

}  // namespace

model thread_pool_model() {
  return {
      "thread-pool",
      "blocking I/O, a fixed pool of threads each serving one connection",
      "lab/iomodels/thread_pool.cpp",
      [](const serve_options& o) -> std::size_t { return static_cast<std::size_t>(pool_size(o)); },
      []() -> std::string { return {}; },
      &serve};
}

}  // namespace tendril::lab
