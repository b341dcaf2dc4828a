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

// The preload library: the build tree's, then the installed one ("" if neither is there).
std::string find_preload() {
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
  std::string lib;
  if (const char* env = std::getenv("TENDRIL_PRELOAD"); env && *env) {
    // Named by the user: that one or none, and the message says which.
    lib = env;
    if (!readable(lib)) {
      const int err = errno;
      std::fprintf(stderr, "tendril run: cannot read TENDRIL_PRELOAD=%s: %s\n", env,
                   std::strerror(err));
      return 2;
    }
  } else if ((lib = find_preload()).empty()) {
    std::fprintf(stderr,
                 "tendril run: libtendril_preload.so not found (looked at %s and %s); install "
                 "tendril with -DBUILD_SHARED_LIBS=ON or set TENDRIL_PRELOAD\n",
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
  const int err = errno;  // before fprintf, which may change it
  std::fprintf(stderr, "tendril run: cannot run '%s': %s\n", argv[0], std::strerror(err));
  return err == ENOENT ? 127 : 126;
}

}  // namespace tendril::app
