// Model 1, blocking I/O: one thread per connection.
//
// What it is: every call blocks the calling thread until it is done. accept() waits for a
// connection, recv() for data, send() for room in the send buffer. The program reads like
// the protocol: receive, upper-case, send, again.
//
// How it works: the main thread blocks in accept(); each connection gets a new thread of
// its own (detached) that blocks in recv() and send() for that connection only, so a slow
// client holds up nobody else.
//
// Its limits: a thread per connection costs a kernel task, a stack (8 MiB reserved, what is
// touched resident) and a context switch per message, through the kernel's scheduler. Ten
// thousand idle connections are ten thousand threads (ulimit -u, kernel.threads-max,
// vm.max_map_count end it), and under load the switches, not the work, take the CPU.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <system_error>
#include <thread>

#include "model.hpp"
#include "models_impl.hpp"
#include "service.hpp"

namespace tendril::lab {
namespace {

void serve(const serve_options& o) {
  while (true) {
    int fd = accept_connection(o.listen_fd, false);
    if (fd < 0) {
      if (pause_after_accept_error(errno)) continue;
      throw_errno("accept");
    }
    try {
      std::thread(echo_blocking, fd).detach();
    } catch (const std::system_error&) {
      // No more threads (EAGAIN): this model's hard limit. Refuse the connection.
      ::close(fd);
    }
  }
}

}  // namespace

model threads_model() {
  return {"threads",
          "blocking I/O, one thread per connection",
          "lab/iomodels/threads.cpp",
          [](const serve_options&) -> std::size_t { return 0; },
          []() -> std::string { return {}; },
          &serve};
}

}  // namespace tendril::lab
