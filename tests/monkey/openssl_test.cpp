// OpenSSL under the hooks: a TLS client and a TLS server in greenlets of one thread, each
// written as plain blocking OpenSSL (SSL_connect / SSL_accept / SSL_read / SSL_write on
// blocking sockets from socket(), accept() and connect()), with a self-signed certificate
// made at test time. Without the hooks the first blocking call would stop the thread, and
// with it the peer: every test here would hang.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;

namespace {

// --- a self-signed certificate for "localhost" and 127.0.0.1, made in memory --------------

EVP_PKEY* make_key() { return EVP_EC_gen("P-256"); }

X509* make_certificate(EVP_PKEY* key) {
  X509* x = X509_new();
  if (x == nullptr) return nullptr;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1"},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    if (ext == nullptr) {
      X509_free(x);
      return nullptr;
    }
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(x, key, EVP_sha256()) <= 0) {
    X509_free(x);
    return nullptr;
  }
  return x;
}

std::string ssl_errors() {
  std::string s;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    s += buf;
    s += "; ";
  }
  return s;
}

// --- plain blocking sockets ------------------------------------------------------------------

int listen_loopback(std::uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 128) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  port = ntohs(a.sin_port);
  return fd;
}

int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// --- blocking TLS helpers --------------------------------------------------------------------

// read_exactly() reads n bytes with SSL_read: true if all arrived.
bool read_exactly(SSL* s, void* buf, std::size_t n) {
  auto* p = static_cast<unsigned char*>(buf);
  while (n > 0) {
    const int chunk = static_cast<int>(std::min<std::size_t>(n, 1 << 20));
    const int r = SSL_read(s, p, chunk);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// read_to_end() reads until the peer's close_notify: "" and ok false on any other end.
std::string read_to_end(SSL* s, bool& ok) {
  std::string out;
  char buf[4096];
  while (true) {
    const int r = SSL_read(s, buf, sizeof buf);
    if (r > 0) {
      out.append(buf, static_cast<std::size_t>(r));
      continue;
    }
    ok = SSL_get_error(s, r) == SSL_ERROR_ZERO_RETURN;
    return out;
  }
}

bool write_all(SSL* s, const void* buf, std::size_t n) {
  // A blocking SSL_write (no SSL_MODE_ENABLE_PARTIAL_WRITE) returns only once all is written.
  return SSL_write(s, buf, static_cast<int>(n)) == static_cast<int>(n);
}

std::uint64_t fnv1a(const unsigned char* p, std::size_t n, std::uint64_t h = 1469598103934665603u) {
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211u;
  return h;
}

std::vector<unsigned char> pattern(std::size_t n, unsigned seed) {
  std::vector<unsigned char> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<unsigned char>(x);
  }
  return v;
}

// A ticker greenlet: counts while the others work.
struct ticker {
  int ticks = 0;
  bool done = false;
  tendril::task<void> t = spawn([this] {
    while (!done) {
      ++ticks;
      tendril::sleep(20ms);
    }
  });
  int stop() {
    done = true;
    t.join();
    return ticks;
  }
};

class openssl_hooked : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::signal(SIGPIPE, SIG_IGN);  // a peer that hangs up early fails a write, not the test
    tendril::monkey::patch_all();
    key_ = make_key();
    ASSERT_NE(key_, nullptr) << ssl_errors();
    cert_ = make_certificate(key_);
    ASSERT_NE(cert_, nullptr) << ssl_errors();

    server_ctx_ = SSL_CTX_new(TLS_server_method());
    ASSERT_NE(server_ctx_, nullptr);
    ASSERT_EQ(SSL_CTX_use_certificate(server_ctx_, cert_), 1) << ssl_errors();
    ASSERT_EQ(SSL_CTX_use_PrivateKey(server_ctx_, key_), 1) << ssl_errors();

    client_ctx_ = SSL_CTX_new(TLS_client_method());
    ASSERT_NE(client_ctx_, nullptr);
    SSL_CTX_set_verify(client_ctx_, SSL_VERIFY_PEER, nullptr);
    ASSERT_EQ(X509_STORE_add_cert(SSL_CTX_get_cert_store(client_ctx_), cert_), 1) << ssl_errors();

    // A client that trusts nothing: the handshake must fail verification.
    distrustful_ctx_ = SSL_CTX_new(TLS_client_method());
    ASSERT_NE(distrustful_ctx_, nullptr);
    SSL_CTX_set_verify(distrustful_ctx_, SSL_VERIFY_PEER, nullptr);
  }

  static void TearDownTestSuite() {
    SSL_CTX_free(distrustful_ctx_);
    SSL_CTX_free(client_ctx_);
    SSL_CTX_free(server_ctx_);
    X509_free(cert_);
    EVP_PKEY_free(key_);
    distrustful_ctx_ = client_ctx_ = server_ctx_ = nullptr;
    cert_ = nullptr;
    key_ = nullptr;
  }

  // client() connects, does the handshake checking the name "localhost": the SSL (owning fd),
  // or nullptr with ok false and why in `error`.
  static SSL* client(SSL_CTX* ctx, std::uint16_t port, std::string& error) {
    const int fd = connect_loopback(port);
    if (fd < 0) {
      error = std::string("connect: ") + std::strerror(errno);
      return nullptr;
    }
    SSL* s = SSL_new(ctx);
    SSL_set_fd(s, fd);
    SSL_set1_host(s, "localhost");
    // SSL_set_tlsext_host_name(), without the macro's old-style cast.
    SSL_ctrl(s, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>("localhost"));
    ERR_clear_error();
    const int r = SSL_connect(s);
    if (r != 1) {
      error = "SSL_connect: error " + std::to_string(SSL_get_error(s, r)) + ", verify " +
              X509_verify_cert_error_string(SSL_get_verify_result(s)) + ": " + ssl_errors();
      close_ssl(s);
      return nullptr;
    }
    return s;
  }

  // server() accepts the handshake on an accepted fd: the SSL, or nullptr.
  static SSL* server(int fd, std::string& error) {
    SSL* s = SSL_new(server_ctx_);
    SSL_set_fd(s, fd);
    ERR_clear_error();
    const int r = SSL_accept(s);
    if (r != 1) {
      error = "SSL_accept: error " + std::to_string(SSL_get_error(s, r)) + ": " + ssl_errors();
      close_ssl(s);
      return nullptr;
    }
    return s;
  }

  static void close_ssl(SSL* s) {
    const int fd = SSL_get_fd(s);
    SSL_free(s);
    ::close(fd);
  }

  static inline EVP_PKEY* key_ = nullptr;
  static inline X509* cert_ = nullptr;
  static inline SSL_CTX* server_ctx_ = nullptr;
  static inline SSL_CTX* client_ctx_ = nullptr;
  static inline SSL_CTX* distrustful_ctx_ = nullptr;
};

}  // namespace

// Every server greenlet holds its answer until all n requests have arrived: that can only
// happen if n handshakes and n blocking SSL_reads were under way at once in this one thread.
TEST_F(openssl_hooked, twenty_handshakes_and_exchanges_run_at_once_while_a_ticker_runs) {
  constexpr int n = 20;
  std::uint16_t port = 0;
  const int lfd = listen_loopback(port);
  ASSERT_GE(lfd, 0) << std::strerror(errno);

  ticker tick;
  tendril::event all_in;
  int requests_in = 0;
  int max_in_flight = 0;
  int in_flight = 0;
  std::vector<std::string> server_errors;
  std::vector<tendril::task<void>> handlers;
  const auto start = std::chrono::steady_clock::now();
  auto acceptor = spawn([&] {
    for (int i = 0; i < n; ++i) {
      const int c = ::accept(lfd, nullptr, nullptr);
      if (c < 0) {
        server_errors.push_back(std::string("accept: ") + std::strerror(errno));
        return;
      }
      handlers.push_back(spawn([&, c] {
        std::string err;
        SSL* s = server(c, err);
        if (s == nullptr) {
          server_errors.push_back(err);
          return;
        }
        char req[64] = {};
        const int r = SSL_read(s, req, sizeof req - 1);
        if (r <= 0) {
          server_errors.push_back("SSL_read failed");
          close_ssl(s);
          return;
        }
        ++in_flight;
        if (in_flight > max_in_flight) max_in_flight = in_flight;
        if (++requests_in == n) all_in.set();
        if (!all_in.wait_for(30s)) server_errors.push_back("not every request arrived");
        ::usleep(300'000);  // think time: plain libc, so the ticker must keep ticking
        const std::string answer = std::string("echo: ") + req;
        if (!write_all(s, answer.data(), answer.size())) server_errors.push_back("SSL_write");
        --in_flight;
        SSL_shutdown(s);
        close_ssl(s);
      }));
    }
  });

  std::vector<std::string> answers(n), client_errors(n);
  std::vector<tendril::task<void>> clients;
  for (int i = 0; i < n; ++i) {
    clients.push_back(spawn([&, i] {
      SSL* s = client(client_ctx_, port, client_errors[i]);
      if (s == nullptr) return;
      const std::string req = "hello " + std::to_string(i);
      if (!write_all(s, req.data(), req.size())) {
        client_errors[i] = "SSL_write: " + ssl_errors();
      } else {
        bool clean = false;
        answers[i] = read_to_end(s, clean);
        if (!clean) client_errors[i] = "no close_notify: " + ssl_errors();
      }
      SSL_shutdown(s);
      close_ssl(s);
    }));
  }
  tendril::joinall(clients);
  acceptor.join();
  tendril::joinall(handlers);
  const auto took = std::chrono::steady_clock::now() - start;
  const int ticks = tick.stop();
  ::close(lfd);

  for (const auto& e : server_errors) ADD_FAILURE() << "server: " << e;
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(client_errors[i], "") << "client " << i;
    EXPECT_EQ(answers[i], "echo: hello " + std::to_string(i));
  }
  EXPECT_EQ(max_in_flight, n);
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 10s);  // the think times one after the other alone would take 6 s
  EXPECT_GE(ticks, 5);
  std::printf("20 TLS exchanges: %.3f s, %d ticks\n", std::chrono::duration<double>(took).count(),
              ticks);
}

// Four connections each send 4 MiB and get 4 MiB back: SSL_write on a blocking socket whose
// buffer fills, while the reader is a greenlet of the same thread.
TEST_F(openssl_hooked, large_transfers_both_ways_arrive_whole) {
  constexpr int n = 4;
  constexpr std::size_t size = 4 << 20;
  std::uint16_t port = 0;
  const int lfd = listen_loopback(port);
  ASSERT_GE(lfd, 0) << std::strerror(errno);

  ticker tick;
  std::vector<std::string> server_errors;
  std::vector<tendril::task<void>> handlers;
  auto acceptor = spawn([&] {
    for (int i = 0; i < n; ++i) {
      const int c = ::accept(lfd, nullptr, nullptr);
      if (c < 0) {
        server_errors.push_back(std::string("accept: ") + std::strerror(errno));
        return;
      }
      handlers.push_back(spawn([&, c] {
        std::string err;
        SSL* s = server(c, err);
        if (s == nullptr) {
          server_errors.push_back(err);
          return;
        }
        std::uint32_t seed = 0;
        std::vector<unsigned char> in(size);
        if (!read_exactly(s, &seed, sizeof seed) || !read_exactly(s, in.data(), in.size())) {
          server_errors.push_back("short read: " + ssl_errors());
          close_ssl(s);
          return;
        }
        // The answer: the checksum of what came, then 4 MiB of the next seed's pattern.
        const std::uint64_t sum = fnv1a(in.data(), in.size());
        const auto out = pattern(size, seed + 1);
        if (!write_all(s, &sum, sizeof sum) || !write_all(s, out.data(), out.size()))
          server_errors.push_back("SSL_write: " + ssl_errors());
        SSL_shutdown(s);
        close_ssl(s);
      }));
    }
  });

  std::vector<std::string> client_errors(n);
  std::vector<std::uint64_t> sums_back(n);
  std::vector<bool> body_ok(n);
  std::vector<tendril::task<void>> clients;
  for (int i = 0; i < n; ++i) {
    clients.push_back(spawn([&, i] {
      SSL* s = client(client_ctx_, port, client_errors[i]);
      if (s == nullptr) return;
      const std::uint32_t seed = static_cast<std::uint32_t>(i) * 10;
      const auto out = pattern(size, seed);
      std::vector<unsigned char> in(size);
      if (!write_all(s, &seed, sizeof seed) || !write_all(s, out.data(), out.size())) {
        client_errors[i] = "SSL_write: " + ssl_errors();
      } else if (!read_exactly(s, &sums_back[i], sizeof sums_back[i]) ||
                 !read_exactly(s, in.data(), in.size())) {
        client_errors[i] = "short read: " + ssl_errors();
      } else {
        body_ok[i] = in == pattern(size, seed + 1);
      }
      SSL_shutdown(s);
      close_ssl(s);
    }));
  }
  tendril::joinall(clients);
  acceptor.join();
  tendril::joinall(handlers);
  const int ticks = tick.stop();
  ::close(lfd);

  for (const auto& e : server_errors) ADD_FAILURE() << "server: " << e;
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(client_errors[i], "") << "client " << i;
    const auto sent = pattern(size, static_cast<std::uint32_t>(i) * 10);
    EXPECT_EQ(sums_back[i], fnv1a(sent.data(), sent.size())) << "client " << i;
    EXPECT_TRUE(body_ok[i]) << "client " << i;
  }
  EXPECT_GE(ticks, 1);
}

// A certificate the client does not trust: SSL_connect fails with the verification error,
// and the server's SSL_accept sees the client's alert; both as plain OpenSSL reports them.
TEST_F(openssl_hooked, an_untrusted_certificate_fails_the_handshake_on_both_sides) {
  std::uint16_t port = 0;
  const int lfd = listen_loopback(port);
  ASSERT_GE(lfd, 0) << std::strerror(errno);
  std::string server_error = "(none)";
  bool accepted = false;
  auto srv = spawn([&] {
    const int c = ::accept(lfd, nullptr, nullptr);
    if (c < 0) return;
    accepted = true;
    SSL* s = server(c, server_error);
    if (s != nullptr) close_ssl(s);
  });
  std::string client_error;
  long verify = X509_V_OK;
  int ssl_error = 0;
  auto cli = spawn([&] {
    const int fd = connect_loopback(port);
    if (fd < 0) {
      client_error = "connect failed";
      return;
    }
    SSL* s = SSL_new(distrustful_ctx_);
    SSL_set_fd(s, fd);
    ERR_clear_error();
    const int r = SSL_connect(s);
    ssl_error = SSL_get_error(s, r);
    verify = SSL_get_verify_result(s);
    ERR_clear_error();
    close_ssl(s);
  });
  tendril::joinall(cli, srv);
  ::close(lfd);
  EXPECT_EQ(client_error, "");
  EXPECT_TRUE(accepted);
  EXPECT_EQ(ssl_error, SSL_ERROR_SSL);
  EXPECT_EQ(verify, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT)
      << X509_verify_cert_error_string(verify);
  EXPECT_NE(server_error.find("SSL_accept"), std::string::npos) << server_error;
}

// The server is a greenlet; the client is a thread that never used tendril, so its calls are
// OpenSSL's own blocking ones. The server greenlet runs while the test body waits in join().
TEST_F(openssl_hooked, a_client_in_a_thread_without_a_hub_talks_to_a_greenlet_server) {
  std::uint16_t port = 0;
  const int lfd = listen_loopback(port);
  ASSERT_GE(lfd, 0) << std::strerror(errno);
  std::string server_error;
  auto srv = spawn([&] {
    const int c = ::accept(lfd, nullptr, nullptr);
    if (c < 0) {
      server_error = "accept failed";
      return;
    }
    SSL* s = server(c, server_error);
    if (s == nullptr) return;
    char buf[64] = {};
    if (SSL_read(s, buf, sizeof buf - 1) > 0) {
      const std::string answer = std::string("echo: ") + buf;
      write_all(s, answer.data(), answer.size());
    }
    SSL_shutdown(s);
    close_ssl(s);
  });
  std::string answer, client_error;
  std::thread th([&] {
    SSL* s = client(client_ctx_, port, client_error);
    if (s == nullptr) return;
    write_all(s, "from a thread", 13);
    bool clean = false;
    answer = read_to_end(s, clean);
    SSL_shutdown(s);
    close_ssl(s);
    ERR_clear_error();
  });
  srv.join();
  th.join();
  ::close(lfd);
  EXPECT_EQ(server_error, "");
  EXPECT_EQ(client_error, "");
  EXPECT_EQ(answer, "echo: from a thread");
}
