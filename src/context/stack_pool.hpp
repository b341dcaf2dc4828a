// Greenlet stacks: carved out of large reserved mappings, each with a guard region below it,
// and pooled for reuse.
//
// Address space is reserved in regions (4 GiB, MAP_NORESERVE: only touched pages cost
// memory) and cut into slots of [guard | usable stack]. The guard is installed with
// madvise(MADV_GUARD_INSTALL) where the kernel has it (Linux 6.13+): a marker in the page
// tables, so a region stays one mapping however many guards it holds and 100,000 guarded
// stacks do not approach vm.max_map_count. Older kernels get mprotect(PROT_NONE) guards,
// which split the mapping: two map entries per stack.
//
// New stacks are carved in batches (one, two, four... up to 64 while a program keeps asking
// for the same size), each batch's guards installed and the top page of each stack populated
// in one system call apiece where the kernel allows it, so that a new greenlet's first frames
// take no page fault.
//
// A released stack keeps its memory and goes to its thread's cache, from which the next
// greenlet of the same size takes it without a system call or a page fault; a thread's cache
// goes to a process-wide list when the thread ends. The cache never holds more stacks than
// were alive at once, besides the rest of the last batch of each size; trim() gives their memory
// back to the system (keeping the address space), coalescing neighbouring stacks into one madvise
// call each.
#ifndef TENDRIL_SRC_CONTEXT_STACK_POOL_HPP
#define TENDRIL_SRC_CONTEXT_STACK_POOL_HPP

#include <cstddef>

namespace tendril::detail {

struct stack {
  std::byte* base = nullptr;  // lowest usable byte; the guard lies just below it
  std::size_t size = 0;       // usable bytes
  unsigned valgrind_id = 0;

  std::byte* top() const noexcept { return base + size; }
  explicit operator bool() const noexcept { return base != nullptr; }
};

namespace stack_pool {

// default_size is what a greenlet gets unless it asks; min_size the smallest it may ask.
inline constexpr std::size_t default_size = 256 * 1024;
inline constexpr std::size_t min_size = 16 * 1024;
// guard_size is the guard below every stack (a frame bigger than this can jump over it;
// tendril itself is built with -fstack-clash-protection, which probes such frames).
inline constexpr std::size_t guard_size = 16 * 1024;

// page_size() is the system's page size.
std::size_t page_size() noexcept;

// rounded_size() is the usable size allocate() gives for a request (page multiple).
std::size_t rounded_size(std::size_t requested) noexcept;

// allocate() hands out a stack of at least `size` usable bytes (size >= min_size), from the
// calling thread's cache when it has one. Returns 0, or ENOMEM when no address space or
// memory is left (never aborts).
int allocate(std::size_t size, stack& out) noexcept;

// release() returns a stack to the calling thread's cache. Any thread may release.
void release(const stack& s) noexcept;

// trim() gives the memory of the calling thread's cached stacks and of the shared list's back
// to the system (other live threads' caches are theirs) and returns how many stacks it
// trimmed; the stacks stay cached (their address space and guards are kept).
std::size_t trim() noexcept;

// uses_guard_markers() tells whether guards are page-table markers (MADV_GUARD_INSTALL) or
// mprotect'ed pages; known after the first allocate().
bool uses_guard_markers() noexcept;

struct statistics {
  std::size_t reserved_bytes;  // address space reserved for stacks
  std::size_t carved;          // stacks ever cut from the reservation
  std::size_t cached_global;   // stacks on the process-wide list
  std::size_t cached_here;     // stacks in the calling thread's cache
};
statistics stats() noexcept;

// in_guard() tells whether addr lies in the guard of the stack starting at base.
inline bool in_guard(const stack& s, const void* addr) noexcept {
  auto* p = static_cast<const std::byte*>(addr);
  return s.base && p < s.base && p >= s.base - guard_size;
}

}  // namespace stack_pool
}  // namespace tendril::detail

#endif
