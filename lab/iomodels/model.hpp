// The five I/O models lab (L6): the seed's upper-casing echo service written once per I/O
// model, each in a file of its own under lab/iomodels/, small enough to read as a teaching
// example. `tendril iomodels` runs each as a server process and measures it with the load
// generator (lab/load/); docs/iomodels.md explains them.
#ifndef TENDRIL_LAB_IOMODELS_MODEL_HPP
#define TENDRIL_LAB_IOMODELS_MODEL_HPP

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace tendril::lab {

// What a model's server is given. The service: every byte read from a connection is sent
// back upper-cased (ASCII), in order, until the client closes; message boundaries are the
// client's business (an echo keeps them by keeping every byte in order).
struct serve_options {
  int listen_fd = -1;  // a bound, listening, blocking TCP socket; the server owns it
  int threads = 0;     // the thread-pool model's pool size (0: its default)
};

struct model {
  std::string_view name;     // short and stable: "threads", "epoll-et", "tendril-io_uring"...
  std::string_view summary;  // one line for tables and `tendril iomodels --list`
  std::string_view source;   // the file to read: "lab/iomodels/epoll.cpp"
  // The most connections it can serve at once on its own terms, 0 for no limit of its own
  // (select: FD_SETSIZE less the descriptors it needs; the pool: its threads). A runner shows
  // a level above it as "cannot serve", not as a failure.
  std::size_t (*max_connections)(const serve_options& o);
  // unsupported() is empty when the model can run on this machine, else the reason (an
  // io_uring the kernel refuses...).
  std::string (*unsupported)();
  // serve() runs the service on o.listen_fd for ever, in the calling process: it returns
  // only by throwing std::system_error when it cannot start. Runners run it in a child
  // process and end it with a signal.
  void (*serve)(const serve_options& o);
};

// models() lists every model, in the order of the seed's chapters: blocking, non-blocking,
// multiplexing, signal-driven, asynchronous, then tendril's greenlets on each backend.
std::span<const model> models();
// find_model() is the model called name, or nullptr.
const model* find_model(std::string_view name);

}  // namespace tendril::lab

#endif
