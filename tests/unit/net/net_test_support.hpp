// What the network tests share: connected loopback pairs, a listener whose queue is full,
// byte patterns with checksums, descriptor counts, temporary directories, and waiting for
// a condition without a tight clock.
#ifndef TENDRIL_TESTS_UNIT_NET_NET_TEST_SUPPORT_HPP
#define TENDRIL_TESTS_UNIT_NET_NET_TEST_SUPPORT_HPP

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "tendril/tendril.hpp"

namespace tendril::test {

inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// open_descriptors() is the number of descriptors this process has open.
inline std::size_t open_descriptors() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) throw std::system_error(errno, std::generic_category(), "opendir");
  std::size_t n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the directory's own
}

// start_io() starts this thread's hub and its I/O table, which hold descriptors of their
// own: before counting descriptors.
inline void start_io() {
  auto p = net::unix_stream::pair();
  tendril::sleep(std::chrono::seconds(0));
}

// A directory of its own under TMPDIR (or /tmp), removed with what it holds.
class temp_dir {
 public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/tendril-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::system_error(errno, std::generic_category(), "mkdtemp");
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// Pseudo-random bytes, the same for the same seed, and their FNV-1a checksum.
inline std::string pattern(std::size_t size, std::uint64_t seed) {
  std::string s(size, '\0');
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (std::size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x >> 56);
  }
  return s;
}

class checksum {
 public:
  void add(const void* data, std::size_t len) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < len; ++i) {
      h_ = (h_ ^ p[i]) * 0x100000001b3ull;
    }
    size_ += len;
  }
  void add(std::string_view s) { add(s.data(), s.size()); }
  std::uint64_t value() const { return h_; }
  std::uint64_t size() const { return size_; }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ull;
  std::uint64_t size_ = 0;
};

inline std::uint64_t checksum_of(std::string_view s) {
  checksum c;
  c.add(s);
  return c.value();
}

// recv_all_until_end() reads s to its end and returns the checksum of what came.
inline checksum recv_all_until_end(net::stream_socket& s) {
  checksum c;
  std::vector<char> buf(64 * 1024);
  while (std::size_t n = s.recv(buf.data(), buf.size())) c.add(buf.data(), n);
  return c;
}

// Two ends of a TCP connection over 127.0.0.1.
struct tcp_pair {
  net::tcp_stream client;
  net::tcp_stream server;
};

inline tcp_pair connected_tcp_pair() {
  net::tcp_listener l = net::listen("127.0.0.1", 0);
  tcp_pair p;
  p.client = net::connect(l.local_address());
  p.server = l.accept();
  return p;
}

// A listener with a backlog of 0 that never accepts, whose queue is full: a connect to it
// stays unanswered (the kernel drops the SYN) until its time limit.
struct full_listener {
  net::tcp_listener listener;
  std::vector<net::tcp_stream> queued;  // the connections that filled the queue
  net::address address() const { return listener.local_address(); }
};

inline full_listener make_full_listener() {
  using namespace std::chrono_literals;
  full_listener f{net::listen("127.0.0.1", 0, 0), {}};
  const net::address to = f.address();
  for (int i = 0; i < 64; ++i) {
    std::error_code ec;
    net::tcp_stream s = net::connect(to, std::chrono::milliseconds(250), ec);
    if (ec == std::errc::timed_out) return f;
    if (ec) throw std::system_error(ec, "filling the queue of " + to.to_string());
    f.queued.push_back(std::move(s));
  }
  throw std::runtime_error("the queue of " + to.to_string() + " never filled");
}

// eventually() yields to the hub (1 ms at a time) until pred() holds; false if it still
// does not after limit.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    tendril::sleep(std::chrono::milliseconds(1));
  }
  return true;
}

// Wall-clock time since a start, for generous bounds only.
class stopwatch {
 public:
  std::chrono::milliseconds elapsed() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start_);
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace tendril::test

#endif
