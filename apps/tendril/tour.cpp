#include "tour.hpp"

#include <cstdio>
#include <stdexcept>
#include <string>

#include "command.hpp"

namespace tendril::app {

void heading(const char* title) {
  std::printf("\n== %s ==\n", title);
  std::fflush(stdout);
}

int tour(const args& a) {
  tour_options o;
  for (const auto& arg : a) {
    if (arg == "--quick") {
      o.quick = true;
      o.scale = 0.05;
    } else {
      throw usage_error("unknown option '" + arg + "' (tendril tour [--quick])");
    }
  }
  std::printf("tendril tour: the seed's examples, in C++%s\n",
              o.quick ? " (--quick: sleeps x0.05)" : "");
  tour_generators(o);
  tour_greenlets(o);
  tour_gevent(o);
  tour_sockets(o);
  tour_monkey(o);
  tour_iomodels(o);
  std::printf("\nend of the tour\n");
  return 0;
}

}  // namespace tendril::app
