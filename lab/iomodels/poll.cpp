// Model 3b, I/O multiplexing with poll().
//
// What it is: select() without its fixed bit sets. poll() takes an array of {descriptor,
// events wanted} and fills in the events that happened, so any descriptor number works and
// the array is as long as the connections.
//
// How it works: one pollfd per descriptor, the listener first. Each turn sets what every
// connection waits for (POLLIN, or POLLOUT while it has bytes left to send), calls poll(),
// which blocks until something is ready, and serves the entries whose revents are set.
// Level-triggered, as select.
//
// Its limits: the whole array goes into the kernel and back on every call, and both the
// kernel and the loop walk all of it to find the few ready entries: with ten thousand mostly
// idle connections, each turn costs ten thousand checks to serve a handful. epoll keeps the
// set in the kernel instead.
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <utility>
#include <vector>

#include "model.hpp"
#include "models_impl.hpp"
#include "service.hpp"

namespace tendril::lab {
namespace {

void serve(const serve_options& o) {
  set_nonblocking(o.listen_fd);
  std::vector<pollfd> fds{{o.listen_fd, POLLIN, 0}};
  std::vector<connection> conns;  // conns[i] is fds[i + 1]
  while (true) {
    for (std::size_t i = 0; i < conns.size(); ++i)
      fds[i + 1].events = conns[i].pending() ? POLLOUT : POLLIN;
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    // From the end, so that removing an entry (the last one moves into its place) skips none.
    for (std::size_t i = conns.size(); i-- > 0;) {
      if (fds[i + 1].revents == 0) continue;  // POLLERR and POLLHUP count: the call tells
      connection& c = conns[i];
      if ((c.pending() ? c.flush() : c.read_some()) == connection::status::closed) {
        ::close(c.fd());
        std::swap(c, conns.back());
        std::swap(fds[i + 1], fds.back());
        conns.pop_back();
        fds.pop_back();
      }
    }
    if (fds[0].revents & POLLIN) {
      int fd;
      while ((fd = accept_connection(o.listen_fd, true)) >= 0) {
        conns.emplace_back(fd);
        fds.push_back({fd, POLLIN, 0});
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK && !pause_after_accept_error(errno))
        throw_errno("accept");
    }
  }
}

}  // namespace

model poll_model() {
  return {"poll",
          "I/O multiplexing with poll(): one thread, the whole array passed each call",
          "lab/iomodels/poll.cpp",
          [](const serve_options&) -> std::size_t { return 0; },
          []() -> std::string { return {}; },
          &serve};
}

}  // namespace tendril::lab
