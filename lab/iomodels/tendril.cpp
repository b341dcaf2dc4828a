// Models 6a-6c: tendril's greenlets, one per connection, on each of tendril's backends
// ("tendril-io_uring", "tendril-epoll", "tendril-poll").
//
// What it is: the blocking model's program (receive, upper-case, send, again; one flow of
// control per connection) run on greenlets instead of threads. A greenlet is a stack and a
// few registers; switching between two is a function call's worth of work in user space.
//
// How it works: net::stream_server accepts on a greenlet of its own and spawns a greenlet
// per connection running the handler below. When the handler's recv() or send_all() would
// block, the call parks the greenlet and switches to the hub, which waits on the backend
// (epoll, io_uring or poll: one of the models above) for all the parked greenlets at once
// and resumes each whose descriptor is ready, or whose operation completed. The code reads
// like model 1; the thread underneath runs like model 3 or 5.
//
// Its limits: one thread, one core (run a hub per thread to use more). The switches are
// cooperative: a handler that computes for long, or calls a blocking function tendril does
// not know (without monkey::patch_all()), holds up every other connection. Each greenlet
// keeps its stack, smaller than a thread's but not free.
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>

#include "model.hpp"
#include "models_impl.hpp"
#include "service.hpp"
#include "tendril/hub/hub.hpp"
#include "tendril/net/server.hpp"

namespace tendril::lab {
namespace {

void echo(net::tcp_stream& conn, const net::address&) {
  char buf[16 * 1024];
  std::error_code ec;
  while (true) {
    std::size_t n = conn.recv(buf, sizeof buf, ec);
    if (ec || n == 0) return;
    upper_case(buf, n);
    conn.send_all(buf, n, ec);
    if (ec) return;
  }
}

void serve_on(const char* backend, const serve_options& o) {
  // The backend is chosen when the thread's hub starts, from TENDRIL_BACKEND.
  ::setenv("TENDRIL_BACKEND", backend, 1);
  if (std::strcmp(hub::current().backend_name(), backend) != 0) {
    throw std::system_error(
        EBUSY, std::generic_category(),
        std::string("this thread's hub already runs on ") + hub::current().backend_name());
  }
  net::stream_server server(net::tcp_listener(o.listen_fd), &echo, {});
  server.serve_forever();
}

std::size_t no_limit(const serve_options&) { return 0; }
std::string supported() { return {}; }

}  // namespace

model tendril_io_uring_model() {
  return {"tendril-io_uring",
          "tendril: a greenlet per connection, the io_uring backend",
          "lab/iomodels/tendril.cpp",
          &no_limit,
          []() -> std::string {
#if TENDRIL_LAB_HAS_IO_URING
            return io_uring_refused();
#else
            return "this build of tendril has no io_uring backend (TENDRIL_WITH_IO_URING off)";
#endif
          },
          [](const serve_options& o) { serve_on("io_uring", o); }};
}

model tendril_epoll_model() {
  return {"tendril-epoll",
          "tendril: a greenlet per connection, the epoll backend",
          "lab/iomodels/tendril.cpp",
          &no_limit,
          &supported,
          [](const serve_options& o) { serve_on("epoll", o); }};
}

model tendril_poll_model() {
  return {"tendril-poll",
          "tendril: a greenlet per connection, the poll backend",
          "lab/iomodels/tendril.cpp",
          &no_limit,
          &supported,
          [](const serve_options& o) { serve_on("poll", o); }};
}

}  // namespace tendril::lab
