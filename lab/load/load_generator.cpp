// run_load(): the lab's closed-loop load generator (load_generator.hpp). One thread, one
// level-triggered epoll set, one message in flight per connection (with a rate, a heap of the
// connections waiting for their next message's time). The run has three phases:
// warm-up (messages counted in the totals only), the measured window (also timed, and the
// server's CPU read at both ends), and a drain: no new message is started after the window,
// but those in flight are finished, so that every byte sent is part of a whole message and
// messages_total * message_size == bytes_sent_total when nothing went wrong.
#include "load_generator.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <queue>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace tendril::lab {
namespace {

constexpr std::uint64_t ns_per_s = 1'000'000'000;
// How long one connect() may take, and how long the drain waits for the echoes still in
// flight when the window ends; an echo missing after that counts as an error (a lost wake-up
// in the server is the usual cause).
constexpr std::uint64_t connect_timeout_ns = 10 * ns_per_s;
constexpr std::uint64_t drain_timeout_ns = 2 * ns_per_s;
// With a rate: how far behind its schedule a connection may fall and still catch up (send its
// late messages back to back); further behind, its schedule restarts from now.
constexpr std::uint64_t catch_up_ns = 10'000'000;
// Descriptors kept free beside the connections: the epoll set, /proc files, stdio.
constexpr std::size_t spare_descriptors = 8;
// Messages are slices of a repeating pattern, each starting one step further than the last
// on its connection, so that a stale or repeated echo does not pass for the next one.
constexpr std::string_view pattern_cycle = "abcdefghijklmnopqrstuvwxyz0123456789";

std::uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * ns_per_s + static_cast<std::uint64_t>(ts.tv_nsec);
}

double thread_cpu_s() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// process_cpu_s() is utime + stime of every thread of pid, live or exited (the process line
// of /proc/PID/stat adds them up), in seconds; -1 when it cannot be read.
double process_cpu_s(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return -1;
  // The command name, in parentheses, may hold spaces: count fields after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return -1;
  const char* p = line.c_str() + close + 1;
  unsigned long utime = 0, stime = 0;
  // state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
  if (std::sscanf(p, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
    return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

void read_status(pid_t pid, load_result& r) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Threads:", 0) == 0) r.server_threads = std::stoi(line.substr(8));
    if (line.rfind("VmRSS:", 0) == 0) r.server_rss_kib = std::stoull(line.substr(6));
  }
}

std::size_t open_descriptors() {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

// check_descriptors() raises the soft RLIMIT_NOFILE to the hard one when that is needed for
// the connections, and throws std::invalid_argument when even that is not enough.
void check_descriptors(std::size_t connections) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  const std::size_t needed = open_descriptors() + connections + spare_descriptors;
  if (rl.rlim_cur != RLIM_INFINITY && needed > rl.rlim_cur && rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  if (rl.rlim_cur != RLIM_INFINITY && needed > rl.rlim_cur)
    throw std::invalid_argument(
        std::to_string(connections) + " connections need about " + std::to_string(needed) +
        " descriptors, but RLIMIT_NOFILE allows " + std::to_string(rl.rlim_cur) + " (hard limit " +
        std::to_string(rl.rlim_max) + "; raise it with ulimit -Hn as root)");
}

void check(const load_options& o) {
  if (o.connections == 0) throw std::invalid_argument("connections must be at least 1");
  if (o.message_size == 0) throw std::invalid_argument("the message size must be at least 1 byte");
  if (o.port == 0) throw std::invalid_argument("no port: give the server's port");
  if (!(o.seconds > 0) || !std::isfinite(o.seconds))
    throw std::invalid_argument("the measured window must last more than 0 s");
  if (!(o.warmup_s >= 0) || !std::isfinite(o.warmup_s))
    throw std::invalid_argument("the warm-up cannot be negative");
  if (!(o.rate >= 0) || !std::isfinite(o.rate))
    throw std::invalid_argument("the rate must be a number of messages per second, 0 or more");
  if (o.rate > 0 && o.rate < 1e-3)
    throw std::invalid_argument("the rate is below one message in 1,000 s: give 0 for none");
  check_descriptors(o.connections);
  if (o.server_pid > 0 && process_cpu_s(o.server_pid) < 0) {
    throw std::invalid_argument("no process " + std::to_string(o.server_pid) +
                                " to measure (the server's pid): /proc/" +
                                std::to_string(o.server_pid) + "/stat cannot be read");
  }
}

// connect_one() is a connected, non-blocking TCP_NODELAY socket, or -errno (ETIMEDOUT once
// deadline_ns, on the monotonic clock, has passed).
int connect_one(const addrinfo& ai, std::uint64_t deadline_ns) {
  int fd = ::socket(ai.ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int err = 0;
  if (::connect(fd, ai.ai_addr, ai.ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      // The handshake waits for room in the server's accept queue when it is full.
      pollfd p{fd, POLLOUT, 0};
      int n;
      do {
        const std::uint64_t t = now_ns();
        const int ms =
            t >= deadline_ns ? 0 : static_cast<int>((deadline_ns - t + 999'999) / 1'000'000);
        n = ::poll(&p, 1, ms);
      } while (n < 0 && errno == EINTR);
      socklen_t len = sizeof err;
      if (n == 0) {
        err = ETIMEDOUT;
      } else if (n < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
      }
    }
  }
  if (err != 0) {
    ::close(fd);
    return -err;
  }
  return fd;
}

struct connection {
  int fd = -1;
  bool open = false;
  bool in_flight = false;
  bool want_out = false;
  std::size_t sent = 0;          // bytes of the current message written
  std::size_t received = 0;      // bytes of its echo read and checked
  std::uint64_t sequence = 0;    // messages started on it: picks the slice of the pattern
  std::uint64_t started_ns = 0;  // when the current message was started
  std::uint64_t due_ns = 0;      // with a rate: when its next message is due
};

enum class phase { warmup, window, drain };

class generator {
 public:
  explicit generator(const load_options& o) : o_(o) {
    const std::size_t cycle = pattern_cycle.size();
    sent_pattern_.resize(o.message_size + cycle);
    echo_pattern_.resize(o.message_size + cycle);
    for (std::size_t i = 0; i < sent_pattern_.size(); ++i) {
      const char c = pattern_cycle[i % cycle];
      sent_pattern_[i] = c;
      echo_pattern_[i] =
          o.upper_case && c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
    }
    buffer_.resize(std::max<std::size_t>(o.message_size, 64 * 1024));
  }
  generator(const generator&) = delete;
  generator& operator=(const generator&) = delete;
  ~generator() {
    for (auto& c : conns_)
      if (c.open) ::close(c.fd);
    if (epoll_ >= 0) ::close(epoll_);
  }

  load_result run();

 private:
  bool connect_all();
  void start(connection& c, std::uint64_t t);
  void next(connection& c, std::uint64_t t);
  void start_due(std::uint64_t t);
  void write_rest(connection& c);
  void read_echo(connection& c);
  void lose(connection& c);
  void arm_out(connection& c, bool on);
  void open_window(std::uint64_t t);
  void close_window(std::uint64_t t);
  const char* message(const connection& c) const {
    return sent_pattern_.data() + c.sequence % pattern_cycle.size();
  }
  const char* echo(const connection& c) const {
    return echo_pattern_.data() + c.sequence % pattern_cycle.size();
  }
  std::uint32_t index(const connection& c) const {
    return static_cast<std::uint32_t>(&c - conns_.data());
  }

  const load_options& o_;
  load_result r_;
  std::string sent_pattern_, echo_pattern_, buffer_;
  std::vector<connection> conns_;
  std::vector<std::uint32_t> latencies_ns_;  // the window's round trips
  // With a rate: the time between two messages of one connection, and the connections
  // waiting for their next message's time, soonest first.
  std::uint64_t interval_ns_ = 0;
  using due_entry = std::pair<std::uint64_t, std::uint32_t>;
  std::priority_queue<due_entry, std::vector<due_entry>, std::greater<>> due_;
  int epoll_ = -1;
  bool have_pwait2_ = true;
  phase phase_ = phase::warmup;
  std::size_t open_ = 0, in_flight_ = 0;
  std::uint64_t window_start_ns_ = 0, window_end_ns_ = 0;
  double cpu_start_ = 0, cpu_end_ = 0, server_start_ = -1, server_end_ = -1;
};

bool generator::connect_all() {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* ai = nullptr;
  const std::string port = std::to_string(o_.port);
  if (int rc = ::getaddrinfo(o_.host.c_str(), port.c_str(), &hints, &ai); rc != 0) {
    r_.error = "cannot resolve '" + o_.host + "': " + ::gai_strerror(rc);
    return false;
  }
  epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_ < 0) {
    ::freeaddrinfo(ai);
    throw std::system_error(errno, std::generic_category(), "epoll_create1");
  }
  conns_.resize(o_.connections);
  int first_error = 0;
  // One deadline for them all: a server that stopped accepting costs 10 s, not 10 s a
  // connection.
  const std::uint64_t deadline = now_ns() + connect_timeout_ns;
  const addrinfo* to = nullptr;  // the address that answered, for the connections after the first
  for (auto& c : conns_) {
    int fd = -ECONNREFUSED;
    if (to != nullptr) {
      fd = connect_one(*to, deadline);
    } else {
      // The first connection tries each address of the name in turn (localhost may give ::1
      // first while the server listens on 127.0.0.1).
      for (const addrinfo* a = ai; a != nullptr; a = a->ai_next) {
        fd = connect_one(*a, deadline);
        if (fd >= 0) {
          to = a;
          break;
        }
      }
    }
    if (fd < 0) {
      // The first connection failing means there is no server to measure; a later one
      // failing is the server's trouble under load, and is counted.
      if (r_.connected == 0) {
        first_error = -fd;
        break;
      }
      ++r_.connect_failures;
      continue;
    }
    c.fd = fd;
    c.open = true;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = index(c);
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::freeaddrinfo(ai);
      throw std::system_error(errno, std::generic_category(), "epoll_ctl");
    }
    ++open_;
    ++r_.connected;
  }
  ::freeaddrinfo(ai);
  if (r_.connected == 0) {
    r_.error = "cannot connect to " + o_.host + ":" + port + ": " + std::strerror(first_error);
    return false;
  }
  return true;
}

void generator::arm_out(connection& c, bool on) {
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
  ev.data.u32 = index(c);
  c.want_out = on;
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
}

void generator::lose(connection& c) {
  if (!c.open) return;
  ::close(c.fd);  // also leaves the epoll set
  c.open = false;
  --open_;
  if (c.in_flight) {
    c.in_flight = false;
    --in_flight_;
  }
  ++r_.errors;
}

void generator::start(connection& c, std::uint64_t t) {
  ++c.sequence;
  c.sent = 0;
  c.received = 0;
  c.started_ns = t;
  c.in_flight = true;
  ++in_flight_;
  write_rest(c);
}

void generator::write_rest(connection& c) {
  while (c.sent < o_.message_size) {
    ssize_t n = ::send(c.fd, message(c) + c.sent, o_.message_size - c.sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += static_cast<std::size_t>(n);
      r_.bytes_sent_total += static_cast<std::uint64_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c.want_out) arm_out(c, true);
      return;
    } else {
      lose(c);
      return;
    }
  }
  if (c.want_out) arm_out(c, false);
}

void generator::read_echo(connection& c) {
  ssize_t n = ::recv(c.fd, buffer_.data(), buffer_.size(), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {
    lose(c);  // the server closed the connection, or it broke
    return;
  }
  const auto got = static_cast<std::size_t>(n);
  // More than the message asked for, or other bytes, is a wrong echo: the rest of this
  // connection's stream cannot be trusted, so it is given up.
  if (!c.in_flight || got > o_.message_size - c.received ||
      std::memcmp(buffer_.data(), echo(c) + c.received, got) != 0) {
    lose(c);
    return;
  }
  c.received += got;
  if (c.received < o_.message_size) return;
  const std::uint64_t t = now_ns();
  c.in_flight = false;
  --in_flight_;
  ++r_.messages_total;
  if (phase_ == phase::window) {
    ++r_.messages;
    const std::uint64_t rtt = t - c.started_ns;
    latencies_ns_.push_back(rtt > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(rtt));
  }
  if (phase_ != phase::drain) next(c, t);
}

// next() starts c's next message: at once in a closed loop, or when it is due with a rate.
void generator::next(connection& c, std::uint64_t t) {
  if (interval_ns_ == 0) {
    start(c, t);
    return;
  }
  c.due_ns += interval_ns_;
  if (c.due_ns + catch_up_ns < t) c.due_ns = t;
  if (c.due_ns <= t) {
    start(c, t);
  } else {
    due_.emplace(c.due_ns, index(c));
  }
}

// start_due() starts the messages whose time has come.
void generator::start_due(std::uint64_t t) {
  while (!due_.empty() && due_.top().first <= t) {
    connection& c = conns_[due_.top().second];
    due_.pop();
    if (c.open) start(c, t);
  }
}

void generator::open_window(std::uint64_t t) {
  phase_ = phase::window;
  window_start_ns_ = t;
  cpu_start_ = thread_cpu_s();
  if (o_.server_pid > 0) server_start_ = process_cpu_s(o_.server_pid);
}

void generator::close_window(std::uint64_t t) {
  if (phase_ == phase::warmup) open_window(t);
  phase_ = phase::drain;
  window_end_ns_ = t;
  cpu_end_ = thread_cpu_s();
  if (o_.server_pid > 0) {
    server_end_ = process_cpu_s(o_.server_pid);
    read_status(o_.server_pid, r_);
  }
}

load_result generator::run() {
  if (!connect_all()) return r_;
  latencies_ns_.reserve(1 << 20);
  const std::uint64_t t0 = now_ns();
  const auto warmup_ns = static_cast<std::uint64_t>(o_.warmup_s * 1e9);
  const auto window_ns = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(o_.seconds * 1e9));
  const std::uint64_t window_opens = t0 + warmup_ns, window_closes = window_opens + window_ns;
  std::uint64_t drain_until = 0;
  if (o_.rate > 0) {
    // The first messages spread over one interval, so that the load starts even.
    const double interval = static_cast<double>(o_.connections) * 1e9 / o_.rate;
    interval_ns_ = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::llround(interval)));
    for (auto& c : conns_) {
      c.due_ns = t0 + static_cast<std::uint64_t>(interval * index(c) /
                                                 static_cast<double>(o_.connections));
      if (c.open) due_.emplace(c.due_ns, index(c));
    }
    start_due(t0);
  } else {
    for (auto& c : conns_)
      if (c.open) start(c, t0);
  }

  std::vector<epoll_event> events(1024);
  while (true) {
    const std::uint64_t t = now_ns();
    if (phase_ == phase::warmup && t >= window_opens) open_window(t);
    // Every connection lost ends the run early: the window is what was measured until then.
    if (phase_ != phase::drain && (t >= window_closes || open_ == 0)) {
      close_window(t);
      drain_until = t + drain_timeout_ns;
    }
    if (phase_ == phase::drain && (in_flight_ == 0 || t >= drain_until)) break;
    std::uint64_t wake = phase_ == phase::warmup   ? window_opens
                         : phase_ == phase::window ? window_closes
                                                   : drain_until;
    if (phase_ != phase::drain) {
      start_due(t);
      if (!due_.empty()) wake = std::min(wake, due_.top().first);
    }
    // A rate needs waits finer than epoll_wait's milliseconds.
    const std::uint64_t wait_ns = std::min<std::uint64_t>(100'000'000, wake > t ? wake - t : 0);
    const timespec timeout{static_cast<time_t>(wait_ns / ns_per_s),
                           static_cast<long>(wait_ns % ns_per_s)};
    int n = -1;
    if (have_pwait2_) {
      n = ::epoll_pwait2(epoll_, events.data(), static_cast<int>(events.size()), &timeout, nullptr);
      // Before Linux 5.11, or a seccomp filter that does not know it (EPERM).
      if (n < 0 && (errno == ENOSYS || errno == EPERM)) have_pwait2_ = false;
    }
    if (!have_pwait2_)
      n = ::epoll_wait(epoll_, events.data(), static_cast<int>(events.size()),
                       static_cast<int>((wait_ns + 999'999) / 1'000'000));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(),
                              have_pwait2_ ? "epoll_pwait2" : "epoll_wait");
    }
    for (int k = 0; k < n; ++k) {
      connection& c = conns_[events[k].data.u32];
      if (!c.open) continue;
      if (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) read_echo(c);
      if ((events[k].events & EPOLLOUT) && c.open && c.in_flight) write_rest(c);
    }
  }
  // Echoes that never came back.
  for (auto& c : conns_)
    if (c.open && c.in_flight) lose(c);

  const double window_s = static_cast<double>(window_end_ns_ - window_start_ns_) / 1e9;
  if (window_s > 0) {
    r_.msgs_per_s = static_cast<double>(r_.messages) / window_s;
    r_.client_cpu_pct = 100.0 * (cpu_end_ - cpu_start_) / window_s;
  }
  if (o_.server_pid > 0 && (server_start_ < 0 || server_end_ < 0) && r_.error.empty()) {
    r_.error = "the server (pid " + std::to_string(o_.server_pid) + ") ended during the run";
  }
  if (server_start_ >= 0 && server_end_ >= 0) {
    r_.server_cpu_s = server_end_ - server_start_;
    if (window_s > 0) r_.server_cpu_pct = 100.0 * r_.server_cpu_s / window_s;
    if (r_.messages > 0)
      r_.server_cpu_us_per_msg = r_.server_cpu_s * 1e6 / static_cast<double>(r_.messages);
  }
  if (!latencies_ns_.empty()) {
    std::sort(latencies_ns_.begin(), latencies_ns_.end());
    const std::size_t n = latencies_ns_.size();
    auto rank = [&](double p) {  // nearest rank
      auto i = static_cast<std::size_t>(std::ceil(p * static_cast<double>(n)));
      return static_cast<double>(latencies_ns_[std::clamp<std::size_t>(i, 1, n) - 1]) / 1e3;
    };
    r_.p50_us = rank(0.50);
    r_.p99_us = rank(0.99);
    r_.p999_us = rank(0.999);
    r_.max_us = static_cast<double>(latencies_ns_.back()) / 1e3;
    double sum = 0;
    for (auto v : latencies_ns_) sum += v;
    r_.mean_us = sum / static_cast<double>(n) / 1e3;
  }
  return r_;
}

}  // namespace

load_result run_load(const load_options& o) {
  check(o);
  generator g(o);
  return g.run();
}

}  // namespace tendril::lab
