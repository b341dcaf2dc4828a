// A replaced operator new that fails on demand (failing_new.cpp, linked into the test
// binaries that need it), for the paths where an allocation's std::bad_alloc must leave
// things as they were. When it does not fail, the operator new and delete it replaces (a
// sanitizer's, or the C++ runtime's) do the work, so ASan's new/delete checks still hold.
#ifndef TENDRIL_TESTS_SUPPORT_FAILING_NEW_HPP
#define TENDRIL_TESTS_SUPPORT_FAILING_NEW_HPP

#include <cstddef>

namespace tendril::test {

// fail_next_new() makes the next operator new on this thread throw std::bad_alloc (any form:
// single or array, aligned or not; a nothrow form returns null): the next one of `size`
// bytes, or of any size if size is 0. Once only; stop_failing_new() disarms it.
void fail_next_new(std::size_t size = 0) noexcept;
void stop_failing_new() noexcept;
// failing_new_works() tells whether this operator new is the one the program calls: under
// valgrind, which puts its own in its place, it is not, and tests that need an allocation to
// fail skip.
bool failing_new_works() noexcept;

}  // namespace tendril::test

#endif
