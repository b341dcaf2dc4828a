// Stack overflow reporting: a SIGSEGV/SIGBUS handler, running on a per-thread alternate
// signal stack (the overflowing stack has no room left), that turns a hit on a greenlet's
// guard into "tendril: stack overflow in greenlet '<name>'" and aborts. Faults that are not
// guard hits, and signals sent by raise() or kill(), go on to whatever handler was installed
// before (ASan's, a crash logger's, the default action), run as the kernel would have run it.
#ifndef TENDRIL_SRC_CONTEXT_OVERFLOW_HPP
#define TENDRIL_SRC_CONTEXT_OVERFLOW_HPP

#include <cstddef>

namespace tendril::detail::overflow {

// A describe function is called inside the signal handler, on the faulting thread: when addr
// lies in the guard of the stack that thread is running on, it writes that greenlet's name
// into buf (at most len bytes, NUL-terminated) and returns true. It must be async-signal-safe:
// no allocation, no locks.
using describe_fn = bool (*)(const void* addr, char* buf, std::size_t len) noexcept;

// install() sets the process-wide handler once; later calls do nothing.
void install(describe_fn describe) noexcept;

// ensure_signal_stack() gives the calling thread an alternate signal stack, unless it has
// one; tendril's is freed when the thread ends.
void ensure_signal_stack() noexcept;

// report_stack_overflow() is the one place a guard hit ends the process.
[[noreturn]] void report_stack_overflow(const char* greenlet_name) noexcept;

}  // namespace tendril::detail::overflow

#endif
