// tendril::net sockets: TCP, UDP and Unix sockets whose blocking calls block only the
// calling greenlet (gevent.socket).
//
// Every blocking call can switch, throws std::system_error with the errno value on failure
// (std::errc::timed_out when a time limit ran out) and has a twin that takes a
// std::error_code& and reports I/O failures there instead (a kill or a timeout scope still
// propagates through it: those are not I/O failures). A socket belongs to the thread that
// made it. One greenlet may read and another write at the same time; a second reader (or
// writer) meanwhile is a bug and gets std::logic_error naming the greenlet in the way.
// Closing a socket that another greenlet waits on wakes that greenlet with EBADF. Nothing
// here raises SIGPIPE.
#ifndef TENDRIL_NET_SOCKET_HPP
#define TENDRIL_NET_SOCKET_HPP

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "tendril/hub/deadline.hpp"
#include "tendril/net/address.hpp"
#include "tendril/net/error.hpp"

namespace tendril::net {

enum class shutdown_type { receive = SHUT_RD, send = SHUT_WR, both = SHUT_RDWR };

// socket: owns a descriptor (closed on destruction) and is the base of every socket type.
class socket {
 public:
  socket() noexcept = default;
  socket(socket&& other) noexcept;
  socket& operator=(socket&& other) noexcept;
  socket(const socket&) = delete;
  socket& operator=(const socket&) = delete;
  ~socket();

  bool is_open() const noexcept { return fd_ >= 0; }
  int native_handle() const noexcept { return fd_; }

  // close() wakes every greenlet waiting on the socket (they get EBADF), then closes the
  // descriptor. Closing a closed socket does nothing. Switches: no.
  void close() noexcept;

  // set_timeout() limits each blocking call on this socket to d (a negative d acts as zero);
  // clear_timeout() removes the limit (the default). A call that runs out of time fails with
  // std::errc::timed_out. Throws std::invalid_argument for a NaN d.
  template <class Rep, class Period>
  void set_timeout(std::chrono::duration<Rep, Period> d) {
    timeout_ns_ = detail::saturating_ns(d);
  }
  void clear_timeout() noexcept { timeout_ns_ = detail::forever_ns; }

  address local_address() const;
  address peer_address() const;

  // shutdown() ends one or both directions (a half-close: the peer reads end-of-stream).
  void shutdown(shutdown_type how);
  void shutdown(shutdown_type how, std::error_code& ec) noexcept;

  // release() gives up the descriptor without closing it and returns it. Bytes that a
  // cancelled read had already received (on io_uring: a recv killed or timed out as data
  // came) are not in the descriptor any more: take them first with take_buffered().
  int release() noexcept;

  // For the layers above: the deadline of a blocking call that starts now.
  std::int64_t call_deadline() const noexcept {
    return detail::deadline_after(std::chrono::nanoseconds(timeout_ns_));
  }
  // For the layers above that read the descriptor themselves (TLS): the bytes a cancelled
  // read had received (io_uring), which the next recv() would have returned first.
  std::string take_buffered() noexcept { return std::exchange(carry_, std::string()); }

 protected:
  // Takes ownership of fd (made non-blocking) and registers it with this thread's I/O table.
  explicit socket(int fd);
  [[noreturn]] void fail(const char* what, int err) const;
  std::string describe() const;

  int fd_ = -1;
  std::uint32_t gen_ = 0;
  std::int64_t timeout_ns_ = detail::forever_ns;
  std::string carry_;     // bytes a cancelled read received: the next read returns them first
  bool drained_ = false;  // the last read was short: the queue was empty (stream sockets)

  friend struct socket_access;
};

// stream_socket: a connected byte stream (TCP or Unix).
class stream_socket : public socket {
 public:
  stream_socket() noexcept = default;

  // recv() reads what is there (at least one byte, waiting for it) up to len; 0 means the
  // peer closed its side (end of stream). Switches: yes.
  std::size_t recv(void* buf, std::size_t len);
  std::size_t recv(void* buf, std::size_t len, std::error_code& ec);
  std::string recv(std::size_t max);
  std::string recv(std::size_t max, std::error_code& ec);
  // recv_exact() reads exactly len bytes; an end of stream first is net::errc::end_of_stream.
  // The twins return what was read before a failure (the bytes are in buf, or the string),
  // so that nothing taken from the stream is lost; the throwing forms lose it with the stream.
  void recv_exact(void* buf, std::size_t len);
  std::size_t recv_exact(void* buf, std::size_t len, std::error_code& ec);
  std::string recv_exact(std::size_t len);
  std::string recv_exact(std::size_t len, std::error_code& ec);

  // send() writes what fits now (at least one byte, waiting for room) and returns how much.
  std::size_t send(const void* buf, std::size_t len);
  std::size_t send(const void* buf, std::size_t len, std::error_code& ec);
  std::size_t send(std::string_view data) { return send(data.data(), data.size()); }
  std::size_t send(std::string_view data, std::error_code& ec) {
    return send(data.data(), data.size(), ec);
  }
  // send_all() writes all of it, waiting as needed. The twins return how much was written
  // before a failure.
  void send_all(const void* buf, std::size_t len);
  std::size_t send_all(const void* buf, std::size_t len, std::error_code& ec);
  void send_all(std::string_view data) { send_all(data.data(), data.size()); }
  std::size_t send_all(std::string_view data, std::error_code& ec) {
    return send_all(data.data(), data.size(), ec);
  }

 protected:
  explicit stream_socket(int fd) : socket(fd) {}
};

class tcp_stream : public stream_socket {
 public:
  tcp_stream() noexcept = default;
  explicit tcp_stream(int fd) : stream_socket(fd) {}
  // set_nodelay() turns Nagle's algorithm off (true) or on.
  void set_nodelay(bool on);
  void set_nodelay(bool on, std::error_code& ec) noexcept;
};

class unix_stream : public stream_socket {
 public:
  unix_stream() noexcept = default;
  explicit unix_stream(int fd) : stream_socket(fd) {}
  // pair() is two connected Unix stream sockets (socketpair).
  static std::pair<unix_stream, unix_stream> pair();
  static std::pair<unix_stream, unix_stream> pair(std::error_code& ec);
};

// connect() opens a TCP connection to host:port, resolving host without blocking the hub
// and trying each address in turn, or to one address. Throws std::system_error naming where
// (the last error: ECONNREFUSED, ETIMEDOUT...). A limit bounds the whole attempt.
tcp_stream connect(std::string_view host, std::uint16_t port);
tcp_stream connect(std::string_view host, std::uint16_t port, std::error_code& ec);
template <class Rep, class Period>
tcp_stream connect(std::string_view host, std::uint16_t port,
                   std::chrono::duration<Rep, Period> limit);
template <class Rep, class Period>
tcp_stream connect(std::string_view host, std::uint16_t port,
                   std::chrono::duration<Rep, Period> limit, std::error_code& ec);
tcp_stream connect(const address& to);
tcp_stream connect(const address& to, std::error_code& ec);
template <class Rep, class Period>
tcp_stream connect(const address& to, std::chrono::duration<Rep, Period> limit);
template <class Rep, class Period>
tcp_stream connect(const address& to, std::chrono::duration<Rep, Period> limit,
                   std::error_code& ec);
// The same with a deadline on the hub's clock (detail::deadline_after); a null ec throws.
tcp_stream connect_deadline(std::string_view host, std::uint16_t port, std::int64_t deadline_ns,
                            std::error_code* ec);
tcp_stream connect_deadline(const address& to, std::int64_t deadline_ns, std::error_code* ec);
// connect_unix() connects to a Unix stream socket at path.
unix_stream connect_unix(std::string_view path);
unix_stream connect_unix(std::string_view path, std::error_code& ec);

// listener: a listening stream socket; accept() returns the next connection.
template <class Stream>
class basic_listener : public socket {
 public:
  basic_listener() noexcept = default;
  explicit basic_listener(int fd) : socket(fd) {}

  // accept() waits for a connection and returns it; peer receives its address if given.
  // Switches: yes.
  Stream accept(address* peer = nullptr);
  Stream accept(address* peer, std::error_code& ec);
  Stream accept(std::error_code& ec) { return accept(nullptr, ec); }
};
using tcp_listener = basic_listener<tcp_stream>;
using unix_listener = basic_listener<unix_stream>;

// listen() binds host:port (SO_REUSEADDR on; port 0 picks a free one, local_address()
// tells which) and listens. Throws std::system_error naming the address (EADDRINUSE...).
tcp_listener listen(std::string_view host, std::uint16_t port, int backlog = 128);
tcp_listener listen(std::string_view host, std::uint16_t port, int backlog, std::error_code& ec);
inline tcp_listener listen(std::string_view host, std::uint16_t port, std::error_code& ec) {
  return listen(host, port, 128, ec);
}
// The same on one address.
tcp_listener listen(const address& at, int backlog = 128);
tcp_listener listen(const address& at, int backlog, std::error_code& ec);
inline tcp_listener listen(const address& at, std::error_code& ec) { return listen(at, 128, ec); }
// listen_unix() binds a Unix stream socket at path (which must not exist) and listens.
unix_listener listen_unix(std::string_view path, int backlog = 128);
unix_listener listen_unix(std::string_view path, int backlog, std::error_code& ec);
inline unix_listener listen_unix(std::string_view path, std::error_code& ec) {
  return listen_unix(path, 128, ec);
}

// datagram_socket: UDP or Unix datagrams; each send is one datagram, each receive one.
class datagram_socket : public socket {
 public:
  datagram_socket() noexcept = default;

  std::size_t send_to(const void* buf, std::size_t len, const address& to);
  std::size_t send_to(const void* buf, std::size_t len, const address& to, std::error_code& ec);
  std::size_t send_to(std::string_view data, const address& to) {
    return send_to(data.data(), data.size(), to);
  }
  std::size_t send_to(std::string_view data, const address& to, std::error_code& ec) {
    return send_to(data.data(), data.size(), to, ec);
  }
  // recv_from() waits for a datagram, stores its sender in from, and returns how many of its
  // bytes it kept: a datagram longer than len is cut to len and the rest is lost, as with
  // recvfrom(2) (65,507 bytes hold any UDP datagram over IPv4). len 0: EINVAL, since the
  // datagram would be taken and none of it kept.
  std::size_t recv_from(void* buf, std::size_t len, address& from);
  std::size_t recv_from(void* buf, std::size_t len, address& from, std::error_code& ec);

  // connect() fixes the peer; then send() and recv() need no address.
  void connect(const address& to);
  void connect(const address& to, std::error_code& ec) noexcept;
  std::size_t send(const void* buf, std::size_t len);
  std::size_t send(const void* buf, std::size_t len, std::error_code& ec);
  std::size_t send(std::string_view data) { return send(data.data(), data.size()); }
  std::size_t send(std::string_view data, std::error_code& ec) {
    return send(data.data(), data.size(), ec);
  }
  std::size_t recv(void* buf, std::size_t len);
  std::size_t recv(void* buf, std::size_t len, std::error_code& ec);

 protected:
  explicit datagram_socket(int fd) : socket(fd) {}

 private:
  std::size_t send_msg(const void* buf, std::size_t len, const address* to, std::error_code& ec);
};

class udp_socket : public datagram_socket {
 public:
  udp_socket() noexcept = default;
  explicit udp_socket(int fd) : datagram_socket(fd) {}
  // bind() is a UDP socket bound to host:port (port 0: any free port).
  static udp_socket bind(std::string_view host, std::uint16_t port);
  static udp_socket bind(std::string_view host, std::uint16_t port, std::error_code& ec);
  // open() is an unbound UDP socket of a family (AF_INET, AF_INET6; another: EAFNOSUPPORT).
  static udp_socket open(int family = AF_INET);
  static udp_socket open(int family, std::error_code& ec);
  static udp_socket open(std::error_code& ec) { return open(AF_INET, ec); }
};

class unix_datagram : public datagram_socket {
 public:
  unix_datagram() noexcept = default;
  explicit unix_datagram(int fd) : datagram_socket(fd) {}
  static unix_datagram bind(std::string_view path);
  static unix_datagram bind(std::string_view path, std::error_code& ec);
  static unix_datagram open();
  static unix_datagram open(std::error_code& ec);
};

template <class Rep, class Period>
tcp_stream connect(std::string_view host, std::uint16_t port,
                   std::chrono::duration<Rep, Period> limit) {
  return connect_deadline(host, port, detail::deadline_after(limit), nullptr);
}
template <class Rep, class Period>
tcp_stream connect(std::string_view host, std::uint16_t port,
                   std::chrono::duration<Rep, Period> limit, std::error_code& ec) {
  return connect_deadline(host, port, detail::deadline_after(limit), &ec);
}
template <class Rep, class Period>
tcp_stream connect(const address& to, std::chrono::duration<Rep, Period> limit) {
  return connect_deadline(to, detail::deadline_after(limit), nullptr);
}
template <class Rep, class Period>
tcp_stream connect(const address& to, std::chrono::duration<Rep, Period> limit,
                   std::error_code& ec) {
  return connect_deadline(to, detail::deadline_after(limit), &ec);
}

}  // namespace tendril::net

#endif
