// The I/O models lab (lab/iomodels/): every model's server, run in a child process on a
// listener made here, must echo upper-cased, keep every byte in order through partial
// sends, serve many connections at once and survive a client that leaves mid-message. Then
// the two models with a limit of their own: the signal model when its signal queue
// overflows, select beyond FD_SETSIZE.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "iomodels/model.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using tendril::lab::find_model;
using tendril::lab::model;
using tendril::lab::serve_options;

// Generous: the machine may be loaded, and a model that hangs fails the test rather than
// the whole run.
constexpr auto exchange_limit = 60s;

std::string upper(std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return s;
}

// A message of n bytes mixing lower case, upper case, digits and punctuation.
std::string message(std::size_t n, unsigned seed) {
  static const char alphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;!?-\n";
  std::string s(n, ' ');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = alphabet[(i * 7 + seed * 13 + i / 11) % (sizeof alphabet - 1)];
  return s;
}

// A listener on 127.0.0.1 (any port), as `tendril serve-model` makes it.
int make_listener(std::uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
      ::listen(fd, 4096) < 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
    std::perror("listener");
    return -1;
  }
  port = ntohs(addr.sin_port);
  return fd;
}

// server_process: a model serving in a child process, killed (SIGKILL) and reaped when it
// goes out of scope, so that no child outlives a failed test. The child dies with this
// process too (PR_SET_PDEATHSIG). in_child runs in the child before serve().
class server_process {
 public:
  server_process(const model& m, serve_options o, const std::function<void()>& in_child = {},
                 bool capture_stderr = false) {
    int listener = make_listener(port_);
    if (listener < 0) return;
    int err[2] = {-1, -1};
    if (capture_stderr && ::pipe2(err, O_CLOEXEC) < 0) return;
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(5);
      if (capture_stderr) ::dup2(err[1], 2);
      // The child keeps stdin, stdout, stderr and the listener (as 3): select's limit
      // counts on it.
      ::dup2(listener, 3);
      ::close_range(4, ~0U, 0);
      if (in_child) in_child();
      o.listen_fd = 3;
      try {
        m.serve(o);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "serve() threw: %s\n", e.what());
        ::_exit(3);
      }
      ::_exit(4);
    }
    ::close(listener);
    if (capture_stderr) {
      ::close(err[1]);
      err_ = err[0];
    }
  }
  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;
  ~server_process() {
    stop();
    if (err_ >= 0) ::close(err_);
  }

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  std::uint16_t port() const { return port_; }

  // state() says whether the child still runs, for failure messages.
  std::string state() {
    if (pid_ <= 0) return "not started";
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == 0) return "running";
    pid_ = -1;
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    return std::string("killed by ") + ::strsignal(WTERMSIG(status));
  }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  // stderr_text() kills the child and returns what it wrote on stderr (capture_stderr).
  std::string stderr_text() {
    stop();
    std::string text;
    char buf[4096];
    ssize_t n;
    while (err_ >= 0 && (n = ::read(err_, buf, sizeof buf)) > 0)
      text.append(buf, static_cast<std::size_t>(n));
    return text;
  }

 private:
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  int err_ = -1;
};

// A connected client socket, or -1. rcvbuf > 0 makes its receive buffer small (before
// connecting, so that the window is small from the start): the server's sends then fill it
// and stop part way.
int connect_to(std::uint16_t port, int rcvbuf = 0) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    ::close(fd);
    return -1;
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

// One client's exchange: send out (all of it, as fast as the socket takes it), read until
// out.size() bytes came back or the server closed.
struct exchange {
  int fd = -1;
  std::string out;
  // Read nothing until a send would block or is short (or all is sent): the server's output
  // piles up.
  bool hold_reads = false;
  std::size_t sent = 0;
  std::string in;
  bool closed = false;  // end of stream or an error before the whole echo
  bool done() const { return closed || in.size() >= out.size(); }
};

// run() drives every exchange at once with poll(); false if the limit ran out first.
bool run(std::vector<exchange*> xs, clock_type::duration limit = exchange_limit) {
  const auto deadline = clock_type::now() + limit;
  std::vector<pollfd> fds;
  std::vector<exchange*> live;
  while (true) {
    fds.clear();
    live.clear();
    const int timeout_ms = 100;
    for (exchange* x : xs) {
      if (x->done()) continue;
      short events = 0;
      if (x->sent < x->out.size()) events |= POLLOUT;
      if (!x->hold_reads) events |= POLLIN;
      fds.push_back({x->fd, events, 0});
      live.push_back(x);
    }
    if (live.empty()) return true;
    if (clock_type::now() >= deadline) return false;
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) return false;
    for (std::size_t i = 0; i < live.size(); ++i) {
      exchange& x = *live[i];
      if (fds[i].revents & POLLOUT) {
        const std::size_t want = x.out.size() - x.sent;
        ssize_t n = ::send(x.fd, x.out.data() + x.sent, want, MSG_NOSIGNAL);
        if (n > 0) x.sent += static_cast<std::size_t>(n);
        if (n < 0 && errno != EAGAIN) x.closed = true;
        // A short send means the send buffer is full just as EAGAIN does: poll() will not
        // say POLLOUT again until the server reads, and it may be waiting for us to read.
        if ((n < 0 && errno == EAGAIN) || (n >= 0 && static_cast<std::size_t>(n) < want) ||
            x.sent == x.out.size())
          x.hold_reads = false;
      }
      if ((fds[i].events & POLLIN) && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        char buf[64 * 1024];
        ssize_t n = ::recv(x.fd, buf, sizeof buf, 0);
        if (n > 0) x.in.append(buf, static_cast<std::size_t>(n));
        if (n == 0 || (n < 0 && errno != EAGAIN)) x.closed = true;
      }
    }
  }
}

bool run(exchange& x) { return run(std::vector<exchange*>{&x}); }

// An exchange on a new connection.
exchange connect_and_say(std::uint16_t port, std::string out) {
  exchange x;
  x.fd = connect_to(port);
  x.out = std::move(out);
  return x;
}

struct closer {
  std::vector<int> fds;
  ~closer() {
    for (int fd : fds) ::close(fd);
  }
};

class iomodel : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    m_ = find_model(GetParam());
    ASSERT_NE(m_, nullptr);
    if (std::string why = m_->unsupported(); !why.empty()) GTEST_SKIP() << why;
    server_ = std::make_unique<server_process>(*m_, serve_options{});
    ASSERT_TRUE(server_->started());
  }

  // How many connections a test may hold at once: want, or the model's own limit.
  std::size_t at_most(std::size_t want) const {
    const std::size_t limit = m_->max_connections(serve_options{});
    return limit == 0 ? want : std::min(want, limit);
  }

  const model* m_ = nullptr;
  std::unique_ptr<server_process> server_;
};

TEST_P(iomodel, echoes_upper_cased) {
  exchange x = connect_and_say(server_->port(), "hello, World 123!\n");
  closer c{{x.fd}};
  ASSERT_GE(x.fd, 0);
  ASSERT_TRUE(run(x)) << "no echo within the limit; the server is " << server_->state();
  EXPECT_FALSE(x.closed) << "the server is " << server_->state();
  EXPECT_EQ(x.in, "HELLO, WORLD 123!\n");
}

TEST_P(iomodel, keeps_message_boundaries_through_partial_sends) {
  // Messages of different sizes back to back. The client's receive buffer is small and it
  // reads nothing until its own sends block, so the server's output piles up: its sends
  // stop part way and it must wait for room. On loopback a socket's send buffer starts at
  // about 2.6 MB (ten segments of 64 KB, doubled), hence the 3 MB messages.
  const std::size_t sizes[] = {1,       13,        1000,          100 * 1024, 7, 100 * 1024 + 3,
                               3 << 20, 64 * 1024, (3 << 20) + 5, 2};
  std::vector<std::string> messages;
  exchange x;
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    messages.push_back(message(sizes[i], static_cast<unsigned>(i)));
    x.out += messages.back();
  }
  x.fd = connect_to(server_->port(), 4096);
  closer c{{x.fd}};
  ASSERT_GE(x.fd, 0);
  x.hold_reads = true;
  ASSERT_TRUE(run(x)) << "got " << x.in.size() << " of " << x.out.size() << " bytes; the server is "
                      << server_->state();
  ASSERT_FALSE(x.closed) << "closed after " << x.in.size() << " bytes";
  std::size_t at = 0;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    ASSERT_EQ(x.in.substr(at, messages[i].size()), upper(messages[i])) << "message " << i;
    at += messages[i].size();
  }
  EXPECT_EQ(at, x.in.size());
}

TEST_P(iomodel, serves_many_connections_at_once) {
  const std::size_t n = at_most(50);
  std::vector<exchange> xs(n);
  closer c;
  for (std::size_t i = 0; i < n; ++i) {
    xs[i].fd = connect_to(server_->port());
    ASSERT_GE(xs[i].fd, 0) << "connection " << i;
    c.fds.push_back(xs[i].fd);
    // Three messages back to back, a different mix on each connection.
    for (unsigned k = 0; k < 3; ++k) xs[i].out += message(10 + (i * 977 + k * 4099) % 20000, k);
  }
  std::vector<exchange*> all;
  for (auto& x : xs) all.push_back(&x);
  ASSERT_TRUE(run(all)) << "the server is " << server_->state();
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_FALSE(xs[i].closed) << "connection " << i << " closed; the server is "
                               << server_->state();
    ASSERT_EQ(xs[i].in, upper(xs[i].out)) << "connection " << i;
  }
}

TEST_P(iomodel, a_client_leaving_mid_message_does_not_disturb_the_others) {
  const std::size_t others = at_most(6) - 3;  // room for two leavers and a latecomer
  std::vector<exchange> xs(others);
  closer c;
  std::vector<exchange*> all;
  for (std::size_t i = 0; i < others; ++i) {
    xs[i] = connect_and_say(server_->port(), message(5000, static_cast<unsigned>(i)));
    ASSERT_GE(xs[i].fd, 0);
    c.fds.push_back(xs[i].fd);
    all.push_back(&xs[i]);
  }
  ASSERT_TRUE(run(all)) << "the server is " << server_->state();

  // One leaves with a close (a FIN, its unread echo then gets a reset), one with a reset
  // (SO_LINGER 0), both half way through a message the server is echoing.
  for (bool reset : {false, true}) {
    int fd = connect_to(server_->port(), 4096);
    ASSERT_GE(fd, 0);
    std::string half = message(200 * 1024, 9);
    std::size_t sent = 0;
    const auto until = clock_type::now() + 100ms;
    while (sent < half.size() / 2 && clock_type::now() < until) {
      ssize_t n = ::send(fd, half.data() + sent, half.size() / 2 - sent, MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<std::size_t>(n);
    }
    if (reset) {
      linger l{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    ::close(fd);
  }

  for (std::size_t i = 0; i < others; ++i) {
    xs[i].out += message(70 * 1024, static_cast<unsigned>(i + 1));
  }
  exchange latecomer = connect_and_say(server_->port(), "still there?");
  ASSERT_GE(latecomer.fd, 0);
  c.fds.push_back(latecomer.fd);
  all.push_back(&latecomer);
  ASSERT_TRUE(run(all)) << "the server is " << server_->state();
  for (std::size_t i = 0; i < others; ++i) {
    ASSERT_FALSE(xs[i].closed) << "connection " << i;
    EXPECT_EQ(xs[i].in, upper(xs[i].out)) << "connection " << i;
  }
  EXPECT_EQ(latecomer.in, "STILL THERE?");
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const model& m : tendril::lab::models()) names.emplace_back(m.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(all, iomodel, testing::ValuesIn(model_names()),
                         [](const testing::TestParamInfo<std::string>& p) {
                           std::string s = p.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

TEST(iomodels, are_listed_in_the_seeds_order) {
  std::vector<std::string> want = {"threads",  "thread-pool",      "nonblocking",   "select",
                                   "poll",     "epoll-lt",         "epoll-et",      "signal",
                                   "io_uring", "tendril-io_uring", "tendril-epoll", "tendril-poll"};
  EXPECT_EQ(model_names(), want);
  for (const model& m : tendril::lab::models()) {
    EXPECT_FALSE(m.summary.empty()) << m.name;
    EXPECT_TRUE(m.source.starts_with("lab/iomodels/")) << m.name;
    EXPECT_EQ(find_model(m.name), &m);
  }
  EXPECT_EQ(find_model("nonesuch"), nullptr);
  EXPECT_EQ(find_model("thread-pool")->max_connections(serve_options{}), 8u);
  serve_options three;
  three.threads = 3;
  EXPECT_EQ(find_model("thread-pool")->max_connections(three), 3u);
}

// The signal model with a queue of 4 real-time signals (RLIMIT_SIGPENDING): the child is
// stopped while 100 connections send at once, so their signals pile up and overflow; the
// kernel then sends SIGIO, and the server must find every connection's data by itself.
TEST(iomodels, signal_model_survives_an_overflowing_signal_queue) {
  const model* m = find_model("signal");
  ASSERT_NE(m, nullptr);
  auto small_queue = [] {
    rlimit r{4, 4};
    if (::setrlimit(RLIMIT_SIGPENDING, &r) < 0) ::_exit(6);
  };
  server_process server(*m, serve_options{}, small_queue, true);
  ASSERT_TRUE(server.started());
  constexpr std::size_t n = 100;
  std::vector<exchange> xs(n);
  std::vector<exchange*> all;
  closer c;
  for (std::size_t i = 0; i < n; ++i) {
    xs[i] = connect_and_say(server.port(), "first " + std::to_string(i));
    ASSERT_GE(xs[i].fd, 0);
    c.fds.push_back(xs[i].fd);
    all.push_back(&xs[i]);
  }
  // Every connection served once: each is accepted and armed.
  ASSERT_TRUE(run(all)) << "the server is " << server.state();
  for (auto& x : xs) ASSERT_EQ(x.in, upper(x.out));

  ASSERT_EQ(::kill(server.pid(), SIGSTOP), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(server.pid(), &status, WUNTRACED), server.pid());
  ASSERT_TRUE(WIFSTOPPED(status));
  for (auto& x : xs) {
    x.out += "and then " + std::to_string(x.fd);
    ssize_t k = ::send(x.fd, x.out.data() + x.sent, x.out.size() - x.sent, MSG_NOSIGNAL);
    ASSERT_GT(k, 0);
    x.sent += static_cast<std::size_t>(k);
  }
  ASSERT_EQ(::kill(server.pid(), SIGCONT), 0);
  ASSERT_TRUE(run(all)) << "the server is " << server.state();
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_FALSE(xs[i].closed) << "connection " << i;
    EXPECT_EQ(xs[i].in, upper(xs[i].out)) << "connection " << i;
  }
  EXPECT_NE(server.stderr_text().find("signal queue overflowed"), std::string::npos)
      << "the queue did not overflow: the test did not test the overflow";
}

// select() cannot watch a descriptor numbered FD_SETSIZE or more: the server must close
// such connections, and go on serving the others.
TEST(iomodels, select_refuses_connections_beyond_its_limit) {
  const model* m = find_model("select");
  ASSERT_NE(m, nullptr);
  const std::size_t limit = m->max_connections(serve_options{});
  ASSERT_EQ(limit, std::size_t{FD_SETSIZE - 4});
  server_process server(*m, serve_options{});
  ASSERT_TRUE(server.started());
  const std::size_t n = limit + 10;
  std::vector<exchange> xs(n);
  std::vector<exchange*> all;
  closer c;
  for (std::size_t i = 0; i < n; ++i) {
    xs[i] = connect_and_say(server.port(), "connection " + std::to_string(i));
    ASSERT_GE(xs[i].fd, 0) << "connection " << i << ": " << std::strerror(errno);
    c.fds.push_back(xs[i].fd);
    all.push_back(&xs[i]);
  }
  ASSERT_TRUE(run(all)) << "the server is " << server.state();
  std::size_t served = 0, refused = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (xs[i].closed) {
      EXPECT_TRUE(xs[i].in.empty()) << "connection " << i << " closed after part of its echo";
      ++refused;
    } else {
      EXPECT_EQ(xs[i].in, upper(xs[i].out)) << "connection " << i;
      ++served;
    }
  }
  EXPECT_GE(refused, 1u);
  EXPECT_GE(served, limit - 10);
  EXPECT_LE(served, limit);
  // The ones it kept are still served.
  std::vector<exchange*> again;
  for (auto& x : xs) {
    if (x.closed) continue;
    x.out += " again";
    again.push_back(&x);
  }
  ASSERT_TRUE(run(again)) << "the server is " << server.state();
  for (exchange* x : again) EXPECT_EQ(x->in, upper(x->out));
}

}  // namespace
