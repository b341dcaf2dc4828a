// The tour's third part: the seed's socket server and client, in-process on loopback.
#include <cstdio>
#include <string>

#include "echo.hpp"
#include "tendril/net/server.hpp"
#include "tendril/tendril.hpp"
#include "tour.hpp"

namespace tendril::app {

void tour_sockets(const tour_options&) {
  heading("6. sockets: the seed's echo server and client, on loopback");
  net::stream_server server("127.0.0.1", 0, [](net::tcp_stream& c, const net::address& peer) {
    serve_echo(c, peer, true);
  });
  server.start();
  std::printf("server: one greenlet per connection on %s (%s backend)\n",
              server.local_address().to_string().c_str(), hub::current().backend_name());
  auto client = spawn([port = server.local_address().port()] {
    net::tcp_stream s = net::connect("127.0.0.1", port);
    for (std::string line : {"hello", "green threads", "q"}) {
      if (line == "q") {
        std::printf("client: q (quits)\n");
        break;
      }
      std::printf("client sends: %s\n", line.c_str());
      s.send_all(line);
      std::printf("client got:   %s\n", s.recv_exact(line.size()).c_str());
    }
  });
  client.get();
  sleep(std::chrono::milliseconds(20));  // lets the server see the client go
  server.stop(std::chrono::seconds(1));
}

}  // namespace tendril::app
