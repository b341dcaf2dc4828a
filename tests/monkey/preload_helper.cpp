// The program tests/monkey/preload_test.cpp runs, directly and under `tendril run`: it links
// libtendril.so and never calls patch_all(). Two greenlets each call plain ::usleep(300 ms);
// it prints whether the hooks are on, how long the two took, and its arguments:
//   patched=0 elapsed=0.601 args=one|two words
// Under `tendril run` the preloaded library turns the hooks on, and the sleeps overlap.
// With the arguments `system COMMAND` it then runs COMMAND with std::system() (a /bin/sh
// child, which inherits the preload) and prints its status: "system=0".
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

int main(int argc, char** argv) {
  const auto start = std::chrono::steady_clock::now();
  auto a = tendril::spawn([] { ::usleep(300'000); });
  auto b = tendril::spawn([] { ::usleep(300'000); });
  tendril::joinall(a, b);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::string args;
  for (int i = 1; i < argc; ++i) args += (i > 1 ? "|" : "") + std::string(argv[i]);
  std::printf("patched=%d elapsed=%.3f args=%s\n", tendril::monkey::is_patched() ? 1 : 0, elapsed,
              args.c_str());
  if (argc == 3 && std::string(argv[1]) == "system") {
    std::fflush(stdout);
    std::printf("system=%d\n", std::system(argv[2]));
  }
  return 0;
}
