// Every sanitizer and valgrind annotation tendril makes, in one place. Each function is a
// no-op unless the matching tool is built in (ASan, TSan) or present (valgrind's client
// requests cost a few instructions when not running under valgrind).
//
// The switch protocol, for a switch from A to B:
//   A: asan_start_switch(&A.fake_stack, B.stack) ; tsan_switch(B.fiber) ; jump
//   B: asan_finish_switch(B.fake_stack, ...)      (B's stack bounds are known to ASan again)
// A context that is leaving for good passes nullptr as its fake-stack slot, so that ASan
// frees it, and its TSan fiber is destroyed from the side it left to.
#ifndef TENDRIL_SRC_CONTEXT_SANITIZER_HPP
#define TENDRIL_SRC_CONTEXT_SANITIZER_HPP

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define TENDRIL_HAS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TENDRIL_HAS_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define TENDRIL_HAS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TENDRIL_HAS_TSAN 1
#endif
#endif

#if defined(TENDRIL_HAS_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(TENDRIL_HAS_TSAN)
#include <sanitizer/tsan_interface.h>
#endif
#if __has_include(<valgrind/valgrind.h>) && __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define TENDRIL_HAS_VALGRIND_H 1
#endif

namespace tendril::detail::sanitizer {

// True in builds where greenlet stacks are hidden from the tools that read them (ASan).
#if defined(TENDRIL_HAS_ASAN)
inline constexpr bool asan = true;
#else
inline constexpr bool asan = false;
#endif
#if defined(TENDRIL_HAS_TSAN)
inline constexpr bool tsan = true;
#else
inline constexpr bool tsan = false;
#endif

// asan_start_switch() tells ASan the running context is about to leave for the stack
// [bottom, bottom + size). fake_stack is where the leaving side's fake stack is kept, or
// nullptr if it leaves for good.
inline void asan_start_switch([[maybe_unused]] void** fake_stack,
                              [[maybe_unused]] const void* bottom,
                              [[maybe_unused]] std::size_t size) noexcept {
#if defined(TENDRIL_HAS_ASAN)
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
#endif
}

// asan_finish_switch() tells ASan the switch is over; it reports the stack that was left
// (useful to learn the bounds of a thread's own stack, which tendril did not allocate).
inline void asan_finish_switch([[maybe_unused]] void* fake_stack,
                               [[maybe_unused]] const void** old_bottom,
                               [[maybe_unused]] std::size_t* old_size) noexcept {
#if defined(TENDRIL_HAS_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack, old_bottom, old_size);
#endif
}

// stack_reused() tells the tools that a stack is handed out (again): ASan forgets the redzones
// the frames of its last greenlet left behind, and valgrind forgets that the memory below
// that greenlet's last stack pointer was inaccessible (it is fresh, undefined memory now).
inline void stack_reused([[maybe_unused]] void* base, [[maybe_unused]] std::size_t size) noexcept {
#if defined(TENDRIL_HAS_ASAN)
  __asan_unpoison_memory_region(base, size);
#endif
#if defined(TENDRIL_HAS_VALGRIND_H)
  VALGRIND_MAKE_MEM_UNDEFINED(base, size);
#endif
}

// stack_unused() tells valgrind that memory of the stack pool holds no stack in use: a region
// just reserved (stacks not yet carved, and the guard pages between them), or a stack given
// back to the pool. Its leak check then skips it instead of reading every page of gigabytes
// of reservation (faulting each in, and faulting on each guard page it does not know of);
// and a pointer kept into a stack after its greenlet ended is reported where it is used.
// stack_reused() makes a stack usable again when it is handed out.
inline void stack_unused([[maybe_unused]] void* base, [[maybe_unused]] std::size_t size) noexcept {
#if defined(TENDRIL_HAS_VALGRIND_H)
  VALGRIND_MAKE_MEM_NOACCESS(base, size);
#endif
}

// tsan_create() makes a TSan fiber for a new context; tsan_current() is the running one.
inline void* tsan_create() noexcept {
#if defined(TENDRIL_HAS_TSAN)
  return __tsan_create_fiber(0);
#else
  return nullptr;
#endif
}
inline void* tsan_current() noexcept {
#if defined(TENDRIL_HAS_TSAN)
  return __tsan_get_current_fiber();
#else
  return nullptr;
#endif
}
// tsan_switch() is called right before the jump to the context whose fiber this is.
inline void tsan_switch([[maybe_unused]] void* fiber) noexcept {
#if defined(TENDRIL_HAS_TSAN)
  __tsan_switch_to_fiber(fiber, 0);
#endif
}
// tsan_destroy() frees a fiber; never the running one.
inline void tsan_destroy([[maybe_unused]] void* fiber) noexcept {
#if defined(TENDRIL_HAS_TSAN)
  if (fiber) __tsan_destroy_fiber(fiber);
#endif
}

// valgrind_register() tells valgrind that [lo, hi) is a stack, so that it does not take a
// switch for a huge stack-pointer move; the id it returns undoes it.
inline unsigned valgrind_register([[maybe_unused]] void* lo, [[maybe_unused]] void* hi) noexcept {
#if defined(TENDRIL_HAS_VALGRIND_H)
  return VALGRIND_STACK_REGISTER(lo, hi);
#else
  return 0;
#endif
}
inline void valgrind_deregister([[maybe_unused]] unsigned id) noexcept {
#if defined(TENDRIL_HAS_VALGRIND_H)
  VALGRIND_STACK_DEREGISTER(id);
#endif
}
// valgrind_make_defined() tells valgrind that [p, p + n) holds defined bytes: for tests that
// read what the kernel wrote into a stack (zeroes after MADV_DONTNEED), which valgrind takes
// for undefined since the stack was handed out.
inline void valgrind_make_defined([[maybe_unused]] void* p,
                                  [[maybe_unused]] std::size_t n) noexcept {
#if defined(TENDRIL_HAS_VALGRIND_H)
  VALGRIND_MAKE_MEM_DEFINED(p, n);
#endif
}

// valgrind_addressable() is 1 when valgrind's memcheck sees the byte at p as addressable, 0
// when it does not, -1 when not running under valgrind (for tests of the marks above).
inline int valgrind_addressable([[maybe_unused]] const void* p) noexcept {
#if defined(TENDRIL_HAS_VALGRIND_H)
  unsigned char vbits = 0;
  switch (VALGRIND_GET_VBITS(p, &vbits, 1)) {
    case 1:
      return 1;
    case 3:
      return 0;
    default:
      return -1;
  }
#else
  return -1;
#endif
}

// running_on_valgrind() lets tests scale their sizes down.
inline bool running_on_valgrind() noexcept {
#if defined(TENDRIL_HAS_VALGRIND_H)
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}

}  // namespace tendril::detail::sanitizer

#endif
