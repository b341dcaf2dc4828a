// The tour's I/O models part: the seed's two client demos. A blocking client waits in recv()
// for a server that takes 2 s to answer, its whole thread stopped meanwhile; then the
// seed's non-blocking polling server (the lab's "nonblocking" model, lab/iomodels/) answers
// a client at once. The clients are plain libc sockets on threads of their own: no hub
// there, so their calls really block even after section 7's patch_all().
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>

#include "iomodels/nonblocking.hpp"
#include "tendril/tendril.hpp"
#include "tour.hpp"

namespace tendril::app {
namespace {

using clock_type = std::chrono::steady_clock;

// The wall clock as HH:MM:SS.mmm.
std::string now_hms() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms));
  return buf;
}

// The seed's blocking client: connect, send, and block in recv() until the reply comes.
// Prints when it started waiting and when the reply arrived; returns the seconds between.
double blocking_client(std::uint16_t port, const std::string& message) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    throw std::runtime_error("tour: the client cannot connect");
  std::printf("client: sends \"%s\" at %s, then blocks in recv()\n", message.c_str(),
              now_hms().c_str());
  std::fflush(stdout);
  const auto t0 = clock_type::now();
  ::send(fd, message.data(), message.size(), MSG_NOSIGNAL);
  std::string reply;
  char buf[256];
  while (reply.size() < message.size()) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);  // the thread sleeps here
    if (n <= 0) break;
    reply.append(buf, static_cast<std::size_t>(n));
  }
  const double waited = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::printf("client: got \"%s\" at %s (%.3f s later)\n", reply.c_str(), now_hms().c_str(),
              waited);
  std::fflush(stdout);
  ::close(fd);
  return waited;
}

// A loopback listener made with plain libc calls, on the calling thread.
int listen_loopback(std::uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
      ::listen(fd, 16) < 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0)
    throw std::runtime_error("tour: cannot listen on 127.0.0.1");
  port = ntohs(addr.sin_port);
  return fd;
}

}  // namespace

void tour_iomodels(const tour_options& o) {
  heading("9. I/O models: a blocking client, a non-blocking server");
  const auto delay = o.seconds(2);
  std::printf("a server that replies after %.2f s%s; the client's thread blocks until then\n",
              delay.count(), o.quick ? " (2 s x0.05)" : "");
  auto listener = net::listen("127.0.0.1", 0);
  auto server = spawn([&] {
    net::tcp_stream conn = listener.accept();
    std::string got = conn.recv(256);
    std::printf("server: got \"%s\", replies in %.2f s\n", got.c_str(), delay.count());
    std::fflush(stdout);
    tendril::sleep(delay);
    for (char& c : got) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    conn.send_all(got);
  });
  std::thread client(blocking_client, listener.local_address().port(), std::string("hello"));
  server.join();  // the hub runs the server greenlet meanwhile
  client.join();

  std::printf(
      "the seed's non-blocking server (lab/iomodels/nonblocking.cpp): it never waits, "
      "it polls every socket in a loop\n");
  std::atomic<bool> stop{false};
  std::promise<std::uint16_t> port;
  std::thread polling([&] {
    int fd = -1;
    try {
      std::uint16_t p = 0;
      fd = listen_loopback(p);
      port.set_value(p);
      lab::serve_nonblocking(fd, stop);
    } catch (const std::exception& e) {
      if (fd < 0) {
        port.set_exception(std::current_exception());
      } else {
        std::fprintf(stderr, "tour: the non-blocking server failed: %s\n", e.what());
      }
    }
    if (fd >= 0) ::close(fd);
  });
  std::uint16_t p = 0;
  try {
    p = port.get_future().get();
  } catch (...) {
    polling.join();
    throw;
  }
  double waited = 0;
  std::thread client2([&] { waited = blocking_client(p, "hello again"); });
  client2.join();
  stop = true;
  polling.join();
  std::printf("the reply came at once (%.3f s), from a server that spun at 100%% CPU meanwhile\n",
              waited);
}

}  // namespace tendril::app
