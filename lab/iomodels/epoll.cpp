// Model 3c, I/O multiplexing with epoll: level-triggered ("epoll-lt") and edge-triggered
// ("epoll-et").
//
// What it is: the set of watched descriptors lives in the kernel (an epoll instance). It is
// changed one descriptor at a time (epoll_ctl), and epoll_wait() returns only the ready
// ones, so a turn costs what is ready, not what is watched.
//
// How it works: the listener and each connection are added once. epoll_wait() blocks until
// some are ready and returns them; the loop accepts on the listener and serves the ready
// connections.
//   Level-triggered (the default, like poll): a descriptor is reported on every call while
// it is ready. Reading once per report is enough; whatever is left is reported again. A
// connection whose send buffer is full switches its interest from EPOLLIN to EPOLLOUT
// (epoll_ctl MOD), and back once it is flushed.
//   Edge-triggered (EPOLLET): a descriptor is reported once when it becomes ready, not
// again until new data (or room) arrives. The server must read (and send) until EAGAIN on
// every report, or the bytes it leaves behind wait for ever. In exchange each connection is
// registered once for both directions and never modified.
//
// Its limits: Linux only (BSD's kqueue is the analogue). Still one thread: the work of
// every connection is done on it, so a slow handler delays all the others, and it uses one
// core. Edge-triggered reading until EAGAIN lets a fast client hold the loop as long as it
// keeps sending (the others starve meanwhile); level-triggered costs an epoll_ctl when
// output blocks, and a report per call for a descriptor left ready.
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <unordered_map>

#include "model.hpp"
#include "models_impl.hpp"
#include "service.hpp"

namespace tendril::lab {
namespace {

void watch(int ep, int op, int fd, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(ep, op, fd, &ev) < 0) throw_errno("epoll_ctl");
}

void serve(const serve_options& o, bool edge) {
  const int lfd = o.listen_fd;
  set_nonblocking(lfd);
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) throw_errno("epoll_create1");
  const std::uint32_t et = edge ? std::uint32_t{EPOLLET} : 0;
  watch(ep, EPOLL_CTL_ADD, lfd, EPOLLIN | et);
  std::unordered_map<int, connection> conns;
  epoll_event events[256];
  while (true) {
    int n = ::epoll_wait(ep, events, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == lfd) {
        // Accept them all: needed when edge-triggered, cheaper when level-triggered.
        int c;
        while ((c = accept_connection(lfd, true)) >= 0) {
          conns.emplace(c, connection(c));
          watch(ep, EPOLL_CTL_ADD, c, edge ? EPOLLIN | EPOLLOUT | et : EPOLLIN);
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && !pause_after_accept_error(errno))
          throw_errno("accept");
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      connection& c = it->second;
      connection::status s;
      if (edge) {
        s = c.drain();
      } else {
        const bool was_pending = c.pending();
        s = was_pending ? c.flush() : c.read_some();
        if (s != connection::status::closed && c.pending() != was_pending)
          watch(ep, EPOLL_CTL_MOD, fd,
                c.pending() ? std::uint32_t{EPOLLOUT} : std::uint32_t{EPOLLIN});
      }
      if (s == connection::status::closed) {
        ::close(fd);  // which also takes it out of the epoll set
        conns.erase(it);
      }
    }
  }
}

}  // namespace

model epoll_lt_model() {
  return {"epoll-lt",
          "I/O multiplexing with epoll, level-triggered: one thread",
          "lab/iomodels/epoll.cpp",
          [](const serve_options&) -> std::size_t { return 0; },
          []() -> std::string { return {}; },
          [](const serve_options& o) { serve(o, false); }};
}

model epoll_et_model() {
  return {"epoll-et",
          "I/O multiplexing with epoll, edge-triggered (read until EAGAIN): one thread",
          "lab/iomodels/epoll.cpp",
          [](const serve_options&) -> std::size_t { return 0; },
          []() -> std::string { return {}; },
          [](const serve_options& o) { serve(o, true); }};
}

}  // namespace tendril::lab
