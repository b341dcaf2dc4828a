// An echo server on tendril's net API for ../shared/peers (its echo contract: the port is the
// last argument; listen on 127.0.0.1:PORT, echo every byte, run until SIGTERM). One greenlet
// per connection, as the seed's server. TENDRIL_BACKEND picks the backend.
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "tendril/tendril.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: echo_server PORT\n");
    return 2;
  }
  const int port = std::atoi(argv[argc - 1]);
  std::signal(SIGTERM, SIG_DFL);
  namespace net = tendril::net;
  net::stream_server server(
      "127.0.0.1", static_cast<std::uint16_t>(port),
      [](net::tcp_stream& c, const net::address&) {
        c.set_nodelay(true);
        char buf[16384];
        std::error_code ec;
        while (std::size_t n = c.recv(buf, sizeof buf, ec)) {
          c.send_all(buf, n, ec);
          if (ec) break;
        }
      },
      net::stream_server::options{1024, 0});
  std::fprintf(stderr, "tendril echo on 127.0.0.1:%d (%s)\n", port,
               tendril::hub::current().backend_name());
  server.serve_forever();
}
