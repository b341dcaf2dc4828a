// The lab's load generator (lab/load/) against small echo servers written here with plain
// blocking sockets, one thread per connection, which count every byte: the counts are
// exact (every byte sent is part of a whole message, and the server received exactly those),
// echoes that are wrong, repeated or cut short are errors, a rate paces the messages, a server
// that is not there is the run's error, and bad options are rejected before anything starts.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "load/load_generator.hpp"

using tendril::lab::load_options;
using tendril::lab::load_result;
using tendril::lab::run_load;

namespace {

// How the test server answers.
enum class behaviour {
  upper_case,     // the lab's service
  as_sent,        // a plain echo
  twice,          // every chunk echoed twice
  close_at_once,  // reads one chunk, then closes
};

// A counting echo server on 127.0.0.1: an accepting thread, and a thread per connection.
class counting_server {
 public:
  explicit counting_server(behaviour b) : behaviour_(b) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(listener_, 128), 0);
    socklen_t len = sizeof a;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  counting_server(const counting_server&) = delete;
  counting_server& operator=(const counting_server&) = delete;
  ~counting_server() { stop(); }

  std::uint16_t port() const { return port_; }

  // stop() stops accepting, then waits until every connection has been closed by the
  // client (the load generator closes them all before run_load() returns).
  void stop() {
    if (listener_ < 0) return;
    ::shutdown(listener_, SHUT_RDWR);  // wakes the blocked accept()
    acceptor_.join();
    ::close(listener_);
    listener_ = -1;
    std::lock_guard lock(mutex_);
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::uint64_t received() const { return received_; }
  std::uint64_t sent() const { return sent_; }
  std::size_t accepted() const { return accepted_; }

 private:
  void accept_loop() {
    while (true) {
      int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;
      }
      ++accepted_;
      std::lock_guard lock(mutex_);
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    char buf[16384];
    while (true) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      received_ += static_cast<std::uint64_t>(n);
      if (behaviour_ == behaviour::close_at_once) break;
      if (behaviour_ == behaviour::upper_case)
        for (ssize_t i = 0; i < n; ++i)
          buf[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(buf[i])));
      const int copies = behaviour_ == behaviour::twice ? 2 : 1;
      for (int c = 0; c < copies; ++c) {
        if (!send_all(fd, buf, static_cast<std::size_t>(n))) {
          ::close(fd);
          return;
        }
      }
    }
    ::close(fd);
  }

  bool send_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
      ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      sent_ += static_cast<std::uint64_t>(w);
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  behaviour behaviour_;
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<std::thread> workers_;
  std::atomic<std::uint64_t> received_{0}, sent_{0};
  std::atomic<std::size_t> accepted_{0};
};

load_options short_run(std::uint16_t port, std::size_t connections, std::size_t size) {
  load_options o;
  o.port = port;
  o.connections = connections;
  o.message_size = size;
  o.warmup_s = 0.1;
  o.seconds = 0.3;
  return o;
}

// A port nobody listens on (it was free a moment ago).
std::uint16_t closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

void expect_exact(const load_result& r, const counting_server& s, std::size_t size) {
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.errors, 0u);
  EXPECT_GT(r.messages, 0u);
  EXPECT_LE(r.messages, r.messages_total);
  EXPECT_EQ(r.messages_total * size, r.bytes_sent_total);
  EXPECT_EQ(s.received(), r.bytes_sent_total);
  EXPECT_EQ(s.sent(), r.bytes_sent_total);
}

// The most messages a paced run can complete in its window (see the paced tests).
double max_paced(const load_result& r, double rate, std::size_t connections) {
  const double window_s = r.msgs_per_s > 0 ? static_cast<double>(r.messages) / r.msgs_per_s : 0;
  return rate * (window_s + 0.010) + 2.0 * static_cast<double>(connections);
}

}  // namespace

TEST(load_generator, counts_every_message_and_byte_exactly) {
  counting_server server(behaviour::upper_case);
  load_options o = short_run(server.port(), 8, 100);
  o.server_pid = ::getpid();  // this process is the server: its CPU and status are readable
  load_result r = run_load(o);
  server.stop();
  EXPECT_EQ(r.connected, 8u);
  EXPECT_EQ(server.accepted(), 8u);
  expect_exact(r, server, 100);
  EXPECT_GT(r.msgs_per_s, 0);
  EXPECT_LE(r.p50_us, r.p99_us);
  EXPECT_LE(r.p99_us, r.p999_us);
  EXPECT_LE(r.p999_us, r.max_us);
  EXPECT_GT(r.mean_us, 0);
  EXPECT_LE(r.mean_us, r.max_us);
  EXPECT_GT(r.server_cpu_s, 0);     // read from /proc: 100 messages cost this process some
  EXPECT_GE(r.server_threads, 10);  // the test's main thread, the acceptor, 8 connections
  EXPECT_GT(r.server_rss_kib, 0u);
}

TEST(load_generator, a_rate_paces_the_messages_and_they_are_still_counted_exactly) {
  counting_server server(behaviour::upper_case);
  load_options o = short_run(server.port(), 4, 64);
  o.rate = 1000;
  o.seconds = 0.5;
  o.server_pid = ::getpid();
  load_result r = run_load(o);
  server.stop();
  expect_exact(r, server, 64);
  // The schedule caps the window: the messages due in it and in the 10 ms of catch-up
  // before it, plus two per connection (one in flight when it opened, one at its edge). The
  // threaded server here answers in microseconds, so at least a quarter of the offered rate
  // comes even on a loaded machine; unpaced, it does tens of thousands.
  EXPECT_LE(r.messages, max_paced(r, 1000, 4));
  EXPECT_GE(r.msgs_per_s, 250);
  EXPECT_GE(r.server_cpu_pct, 0);  // /proc counts 10 ms ticks: a light paced run may show 0
}

TEST(load_generator, one_paced_connection_keeps_a_rate_finer_than_a_millisecond) {
  counting_server server(behaviour::upper_case);
  load_options o = short_run(server.port(), 1, 64);
  o.rate = 4000;  // one message every 250 µs on the one connection
  o.seconds = 0.5;
  load_result r = run_load(o);
  server.stop();
  expect_exact(r, server, 64);
  EXPECT_LE(r.messages, max_paced(r, 4000, 1));
  EXPECT_GE(r.msgs_per_s, 1000);  // not one per millisecond tick: the waits are finer
}

TEST(load_generator, messages_larger_than_socket_buffers_are_counted_exactly) {
  counting_server server(behaviour::upper_case);
  const std::size_t size = 1 << 20;  // written and read in many pieces
  load_result r = run_load(short_run(server.port(), 2, size));
  server.stop();
  expect_exact(r, server, size);
}

TEST(load_generator, one_byte_messages_are_counted_exactly) {
  counting_server server(behaviour::upper_case);
  load_result r = run_load(short_run(server.port(), 3, 1));
  server.stop();
  expect_exact(r, server, 1);
}

TEST(load_generator, an_echo_as_sent_passes_when_upper_case_is_off) {
  counting_server server(behaviour::as_sent);
  load_options o = short_run(server.port(), 4, 64);
  o.upper_case = false;
  load_result r = run_load(o);
  server.stop();
  expect_exact(r, server, 64);
}

TEST(load_generator, an_echo_that_is_not_upper_cased_is_an_error) {
  counting_server server(behaviour::as_sent);
  load_result r = run_load(short_run(server.port(), 4, 64));
  server.stop();
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.connected, 4u);
  EXPECT_EQ(r.errors, 4u);  // each connection is given up at its first wrong echo
  EXPECT_EQ(r.messages_total, 0u);
  EXPECT_EQ(r.messages, 0u);
}

TEST(load_generator, an_echo_repeated_is_an_error) {
  counting_server server(behaviour::twice);
  load_result r = run_load(short_run(server.port(), 2, 64));
  server.stop();
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.errors, 2u);
}

TEST(load_generator, connections_the_server_closes_are_errors) {
  counting_server server(behaviour::close_at_once);
  const auto t0 = std::chrono::steady_clock::now();
  load_options o = short_run(server.port(), 3, 64);
  o.seconds = 5;  // every connection lost ends the run early
  load_result r = run_load(o);
  server.stop();
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.errors, 3u);
  EXPECT_EQ(r.messages_total, 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(4));
}

TEST(load_generator, no_server_is_the_runs_error_not_an_exception) {
  load_result r = run_load(short_run(closed_port(), 2, 64));
  EXPECT_NE(r.error.find("cannot connect to 127.0.0.1:"), std::string::npos) << r.error;
  EXPECT_EQ(r.connected, 0u);
  EXPECT_EQ(r.messages_total, 0u);
}

TEST(load_generator, an_unknown_host_is_the_runs_error) {
  load_options o = short_run(9, 1, 64);
  o.host = "no-such-host.invalid";
  load_result r = run_load(o);
  EXPECT_NE(r.error.find("cannot resolve 'no-such-host.invalid'"), std::string::npos) << r.error;
}

TEST(load_generator, bad_options_are_rejected) {
  const std::uint16_t port = closed_port();
  auto rejects = [&](load_options o, const std::string& words) {
    try {
      run_load(o);
      ADD_FAILURE() << "accepted options that should be rejected (" << words << ")";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  load_options o = short_run(port, 1, 64);
  o.connections = 0;
  rejects(o, "connections must be at least 1");
  o = short_run(port, 1, 0);
  rejects(o, "message size");
  o = short_run(0, 1, 64);
  rejects(o, "port");
  o = short_run(port, 1, 64);
  o.seconds = 0;
  rejects(o, "window");
  o = short_run(port, 1, 64);
  o.warmup_s = -1;
  rejects(o, "warm-up");
  o = short_run(port, 1, 64);
  o.rate = -1;
  rejects(o, "rate");
  o.rate = std::numeric_limits<double>::quiet_NaN();
  rejects(o, "rate");
  o.rate = 1e-6;
  rejects(o, "rate is below one message in 1,000 s");
  // A server pid that names no process: nothing to measure (it reported zeros before).
  o = short_run(port, 1, 64);
  o.server_pid = std::numeric_limits<int>::max();
  rejects(o, "no process");
  rlimit rl{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_max != RLIM_INFINITY) {
    o = short_run(port, static_cast<std::size_t>(rl.rlim_max), 64);
    rejects(o, "RLIMIT_NOFILE");
  }
}
