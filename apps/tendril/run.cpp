// tendril run -- PROGRAM [ARGS...]: runs PROGRAM with libtendril_preload.so preloaded, so that
// a program linked against libtendril.so has the hooks on from its first line (as if its
// main() began with tendril::monkey::patch_all()).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "command.hpp"

namespace tendril::app {
namespace {

bool readable(const std::string& p) { return !p.empty() && ::access(p.c_str(), R_OK) == 0; }

// The preload library: $TENDRIL_PRELOAD, the build tree's, then the installed one.
std::string find_preload() {
  if (const char* env = std::getenv("TENDRIL_PRELOAD"); env && *env) return env;
  for (const char* p : {TENDRIL_PRELOAD_BUILD_PATH, TENDRIL_PRELOAD_INSTALL_PATH}) {
    if (readable(p)) return p;
  }
  return {};
}

}  // namespace

int run(const args& a) {
  std::size_t first = 0;
  if (!a.empty() && a[0] == "--") first = 1;
  if (first >= a.size()) {
    std::fprintf(stderr, "usage: tendril run -- PROGRAM [ARGS...]\n");
    return 2;
  }
  const std::string lib = find_preload();
  if (!readable(lib)) {
    std::fprintf(stderr,
                 "tendril run: libtendril_preload.so not found (looked at $TENDRIL_PRELOAD, %s "
                 "and %s); install tendril with -DBUILD_SHARED_LIBS=ON or set TENDRIL_PRELOAD\n",
                 TENDRIL_PRELOAD_BUILD_PATH, TENDRIL_PRELOAD_INSTALL_PATH);
    return 2;
  }
  std::string preload = lib;
  if (const char* old = std::getenv("LD_PRELOAD"); old && *old) preload += std::string(":") + old;
  if (::setenv("LD_PRELOAD", preload.c_str(), 1) != 0) {
    std::fprintf(stderr, "tendril run: setenv: %s\n", std::strerror(errno));
    return 2;
  }
  std::vector<char*> argv;
  for (std::size_t i = first; i < a.size(); ++i) argv.push_back(const_cast<char*>(a[i].c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  std::fprintf(stderr, "tendril run: cannot run '%s': %s\n", argv[0], std::strerror(errno));
  return errno == ENOENT ? 127 : 126;
}

}  // namespace tendril::app
