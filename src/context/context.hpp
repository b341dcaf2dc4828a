// L0, the machine switch: the only header through which tendril's own sources reach it.
//
// A context is an opaque pointer naming a suspended flow of control. Three operations,
// implemented in assembly (src/context/asm/, one file per operation, architecture and ABI)
// or, when configured with TENDRIL_CONTEXT=ucontext, with glibc's ucontext
// (context_ucontext.cpp):
//
//   make(top, size, entry)       prepares a context on a fresh stack; nothing runs yet. The
//                                first jump to it calls entry(data) there.
//   jump(&save, to, data)        suspends the caller into `save` and resumes `to`, which
//                                receives `data`. Returns, once something jumps back to
//                                `save`, the data that side passed.
//   ontop(&save, to, data, fn)   as jump, but first runs fn(data) on `to`'s stack and hands
//                                fn's result over instead.
//
// jump and ontop are inline (include/tendril/context/jump.hpp, see why there). Nothing here
// allocates, throws or knows about greenlets; stacks come from stack_pool.hpp. An exception
// must never unwind through a jump.
#ifndef TENDRIL_SRC_CONTEXT_CONTEXT_HPP
#define TENDRIL_SRC_CONTEXT_CONTEXT_HPP

#include <cstddef>

#include "tendril/context/jump.hpp"

extern "C" void* tendril_context_make(void* stack_top, std::size_t size, void (*entry)(void*));

namespace tendril::detail::context {

using handle = void*;
using entry_fn = void (*)(void* data);
using ontop_fn = void* (*)(void* data);

// make() prepares a context that calls entry(data) on the stack ending at stack_top (size
// bytes below it are usable) when first jumped to. entry must never return.
inline handle make(void* stack_top, std::size_t size, entry_fn entry) noexcept {
  return tendril_context_make(stack_top, size, entry);
}

// The room make() needs at the top of a stack, for any implementation (the ucontext one
// keeps its record there).
inline constexpr std::size_t make_reserve = 2048;

}  // namespace tendril::detail::context

#endif
