// The exceptions of the hub layer.
#ifndef TENDRIL_HUB_EXCEPTIONS_HPP
#define TENDRIL_HUB_EXCEPTIONS_HPP

#include <stdexcept>

#include "tendril/greenlet/exceptions.hpp"

namespace tendril {

// loop_exit: a greenlet blocked while nothing could ever wake it: no ready greenlets, no
// timers, no watched descriptors, no work on the thread pool and no other thread that could
// set what it waits on (gevent's LoopExit, "this operation would block forever"). Raised in
// the thread's root greenlet if it is the one blocked, else in the greenlet that blocked last.
class loop_exit : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// invalid_switch: a greenlet parked by the hub was switched into by someone other than the
// hub. Raised inside the parked greenlet, at its blocking call.
class invalid_switch : public greenlet_error {
 public:
  using greenlet_error::greenlet_error;
};

// blocking_switch_out: a blocking call was made on the hub greenlet itself (code the loop
// runs, such as a timer callback or a greenlet that set the hub as its parent), where nothing
// could ever resume it (gevent's BlockingSwitchOutError).
class blocking_switch_out : public greenlet_error {
 public:
  using greenlet_error::greenlet_error;
};

}  // namespace tendril

#endif
