// TLS on OpenSSL 3, driven the way tendril drives sockets: OpenSSL never touches the
// descriptor itself. It reads through a BIO of ours that makes one non-blocking recv
// (MSG_DONTWAIT: no blocking on io_uring, where sockets stay in blocking mode) and reports
// EAGAIN as "retry", and it writes into state::out, a buffer the BIO always takes everything
// into. SSL_read and SSL_do_handshake then return WANT_READ; run() parks the greenlet on the
// descriptor (with the call's deadline, so timeout scopes and kills apply) and calls OpenSSL
// again. What OpenSSL wrote goes to the socket after each call (send_out(): send with
// MSG_DONTWAIT | MSG_NOSIGNAL, so no SIGPIPE either).
//
// Why the writes are buffered: one reader and one writer may use a stream at the same time,
// and OpenSSL 3 writes from SSL_read too (the reply to a TLS 1.3 KeyUpdate that asks for one).
// If a write could wait, SSL_read would meet the writer's record half sent, and OpenSSL refuses
// a second write before that one is finished: it fails the session ("bad length"). A BIO that
// never refuses a write leaves OpenSSL nothing half done between calls; each SSL call runs to
// its end before another greenlet runs, so OpenSSL sees them one after the other, as with a
// thread that alternates SSL_read and SSL_write (test:
// tls.full_duplex_survives_key_updates_the_peer_asks_for).
//
// Who sends state::out (one byte stream, sent from its front, so whoever sends keeps the
// order):
// 1. send, shutdown and the handshake wait until the socket took all of it, their own bytes
//    and whatever a reader had added. With SSL_MODE_ENABLE_PARTIAL_WRITE each SSL_write is at
//    most one record, so out holds at most that plus small messages. A send cut short (a time
//    limit, a kill) leaves its record there, committed: the next send or shutdown sends it
//    first, or a waiting reader does (test:
//    tls.a_send_cut_short_by_a_timeout_is_finished_by_the_next_send).
// 2. recv never waits for room: the peer may not read until it has written to us, and it may
//    be waiting for us to read (a peer that alternates SSL_write and SSL_read). It sends what
//    the socket takes at once; while out is not empty it waits for data or for room, whichever
//    comes (wait_either()), so those bytes go out even when nobody writes. Only a peer that
//    makes us answer far more than it reads (out past out_limit) makes it wait for room.
//
// After SSL_ERROR_SSL or SSL_ERROR_SYSCALL the session is dead and SSL_shutdown must not be
// called: state::failed remembers the error and every later call reports it. A send that
// failed (EPIPE, ECONNRESET) ends sending only: state::send_errno fails every later send,
// shutdown and handshake the same way, while recv goes on with what the peer had sent.
// Renegotiation is off.
#include "tendril/net/tls.hpp"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <utility>

#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "io/fd_table.hpp"
#include "tendril/sync/observer.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril::net {

using detail::fd_record;
using detail::fd_table;
using detail::io_direction;

struct tls_stream::state {
  tcp_stream sock;
  SSL* ssl = nullptr;
  std::string host;      // the name the server's certificate must carry (clients)
  std::string peer;      // the peer's address, for messages
  int bio_errno = 0;     // the errno of the BIO's last failed system call
  int send_errno = 0;    // a send of out failed: nothing more can go out
  bool bio_eof = false;  // the peer closed the connection
  bool established = false;
  bool close_notify_sent = false;
  std::error_code failed;  // an error that ended the session
  std::string failed_why;
  std::string out;       // what OpenSSL wrote and the socket has not taken yet (the top)
  std::string buffered;  // bytes the TCP stream had received before the wrap: read first
  detail::greenlet_record* reader = nullptr;
  detail::greenlet_record* writer = nullptr;
  int users = 0;          // calls under way (they may be parked)
  bool orphaned = false;  // the tls_stream went while calls were parked: the last one frees

  state() = default;
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() {
    if (ssl) SSL_free(ssl);  // frees the BIO too
  }
};

namespace {

using state = tls_stream::state;

// SSL3_RT_MAX_PLAIN_LENGTH: the most one TLS record carries, so the most one send takes.
constexpr std::size_t max_record = 16384;

// How much of state::out a reader lets pile up before it waits for room: a send's record and
// the reader's small answers stay far below it.
constexpr std::size_t out_limit = 4 * max_record;

std::error_code errno_code(int e) { return {e, std::generic_category()}; }

// openssl_errors() empties the thread's OpenSSL error queue into one line.
std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

// --- the BIO --------------------------------------------------------------------------------

state* bio_state(BIO* b) { return static_cast<state*>(BIO_get_data(b)); }

// bio_write() takes everything (see the top): a write OpenSSL would have to retry could meet
// another greenlet's SSL call. The caller of the SSL call sends it (send_out, flush).
// Out of memory: no exception may cross OpenSSL's C frames; the SSL call fails instead, and
// fail() reports ENOMEM from bio_errno.
int bio_write(BIO* b, const char* data, std::size_t len, std::size_t* written) {
  BIO_clear_retry_flags(b);
  state* s = bio_state(b);
  if (s == nullptr) return 0;
  try {
    s->out.append(data, len);
  } catch (...) {  // std::bad_alloc, std::length_error
    s->bio_errno = ENOMEM;
    *written = 0;
    return 0;
  }
  *written = len;
  return 1;
}

int bio_read(BIO* b, char* data, std::size_t len, std::size_t* read) {
  BIO_clear_retry_flags(b);
  state* s = bio_state(b);
  if (s == nullptr) return 0;
  if (!s->buffered.empty() && len > 0) {
    const std::size_t n = std::min(len, s->buffered.size());
    std::memcpy(data, s->buffered.data(), n);
    s->buffered.erase(0, n);
    *read = n;
    return 1;
  }
  while (true) {
    const ssize_t n = ::recv(s->sock.native_handle(), data, len, MSG_DONTWAIT);
    if (n > 0) {
      *read = static_cast<std::size_t>(n);
      return 1;
    }
    if (n == 0) {
      if (len > 0) s->bio_eof = true;
      *read = 0;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BIO_set_retry_read(b);
    } else {
      s->bio_errno = errno;
    }
    return 0;
  }
}

long bio_ctrl(BIO* b, int cmd, long, void* ptr) {
  state* s = bio_state(b);
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  // state::out goes out after the SSL call that wrote it
    case BIO_CTRL_EOF:
      return s != nullptr && s->bio_eof ? 1 : 0;
    case BIO_C_GET_FD: {
      const int fd = s != nullptr ? s->sock.native_handle() : -1;
      if (ptr != nullptr) *static_cast<int*>(ptr) = fd;
      return fd;
    }
    default:
      return 0;
  }
}

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

int bio_destroy(BIO* b) {
  BIO_set_data(b, nullptr);
  return 1;
}

BIO_METHOD* socket_bio_method() {
  static BIO_METHOD* const method = [] {
    const int index = BIO_get_new_index();
    BIO_METHOD* m = BIO_meth_new((index > 0 ? index : 0) | BIO_TYPE_SOURCE_SINK, "tendril socket");
    if (m != nullptr) {
      BIO_meth_set_write_ex(m, &bio_write);
      BIO_meth_set_read_ex(m, &bio_read);
      BIO_meth_set_ctrl(m, &bio_ctrl);
      BIO_meth_set_create(m, &bio_create);
      BIO_meth_set_destroy(m, &bio_destroy);
    }
    return m;
  }();
  if (method == nullptr) throw std::bad_alloc();
  return method;
}

// --- driving OpenSSL ------------------------------------------------------------------------

// A call under way keeps the state alive: a stream destroyed meanwhile (which wakes it with
// EBADF) leaves the state to the last call to free.
class use {
 public:
  explicit use(state& s) noexcept : s_(s) { ++s_.users; }
  ~use() {
    if (--s_.users == 0 && s_.orphaned) delete &s_;
  }
  use(const use&) = delete;
  use& operator=(const use&) = delete;

 private:
  state& s_;
};

// One reader and one writer at a time, as on a tcp_stream.
class side_guard {
 public:
  side_guard(state& s, io_direction d) : slot_(d == io_direction::read ? &s.reader : &s.writer) {
    detail::greenlet_record* me = detail::thread_state::get().current();
    if (*slot_ != nullptr && *slot_ != me) {
      throw std::logic_error(std::string("tendril::net: greenlet '") + detail::record_name(*slot_) +
                             "' is already " +
                             (d == io_direction::read ? "reading from" : "writing to") +
                             " this TLS stream (peer " + s.peer + "); one at a time");
    }
    owned_ = *slot_ == nullptr;
    *slot_ = me;
  }
  ~side_guard() {
    if (owned_) *slot_ = nullptr;
  }
  side_guard(const side_guard&) = delete;
  side_guard& operator=(const side_guard&) = delete;

 private:
  detail::greenlet_record** slot_;
  bool owned_;
};

// wait_io() parks until the socket is ready for d: 0 (call OpenSSL again), -ETIMEDOUT, or
// -EBADF when the stream was closed. Throws what interrupts the greenlet.
int wait_io(state& s, io_direction d, std::int64_t deadline) {
  if (!s.sock.is_open()) return -EBADF;
  fd_table& t = fd_table::current();
  fd_record* r = t.lookup(s.sock.native_handle());
  if (r == nullptr || !r->open) return -EBADF;
  return t.wait(*r, d, deadline);
}

// wait_either() parks until the socket is readable or writable, for a reader that holds bytes
// for the peer (rule 2 at the top): 0 (try both system calls again), -ETIMEDOUT, or -EBADF
// when the stream was closed. It watches as poll() does (fd_table::observe), beside a writer
// that may be waiting for room in fd_table::wait. Throws what interrupts the greenlet.
int wait_either(state& s, std::int64_t deadline) {
  if (!s.sock.is_open()) return -EBADF;
  fd_table& t = fd_table::current();
  fd_record* r = t.lookup(s.sock.native_handle());
  if (r == nullptr || !r->open) return -EBADF;
  if (r->readable || r->writable) {
    // Readiness that came while nobody waited; the caller makes both system calls, so an
    // edge taken here is not lost to the writer.
    r->readable = false;
    r->writable = false;
    return 0;
  }
  struct watch {
    detail::observer obs;  // first: notify() is handed its address
    detail::waiter* w;
  };
  detail::waiter w;
  watch x{{}, &w};
  x.obs.notify = [](detail::observer* o) noexcept { reinterpret_cast<watch*>(o)->w->wake(); };
  const std::uint32_t gen = r->gen;
  if (const int rc = t.observe(*r, POLLIN | POLLOUT, x.obs); rc < 0) return rc;
  struct unobserve {
    fd_table& t;
    fd_record& r;
    detail::observer& o;
    ~unobserve() { t.unobserve(r, o); }
  } guard{t, *r, x.obs};
  if (!w.wait(deadline)) return -ETIMEDOUT;
  if (!r->open || r->gen != gen) return -EBADF;  // closed (fd_table::close notified us)
  return 0;
}

// Drops what can never go out (sending failed for good), so that a reader then waits for data
// only: a socket shut for writing or broken is always writable, and wait_either() would spin
// (test: tls.a_reader_after_sending_failed_waits_without_spinning).
void drop_out(state& s) { std::string().swap(s.out); }

// send_out() gives the socket what it takes of s.out, without waiting: 0 once out is empty,
// -EAGAIN when the socket is full, -EBADF for a closed stream, or -errno when a send failed
// (EPIPE, ECONNRESET): out is then dropped, and every later send_out() fails the same way,
// dropping what OpenSSL wrote since (a reader's answer to a key update, an alert).
int send_out(state& s) {
  if (s.send_errno != 0) {
    drop_out(s);
    return -s.send_errno;
  }
  while (!s.out.empty()) {
    if (!s.sock.is_open()) return -EBADF;
    const ssize_t n =
        ::send(s.sock.native_handle(), s.out.data(), s.out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      s.out.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) return -EAGAIN;
    if (errno == EINTR) continue;
    if (errno == EBADF) return -EBADF;
    s.send_errno = errno;
    drop_out(s);
    return -s.send_errno;
  }
  // An idle stream keeps no record-sized buffer (as SSL_MODE_RELEASE_BUFFERS for OpenSSL's).
  if (s.out.capacity() > 4096) std::string().swap(s.out);
  return 0;
}

struct outcome {
  int ssl_error = SSL_ERROR_NONE;  // when OpenSSL failed
  int wait_errno = 0;              // when waiting failed (ETIMEDOUT, EBADF)
  int send_errno = 0;              // when sending out failed
  bool done = false;               // the OpenSSL call itself succeeded (its bytes are in out)
};

// send_failed() fills in out for fail() after send_out() failed with rc (not -EAGAIN).
void send_failed(int rc, outcome& out) {
  if (rc == -EBADF) {
    out.wait_errno = EBADF;
  } else {
    out.send_errno = -rc;
  }
}

// flush() waits until the socket took all of s.out (true), or fails (false, out filled in as
// by run()). Switches: yes. Throws what interrupts the greenlet (out keeps what is left).
bool flush(state& s, std::int64_t deadline, outcome& out) {
  while (true) {
    const int rc = send_out(s);
    if (rc == 0) return true;
    if (rc != -EAGAIN) {
      send_failed(rc, out);
      return false;
    }
    const int w = wait_io(s, io_direction::write, deadline);
    if (w < 0) {
      out.wait_errno = -w;
      return false;
    }
  }
}

// How a call sends what OpenSSL wrote (rules 1 and 2 at the top): wait until the socket took
// it all (send, shutdown, handshake), or send what it takes and wait for data or room (recv).
enum class sending { wait, alongside };

// run() calls an OpenSSL operation until it succeeds (true) or fails for another reason than
// a socket that is not ready (false, with out filled in and OpenSSL's error queue kept for
// fail()). Switches: yes. Throws what interrupts the greenlet.
template <class Call>
bool run(state& s, std::int64_t deadline, Call call, outcome& out, sending how) {
  while (true) {
    if (!s.sock.is_open()) {
      out.wait_errno = EBADF;
      return false;
    }
    if (how == sending::alongside && s.out.size() >= out_limit && !flush(s, deadline, out)) {
      return false;
    }
    ERR_clear_error();
    s.bio_errno = 0;
    const int rc = call();
    const int e = rc > 0 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, rc);
    // The BIO never asks for a write to be retried, so WANT_WRITE would be a surprise: an
    // error rather than a wait for room that may never be reported.
    if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ) {
      (void)send_out(s);  // an alert OpenSSL wrote, if the socket takes it
      out.ssl_error = e;
      return false;
    }
    out.done = rc > 0;
    if (how == sending::wait) {
      if (!flush(s, deadline, out)) return false;
      if (rc > 0) return true;
    } else {
      // A failed send ends sending only (send_errno, for the writers to report): what the
      // peer sent before may still be there to read, as on a tcp_stream.
      (void)send_out(s);
      if (rc > 0) return true;
    }
    const int w =
        s.out.empty() ? wait_io(s, io_direction::read, deadline) : wait_either(s, deadline);
    if (w < 0) {
      out.wait_errno = -w;
      return false;
    }
  }
}

enum class phase { handshake, recv, send, shutdown };

const char* phase_name(phase p) {
  switch (p) {
    case phase::handshake:
      return "handshake";
    case phase::recv:
      return "recv";
    case phase::send:
      return "send";
    case phase::shutdown:
      return "shutdown";
  }
  return "?";
}

std::string describe(const state& s) {
  std::string d = "peer " + (s.peer.empty() ? std::string("unknown") : s.peer);
  if (!s.host.empty()) d += ", host " + s.host;
  return d;
}

std::string message(const state& s, phase p, const std::string& reason) {
  return std::string("tendril::net::tls_stream: ") + phase_name(p) + ": " + reason + " (" +
         describe(s) + ")";
}

std::string with_details(std::string reason, const std::string& errors) {
  if (!errors.empty()) reason += " [" + errors + "]";
  return reason;
}

// fail() turns a failed run() into an error code (and, if why is given, a message), and
// marks the session dead when OpenSSL says it is.
std::error_code fail(state& s, phase p, const outcome& out, std::string* why) {
  std::error_code ec;
  std::string reason;
  bool fatal = false;
  const bool handshaking = p == phase::handshake || !s.established;
  if (out.send_errno != 0) {
    // Not fatal to reading: send_out() keeps failing every later send the same way.
    ec = errno_code(out.send_errno);
    reason = std::strerror(out.send_errno);
    ERR_clear_error();
  } else if (out.wait_errno != 0) {
    ec = errno_code(out.wait_errno);
    reason = out.wait_errno == ETIMEDOUT ? std::string("timed out")
                                         : std::string(std::strerror(out.wait_errno));
    ERR_clear_error();
  } else {
    const unsigned long first = ERR_peek_error();
    const bool eof = s.bio_eof && (out.ssl_error == SSL_ERROR_SYSCALL ||
                                   (ERR_GET_LIB(first) == ERR_LIB_SSL &&
                                    ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING));
    switch (out.ssl_error) {
      case SSL_ERROR_ZERO_RETURN:
        if (handshaking) {
          ec = errc::tls_handshake;
          reason = "the peer ended the TLS session during the handshake";
        } else {
          ec = errno_code(EPIPE);
          reason = "the peer ended the TLS session (close_notify)";
        }
        ERR_clear_error();
        break;
      case SSL_ERROR_SYSCALL:
      case SSL_ERROR_SSL:
        fatal = true;
        if (s.bio_errno != 0) {
          ec = errno_code(s.bio_errno);
          reason = with_details(std::strerror(s.bio_errno), openssl_errors());
        } else if (eof || (out.ssl_error == SSL_ERROR_SYSCALL && first == 0)) {
          ERR_clear_error();
          if (handshaking) {
            ec = errc::tls_handshake;
            reason = "the peer closed the connection during the handshake";
          } else {
            ec = errc::tls_protocol;
            reason =
                "the peer closed the connection without a TLS close_notify (the data may have "
                "been cut short)";
          }
        } else if (handshaking) {
          // OpenSSL records a verification result even when told not to verify.
          const long v = (SSL_get_verify_mode(s.ssl) & SSL_VERIFY_PEER) != 0
                             ? SSL_get_verify_result(s.ssl)
                             : X509_V_OK;
          if (v != X509_V_OK) {
            ec = errc::tls_verify;
            reason = std::string("certificate verify failed: ") + X509_verify_cert_error_string(v);
            if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
              reason += " (the certificate is not for '" + s.host + "')";
            }
            reason = with_details(std::move(reason), openssl_errors());
          } else {
            ec = errc::tls_handshake;
            reason = openssl_errors();
            if (reason.empty()) reason = "failed";
          }
        } else {
          ec = errc::tls_protocol;
          reason = openssl_errors();
          if (reason.empty()) reason = "failed";
        }
        break;
      default:
        ec = errc::tls_protocol;
        reason = with_details("OpenSSL error " + std::to_string(out.ssl_error), openssl_errors());
        break;
    }
  }
  if (fatal && !s.failed) {
    s.failed = ec;
    s.failed_why = reason;
  }
  if (why != nullptr) *why = message(s, p, reason);
  return ec;
}

// check() is the error of a call that cannot start: a closed or failed stream.
bool check(state* s, phase p, std::error_code& ec, std::string* why) {
  if (s == nullptr || !s->sock.is_open()) {
    ec = errno_code(EBADF);
    if (why != nullptr) {
      *why = std::string("tendril::net::tls_stream: ") + phase_name(p) + ": the stream is closed";
    }
    return false;
  }
  if (s->failed) {
    ec = s->failed;
    if (why != nullptr) {
      *why = message(*s, p, "an earlier error ended the TLS session: " + s->failed_why);
    }
    return false;
  }
  return true;
}

std::error_code handshake_op(state& s, std::int64_t deadline, std::string* why) {
  if (s.established) return {};
  outcome out;
  auto handshake = [&] { return SSL_do_handshake(s.ssl); };
  if (run(s, deadline, handshake, out, sending::wait)) {
    s.established = true;
    return {};
  }
  return fail(s, phase::handshake, out, why);
}

std::size_t recv_op(state* sp, void* buf, std::size_t len, std::error_code& ec, std::string* why) {
  ec.clear();
  if (!check(sp, phase::recv, ec, why)) return 0;
  state& s = *sp;
  if (len == 0) {
    // An empty buffer could not tell data from the end of the session.
    ec = errno_code(EINVAL);
    if (why != nullptr) *why = message(s, phase::recv, "an empty buffer");
    return 0;
  }
  use u(s);
  side_guard g(s, io_direction::read);
  const std::int64_t deadline = s.sock.call_deadline();
  if (!s.established) {
    ec = handshake_op(s, deadline, why);
    if (ec) return 0;
  }
  std::size_t got = 0;
  outcome out;
  auto read = [&] { return SSL_read_ex(s.ssl, buf, len, &got); };
  if (run(s, deadline, read, out, sending::alongside)) return got;
  if (out.ssl_error == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return 0;  // close_notify: the end of the session
  }
  ec = fail(s, phase::recv, out, why);
  return 0;
}

std::size_t send_op(state* sp, const void* buf, std::size_t len, std::error_code& ec,
                    std::string* why) {
  ec.clear();
  if (!check(sp, phase::send, ec, why)) return 0;
  if (len == 0) return 0;
  state& s = *sp;
  use u(s);
  side_guard g(s, io_direction::write);
  const std::int64_t deadline = s.sock.call_deadline();
  if (!s.established) {
    ec = handshake_op(s, deadline, why);
    if (ec) return 0;
  }
  if (s.close_notify_sent) {
    // OpenSSL would fail the whole session for it; only this side is over.
    ec = errno_code(EPIPE);
    if (why != nullptr) *why = message(s, phase::send, "shutdown() ended this side of the session");
    return 0;
  }
  // What a send cut short left goes first, so out never holds more than about a record.
  outcome before;
  if (!flush(s, deadline, before)) {
    ec = fail(s, phase::send, before, why);
    return 0;
  }
  const std::size_t n = std::min(len, max_record);
  std::size_t written = 0;
  outcome out;
  auto write = [&] { return SSL_write_ex(s.ssl, buf, n, &written); };
  if (run(s, deadline, write, out, sending::wait)) return written;
  ec = fail(s, phase::send, out, why);
  if (out.done && out.wait_errno == ETIMEDOUT) {
    // The record is committed: it goes out before anything sent later. Counting its bytes
    // keeps a caller that resends from buf + count from sending them twice.
    return written;
  }
  return 0;
}

std::size_t send_all_op(state* sp, const void* buf, std::size_t len, std::error_code& ec,
                        std::string* why) {
  ec.clear();
  const auto* p = static_cast<const char*>(buf);
  std::size_t sent = 0;
  if (len == 0 && !check(sp, phase::send, ec, why)) return 0;
  while (sent < len) {
    sent += send_op(sp, p + sent, len - sent, ec, why);
    if (ec) break;
  }
  return sent;
}

std::size_t recv_exact_op(state* sp, void* buf, std::size_t len, std::error_code& ec,
                          std::string* why) {
  ec.clear();
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < len) {
    const std::size_t n = recv_op(sp, p + got, len - got, ec, why);
    if (ec) break;
    if (n == 0) {
      ec = errc::end_of_stream;
      if (why != nullptr) {
        *why = message(*sp, phase::recv,
                       "recv_exact of " + std::to_string(len) +
                           " bytes: the peer ended the session after " + std::to_string(got));
      }
      break;
    }
    got += n;
  }
  return got;
}

void shutdown_op(state* sp, std::error_code& ec, std::string* why) {
  ec.clear();
  if (!check(sp, phase::shutdown, ec, why)) return;
  state& s = *sp;
  if (!s.established) {
    ec = errno_code(ENOTCONN);
    if (why != nullptr) *why = message(s, phase::shutdown, "the handshake was not made");
    return;
  }
  if (s.close_notify_sent && s.out.empty() && s.send_errno == 0) return;
  use u(s);
  side_guard g(s, io_direction::write);
  const std::int64_t deadline = s.sock.call_deadline();
  outcome out;
  if (s.close_notify_sent) {
    // A shutdown cut short: its close_notify is committed, only sending it is left.
    if (!flush(s, deadline, out)) ec = fail(s, phase::shutdown, out, why);
    return;
  }
  auto close_notify = [&] {
    const int rc = SSL_shutdown(s.ssl);
    // Noted before the flush, which a timeout scope or a kill may cut short: from here on
    // sending more would fail the session (test:
    // tls.a_shutdown_cut_short_by_a_timeout_scope_ends_only_this_side).
    if (SSL_get_shutdown(s.ssl) & SSL_SENT_SHUTDOWN) s.close_notify_sent = true;
    // 0: ours is written, the peer's not yet received; that is all this call waits for.
    // WANT_READ: ours was written earlier and OpenSSL would now wait for the peer's.
    if (rc >= 0 || SSL_get_error(s.ssl, rc) == SSL_ERROR_WANT_READ) return 1;
    return rc;
  };
  const bool ok = run(s, deadline, close_notify, out, sending::wait);
  if (ok) {
    ERR_clear_error();
    return;
  }
  ec = fail(s, phase::shutdown, out, why);
}

bool is_ip_literal(std::string_view host) {
  std::string h(host);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, h.c_str(), buf) == 1 || ::inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

// --- tls_context helpers --------------------------------------------------------------------

// config_fail() throws the error of a tls_context call: the errno value when OpenSSL could
// not read a file, EINVAL when it refused what it read.
[[noreturn]] void config_fail(const char* what, std::string_view arg,
                              const char* reason = nullptr) {
  std::error_code ec = std::make_error_code(std::errc::invalid_argument);
  std::string errors;
  while (unsigned long e = ERR_get_error()) {
    if (ERR_SYSTEM_ERROR(e) && ec == std::errc::invalid_argument) {
      ec = errno_code(static_cast<int>(ERR_GET_REASON(e)));
    }
    if (reason == nullptr && ERR_GET_LIB(e) == ERR_LIB_X509 &&
        ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
      reason = "the private key does not match the certificate";
    }
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!errors.empty()) errors += "; ";
    errors += buf;
  }
  std::string msg = std::string("tendril::net::tls_context::") + what;
  if (!arg.empty()) msg += "(" + std::string(arg) + ")";
  msg += ": ";
  msg += reason != nullptr ? reason : (errors.empty() ? "failed" : errors.c_str());
  if (reason != nullptr && !errors.empty()) msg += " [" + errors + "]";
  throw std::system_error(ec, msg);
}

struct bio_deleter {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};
using bio_ptr = std::unique_ptr<BIO, bio_deleter>;

bio_ptr memory_bio(std::string_view pem, const char* what) {
  if (pem.size() > static_cast<std::size_t>(INT32_MAX)) config_fail(what, "", "PEM text too large");
  bio_ptr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!b) config_fail(what, "", "out of memory");
  return b;
}

// drop_pem_end() forgets the "no start line" error that ends every read of PEM text.
void drop_pem_end() {
  const unsigned long e = ERR_peek_last_error();
  if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) ERR_clear_error();
}

}  // namespace

// --- tls_context ----------------------------------------------------------------------------

tls_context::tls_context(role r) : role_(r) {
  ERR_clear_error();
  ctx_ = SSL_CTX_new(r == role::client ? TLS_client_method() : TLS_server_method());
  if (ctx_ == nullptr) config_fail(r == role::client ? "client" : "server", "");
  SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx_, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                             SSL_MODE_RELEASE_BUFFERS);
  if (r == role::client) {
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_default_verify_paths(ctx_);
  } else {
    // Needed for session resumption once clients present certificates.
    static const unsigned char id[] = "tendril";
    SSL_CTX_set_session_id_context(ctx_, id, sizeof id - 1);
  }
  ERR_clear_error();
}

tls_context tls_context::client() { return tls_context(role::client); }
tls_context tls_context::server() { return tls_context(role::server); }

tls_context tls_context::server(std::string_view certificate_chain_file,
                                std::string_view private_key_file) {
  tls_context c(role::server);
  c.use_certificate_chain_file(certificate_chain_file);
  c.use_private_key_file(private_key_file);
  return c;
}

tls_context::tls_context(tls_context&& other) noexcept
    : ctx_(std::exchange(other.ctx_, nullptr)), role_(other.role_) {}

tls_context& tls_context::operator=(tls_context&& other) noexcept {
  if (this != &other) {
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    ctx_ = std::exchange(other.ctx_, nullptr);
    role_ = other.role_;
  }
  return *this;
}

tls_context::~tls_context() {
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

namespace {
SSL_CTX* need(SSL_CTX* ctx, const char* what) {
  if (ctx == nullptr) {
    throw std::logic_error(std::string("tendril::net::tls_context::") + what +
                           ": an empty (moved-from) context");
  }
  ERR_clear_error();
  return ctx;
}

// check_key() makes sure a certificate and its key belong together, once both are there.
void check_key(SSL_CTX* ctx, const char* what, std::string_view arg) {
  if (SSL_CTX_get0_certificate(ctx) != nullptr && SSL_CTX_get0_privatekey(ctx) != nullptr &&
      SSL_CTX_check_private_key(ctx) != 1) {
    config_fail(what, arg, "the private key does not match the certificate");
  }
}
}  // namespace

void tls_context::load_verify_file(std::string_view ca_file) {
  SSL_CTX* ctx = need(ctx_, "load_verify_file");
  const std::string path(ca_file);
  if (SSL_CTX_load_verify_file(ctx, path.c_str()) != 1) config_fail("load_verify_file", ca_file);
}

void tls_context::load_verify_pem(std::string_view pem) {
  SSL_CTX* ctx = need(ctx_, "load_verify_pem");
  bio_ptr b = memory_bio(pem, "load_verify_pem");
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int count = 0;
  while (X509* x = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) {
    const int ok = X509_STORE_add_cert(store, x);
    X509_free(x);
    if (ok != 1) config_fail("load_verify_pem", "");
    ++count;
  }
  drop_pem_end();
  if (count == 0) config_fail("load_verify_pem", "", "no certificate in the PEM text");
  ERR_clear_error();
}

void tls_context::use_certificate_chain_file(std::string_view path) {
  SSL_CTX* ctx = need(ctx_, "use_certificate_chain_file");
  const std::string p(path);
  if (SSL_CTX_use_certificate_chain_file(ctx, p.c_str()) != 1) {
    config_fail("use_certificate_chain_file", path);
  }
  check_key(ctx, "use_certificate_chain_file", path);
}

void tls_context::use_private_key_file(std::string_view path) {
  SSL_CTX* ctx = need(ctx_, "use_private_key_file");
  const std::string p(path);
  if (SSL_CTX_use_PrivateKey_file(ctx, p.c_str(), SSL_FILETYPE_PEM) != 1) {
    config_fail("use_private_key_file", path);
  }
  check_key(ctx, "use_private_key_file", path);
}

void tls_context::use_certificate_chain_pem(std::string_view pem) {
  SSL_CTX* ctx = need(ctx_, "use_certificate_chain_pem");
  bio_ptr b = memory_bio(pem, "use_certificate_chain_pem");
  X509* leaf = PEM_read_bio_X509_AUX(b.get(), nullptr, nullptr, nullptr);
  if (leaf == nullptr)
    config_fail("use_certificate_chain_pem", "", "no certificate in the PEM text");
  const int ok = SSL_CTX_use_certificate(ctx, leaf);
  X509_free(leaf);
  if (ok != 1) config_fail("use_certificate_chain_pem", "");
  SSL_CTX_clear_chain_certs(ctx);
  while (X509* ca = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) {
    if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
      X509_free(ca);
      config_fail("use_certificate_chain_pem", "");
    }
  }
  drop_pem_end();
  ERR_clear_error();
  check_key(ctx, "use_certificate_chain_pem", "");
}

void tls_context::use_private_key_pem(std::string_view pem) {
  SSL_CTX* ctx = need(ctx_, "use_private_key_pem");
  bio_ptr b = memory_bio(pem, "use_private_key_pem");
  EVP_PKEY* key = PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) config_fail("use_private_key_pem", "", "no private key in the PEM text");
  const int ok = SSL_CTX_use_PrivateKey(ctx, key);
  EVP_PKEY_free(key);
  if (ok != 1) config_fail("use_private_key_pem", "");
  check_key(ctx, "use_private_key_pem", "");
}

void tls_context::require_client_certificate() {
  SSL_CTX_set_verify(need(ctx_, "require_client_certificate"),
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
}

void tls_context::insecure_disable_verification() {
  SSL_CTX_set_verify(need(ctx_, "insecure_disable_verification"), SSL_VERIFY_NONE, nullptr);
}

bool tls_context::verifies_peer() const noexcept {
  return ctx_ != nullptr && (SSL_CTX_get_verify_mode(ctx_) & SSL_VERIFY_PEER) != 0;
}

// --- tls_stream -----------------------------------------------------------------------------

tls_stream::tls_stream(tls_stream&& other) noexcept : st_(std::exchange(other.st_, nullptr)) {}

tls_stream& tls_stream::operator=(tls_stream&& other) noexcept {
  if (this != &other) {
    tls_stream gone(std::move(*this));
    st_ = std::exchange(other.st_, nullptr);
  }
  return *this;
}

tls_stream::~tls_stream() {
  if (st_ == nullptr) return;
  st_->sock.close();  // wakes the calls parked on it, if any
  if (st_->users > 0) {
    st_->orphaned = true;
  } else {
    delete st_;
  }
  st_ = nullptr;
}

tls_stream tls_stream::wrap(tcp_stream conn, const tls_context& ctx, std::string_view host,
                            bool is_client) {
  const char* what =
      is_client ? "tendril::net::tls_stream::client" : "tendril::net::tls_stream::server";
  if (ctx.native_handle() == nullptr) {
    throw std::invalid_argument(std::string(what) + ": an empty (moved-from) tls_context");
  }
  if ((ctx.side() == tls_context::role::client) != is_client) {
    throw std::invalid_argument(std::string(what) + ": a " + (is_client ? "server" : "client") +
                                " tls_context");
  }
  if (!conn.is_open()) {
    throw std::system_error(errno_code(EBADF), std::string(what) + ": the connection is closed");
  }
  if (host.find('\0') != std::string_view::npos) {
    throw std::invalid_argument(std::string(what) + ": a host name with a NUL character");
  }
  auto s = std::make_unique<state>();
  s->sock = std::move(conn);
  s->buffered = s->sock.take_buffered();
  s->host = std::string(host);
  address peer;
  *peer.size_ptr() = address::capacity();
  if (::getpeername(s->sock.native_handle(), peer.data(), peer.size_ptr()) == 0) {
    s->peer = peer.to_string();
  }
  ERR_clear_error();
  s->ssl = SSL_new(ctx.native_handle());
  if (s->ssl == nullptr) {
    throw std::system_error(errno_code(ENOMEM),
                            std::string(what) + ": SSL_new: " + openssl_errors());
  }
  BIO* bio = BIO_new(socket_bio_method());
  if (bio == nullptr) {
    throw std::system_error(errno_code(ENOMEM),
                            std::string(what) + ": BIO_new: " + openssl_errors());
  }
  BIO_set_data(bio, s.get());
  SSL_set_bio(s->ssl, bio, bio);
  if (is_client) {
    SSL_set_connect_state(s->ssl);
    const bool ip = is_ip_literal(host);
    // SNI carries names only (RFC 6066).
    if (!host.empty() && !ip &&
        SSL_ctrl(s->ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(s->host.c_str())) != 1) {
      throw std::invalid_argument(std::string(what) + ": cannot send the server name '" + s->host +
                                  "': " + openssl_errors());
    }
    if ((SSL_get_verify_mode(s->ssl) & SSL_VERIFY_PEER) != 0) {
      if (host.empty()) {
        throw std::invalid_argument(
            std::string(what) +
            ": a host name is needed to verify the server's certificate (or a tls_context "
            "without verification: insecure_disable_verification)");
      }
      X509_VERIFY_PARAM* param = SSL_get0_param(s->ssl);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      std::string name = s->host;
      if (ip && name.front() == '[') name = name.substr(1, name.size() - 2);
      const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                        : SSL_set1_host(s->ssl, name.c_str());
      if (ok != 1) {
        throw std::invalid_argument(std::string(what) + ": cannot verify the host name '" +
                                    s->host + "': " + openssl_errors());
      }
    }
  } else {
    SSL_set_accept_state(s->ssl);
  }
  ERR_clear_error();
  return tls_stream(s.release());
}

tls_stream tls_stream::client(tcp_stream conn, const tls_context& ctx, std::string_view host) {
  return wrap(std::move(conn), ctx, host, true);
}

tls_stream tls_stream::server(tcp_stream conn, const tls_context& ctx) {
  return wrap(std::move(conn), ctx, {}, false);
}

tls_stream tls_stream::connect_deadline(std::string_view host, std::uint16_t port,
                                        const tls_context& ctx, std::int64_t deadline_ns,
                                        std::error_code* ec) {
  if (ec != nullptr) ec->clear();
  tcp_stream conn = net::connect_deadline(host, port, deadline_ns, ec);  // throws without ec
  if (ec != nullptr && *ec) return {};
  tls_stream t = wrap(std::move(conn), ctx, host, true);
  state& s = *t.st_;
  use u(s);
  side_guard r(s, io_direction::read);
  side_guard w(s, io_direction::write);
  std::string why;
  const std::error_code e = handshake_op(s, deadline_ns, ec != nullptr ? nullptr : &why);
  if (!e) return t;
  if (ec != nullptr) {
    *ec = e;
    return {};
  }
  throw std::system_error(e, why);
}

tls_stream tls_stream::connect(std::string_view host, std::uint16_t port, const tls_context& ctx) {
  return connect_deadline(host, port, ctx, detail::forever_ns, nullptr);
}

tls_stream tls_stream::connect(std::string_view host, std::uint16_t port, const tls_context& ctx,
                               std::error_code& ec) {
  return connect_deadline(host, port, ctx, detail::forever_ns, &ec);
}

tls_stream tls_stream::accept(tcp_stream conn, const tls_context& ctx, std::error_code& ec) {
  // A closed connection is an I/O failure, reported here (listener.accept(ec) may have failed
  // just before); a wrong context stays a misuse and throws.
  if (!conn.is_open() && ctx.native_handle() != nullptr &&
      ctx.side() == tls_context::role::server) {
    ec = errno_code(EBADF);
    return {};
  }
  tls_stream t = server(std::move(conn), ctx);
  t.handshake(ec);
  if (ec) return {};
  return t;
}

tls_stream tls_stream::accept(tcp_stream conn, const tls_context& ctx) {
  tls_stream t = server(std::move(conn), ctx);
  t.handshake();
  return t;
}

void tls_stream::handshake(std::error_code& ec) {
  ec.clear();
  if (!check(st_, phase::handshake, ec, nullptr)) return;
  state& s = *st_;
  use u(s);
  side_guard r(s, io_direction::read);
  side_guard w(s, io_direction::write);
  ec = handshake_op(s, s.sock.call_deadline(), nullptr);
}

void tls_stream::handshake() {
  std::error_code ec;
  std::string why;
  if (check(st_, phase::handshake, ec, &why)) {
    state& s = *st_;
    use u(s);
    side_guard r(s, io_direction::read);
    side_guard w(s, io_direction::write);
    ec = handshake_op(s, s.sock.call_deadline(), &why);
  }
  if (ec) throw std::system_error(ec, why);
}

std::size_t tls_stream::recv(void* buf, std::size_t len, std::error_code& ec) {
  return recv_op(st_, buf, len, ec, nullptr);
}

std::size_t tls_stream::recv(void* buf, std::size_t len) {
  std::error_code ec;
  std::string why;
  const std::size_t n = recv_op(st_, buf, len, ec, &why);
  if (ec) throw std::system_error(ec, why);
  return n;
}

std::string tls_stream::recv(std::size_t max) {
  std::string s(max, '\0');
  s.resize(recv(s.data(), max));
  return s;
}

std::string tls_stream::recv(std::size_t max, std::error_code& ec) {
  std::string s(max, '\0');
  s.resize(recv(s.data(), max, ec));
  return s;
}

std::size_t tls_stream::recv_exact(void* buf, std::size_t len, std::error_code& ec) {
  return recv_exact_op(st_, buf, len, ec, nullptr);
}

void tls_stream::recv_exact(void* buf, std::size_t len) {
  std::error_code ec;
  std::string why;
  recv_exact_op(st_, buf, len, ec, &why);
  if (ec) throw std::system_error(ec, why);
}

std::string tls_stream::recv_exact(std::size_t len) {
  std::string s(len, '\0');
  recv_exact(s.data(), len);
  return s;
}

std::string tls_stream::recv_exact(std::size_t len, std::error_code& ec) {
  std::string s(len, '\0');
  s.resize(recv_exact(s.data(), len, ec));
  return s;
}

std::size_t tls_stream::send(const void* buf, std::size_t len, std::error_code& ec) {
  return send_op(st_, buf, len, ec, nullptr);
}

std::size_t tls_stream::send(const void* buf, std::size_t len) {
  std::error_code ec;
  std::string why;
  const std::size_t n = send_op(st_, buf, len, ec, &why);
  if (ec) throw std::system_error(ec, why);
  return n;
}

std::size_t tls_stream::send_all(const void* buf, std::size_t len, std::error_code& ec) {
  return send_all_op(st_, buf, len, ec, nullptr);
}

void tls_stream::send_all(const void* buf, std::size_t len) {
  std::error_code ec;
  std::string why;
  send_all_op(st_, buf, len, ec, &why);
  if (ec) throw std::system_error(ec, why);
}

void tls_stream::shutdown(std::error_code& ec) { shutdown_op(st_, ec, nullptr); }

void tls_stream::shutdown() {
  std::error_code ec;
  std::string why;
  shutdown_op(st_, ec, &why);
  if (ec) throw std::system_error(ec, why);
}

void tls_stream::close() noexcept {
  if (st_ != nullptr) st_->sock.close();
}

bool tls_stream::is_open() const noexcept { return st_ != nullptr && st_->sock.is_open(); }

bool tls_stream::handshake_done() const noexcept { return st_ != nullptr && st_->established; }

std::string tls_stream::peer_certificate_subject() const {
  if (st_ == nullptr || !st_->established) return {};
  X509* cert = SSL_get0_peer_certificate(st_->ssl);
  if (cert == nullptr) return {};
  bio_ptr b(BIO_new(BIO_s_mem()));
  if (!b) throw std::bad_alloc();
  X509_NAME_print_ex(b.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(b.get(), &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

std::string tls_stream::protocol() const {
  if (st_ == nullptr || !st_->established) return {};
  return SSL_get_version(st_->ssl);
}

std::string tls_stream::cipher() const {
  if (st_ == nullptr || !st_->established) return {};
  const char* name = SSL_get_cipher_name(st_->ssl);
  return name != nullptr ? name : "";
}

address tls_stream::local_address() const { return socket().local_address(); }
address tls_stream::peer_address() const { return socket().peer_address(); }

tcp_stream& tls_stream::socket() {
  if (st_ == nullptr) {
    throw std::logic_error(
        "tendril::net::tls_stream: no connection (an empty or moved-from stream)");
  }
  return st_->sock;
}

const tcp_stream& tls_stream::socket() const {
  if (st_ == nullptr) {
    throw std::logic_error(
        "tendril::net::tls_stream: no connection (an empty or moved-from stream)");
  }
  return st_->sock;
}

ssl_st* tls_stream::native_handle() const noexcept { return st_ != nullptr ? st_->ssl : nullptr; }

}  // namespace tendril::net
