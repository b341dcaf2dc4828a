// The echo server of bench/echo_server.cpp written against plain POSIX calls instead of
// tendril's net API: socket, bind, listen, accept, read, write, exactly as a blocking
// thread-per-connection server would be written, with a greenlet per connection instead of a
// thread. After patch_all() the hooks make those calls cooperative; the benchmark compares its
// server CPU per message with echo_server's (the cost of the hooks). Same contract as
// ../shared/peers' echo servers: the port is the last argument, 127.0.0.1, until SIGTERM.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

namespace {

// Plain blocking code: nothing here knows about greenlets.
void serve(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char buf[16384];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    if (write(fd, buf, static_cast<std::size_t>(n)) != n) break;
  }
  close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: posix_echo_server PORT\n");
    return 2;
  }
  std::signal(SIGTERM, SIG_DFL);
  tendril::monkey::patch_all();
  const int lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(std::atoi(argv[argc - 1])));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd, 1024) != 0) {
    std::perror("posix_echo_server: bind/listen");
    return 1;
  }
  std::fprintf(stderr, "posix echo under the hooks on 127.0.0.1:%s (%s)\n", argv[argc - 1],
               tendril::hub::current().backend_name());
  while (true) {
    const int c = accept(lfd, nullptr, nullptr);  // parks the root greenlet, the hub runs
    if (c < 0) continue;
    tendril::spawn(serve, c);
  }
}
