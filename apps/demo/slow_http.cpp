#include "slow_http.hpp"

#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <future>
#include <stdexcept>
#include <string_view>

#include "tendril/tendril.hpp"

namespace tendril::demo {

struct slow_http_server::state {
  event stop;
  std::promise<std::uint16_t> bound;  // the port, or why the server could not start
  bool port_sent = false;
};

namespace {

std::string describe(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown exception";
  }
}

constexpr std::size_t max_header = 16 * 1024;
constexpr std::size_t max_body = 64u << 20;

// The number after `prefix` in path ("/delay/250/x" with "/delay/" gives 250), or -1.
long long number_after(std::string_view path, std::string_view prefix) {
  if (path.substr(0, prefix.size()) != prefix) return -1;
  path.remove_prefix(prefix.size());
  long long v = 0;
  std::size_t i = 0;
  for (; i < path.size() && path[i] >= '0' && path[i] <= '9' && v < (1LL << 40); ++i)
    v = v * 10 + (path[i] - '0');
  return i == 0 ? -1 : v;
}

std::string page(std::string_view path) {
  std::string body = "<html><head><title>tendril demo page</title></head><body><h1>";
  body += path;
  body +=
      "</h1><p>This page was served after a delay by tendril's demo server.</p></body></html>\n";
  return body;
}

void reply(net::tcp_stream& conn, int status, std::string_view reason, const std::string& body) {
  std::string head =
      "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
      "\r\nContent-Type: text/html\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  conn.send_all(head);
  conn.send_all(body);
}

void serve(net::tcp_stream& conn, std::chrono::milliseconds delay,
           std::atomic<std::uint64_t>& count) {
  std::string buf;
  while (true) {
    std::size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() > max_header) return reply(conn, 400, "Bad Request", "header too long\n");
      std::string more = conn.recv(4096);
      if (more.empty()) return;  // the client closed
      buf += more;
    }
    const std::string head = buf.substr(0, end);
    buf.erase(0, end + 4);
    const std::size_t sp1 = head.find(' ');
    const std::size_t sp2 = sp1 == std::string::npos ? sp1 : head.find(' ', sp1 + 1);
    if (sp2 == std::string::npos || head.compare(0, sp1, "GET") != 0) {
      count.fetch_add(1, std::memory_order_relaxed);
      return reply(conn, 400, "Bad Request", "only GET is served\n");
    }
    const std::string path = head.substr(sp1 + 1, sp2 - sp1 - 1);
    count.fetch_add(1, std::memory_order_relaxed);
    if (path == "/reset") {
      linger l{1, 0};  // close with RST
      ::setsockopt(conn.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
      return;
    }
    std::chrono::milliseconds wait = delay;
    if (long long ms = number_after(path, "/delay/"); ms >= 0) wait = std::chrono::milliseconds(ms);
    if (wait.count() > 0) tendril::sleep(wait);
    if (long long n = number_after(path, "/size/"); n >= 0) {
      if (static_cast<unsigned long long>(n) > max_body)
        return reply(conn, 400, "Bad Request", "too large\n");
      reply(conn, 200, "OK", std::string(static_cast<std::size_t>(n), 'x'));
    } else {
      reply(conn, 200, "OK", page(path));
    }
  }
}

}  // namespace

slow_http_server::slow_http_server(std::chrono::milliseconds delay)
    : st_(std::make_shared<state>()) {
  auto ready = st_->bound.get_future();
  thread_ = std::thread([st = st_, delay, count = &requests_] {
    try {
      net::stream_server srv(
          "127.0.0.1", 0,
          [delay, count](net::tcp_stream& conn, const net::address&) {
            serve(conn, delay, *count);
          },
          net::stream_server::options{.backlog = 1024, .max_connections = 0});
      st->bound.set_value(srv.local_address().port());
      st->port_sent = true;
      srv.start();
      st->stop.wait();
      srv.stop();
    } catch (...) {
      if (!st->port_sent) {
        st->bound.set_exception(std::current_exception());
      } else {
        std::fprintf(stderr, "slow_http_server: stopped serving: %s\n",
                     describe(std::current_exception()).c_str());
      }
    }
  });
  try {
    port_ = ready.get();
  } catch (...) {
    thread_.join();
    throw;
  }
}

slow_http_server::~slow_http_server() {
  st_->stop.set();
  thread_.join();
}

std::string slow_http_server::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

}  // namespace tendril::demo
