// The C++ runtime's per-thread exception state, saved and restored on every switch so that
// each greenlet has its own: the stack of exceptions being handled (what a `throw;` in a
// catch block rethrows, what std::current_exception() returns) and the count of exceptions
// in flight (std::uncaught_exceptions()). Without this, a greenlet that switches away inside
// a catch block would hand its caught exception to whichever greenlet runs next.
//
// libstdc++ and libc++abi both keep these as the first two fields of __cxa_eh_globals,
// returned by __cxa_get_globals(); the pointer is fixed for the life of a thread, so it is
// looked up once per thread.
#ifndef TENDRIL_SRC_GREENLET_EXCEPTION_STATE_HPP
#define TENDRIL_SRC_GREENLET_EXCEPTION_STATE_HPP

#include "tendril/greenlet/switch_core.hpp"

namespace __cxxabiv1 {
struct __cxa_eh_globals;
extern "C" __cxa_eh_globals* __cxa_get_globals() noexcept;
}  // namespace __cxxabiv1

namespace tendril::detail {

// exception_state, the layout of __cxa_eh_globals: include/tendril/greenlet/switch_core.hpp.

inline exception_state* thread_eh_globals() noexcept {
  return reinterpret_cast<exception_state*>(__cxxabiv1::__cxa_get_globals());
}

}  // namespace tendril::detail

#endif
