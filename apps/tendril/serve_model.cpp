// tendril serve-model NAME [--port P] [--threads N]: one model of the I/O models lab as a
// server process (hidden: `tendril iomodels` and the lab's scripts start it). It binds
// 127.0.0.1:P (0: any free port), prints the port on the first line of its output, and serves
// until it is killed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "command.hpp"
#include "iomodels/model.hpp"

namespace tendril::app {
namespace {

constexpr const char* usage = "tendril serve-model NAME [--port P] [--threads N]";

int fail(const std::string& what) {
  std::fprintf(stderr, "tendril serve-model: %s\n", what.c_str());
  return 2;
}

bool parse_number(const std::string& s, long max, long& out) {
  char* end = nullptr;
  errno = 0;
  out = std::strtol(s.c_str(), &end, 10);
  return !s.empty() && *end == '\0' && errno == 0 && out >= 0 && out <= max;
}

std::string model_names() {
  std::string names;
  for (const auto& m : lab::models()) names += (names.empty() ? "" : ", ") + std::string(m.name);
  return names;
}

}  // namespace

int serve_model(const args& a) {
  if (a.empty() || a[0].starts_with("-")) return fail(std::string("usage: ") + usage);
  const lab::model* m = lab::find_model(a[0]);
  if (m == nullptr) return fail("unknown model '" + a[0] + "' (models: " + model_names() + ")");
  long port = 0;
  lab::serve_options o;
  for (std::size_t i = 1; i < a.size(); ++i) {
    long n = 0;
    if (a[i] != "--port" && a[i] != "--threads")
      return fail("bad argument '" + a[i] + "' (usage: " + usage + ")");
    if (i + 1 >= a.size()) return fail(a[i] + " needs a value (usage: " + usage + ")");
    const long max = a[i] == "--port" ? 65535 : 100000;
    if (!parse_number(a[i + 1], max, n)) {
      return fail("bad value '" + a[i + 1] + "' for " + a[i] + " (a whole number from 0 to " +
                  std::to_string(max) + ")");
    }
    if (a[i] == "--port") {
      port = n;
    } else {
      o.threads = static_cast<int>(n);
    }
    ++i;
  }
  if (std::string why = m->unsupported(); !why.empty())
    return fail("model '" + a[0] + "' cannot run here: " + why);

  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(std::string("socket: ") + std::strerror(errno));
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    return fail("cannot bind 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
  if (::listen(fd, 4096) < 0) return fail(std::string("listen: ") + std::strerror(errno));
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::printf("%u\n", ntohs(addr.sin_port));
  std::fflush(stdout);

  o.listen_fd = fd;
  m->serve(o);  // returns only by throwing (main() reports it, status 1)
  return 1;
}

}  // namespace tendril::app
