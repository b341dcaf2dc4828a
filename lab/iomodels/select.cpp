// Model 3a, I/O multiplexing with select().
//
// What it is: one call that waits on many descriptors at once and says which are ready.
// The thread sleeps in select() instead of spinning, and each recv() or send() it then makes
// is one that will not block.
//
// How it works: each turn builds two bit sets, the descriptors to watch for reading (the
// listener, and connections with nothing left to send) and for writing (connections whose
// send buffer was full), and passes them to select(), which blocks until at least one is
// ready and overwrites the sets with the ready ones. The loop then serves those and starts
// again. It is level-triggered: a descriptor still ready is reported again next turn.
//
// Its limits: an fd_set is a fixed array of FD_SETSIZE (1024) bits, so no descriptor numbered
// 1024 or more can be watched at all; FD_SET on one writes past the array. This server
// refuses (closes) such connections. Each turn also rebuilds both sets and the kernel scans
// every descriptor up to the highest, ready or not: the cost of a turn grows with the number
// of connections, not with the number of ready ones.
#include <sys/select.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <utility>
#include <vector>

#include "model.hpp"
#include "models_impl.hpp"
#include "service.hpp"

namespace tendril::lab {
namespace {

// Descriptors the server needs below FD_SETSIZE besides its connections: stdin, stdout,
// stderr and the listener.
constexpr std::size_t reserved_fds = 4;

void serve(const serve_options& o) {
  const int lfd = o.listen_fd;
  if (lfd >= FD_SETSIZE) throw std::system_error(EMFILE, std::generic_category(), "select");
  set_nonblocking(lfd);
  std::vector<connection> conns;
  while (true) {
    fd_set readable, writable;
    FD_ZERO(&readable);
    FD_ZERO(&writable);
    FD_SET(lfd, &readable);
    int max_fd = lfd;
    for (const connection& c : conns) {
      FD_SET(c.fd(), c.pending() ? &writable : &readable);
      max_fd = std::max(max_fd, c.fd());
    }
    if (::select(max_fd + 1, &readable, &writable, nullptr, nullptr) < 0) {
      if (errno == EINTR) continue;
      throw_errno("select");
    }
    for (std::size_t i = 0; i < conns.size();) {
      connection& c = conns[i];
      auto s = connection::status::done;
      if (c.pending() ? FD_ISSET(c.fd(), &writable) : FD_ISSET(c.fd(), &readable))
        s = c.pending() ? c.flush() : c.read_some();
      if (s == connection::status::closed) {
        ::close(c.fd());
        std::swap(c, conns.back());
        conns.pop_back();
      } else {
        ++i;
      }
    }
    if (FD_ISSET(lfd, &readable)) {
      int fd;
      while ((fd = accept_connection(lfd, true)) >= 0) {
        if (fd >= FD_SETSIZE) {
          ::close(fd);  // select cannot watch it: refused
        } else {
          conns.emplace_back(fd);
        }
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK && !pause_after_accept_error(errno))
        throw_errno("accept");
    }
  }
}

}  // namespace

model select_model() {
  return {"select",
          "I/O multiplexing with select(): one thread, at most FD_SETSIZE descriptors",
          "lab/iomodels/select.cpp",
          [](const serve_options&) -> std::size_t { return FD_SETSIZE - reserved_fds; },
          []() -> std::string { return {}; },
          &serve};
}

}  // namespace tendril::lab
