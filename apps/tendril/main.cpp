// tendril: the command. `tendril tour` replays the seed's examples; `tendril help` lists
// the rest.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

#include "command.hpp"
#include "tendril/version.hpp"

namespace {

struct command {
  const char* name;
  const char* usage;
  const char* summary;
  int (*run)(const tendril::app::args&);
};

int version(const tendril::app::args& a) {
  if (!a.empty())
    throw tendril::app::usage_error("unknown argument '" + a[0] + "' (tendril version)");
  std::printf("tendril %s\n", TENDRIL_VERSION_STRING);
  return 0;
}

int help(const tendril::app::args&);

const command commands[] = {
    {"tour", "tour [--quick]",
     "replay the seed's examples: generators, greenlets, gevent, sockets, monkey (libc sleep, "
     "the crawler), I/O models (a blocking client, a non-blocking server) (--quick: shorter "
     "sleeps)",
     &tendril::app::tour},
    {"echo-server", "echo-server [--host H] [--port P]",
     "the seed's socket server: one greenlet per connection, replies upper-cased",
     &tendril::app::echo_server},
    {"echo-client", "echo-client [--host H] [--port P]",
     "the seed's client: sends each line read, prints the reply; q quits",
     &tendril::app::echo_client},
    {"crawl", "crawl [--timeout S] [URL...]",
     "the seed's crawler: fetch URLs concurrently with libcurl under the hooks (no URL: a local "
     "slow server)",
     &tendril::app::crawl_command},
    {"iomodels", "iomodels [--quick] [--out DIR]",
     "the I/O models lab: every model's echo server measured at 1-1000 connections; a table, "
     "with --out Markdown and SVG (--list, --models a,b, --connections 1,10, --seconds S, "
     "--warmup S, --size B, --rate MSGS_PER_S, --threads N)",
     &tendril::app::iomodels},
    {"load", "load --port P [OPTIONS]",
     "the lab's load generator against an echo server: messages/s, latency, server CPU per "
     "message (--host, --connections, --size, --seconds, --warmup, --rate MSGS_PER_S, "
     "--server-pid, --as-sent)",
     &tendril::app::load},
    {"run", "run -- PROGRAM [ARGS]",
     "run a program linked with libtendril.so with the libc hooks on (LD_PRELOAD)",
     &tendril::app::run},
    // Hidden (no usage line): one model of the I/O models lab as a server process.
    {"serve-model", nullptr, nullptr, &tendril::app::serve_model},
    {"version", "version", "print the version", &version},
    {"help", "help [COMMAND]", "this list, or that command's usage", &help},
};

int usage_of(const command& c) {
  std::printf("usage: tendril %s\n  %s\n", c.usage, c.summary);
  return 0;
}

// `tendril help` lists the commands; `tendril help COMMAND` is `tendril COMMAND --help`.
int help(const tendril::app::args& a) {
  if (a.size() > 1)
    throw tendril::app::usage_error("unknown argument '" + a[1] + "' (tendril help [COMMAND])");
  if (!a.empty()) {
    for (const auto& c : commands)
      if (c.usage != nullptr && a[0] == c.name) return usage_of(c);
    std::fprintf(stderr, "tendril help: unknown command '%s' (try 'tendril help')\n", a[0].c_str());
    return 2;
  }
  std::printf(
      "usage: tendril COMMAND [ARGS]   (tendril COMMAND --help: that command's usage)\n\n"
      "commands:\n");
  for (const auto& c : commands) {
    if (c.usage != nullptr) std::printf("  %-22s %s\n", c.usage, c.summary);
  }
  return 0;
}

// standard_descriptors_open() opens /dev/null on each of descriptors 0-2 that is closed; false
// if it cannot. A socket opened later would otherwise take the closed number: echo-client would
// read its own connection as its input (`<&-`) or send its output to the server (`>&-`). So a
// closed input reads as empty, and closed output goes nowhere.
bool standard_descriptors_open() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    // open() takes the lowest free number, which is fd: those below it are open by now.
    if (::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    help({});
    return 2;
  }
  tendril::app::args rest(argv + 2, argv + argc);
  for (const auto& c : commands) {
    if (std::strcmp(argv[1], c.name) == 0 ||
        ((std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) &&
         c.run == &help)) {
      // --help or -h: the command's usage; for run only first (`tendril run -- PROGRAM --help`
      // passes it on).
      const auto asks_help = [](const std::string& s) { return s == "--help" || s == "-h"; };
      if (c.usage != nullptr && !rest.empty() &&
          (c.run == &tendril::app::run ? asks_help(rest[0])
                                       : std::any_of(rest.begin(), rest.end(), asks_help)))
        return usage_of(c);
      // run hands its descriptors to the program as they are.
      if (c.run != &tendril::app::run && !standard_descriptors_open()) {
        std::fprintf(stderr,
                     "tendril %s: cannot open /dev/null in place of a closed standard "
                     "descriptor\n",
                     c.name);
        return 1;
      }
      try {
        return c.run(rest);
      } catch (const tendril::app::usage_error& e) {
        std::fprintf(stderr, "tendril %s: %s\n", c.name, e.what());
        return 2;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "tendril %s: %s\n", c.name, e.what());
        return 1;
      }
    }
  }
  std::fprintf(stderr, "tendril: unknown command '%s' (try 'tendril help')\n", argv[1]);
  return 2;
}
