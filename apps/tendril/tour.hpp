// The tour: the seed's examples, one section per file, run in order.
#ifndef TENDRIL_APPS_TENDRIL_TOUR_HPP
#define TENDRIL_APPS_TENDRIL_TOUR_HPP

#include <chrono>

namespace tendril::app {

struct tour_options {
  bool quick = false;  // sleeps scaled down by `scale`
  double scale = 1.0;
  // seconds() turns the seed's sleep of `s` seconds into this run's.
  std::chrono::duration<double> seconds(double s) const {
    return std::chrono::duration<double>(s * scale);
  }
};

void heading(const char* title);

// Sections, in tour order.
void tour_generators(const tour_options& o);
void tour_greenlets(const tour_options& o);
void tour_gevent(const tour_options& o);
void tour_sockets(const tour_options& o);
void tour_monkey(const tour_options& o);
void tour_iomodels(const tour_options& o);

}  // namespace tendril::app

#endif
