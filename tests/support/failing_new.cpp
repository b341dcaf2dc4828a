#include "failing_new.hpp"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <type_traits>

#include "context/sanitizer.hpp"

namespace {
thread_local bool t_armed = false;
thread_local std::size_t t_size = 0;

// When not failing, the operators below hand over to the ones they replace (ASan's or TSan's
// where a sanitizer runs, else the C++ runtime's), not to malloc() and free(): ASan checks
// that a block from new is freed by delete, of the size it was made with, only for blocks its
// own operator new made (hub_test's the_test_operator_new_leaves_asan_its_new_delete_checks).
static_assert(std::is_same_v<std::size_t, unsigned long>, "the mangled names below use m");
template <class F>
F next_operator(const char* mangled) noexcept {
  // (dlsym() allocates with malloc(), never with operator new.)
  void* f = ::dlsym(RTLD_NEXT, mangled);
  if (f == nullptr) {
    std::fprintf(stderr, "failing_new: no %s after the test's own\n", mangled);
    std::abort();
  }
  return reinterpret_cast<F>(f);
}
void* next_new(std::size_t n) {
  static const auto f = next_operator<void* (*)(std::size_t)>("_Znwm");
  return f(n);
}
void* next_new_array(std::size_t n) {
  static const auto f = next_operator<void* (*)(std::size_t)>("_Znam");
  return f(n);
}
void* next_aligned_new(std::size_t n, std::align_val_t a) {
  static const auto f =
      next_operator<void* (*)(std::size_t, std::align_val_t)>("_ZnwmSt11align_val_t");
  return f(n, a);
}
void* next_aligned_new_array(std::size_t n, std::align_val_t a) {
  static const auto f =
      next_operator<void* (*)(std::size_t, std::align_val_t)>("_ZnamSt11align_val_t");
  return f(n, a);
}
void next_delete(void* p) noexcept {
  static const auto f = next_operator<void (*)(void*) noexcept>("_ZdlPv");
  f(p);
}
void next_sized_delete(void* p, std::size_t n) noexcept {
  static const auto f = next_operator<void (*)(void*, std::size_t) noexcept>("_ZdlPvm");
  f(p, n);
}
// fail_now() throws std::bad_alloc, once, if armed for an operator new of n bytes.
void fail_now(std::size_t n) {
  if (t_armed && (t_size == 0 || t_size == n)) {
    t_armed = false;
    throw std::bad_alloc();
  }
}
}  // namespace

namespace tendril::test {
void fail_next_new(std::size_t size) noexcept {
  t_size = size;
  t_armed = true;
}
void stop_failing_new() noexcept { t_armed = false; }
bool failing_new_works() noexcept {
  // valgrind's operator new takes the place of this one, which then cannot fail.
  if (tendril::detail::sanitizer::running_on_valgrind()) return false;
  fail_next_new();
  try {
    static int* volatile sink = nullptr;  // kept, so the compiler cannot drop the new
    sink = new int(0);
    delete sink;
  } catch (const std::bad_alloc&) {
    return true;
  }
  stop_failing_new();
  return false;
}
}  // namespace tendril::test

// Every form of operator new, so that the next one fails whichever the code uses (a runtime
// new[] that calls operator new asks for the same size: the first check decides). The deletes
// need not all be replaced: every block comes from the next definitions, whose deletes match.
void* operator new(std::size_t n) {
  fail_now(n);
  return next_new(n);
}
void* operator new[](std::size_t n) {
  fail_now(n);
  return next_new_array(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
  fail_now(n);
  return next_aligned_new(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a) {
  fail_now(n);
  return next_aligned_new_array(n, a);
}

void operator delete(void* p) noexcept { next_delete(p); }
void operator delete(void* p, std::size_t n) noexcept { next_sized_delete(p, n); }

// The nothrow forms return null where the others throw (the backends use them).
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return ::operator new(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return ::operator new[](n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return ::operator new(n, a);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return ::operator new[](n, a);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p, const std::nothrow_t&) noexcept { next_delete(p); }
