// The exceptions of the greenlet layer.
#ifndef TENDRIL_GREENLET_EXCEPTIONS_HPP
#define TENDRIL_GREENLET_EXCEPTIONS_HPP

#include <stdexcept>

namespace tendril {

// greenlet_exit is raised inside a greenlet to end it: when the last handle to a suspended
// greenlet goes away, and by kill(). It does not derive from std::exception, so that a
// `catch (const std::exception&)` in user code lets it through; a greenlet whose run() lets
// it escape counts as having ended normally, and its parent receives the greenlet_exit as a
// value (python's GreenletExit).
class greenlet_exit {
 public:
  const char* what() const noexcept { return "tendril::greenlet_exit"; }
};

// greenlet_error is the base of every misuse of a greenlet that tendril detects: switching
// into a greenlet of another thread, a cycle of parents, using an empty handle. The message
// names the greenlets involved.
class greenlet_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// wrong_thread: a greenlet was switched to, thrown into, re-parented or given a parent from
// an OS thread other than its own.
class wrong_thread : public greenlet_error {
 public:
  using greenlet_error::greenlet_error;
};

// parent_cycle: set_parent() would have made a greenlet its own ancestor.
class parent_cycle : public greenlet_error {
 public:
  using greenlet_error::greenlet_error;
};

// generator_running: next() or send() on a generator that is already running, from another
// greenlet while one is inside its next() (its body may be parked for it) or from its own body
// (python's "generator already executing"). The message names the greenlet inside next().
class generator_running : public greenlet_error {
 public:
  using greenlet_error::greenlet_error;
};

}  // namespace tendril

#endif
