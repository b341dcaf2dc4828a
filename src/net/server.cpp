#include "tendril/net/server.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <system_error>

#include "tendril/task/sleep.hpp"

namespace tendril::net {

namespace {

// listening() tells whether fd is a socket that listens (SO_ACCEPTCONN).
bool listening(int fd) noexcept {
  int on = 0;
  socklen_t size = sizeof on;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &size) == 0 && on != 0;
}

// listener_failed() tells whether an accept error is the listener's own, so that every
// accept after it would fail the same way: its descriptor is no socket any more, or the
// socket stopped listening (shut down). Every other error (a connection that went away
// before it was accepted: Linux passes the new connection's network errors on through
// accept(2); a firewall's EPERM; the listener's own time limit) concerns one call.
bool listener_failed(int e, int fd) noexcept {
  if (e == EBADF || e == ENOTSOCK || e == EFAULT) return true;
  return (e == EINVAL || e == EOPNOTSUPP) && !listening(fd);
}

}  // namespace

stream_server::stream_server(std::string_view host, std::uint16_t port, handler h)
    : stream_server(host, port, std::move(h), options{}) {}

stream_server::stream_server(std::string_view host, std::uint16_t port, handler h, options o)
    : stream_server(listen(host, port, o.backlog), std::move(h), o) {}

stream_server::stream_server(const address& at, handler h)
    : stream_server(at, std::move(h), options{}) {}

stream_server::stream_server(const address& at, handler h, options o)
    : stream_server(listen(at, o.backlog), std::move(h), o) {}

stream_server::stream_server(tcp_listener listener, handler h)
    : stream_server(std::move(listener), std::move(h), options{}) {}

stream_server::stream_server(tcp_listener listener, handler h, options o)
    : listener_(std::move(listener)), handler_(std::move(h)), options_(o) {
  if (!handler_) throw std::invalid_argument("tendril::net::stream_server: an empty handler");
  if (!listener_.is_open()) {
    throw std::invalid_argument("tendril::net::stream_server: the listener is closed");
  }
  if (!listening(listener_.native_handle())) {
    throw std::invalid_argument("tendril::net::stream_server: descriptor " +
                                std::to_string(listener_.native_handle()) +
                                " is not a listening stream socket (call listen() first)");
  }
  where_ = listener_.local_address().to_string();
  if (options_.max_connections > 0) {
    slots_ = std::make_unique<semaphore>(static_cast<std::ptrdiff_t>(options_.max_connections));
  }
}

stream_server::~stream_server() {
  if (!started_) return;
  try {
    if (!stopping_) stop();
    // A stop still under way elsewhere (a handler's), or a handler that outlived the stop it
    // made: nothing may run on this server once it is gone.
    acceptor_.kill();
    connections_.kill();
  } catch (...) {
    // A destructor cannot let a kill or a timeout through; the connections were told to end.
  }
}

void stream_server::start() {
  if (started_) return;
  started_ = true;
  acceptor_ = spawn([this] { accept_loop(); });
}

void stream_server::serve_forever() {
  start();
  stopped_.wait();
  // Also for the handler that called stop(), which may still be finishing its reply.
  connections_.join();
  if (accept_error_ && !stopping_) {
    throw std::system_error(accept_error_, "tendril::net::stream_server on " + where_ +
                                               ": accept failed, no more connections accepted");
  }
}

void stream_server::accept_loop() {
  using namespace std::chrono_literals;
  auto backoff = 1ms;
  bool reported = false;
  int failures = 0;  // accepts that failed in a row
  while (!stopping_) {
    if (slots_) slots_->acquire();
    std::error_code ec;
    address peer;
    tcp_stream conn = listener_.accept(&peer, ec);
    if (ec) {
      if (slots_) slots_->release();
      if (stopping_) break;
      const int e = ec.value();
      if (!listener_failed(e, listener_.native_handle())) {
        ++failures;
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM || failures > 3) {
          // Out of descriptors (the connection waits in the backlog), or an error that keeps
          // coming: wait, longer each time (1 ms to 1 s), instead of spinning on it.
          if (!reported) {
            std::fprintf(stderr, "tendril: stream_server on %s: accept: %s; retrying\n",
                         where_.c_str(), ec.message().c_str());
            reported = true;
          }
          tendril::sleep(backoff);
          backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
        } else {
          // A connection that went away before it was accepted, and the like: the next one,
          // after the others had a turn (on a readiness backend a failing accept never
          // waits).
          tendril::sleep(std::chrono::seconds(0));
        }
        continue;
      }
      // The listener itself fails (closed underneath, no longer listening): accepting again
      // would fail the same way. Connections being served go on; serve_forever() returns
      // once they ended and throws this error.
      accept_error_ = ec;
      std::fprintf(stderr, "tendril: stream_server on %s: accept: %s; no longer accepting\n",
                   where_.c_str(), ec.message().c_str());
      stopped_.set();
      return;
    }
    backoff = 1ms;
    reported = false;
    failures = 0;
    semaphore* slots = slots_.get();
    connections_.spawn([this, slots, conn = std::move(conn), peer]() mutable {
      struct give_back {
        semaphore* s;
        ~give_back() {
          if (s) s->release();
        }
      } slot{slots};
      handler_(conn, peer);
    });
  }
}

void stream_server::stop_ns(std::int64_t grace_ns) {
  if (!started_) {
    stopping_ = true;
    listener_.close();  // connections are refused, not left waiting in the backlog
    stopped_.set();
    return;
  }
  if (stopping_) {
    stopped_.wait();  // a stop under way elsewhere: returns when it is done
    return;
  }
  stopping_ = true;
  // However this ends (a kill or a timeout scope of the caller may cut the grace short), the
  // handlers left are told to end and serve_forever() returns. Called from a handler, the
  // handler itself is spared: it ends when it returns.
  struct finish {
    stream_server& s;
    ~finish() {
      try {
        s.connections_.kill(false);
      } catch (...) {
      }
      s.stopped_.set();
    }
  } finish{*this};
  listener_.close();  // wakes the accept loop with EBADF if it waits in accept...
  // ...but it may wait for a free slot (max_connections, held by the handlers that are
  // only killed below) or back off after EMFILE: end it wherever it waits. Test:
  // stream_server.stop_returns_after_the_grace_when_stuck_handlers_hold_every_slot.
  acceptor_.kill();
  if (grace_ns > 0) connections_.join_for(std::chrono::nanoseconds(grace_ns));
  connections_.kill();
}

}  // namespace tendril::net
