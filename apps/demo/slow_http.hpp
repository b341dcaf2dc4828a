// A local HTTP server whose pages answer after a delay: what `tendril crawl` crawls when no
// URL is given (the tour, machines without internet), and what the hook tests and benchmarks
// fetch with libcurl. It runs on a thread of its own, with its own hub, so that it is not
// slowed by (and does not depend on) what the fetching side does.
#ifndef TENDRIL_APPS_DEMO_SLOW_HTTP_HPP
#define TENDRIL_APPS_DEMO_SLOW_HTTP_HPP

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace tendril::demo {

// slow_http_server serves GET on 127.0.0.1 (any free port) with HTTP/1.1 keep-alive:
//   /delay/MS/...  answers after MS milliseconds (else after the server's delay);
//   /size/N/...    a body of N bytes (else a small HTML page naming the path);
//   /reset         closes the connection with a reset, without answering;
// any other path is a page. Requests it cannot parse get 400. Bodies larger than 64 MiB
// are refused with 400 too.
class slow_http_server {
 public:
  explicit slow_http_server(std::chrono::milliseconds delay);
  slow_http_server(const slow_http_server&) = delete;
  slow_http_server& operator=(const slow_http_server&) = delete;
  // Stops the server and joins its thread; connections still open are cut.
  ~slow_http_server();

  std::uint16_t port() const noexcept { return port_; }
  // url(path) is "http://127.0.0.1:PORT" + path.
  std::string url(const std::string& path) const;
  // requests() is how many requests were answered (or reset) so far. Any thread.
  std::uint64_t requests() const noexcept { return requests_.load(std::memory_order_relaxed); }

 private:
  struct state;
  std::shared_ptr<state> st_;
  std::thread thread_;
  std::uint16_t port_ = 0;
  std::atomic<std::uint64_t> requests_{0};
};

}  // namespace tendril::demo

#endif
