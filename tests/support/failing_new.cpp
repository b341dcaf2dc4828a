#include "failing_new.hpp"

#include "context/sanitizer.hpp"

#include <cstdlib>
#include <new>

namespace {
thread_local bool t_armed = false;
thread_local std::size_t t_size = 0;
}  // namespace

namespace tendril::test {
void fail_next_new(std::size_t size) noexcept {
  t_size = size;
  t_armed = true;
}
void stop_failing_new() noexcept { t_armed = false; }
bool failing_new_works() noexcept {
  // valgrind's operator new takes the place of this one, not its operator delete: a probe
  // would free valgrind's block here (a mismatched free, which fails the run).
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

void* operator new(std::size_t n) {
  if (t_armed && (t_size == 0 || t_size == n)) {
    t_armed = false;
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(n != 0 ? n : 1)) return p;
  throw std::bad_alloc();
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

// The nothrow form too (the backends use it): ASan's own would pair with the free() above
// as an alloc-dealloc mismatch.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return ::operator new(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
