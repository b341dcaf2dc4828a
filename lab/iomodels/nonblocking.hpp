// The non-blocking model's loop, for the tour (apps/tendril/tour_iomodels.cpp), which runs
// it on a thread of its own and stops it.
#ifndef TENDRIL_LAB_IOMODELS_NONBLOCKING_HPP
#define TENDRIL_LAB_IOMODELS_NONBLOCKING_HPP

#include <atomic>

namespace tendril::lab {

// serve_nonblocking() is the "nonblocking" model's server: it polls listen_fd (made
// non-blocking) and every connection in a busy loop until stop is true, then closes the
// connections (not the listener) and returns. Throws std::system_error if the listener fails.
void serve_nonblocking(int listen_fd, const std::atomic<bool>& stop);

}  // namespace tendril::lab

#endif
