// Argument parsing shared by the lab's commands (`tendril load`, `tendril iomodels`) and the
// echo pair's.
#ifndef TENDRIL_APPS_TENDRIL_LAB_ARGS_HPP
#define TENDRIL_APPS_TENDRIL_LAB_ARGS_HPP

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "command.hpp"

namespace tendril::app {

// parse_count() is the whole number in v, from lo to hi, or throws usage_error naming
// the option.
inline std::size_t parse_count(const std::string& option, const std::string& v, std::size_t lo,
                               std::size_t hi) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || v[0] == '-' || *end != '\0' || errno != 0 || n < lo || n > hi)
    throw usage_error("bad value '" + v + "' for " + option + " (a whole number from " +
                      std::to_string(lo) + " to " + std::to_string(hi) + ")");
  return static_cast<std::size_t>(n);
}

// decimal() is true when v is written as a decimal number (strtod also takes hexadecimal,
// "inf" and "nan").
inline bool decimal(const std::string& v) {
  return !v.empty() && v.find_first_not_of("0123456789.eE+-") == std::string::npos;
}

// parse_seconds() is the duration in v, in seconds: more than 0, or at least 0 when zero_ok.
inline double parse_seconds(const std::string& option, const std::string& v, bool zero_ok) {
  char* end = nullptr;
  const double s = std::strtod(v.c_str(), &end);
  if (!decimal(v) || *end != '\0' || !std::isfinite(s) || s < 0 || (!zero_ok && s == 0) ||
      s > 86400)
    throw usage_error("bad value '" + v + "' for " + option + " (seconds, " +
                      (zero_ok ? "0" : "more than 0") + " to 86400)");
  return s;
}

// parse_rate() is the messages per second in v: 0 for none (a closed loop), or at least one
// in 1,000 s and at most 100 million.
inline double parse_rate(const std::string& option, const std::string& v) {
  char* end = nullptr;
  const double r = std::strtod(v.c_str(), &end);
  if (!decimal(v) || *end != '\0' || !std::isfinite(r) || (r != 0 && (r < 1e-3 || r > 1e8)))
    throw usage_error("bad value '" + v + "' for " + option +
                      " (messages per second: 0 for none, or 0.001 to 100000000)");
  return r;
}

// split_list() is v cut at each comma, empty items left out.
inline std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= v.size()) {
    std::size_t comma = v.find(',', start);
    if (comma == std::string::npos) comma = v.size();
    if (comma > start) out.push_back(v.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

}  // namespace tendril::app

#endif
