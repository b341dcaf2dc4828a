// tendril::net::stream_server: a TCP server that serves each connection on a task of its
// own (gevent.server.StreamServer).
#ifndef TENDRIL_NET_SERVER_HPP
#define TENDRIL_NET_SERVER_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "tendril/net/socket.hpp"
#include "tendril/sync/event.hpp"
#include "tendril/sync/semaphore.hpp"
#include "tendril/task/pool.hpp"
#include "tendril/task/task.hpp"

namespace tendril::net {

class stream_server {
 public:
  // A handler serves one connection; the connection is closed when it returns. An exception
  // it throws ends that connection only, and is reported to the hub's error handler.
  using handler = std::function<void(tcp_stream& conn, const address& peer)>;

  struct options {
    int backlog = 128;
    // The most connections served at once; 0: no limit. Beyond it, the accept loop waits
    // for a connection to end before it accepts another.
    std::size_t max_connections = 0;
  };

  // stream_server(host, port, h) binds host:port now (SO_REUSEADDR on; port 0: any free
  // port, local_address() tells which), and serves nothing until start(). Throws
  // std::system_error naming the address (EADDRINUSE...). Given a listener, throws
  // std::invalid_argument if it is closed or not listening.
  stream_server(std::string_view host, std::uint16_t port, handler h);
  stream_server(std::string_view host, std::uint16_t port, handler h, options o);
  stream_server(const address& at, handler h);
  stream_server(const address& at, handler h, options o);
  stream_server(tcp_listener listener, handler h);
  stream_server(tcp_listener listener, handler h, options o);
  stream_server(const stream_server&) = delete;
  stream_server& operator=(const stream_server&) = delete;
  // ~stream_server() stops it, killing connections still served, and returns once every
  // handler has ended. Switches: yes, if started.
  ~stream_server();

  // start() starts accepting on a task of its own and returns at once. Switches: no.
  void start();
  // serve_forever() starts (if needed) and waits until stop() is done and every handler has
  // ended (also one that called stop()). If accepting fails for good (the listener's
  // descriptor was closed underneath, or stopped listening), the server stops accepting, and
  // serve_forever() throws that std::system_error once the handlers under way have ended;
  // errors that concern one connection only (ECONNABORTED...) are skipped, and running out
  // of descriptors (EMFILE...), or an error that keeps coming, is retried after a pause that
  // grows from 1 ms to 1 s. Switches: yes.
  void serve_forever();
  // stop() stops accepting at once, waits up to grace for the connections being served to
  // end, kills those still running, and returns when all have ended; serve_forever() then
  // returns. A handler may call it: that handler is not waited for or killed, and ends when
  // it returns. A stop() while another is under way waits for that one. Switches: yes.
  template <class Rep, class Period>
  void stop(std::chrono::duration<Rep, Period> grace) {
    stop_ns(detail::saturating_ns(grace));
  }
  void stop() { stop_ns(0); }

  address local_address() const { return listener_.local_address(); }
  // connections() is the number being served now.
  std::size_t connections() { return connections_.size(); }
  bool serving() const noexcept { return started_ && !stopping_ && !accept_error_; }

 private:
  void accept_loop();
  void stop_ns(std::int64_t grace_ns);

  tcp_listener listener_;
  handler handler_;
  options options_;
  std::unique_ptr<semaphore> slots_;
  task<void> acceptor_;
  group connections_;
  event stopped_;
  bool started_ = false;
  bool stopping_ = false;
  std::error_code accept_error_;  // the listener failed for good (serve_forever() throws it)
  std::string where_;             // the listener's address, for messages
};

}  // namespace tendril::net

#endif
