// Stack sizes of greenlets.
#ifndef TENDRIL_GREENLET_STACK_HPP
#define TENDRIL_GREENLET_STACK_HPP

#include <cstddef>

namespace tendril {

// default_stack_size is the usable stack of a greenlet that does not ask for a size. It is
// reserved address space: only the pages a greenlet touches cost memory (typically one).
inline constexpr std::size_t default_stack_size = 256 * 1024;

// min_stack_size is the smallest stack a greenlet may ask for; smaller requests throw
// std::invalid_argument. Sizes are rounded up to whole pages.
inline constexpr std::size_t min_stack_size = 16 * 1024;

// stack_size asks for a stack of `bytes` usable bytes; 0 means default_stack_size.
struct stack_size {
  std::size_t bytes = 0;
};

// trim_stack_cache() gives the memory of cached greenlet stacks back to the system and
// returns how many stacks it trimmed: those cached by the calling thread and those left by
// threads that ended. Other running threads' caches are theirs, unlocked: each trims its own
// by calling it. Stacks of finished greenlets are kept for reuse (never more than were alive
// at once, besides the rest of a batch carved ahead); their address space stays reserved.
// Switches: no. Any thread.
std::size_t trim_stack_cache() noexcept;

}  // namespace tendril

#endif
