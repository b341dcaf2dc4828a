// Model 2, non-blocking I/O: one thread asks every descriptor in turn, again and again.
//
// What it is: with O_NONBLOCK a call that would have to wait fails at once with EAGAIN
// instead. One thread can then take care of many connections: it never gets stuck on one.
//
// How it works: a loop that never sleeps. Each turn tries accept() on the listener, then
// recv() on every connection (or send() of what is left, for a connection whose send
// buffer was full); most calls answer EAGAIN, and the loop goes round again at once.
//
// Its limits: it spins. With nothing to do it still burns a whole CPU (100% in top), and
// each turn costs a system call per connection whether it has data or not, so the more
// connections, the longer a turn and the later each one is answered. The program has no way
// to ask "which descriptors are ready?": that question is what I/O multiplexing (select,
// poll, epoll) adds.
#include "nonblocking.hpp"

#include <unistd.h>

#include <cerrno>
#include <vector>

#include "model.hpp"
#include "models_impl.hpp"
#include "service.hpp"

namespace tendril::lab {

void serve_nonblocking(int listen_fd, const std::atomic<bool>& stop) {
  set_nonblocking(listen_fd);
  std::vector<connection> conns;
  while (!stop.load(std::memory_order_relaxed)) {
    int fd = accept_connection(listen_fd, true);
    if (fd >= 0) {
      conns.emplace_back(fd);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && !pause_after_accept_error(errno)) {
      throw_errno("accept");
    }
    for (std::size_t i = 0; i < conns.size();) {
      connection& c = conns[i];
      auto s = c.pending() ? c.flush() : c.read_some();
      if (s == connection::status::closed) {
        ::close(c.fd());
        conns[i] = std::move(conns.back());
        conns.pop_back();
      } else {
        ++i;
      }
    }
  }
  for (auto& c : conns) ::close(c.fd());
}

namespace {

void serve(const serve_options& o) {
  const std::atomic<bool> never{false};
  serve_nonblocking(o.listen_fd, never);
}

}  // namespace

model nonblocking_model() {
  return {"nonblocking",
          "non-blocking I/O, one thread polling every descriptor in a busy loop",
          "lab/iomodels/nonblocking.cpp",
          [](const serve_options&) -> std::size_t { return 0; },
          []() -> std::string { return {}; },
          &serve};
}

}  // namespace tendril::lab
