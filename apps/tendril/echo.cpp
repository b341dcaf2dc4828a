// tendril echo-server and tendril echo-client: the seed's coroutine socket server (one
// greenlet per connection, each reply upper-cased) and its client (reads lines, prints the
// replies, "q" quits).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>

#include "command.hpp"
#include "echo.hpp"
#include "lab_args.hpp"
#include "tendril/io/file.hpp"
#include "tendril/net/server.hpp"
#include "tendril/tendril.hpp"

namespace tendril::app {
namespace {

struct endpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = default_echo_port;
};

endpoint parse(const args& a, const char* usage) {
  endpoint e;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != "--port" && a[i] != "--host")
      throw usage_error("unknown argument '" + a[i] + "' (" + usage + ")");
    if (i + 1 >= a.size()) throw usage_error(a[i] + " needs a value (" + usage + ")");
    if (a[i] == "--host") {
      e.host = a[++i];
    } else {
      e.port = static_cast<std::uint16_t>(parse_count("--port", a[++i], 0, 65535));
    }
  }
  return e;
}

// Reads one line from a descriptor without blocking the hub (a pipe or a terminal); false
// at the end of input. Throws std::system_error if it cannot be read.
bool read_line(int fd, std::string& buffer, std::string& line) {
  while (true) {
    if (auto nl = buffer.find('\n'); nl != std::string::npos) {
      line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      return true;
    }
    io::wait_readable(fd);
    char chunk[512];
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "reading standard input");
    if (n == 0) {
      if (buffer.empty()) return false;
      line.swap(buffer);
      buffer.clear();
      return true;
    }
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
}

// send_and_print() sends one line and prints its echo as it comes back, both at once: a line
// larger than what the two sockets buffer would otherwise leave both ends blocked in send.
void send_and_print(net::tcp_stream& s, const std::string& line) {
  std::exception_ptr send_failed;
  // The sender keeps its error for this function to throw, rather than have the hub report it.
  task<void> sender = spawn([&] {
    try {
      s.send_all(line);
    } catch (const std::exception&) {
      send_failed = std::current_exception();
    }
  });
  try {
    char chunk[16384];
    for (std::size_t left = line.size(); left > 0;) {
      const std::size_t n = s.recv(chunk, std::min(left, sizeof chunk));
      if (n == 0) throw std::runtime_error("the server closed the connection before the echo");
      std::fwrite(chunk, 1, n, stdout);
      left -= n;
    }
  } catch (...) {
    sender.kill();
    throw;
  }
  sender.join();
  if (send_failed) std::rethrow_exception(send_failed);
  std::fflush(stdout);
}

}  // namespace

// The chatty lines are flushed one by one: into a pipe or a file they would otherwise wait in
// stdio's buffer, and Ctrl-C (which ends the server) would lose them.
void serve_echo(net::tcp_stream& conn, const net::address& peer, bool chatty) {
  if (chatty) {
    std::printf("[%s] %s connected\n", this_greenlet::name().c_str(), peer.to_string().c_str());
    std::fflush(stdout);
  }
  char buf[4096];
  while (std::size_t n = conn.recv(buf, sizeof buf)) {
    for (std::size_t i = 0; i < n; ++i)
      buf[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(buf[i])));
    conn.send_all(buf, n);
  }
  if (chatty) {
    std::printf("[%s] %s disconnected\n", this_greenlet::name().c_str(), peer.to_string().c_str());
    std::fflush(stdout);
  }
}

int echo_server(const args& a) {
  endpoint e = parse(a, "tendril echo-server [--host H] [--port P]");
  net::stream_server server(e.host, e.port, [](net::tcp_stream& c, const net::address& peer) {
    serve_echo(c, peer, true);
  });
  std::printf("echo server on %s (one greenlet per connection, %s backend); Ctrl-C stops it\n",
              server.local_address().to_string().c_str(), hub::current().backend_name());
  std::fflush(stdout);
  server.serve_forever();
  return 0;
}

int echo_client(const args& a) {
  endpoint e = parse(a, "tendril echo-client [--host H] [--port P]");
  net::tcp_stream s = net::connect(e.host, e.port);
  std::printf("connected to %s; type lines, q quits\n", s.peer_address().to_string().c_str());
  std::fflush(stdout);
  std::string buffer;
  std::string line;
  while (read_line(STDIN_FILENO, buffer, line)) {
    if (line == "q") break;
    line += '\n';
    send_and_print(s, line);
  }
  return 0;
}

}  // namespace tendril::app
