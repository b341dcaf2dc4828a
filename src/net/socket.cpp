#include "tendril/net/socket.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "io/fd_table.hpp"
#include "tendril/net/resolve.hpp"
#include "tendril/task/timeout.hpp"

namespace tendril::net {

using detail::fd_record;
using detail::fd_table;
using detail::io_direction;
using detail::io_op;
using detail::op_state;

struct socket_access {
  static fd_record* record(const socket& s) {
    if (s.fd_ < 0) return nullptr;
    return fd_table::current().find(s.fd_, s.gen_);
  }
  static std::string& carry(socket& s) { return s.carry_; }
  static int fd(const socket& s) { return s.fd_; }
};

namespace {

std::error_code errno_code(int e) { return {e, std::generic_category()}; }

int new_socket(int family, int type, std::error_code& ec) {
  int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ec = errno_code(errno);
  return fd;
}

// The socket API allows one reader and one writer at a time; a second one is a bug.
class io_guard {
 public:
  io_guard(fd_record& r, io_direction d) : r_(r), gen_(r.gen) {
    slot_ = d == io_direction::read ? &r.reader : &r.writer;
    detail::greenlet_record* me = detail::thread_state::get().current();
    if (*slot_ != nullptr && *slot_ != me) {
      throw std::logic_error(std::string("tendril::net: greenlet '") + detail::record_name(*slot_) +
                             "' is already " +
                             (d == io_direction::read ? "reading from" : "writing to") +
                             " this socket (fd " + std::to_string(r.fd) + "); one at a time");
    }
    owned_ = *slot_ == nullptr;
    *slot_ = me;
  }
  ~io_guard() {
    if (owned_ && r_.gen == gen_) *slot_ = nullptr;
  }
  io_guard(const io_guard&) = delete;
  io_guard& operator=(const io_guard&) = delete;

 private:
  fd_record& r_;
  std::uint32_t gen_;
  detail::greenlet_record** slot_;
  bool owned_;
};

bool would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

// A read cancelled by a kill may still have received bytes: keep them for the next read.
void keep_received(op_state& st, void* ctx) {
  // Not for a socket closed meanwhile: its next call must see EBADF, not old bytes.
  if (st.op.result > 0 && !st.fd_closed) {
    socket_access::carry(*static_cast<socket*>(ctx))
        .append(static_cast<const char*>(st.op.buf), static_cast<std::size_t>(st.op.result));
  }
}

// An accept cancelled by a kill may still have accepted: close what it got.
void close_accepted(op_state& st, void*) {
  if (st.op.result >= 0) ::close(static_cast<int>(st.op.result));
}

// The core of every blocking call: try the system call, and while it would block, wait for
// readiness (epoll, poll) or let io_uring do it (native). Returns >= 0 or -errno.
// try_first: make the system call before going native (it must not block: MSG_DONTWAIT);
// accept has no such flag, so on io_uring it goes straight to the native operation.
// wait_first: the caller knows the call would block now (a short read emptied the socket):
// wait (or go native) before the first system call. The backend reports data that arrives
// meanwhile, so nothing is missed; it saves the system call that would say EAGAIN.
template <class Syscall, class Prepare>
std::int64_t blocking_call(const socket& s, io_direction d, Syscall call, Prepare prepare,
                           void (*abandoned)(op_state&, void*) = nullptr, socket* owner = nullptr,
                           bool try_first = true, bool wait_first = false) {
  fd_record* r = socket_access::record(s);
  if (r == nullptr) return -EBADF;
  io_guard guard(*r, d);
  const std::int64_t deadline = s.call_deadline();
  fd_table& t = fd_table::current();
  const bool native = t.native();
  // Not after an end of stream or an error was reported: an edge-triggered backend would not
  // report it again, and the call answers at once.
  bool skip = wait_first && !r->hup_seen;
  while (true) {
    if (skip) {
      skip = false;
    } else if (try_first || !native) {
      const std::int64_t n = call();
      if (n >= 0) return n;
      const int e = errno;
      if (e == EINTR) continue;
      if (!would_block(e)) return -e;
    }
    if (native) {
      op_state st;
      prepare(st.op);
      st.op.fd = r->fd;
      const std::int64_t res = t.run(r, st, deadline, abandoned, owner);
      if (res == -EAGAIN || res == -EINTR) continue;
      return res;
    }
    const int rc = t.wait(*r, d, deadline);
    if (rc < 0) return rc;
  }
}

void report(std::error_code* ec, std::int64_t rc) {
  if (ec) *ec = errno_code(static_cast<int>(-rc));
}

}  // namespace

// --- socket ---------------------------------------------------------------------------------

socket::socket(int fd) : fd_(fd) {
  try {
    fd_table& t = fd_table::current();
    // Readiness backends need O_NONBLOCK (the system calls must never block the thread).
    // io_uring needs it off: on an O_NONBLOCK file the kernel completes a send or an accept
    // with EAGAIN instead of waiting for it. Calls tried directly use MSG_DONTWAIT instead.
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) {
      int want = t.native() ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK);
      if (want != flags) fcntl(fd, F_SETFL, want);
    }
    gen_ = t.open(fd).gen;
  } catch (...) {
    ::close(fd);
    fd_ = -1;
    throw;
  }
}

socket::socket(socket&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      gen_(other.gen_),
      timeout_ns_(other.timeout_ns_),
      carry_(std::move(other.carry_)) {}

socket& socket::operator=(socket&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    gen_ = other.gen_;
    timeout_ns_ = other.timeout_ns_;
    carry_ = std::move(other.carry_);
  }
  return *this;
}

socket::~socket() { close(); }

void socket::close() noexcept {
  if (fd_ < 0) return;
  if (fd_table* t = fd_table::peek()) {
    if (fd_record* r = t->find(fd_, gen_)) t->close(*r);
  }
  ::close(fd_);
  fd_ = -1;
  carry_.clear();
}

int socket::release() noexcept {
  if (fd_ < 0) return -1;
  if (fd_table* t = fd_table::peek()) {
    if (fd_record* r = t->find(fd_, gen_)) t->close(*r);
  }
  return std::exchange(fd_, -1);
}

std::string socket::describe() const {
  if (fd_ < 0) return "a closed socket";
  std::string d = "fd " + std::to_string(fd_);
  address peer;
  *peer.size_ptr() = address::capacity();
  if (fd_ >= 0 && ::getpeername(fd_, peer.data(), peer.size_ptr()) == 0) {
    d += ", peer " + peer.to_string();
  } else if (fd_ >= 0) {
    address local;
    *local.size_ptr() = address::capacity();
    if (::getsockname(fd_, local.data(), local.size_ptr()) == 0 && !local.empty()) {
      d += ", local " + local.to_string();
    }
  }
  return d;
}

void socket::fail(const char* what, int err) const {
  throw std::system_error(errno_code(err),
                          std::string("tendril::net: ") + what + " (" + describe() + ")");
}

address socket::local_address() const {
  address a;
  *a.size_ptr() = address::capacity();
  if (fd_ < 0 || ::getsockname(fd_, a.data(), a.size_ptr()) != 0)
    fail("getsockname", fd_ < 0 ? EBADF : errno);
  return a;
}

address socket::peer_address() const {
  address a;
  *a.size_ptr() = address::capacity();
  if (fd_ < 0 || ::getpeername(fd_, a.data(), a.size_ptr()) != 0)
    fail("getpeername", fd_ < 0 ? EBADF : errno);
  return a;
}

void socket::shutdown(shutdown_type how, std::error_code& ec) noexcept {
  ec.clear();
  if (fd_ < 0) {
    ec = errno_code(EBADF);
  } else if (::shutdown(fd_, static_cast<int>(how)) != 0) {
    ec = errno_code(errno);
  }
}

void socket::shutdown(shutdown_type how) {
  std::error_code ec;
  shutdown(how, ec);
  if (ec) fail("shutdown", ec.value());
}

// --- stream_socket --------------------------------------------------------------------------

std::size_t stream_socket::recv(void* buf, std::size_t len, std::error_code& ec) {
  ec.clear();
  if (len == 0) {
    // An empty buffer could not tell data from the end of the stream.
    ec = errno_code(fd_ < 0 ? EBADF : EINVAL);
    return 0;
  }
  if (!carry_.empty()) {
    const std::size_t n = std::min(len, carry_.size());
    std::memcpy(buf, carry_.data(), n);
    carry_.erase(0, n);
    return n;
  }
  const int fd = fd_;
  const std::int64_t rc = blocking_call(
      *this, io_direction::read,
      [&] { return static_cast<std::int64_t>(::recv(fd, buf, len, MSG_DONTWAIT)); },
      [&](io_op& op) {
        op.op = io_op::code::recv;
        op.buf = buf;
        op.len = len;
      },
      &keep_received, this, true, drained_);
  if (rc < 0) {
    drained_ = false;
    report(&ec, rc);
    return 0;
  }
  // A read shorter than asked emptied the socket's queue: the next read waits first.
  drained_ = rc > 0 && static_cast<std::size_t>(rc) < len;
  return static_cast<std::size_t>(rc);
}

std::size_t stream_socket::recv(void* buf, std::size_t len) {
  std::error_code ec;
  std::size_t n = recv(buf, len, ec);
  if (ec) fail("recv", ec.value());
  return n;
}

std::string stream_socket::recv(std::size_t max) {
  std::string s(max, '\0');
  s.resize(recv(s.data(), max));
  return s;
}

std::string stream_socket::recv(std::size_t max, std::error_code& ec) {
  std::string s(max, '\0');
  s.resize(recv(s.data(), max, ec));
  return s;
}

std::size_t stream_socket::recv_exact(void* buf, std::size_t len, std::error_code& ec) {
  ec.clear();
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < len) {
    std::size_t n = recv(p + got, len - got, ec);
    if (ec) return got;
    if (n == 0) {
      ec = errc::end_of_stream;
      return got;
    }
    got += n;
  }
  return got;
}

void stream_socket::recv_exact(void* buf, std::size_t len) {
  std::error_code ec;
  recv_exact(buf, len, ec);
  if (ec == errc::end_of_stream) {
    throw std::system_error(ec, "tendril::net: recv_exact of " + std::to_string(len) +
                                    " bytes: the peer closed the stream first (" + describe() +
                                    ")");
  }
  if (ec) fail("recv_exact", ec.value());
}

std::string stream_socket::recv_exact(std::size_t len) {
  std::string s(len, '\0');
  recv_exact(s.data(), len);
  return s;
}

std::string stream_socket::recv_exact(std::size_t len, std::error_code& ec) {
  std::string s(len, '\0');
  s.resize(recv_exact(s.data(), len, ec));
  return s;
}

std::size_t stream_socket::send(const void* buf, std::size_t len, std::error_code& ec) {
  ec.clear();
  if (len == 0) {
    if (fd_ < 0) ec = errno_code(EBADF);
    return 0;
  }
  const int fd = fd_;
  const std::int64_t rc = blocking_call(
      *this, io_direction::write,
      [&] { return static_cast<std::int64_t>(::send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL)); },
      [&](io_op& op) {
        op.op = io_op::code::send;
        op.buf = const_cast<void*>(buf);
        op.len = len;
      });
  if (rc < 0) {
    report(&ec, rc);
    return 0;
  }
  return static_cast<std::size_t>(rc);
}

std::size_t stream_socket::send(const void* buf, std::size_t len) {
  std::error_code ec;
  std::size_t n = send(buf, len, ec);
  if (ec) fail("send", ec.value());
  return n;
}

std::size_t stream_socket::send_all(const void* buf, std::size_t len, std::error_code& ec) {
  ec.clear();
  if (len == 0 && fd_ < 0) ec = errno_code(EBADF);
  const auto* p = static_cast<const char*>(buf);
  std::size_t sent = 0;
  while (sent < len) {
    sent += send(p + sent, len - sent, ec);
    if (ec) break;
  }
  return sent;
}

void stream_socket::send_all(const void* buf, std::size_t len) {
  std::error_code ec;
  send_all(buf, len, ec);
  if (ec) fail("send_all", ec.value());
}

void tcp_stream::set_nodelay(bool on, std::error_code& ec) noexcept {
  ec.clear();
  int v = on ? 1 : 0;
  if (fd_ < 0 || ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0) {
    ec = errno_code(fd_ < 0 ? EBADF : errno);
  }
}

void tcp_stream::set_nodelay(bool on) {
  std::error_code ec;
  set_nodelay(on, ec);
  if (ec) fail("setsockopt(TCP_NODELAY)", ec.value());
}

std::pair<unix_stream, unix_stream> unix_stream::pair(std::error_code& ec) {
  ec.clear();
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
    ec = errno_code(errno);
    return {};
  }
  return {unix_stream(fds[0]), unix_stream(fds[1])};
}

std::pair<unix_stream, unix_stream> unix_stream::pair() {
  std::error_code ec;
  auto p = pair(ec);
  if (ec) throw std::system_error(ec, "tendril::net::unix_stream::pair: socketpair");
  return p;
}

// --- connect --------------------------------------------------------------------------------

namespace {

std::int64_t connect_socket(socket& s, const address& to, std::int64_t deadline) {
  fd_record* r = socket_access::record(s);
  if (r == nullptr) return -EBADF;
  const int fd = socket_access::fd(s);
  fd_table& t = fd_table::current();
  io_guard guard(*r, io_direction::write);
  if (t.native()) {
    op_state st;
    st.op.op = io_op::code::connect;
    st.op.fd = fd;
    st.op.addr = const_cast<sockaddr*>(to.data());
    st.op.peerlen = to.size();
    return t.run(r, st, deadline);
  }
  if (::connect(fd, to.data(), to.size()) == 0) return 0;
  int e = errno;
  if (e != EINPROGRESS && e != EINTR) return -e;
  while (true) {
    int rc = t.wait(*r, io_direction::write, deadline);
    if (rc < 0) return rc;
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) return -errno;
    if (so_error == 0) {
      // Writable and no error: connected (unless the wake was stale: check).
      address peer;
      *peer.size_ptr() = address::capacity();
      if (::getpeername(fd, peer.data(), peer.size_ptr()) == 0) return 0;
      if (errno != ENOTCONN) return -errno;
      continue;
    }
    return -so_error;
  }
}

}  // namespace

tcp_stream connect_deadline(const address& to, std::int64_t deadline_ns, std::error_code* ec) {
  std::error_code local;
  std::error_code& e = ec ? *ec : local;
  e.clear();
  tcp_stream s;
  if (int fd = new_socket(to.family(), SOCK_STREAM, e); fd >= 0) {
    s = tcp_stream(fd);
    if (std::int64_t rc = connect_socket(s, to, deadline_ns); rc < 0) {
      e = errno_code(static_cast<int>(-rc));
      s = tcp_stream();
    }
  }
  if (e && ec == nullptr) throw std::system_error(e, "tendril::net::connect to " + to.to_string());
  return s;
}

tcp_stream connect(const address& to) { return connect_deadline(to, detail::forever_ns, nullptr); }

tcp_stream connect(const address& to, std::error_code& ec) {
  return connect_deadline(to, detail::forever_ns, &ec);
}

tcp_stream connect_deadline(std::string_view host, std::uint16_t port, std::int64_t deadline_ns,
                            std::error_code* ec) {
  std::error_code local;
  std::error_code& e = ec ? *ec : local;
  e.clear();
  std::vector<address> candidates;
  if (deadline_ns == detail::forever_ns) {
    candidates = resolve(host, std::to_string(port), e, AF_UNSPEC, SOCK_STREAM);
  } else {
    // The limit bounds the whole attempt, the name's resolution included.
    timeout limit(std::chrono::nanoseconds(deadline_ns - detail::hub_now_ns()));
    try {
      candidates = resolve(host, std::to_string(port), e, AF_UNSPEC, SOCK_STREAM);
    } catch (const timeout_error& x) {
      if (x.source() != &limit) throw;  // a scope of the caller's
      e = errno_code(ETIMEDOUT);
    }
  }
  if (!e) {
    for (const address& a : candidates) {
      tcp_stream s = connect_deadline(a, deadline_ns, &e);
      if (!e) return s;
      if (e == std::errc::timed_out) break;  // the time is up for the others too
    }
  }
  if (ec == nullptr) {
    // An IPv6 literal in brackets, as in a URL, so that the port stands apart.
    const bool v6 = host.find(':') != std::string_view::npos;
    throw std::system_error(e, "tendril::net::connect to " + std::string(v6 ? "[" : "") +
                                   std::string(host) + (v6 ? "]" : "") + ":" +
                                   std::to_string(port));
  }
  return {};
}

tcp_stream connect(std::string_view host, std::uint16_t port) {
  return connect_deadline(host, port, detail::forever_ns, nullptr);
}

tcp_stream connect(std::string_view host, std::uint16_t port, std::error_code& ec) {
  return connect_deadline(host, port, detail::forever_ns, &ec);
}

unix_stream connect_unix(std::string_view path, std::error_code& ec) {
  ec.clear();
  address to = address::unix_path(path);  // throws for a path that cannot be one (misuse)
  int fd = new_socket(AF_UNIX, SOCK_STREAM, ec);
  if (fd < 0) return {};
  unix_stream s(fd);
  if (std::int64_t rc = connect_socket(s, to, detail::forever_ns); rc < 0) {
    ec = errno_code(static_cast<int>(-rc));
    return {};
  }
  return s;
}

unix_stream connect_unix(std::string_view path) {
  std::error_code ec;
  unix_stream s = connect_unix(path, ec);
  if (ec) throw std::system_error(ec, "tendril::net::connect_unix " + std::string(path));
  return s;
}

// --- listeners ------------------------------------------------------------------------------

template <class Stream>
Stream basic_listener<Stream>::accept(address* peer, std::error_code& ec) {
  ec.clear();
  address from;
  const int fd = fd_;
  const std::int64_t rc = blocking_call(
      *this, io_direction::read,
      [&] {
        *from.size_ptr() = address::capacity();
        int c;
        do {
          c = ::accept4(fd, from.data(), from.size_ptr(), SOCK_NONBLOCK | SOCK_CLOEXEC);
          // A connection reset before it was accepted: try the next one.
        } while (c < 0 && errno == ECONNABORTED);
        return static_cast<std::int64_t>(c);
      },
      [&](io_op& op) {
        *from.size_ptr() = address::capacity();
        op.op = io_op::code::accept;
        op.addr = from.data();
        op.addrlen = from.size_ptr();
        op.flags = SOCK_CLOEXEC;
      },
      &close_accepted, nullptr, false);
  if (rc < 0) {
    ec = errno_code(static_cast<int>(-rc));
    return {};
  }
  if (peer) *peer = from;
  return Stream(static_cast<int>(rc));
}

template <class Stream>
Stream basic_listener<Stream>::accept(address* peer) {
  std::error_code ec;
  Stream s = accept(peer, ec);
  if (ec) fail("accept", ec.value());
  return s;
}

template class basic_listener<tcp_stream>;
template class basic_listener<unix_stream>;

tcp_listener listen(std::string_view host, std::uint16_t port, int backlog, std::error_code& ec) {
  ec.clear();
  std::vector<address> candidates =
      resolve(host.empty() ? "0.0.0.0" : host, std::to_string(port), ec, AF_UNSPEC, SOCK_STREAM);
  if (ec) return {};
  for (const address& a : candidates) {
    tcp_listener l = listen(a, backlog, ec);
    if (!ec) return l;
  }
  if (!ec) ec = errno_code(EADDRNOTAVAIL);  // no address at all
  return {};
}

tcp_listener listen(const address& at, int backlog, std::error_code& ec) {
  ec.clear();
  int fd = new_socket(at.family(), SOCK_STREAM, ec);
  if (fd < 0) return {};
  tcp_listener l(fd);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, at.data(), at.size()) != 0 || ::listen(fd, backlog) != 0) {
    ec = errno_code(errno);
    return {};
  }
  return l;
}

tcp_listener listen(const address& at, int backlog) {
  std::error_code ec;
  tcp_listener l = listen(at, backlog, ec);
  if (ec) throw std::system_error(ec, "tendril::net::listen on " + at.to_string());
  return l;
}

tcp_listener listen(std::string_view host, std::uint16_t port, int backlog) {
  std::error_code ec;
  tcp_listener l = listen(host, port, backlog, ec);
  if (ec) {
    throw std::system_error(
        ec, "tendril::net::listen on " + std::string(host) + ":" + std::to_string(port));
  }
  return l;
}

unix_listener listen_unix(std::string_view path, int backlog, std::error_code& ec) {
  ec.clear();
  address a = address::unix_path(path);  // throws for a path that cannot be one (misuse)
  int fd = new_socket(AF_UNIX, SOCK_STREAM, ec);
  if (fd < 0) return {};
  unix_listener l(fd);
  if (::bind(fd, a.data(), a.size()) != 0 || ::listen(fd, backlog) != 0) {
    ec = errno_code(errno);
    return {};
  }
  return l;
}

unix_listener listen_unix(std::string_view path, int backlog) {
  std::error_code ec;
  unix_listener l = listen_unix(path, backlog, ec);
  if (ec) throw std::system_error(ec, "tendril::net::listen_unix " + std::string(path));
  return l;
}

// --- datagrams ------------------------------------------------------------------------------

std::size_t datagram_socket::send_to(const void* buf, std::size_t len, const address& to,
                                     std::error_code& ec) {
  return send_msg(buf, len, &to, ec);
}

// send_msg() sends one datagram to *to, or to the connected peer when to is null.
std::size_t datagram_socket::send_msg(const void* buf, std::size_t len, const address* to,
                                      std::error_code& ec) {
  ec.clear();
  const int fd = fd_;
  msghdr msg{};
  iovec iov{const_cast<void*>(buf), len};
  if (to != nullptr) {
    msg.msg_name = const_cast<sockaddr*>(to->data());
    msg.msg_namelen = to->size();
  }
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  const std::int64_t rc = blocking_call(
      *this, io_direction::write,
      [&] { return static_cast<std::int64_t>(::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL)); },
      [&](io_op& op) {
        op.op = io_op::code::sendmsg;
        op.msg = &msg;
      });
  if (rc < 0) {
    ec = errno_code(static_cast<int>(-rc));
    return 0;
  }
  return static_cast<std::size_t>(rc);
}

std::size_t datagram_socket::send_to(const void* buf, std::size_t len, const address& to) {
  std::error_code ec;
  std::size_t n = send_to(buf, len, to, ec);
  if (ec)
    throw std::system_error(ec,
                            "tendril::net: send_to " + to.to_string() + " (" + describe() + ")");
  return n;
}

std::size_t datagram_socket::recv_from(void* buf, std::size_t len, address& from,
                                       std::error_code& ec) {
  ec.clear();
  if (len == 0) {
    // The kernel would take a datagram and keep none of it.
    ec = errno_code(fd_ < 0 ? EBADF : EINVAL);
    return 0;
  }
  const int fd = fd_;
  msghdr msg{};
  iovec iov{buf, len};
  msg.msg_name = from.data();
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  const std::int64_t rc = blocking_call(
      *this, io_direction::read,
      [&] {
        msg.msg_namelen = address::capacity();
        return static_cast<std::int64_t>(::recvmsg(fd, &msg, MSG_DONTWAIT));
      },
      [&](io_op& op) {
        msg.msg_namelen = address::capacity();
        op.op = io_op::code::recvmsg;
        op.msg = &msg;
      });
  if (rc < 0) {
    ec = errno_code(static_cast<int>(-rc));
    return 0;
  }
  *from.size_ptr() = msg.msg_namelen;
  return static_cast<std::size_t>(rc);
}

std::size_t datagram_socket::recv_from(void* buf, std::size_t len, address& from) {
  std::error_code ec;
  std::size_t n = recv_from(buf, len, from, ec);
  if (ec) fail("recv_from", ec.value());
  return n;
}

void datagram_socket::connect(const address& to, std::error_code& ec) noexcept {
  ec.clear();
  if (fd_ < 0 || ::connect(fd_, to.data(), to.size()) != 0)
    ec = errno_code(fd_ < 0 ? EBADF : errno);
}

void datagram_socket::connect(const address& to) {
  std::error_code ec;
  connect(to, ec);
  if (ec) fail("connect", ec.value());
}

std::size_t datagram_socket::send(const void* buf, std::size_t len, std::error_code& ec) {
  // To the connected peer, as send(2) does (not connected: EDESTADDRREQ or ENOTCONN).
  return send_msg(buf, len, nullptr, ec);
}

std::size_t datagram_socket::send(const void* buf, std::size_t len) {
  std::error_code ec;
  std::size_t n = send(buf, len, ec);
  if (ec) fail("send", ec.value());
  return n;
}

std::size_t datagram_socket::recv(void* buf, std::size_t len, std::error_code& ec) {
  address from;
  return recv_from(buf, len, from, ec);
}

std::size_t datagram_socket::recv(void* buf, std::size_t len) {
  address from;
  std::error_code ec;
  std::size_t n = recv_from(buf, len, from, ec);
  if (ec) fail("recv", ec.value());
  return n;
}

udp_socket udp_socket::bind(std::string_view host, std::uint16_t port, std::error_code& ec) {
  ec.clear();
  std::vector<address> candidates =
      resolve(host.empty() ? "0.0.0.0" : host, std::to_string(port), ec, AF_UNSPEC, SOCK_DGRAM);
  if (ec) return {};
  for (const address& a : candidates) {
    int fd = new_socket(a.family(), SOCK_DGRAM, ec);
    if (fd < 0) continue;
    udp_socket s(fd);
    if (::bind(fd, a.data(), a.size()) != 0) {
      ec = errno_code(errno);
      continue;
    }
    ec.clear();
    return s;
  }
  if (!ec) ec = errno_code(EADDRNOTAVAIL);  // no address at all
  return {};
}

udp_socket udp_socket::bind(std::string_view host, std::uint16_t port) {
  std::error_code ec;
  udp_socket s = bind(host, port, ec);
  if (ec) {
    throw std::system_error(
        ec, "tendril::net::udp_socket::bind " + std::string(host) + ":" + std::to_string(port));
  }
  return s;
}

udp_socket udp_socket::open(int family, std::error_code& ec) {
  ec.clear();
  if (family != AF_INET && family != AF_INET6) {
    ec = errno_code(EAFNOSUPPORT);  // UDP is IPv4 or IPv6 (unix_datagram for AF_UNIX)
    return {};
  }
  int fd = new_socket(family, SOCK_DGRAM, ec);
  return fd < 0 ? udp_socket() : udp_socket(fd);
}

udp_socket udp_socket::open(int family) {
  std::error_code ec;
  udp_socket s = open(family, ec);
  if (ec) throw std::system_error(ec, "tendril::net::udp_socket::open");
  return s;
}

unix_datagram unix_datagram::bind(std::string_view path, std::error_code& ec) {
  ec.clear();
  address a = address::unix_path(path);  // throws for a path that cannot be one (misuse)
  int fd = new_socket(AF_UNIX, SOCK_DGRAM, ec);
  if (fd < 0) return {};
  unix_datagram s(fd);
  if (::bind(fd, a.data(), a.size()) != 0) {
    ec = errno_code(errno);
    return {};
  }
  return s;
}

unix_datagram unix_datagram::bind(std::string_view path) {
  std::error_code ec;
  unix_datagram s = bind(path, ec);
  if (ec) throw std::system_error(ec, "tendril::net::unix_datagram::bind " + std::string(path));
  return s;
}

unix_datagram unix_datagram::open(std::error_code& ec) {
  ec.clear();
  int fd = new_socket(AF_UNIX, SOCK_DGRAM, ec);
  return fd < 0 ? unix_datagram() : unix_datagram(fd);
}

unix_datagram unix_datagram::open() {
  std::error_code ec;
  unix_datagram s = open(ec);
  if (ec) throw std::system_error(ec, "tendril::net::unix_datagram::open");
  return s;
}

}  // namespace tendril::net
