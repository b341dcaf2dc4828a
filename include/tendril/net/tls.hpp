// tendril::net TLS on OpenSSL 3 (gevent.ssl): tls_context holds certificates and the
// verification policy, tls_stream is a TLS connection over a tcp_stream whose blocking calls
// block only the calling greenlet.
//
// A client context verifies the server's certificate by default, against the system's trust
// store and for the host name the stream was opened for; turning that off takes a call named
// insecure_disable_verification(). TLS 1.2 is the oldest version either side accepts.
//
// tls_stream follows tcp_stream's conventions: every blocking call can switch, honours the
// socket's timeout (set_timeout) and the greenlet's timeout scopes, and throws
// std::system_error, with a twin taking a std::error_code& that reports failures there instead
// (a kill or a timeout scope still propagates through it). TLS failures carry
// net::errc::tls_handshake, tls_verify or tls_protocol and a message with OpenSSL's reason and
// the peer's address; failures of the connection itself carry the errno value (ECONNRESET,
// EPIPE, ETIMEDOUT for a timeout). One greenlet may read while another writes; a second reader
// (or writer) at the same time gets std::logic_error naming the greenlet in the way. A stream
// belongs to the thread that made it. Nothing here raises SIGPIPE.
#ifndef TENDRIL_NET_TLS_HPP
#define TENDRIL_NET_TLS_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "tendril/hub/deadline.hpp"
#include "tendril/net/address.hpp"
#include "tendril/net/error.hpp"
#include "tendril/net/socket.hpp"

// OpenSSL's SSL_CTX and SSL, for native_handle() (this header does not include OpenSSL's).
struct ssl_ctx_st;
struct ssl_st;

namespace tendril::net {

// tls_context: the settings TLS streams are made with (OpenSSL's SSL_CTX). A change affects
// the streams made afterwards. Configure it before sharing it; then any number of streams, on
// any threads, may use it at once. Move-only; a stream keeps what it needs of its context, so
// the context may go before its streams. The configuration calls throw std::system_error with
// OpenSSL's reason and the path in the message (the errno value when the file could not be
// read, EINVAL when its contents were refused).
class tls_context {
 public:
  enum class role { client, server };

  // client() verifies the peer's certificate chain against the system's trust store
  // (SSL_CTX_set_default_verify_paths) and its name against the host the stream is for.
  static tls_context client();
  // server() needs a certificate and its private key before it can accept; it does not ask
  // clients for certificates (require_client_certificate() makes it). The second form loads
  // both files.
  static tls_context server();
  static tls_context server(std::string_view certificate_chain_file,
                            std::string_view private_key_file);

  tls_context(tls_context&& other) noexcept;
  tls_context& operator=(tls_context&& other) noexcept;
  tls_context(const tls_context&) = delete;
  tls_context& operator=(const tls_context&) = delete;
  ~tls_context();

  // load_verify_file() trusts the CA certificates in a PEM file as well (the system's stay
  // trusted); load_verify_pem() takes the PEM text itself.
  void load_verify_file(std::string_view ca_file);
  void load_verify_pem(std::string_view pem);

  // use_certificate_chain_file() sets this side's certificate (a PEM file: the certificate
  // first, then the intermediates); use_private_key_file() its key (PEM), which must match
  // the certificate. The _pem forms take the PEM text.
  void use_certificate_chain_file(std::string_view path);
  void use_private_key_file(std::string_view path);
  void use_certificate_chain_pem(std::string_view pem);
  void use_private_key_pem(std::string_view pem);

  // require_client_certificate() makes a server refuse clients without a certificate that
  // verifies against its trusted CAs (load_verify_file).
  void require_client_certificate();

  // insecure_disable_verification() accepts any certificate for any name: the connection is
  // encrypted but anyone in the middle can read it. For tests and closed networks only.
  void insecure_disable_verification();

  // verifies_peer() tells whether peers' certificates are checked.
  bool verifies_peer() const noexcept;
  role side() const noexcept { return role_; }

  // native_handle() is the SSL_CTX, for settings this class does not cover.
  ssl_ctx_st* native_handle() const noexcept { return ctx_; }

 private:
  explicit tls_context(role r);
  ssl_ctx_st* ctx_ = nullptr;
  role role_ = role::client;
};

// tls_stream: a TLS connection over a connected tcp_stream, which it owns.
class tls_stream {
 public:
  tls_stream() noexcept = default;
  tls_stream(tls_stream&& other) noexcept;
  tls_stream& operator=(tls_stream&& other) noexcept;
  tls_stream(const tls_stream&) = delete;
  tls_stream& operator=(const tls_stream&) = delete;
  // ~tls_stream() closes it (as close()).
  ~tls_stream();

  // connect() opens a TCP connection to host:port (net::connect) and makes the client
  // handshake, sending host as the server name (SNI, unless host is an IP address) and
  // checking the certificate against it. The limit form bounds the whole of it. Switches:
  // yes. Throws std::system_error: the errno value for the TCP part, tls_verify when the
  // certificate does not verify, tls_handshake for other handshake failures.
  static tls_stream connect(std::string_view host, std::uint16_t port, const tls_context& ctx);
  static tls_stream connect(std::string_view host, std::uint16_t port, const tls_context& ctx,
                            std::error_code& ec);
  template <class Rep, class Period>
  static tls_stream connect(std::string_view host, std::uint16_t port, const tls_context& ctx,
                            std::chrono::duration<Rep, Period> limit) {
    return connect_deadline(host, port, ctx, detail::deadline_after(limit), nullptr);
  }
  template <class Rep, class Period>
  static tls_stream connect(std::string_view host, std::uint16_t port, const tls_context& ctx,
                            std::chrono::duration<Rep, Period> limit, std::error_code& ec) {
    return connect_deadline(host, port, ctx, detail::deadline_after(limit), &ec);
  }
  static tls_stream connect_deadline(std::string_view host, std::uint16_t port,
                                     const tls_context& ctx, std::int64_t deadline_ns,
                                     std::error_code* ec);

  // accept() makes the server handshake on a connection a listener accepted. Switches: yes.
  // Throws as connect() (tls_verify when the client's certificate does not verify).
  static tls_stream accept(tcp_stream conn, const tls_context& ctx);
  static tls_stream accept(tcp_stream conn, const tls_context& ctx, std::error_code& ec);

  // client() and server() wrap a connection without handshaking yet: handshake() does it, or
  // the first recv or send. host is the name the server's certificate must carry (it may be
  // empty only when ctx does not verify). Switches: no. Throws std::invalid_argument for a
  // missing host, std::bad_alloc.
  static tls_stream client(tcp_stream conn, const tls_context& ctx, std::string_view host);
  static tls_stream server(tcp_stream conn, const tls_context& ctx);

  // handshake() makes the TLS handshake (at once if it was made). Switches: yes.
  void handshake();
  void handshake(std::error_code& ec);

  // recv() reads what is there (at least one byte, waiting for it) up to len; 0 means the
  // peer ended the TLS session (close_notify). A peer that closes the connection without
  // close_notify could be an attacker cutting the data short: that is net::errc::tls_protocol.
  // Switches: yes.
  std::size_t recv(void* buf, std::size_t len);
  std::size_t recv(void* buf, std::size_t len, std::error_code& ec);
  std::string recv(std::size_t max);
  std::string recv(std::size_t max, std::error_code& ec);
  // recv_exact() reads exactly len bytes; an end of the session first is errc::end_of_stream.
  // The twins return what was read before a failure (in buf, or the string).
  void recv_exact(void* buf, std::size_t len);
  std::size_t recv_exact(void* buf, std::size_t len, std::error_code& ec);
  std::string recv_exact(std::size_t len);
  std::string recv_exact(std::size_t len, std::error_code& ec);

  // send() encrypts and sends up to one TLS record (16 KiB) of buf, waiting for room, and
  // returns how much of buf it took. A send cut short by a timeout or a kill may still
  // deliver the record it had started, before the data of the next send; the error_code
  // twins count that record as taken (send() returns its size with timed_out).
  std::size_t send(const void* buf, std::size_t len);
  std::size_t send(const void* buf, std::size_t len, std::error_code& ec);
  std::size_t send(std::string_view data) { return send(data.data(), data.size()); }
  std::size_t send(std::string_view data, std::error_code& ec) {
    return send(data.data(), data.size(), ec);
  }
  // send_all() sends all of it, waiting as needed; the twin returns how much it sent before
  // a failure.
  void send_all(const void* buf, std::size_t len);
  std::size_t send_all(const void* buf, std::size_t len, std::error_code& ec);
  void send_all(std::string_view data) { send_all(data.data(), data.size()); }
  std::size_t send_all(std::string_view data, std::error_code& ec) {
    return send_all(data.data(), data.size(), ec);
  }

  // shutdown() sends close_notify, telling the peer that nothing more follows (its recv then
  // returns 0), and returns without waiting for the peer's own close_notify: this side may
  // still recv. Sending again after it is an error. ENOTCONN before the handshake.
  // Switches: yes.
  void shutdown();
  void shutdown(std::error_code& ec);

  // close() closes the connection without close_notify (call shutdown() first for a clean
  // end), waking every greenlet waiting on the stream with EBADF. Switches: no.
  void close() noexcept;
  bool is_open() const noexcept;

  // peer_certificate_subject() is the subject of the peer's certificate
  // ("CN=localhost,O=Example", RFC 2253), empty if the peer sent none or before the
  // handshake. protocol() is the version negotiated ("TLSv1.3"), cipher() the cipher suite.
  std::string peer_certificate_subject() const;
  std::string protocol() const;
  std::string cipher() const;
  // handshake_done() tells whether the handshake completed.
  bool handshake_done() const noexcept;

  // set_timeout() limits each blocking call on this stream (a handshake, one recv, one send)
  // to d; clear_timeout() removes the limit (the default). Time running out is
  // std::errc::timed_out; the stream stays usable.
  template <class Rep, class Period>
  void set_timeout(std::chrono::duration<Rep, Period> d) {
    socket().set_timeout(d);
  }
  void clear_timeout() { socket().clear_timeout(); }

  address local_address() const;
  address peer_address() const;

  // socket() is the TCP connection underneath, for its options; reading or writing it
  // directly would corrupt the TLS session.
  tcp_stream& socket();
  const tcp_stream& socket() const;
  // native_handle() is OpenSSL's SSL, null for a stream without one.
  ssl_st* native_handle() const noexcept;

  struct state;  // the session, on the heap: calls parked on it keep it alive (tls.cpp)

 private:
  explicit tls_stream(state* s) noexcept : st_(s) {}
  static tls_stream wrap(tcp_stream conn, const tls_context& ctx, std::string_view host,
                         bool is_client);
  state* st_ = nullptr;
};

}  // namespace tendril::net

#endif
