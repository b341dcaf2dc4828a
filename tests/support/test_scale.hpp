// How much work the long tests do. TENDRIL_TEST_SCALE (a positive number, 1.0 unless set)
// multiplies their counts, so that slow runs (valgrind uses 0.1) stay within their time limit.
#ifndef TENDRIL_TESTS_SUPPORT_TEST_SCALE_HPP
#define TENDRIL_TESTS_SUPPORT_TEST_SCALE_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>

namespace tendril::test {

// test_scale() is TENDRIL_TEST_SCALE, or 1.0 when it is unset, unreadable or not positive.
inline double test_scale() {
  const char* s = std::getenv("TENDRIL_TEST_SCALE");
  if (s == nullptr || *s == '\0') return 1.0;
  char* end = nullptr;
  double v = std::strtod(s, &end);
  if (end == s || !std::isfinite(v) || v <= 0.0) return 1.0;
  return v;
}

// scaled() is n times test_scale(), never less than `at_least`.
inline std::size_t scaled(std::size_t n, std::size_t at_least = 1) {
  auto v = static_cast<std::size_t>(std::llround(static_cast<double>(n) * test_scale()));
  return std::max(v, at_least);
}

}  // namespace tendril::test

#endif
