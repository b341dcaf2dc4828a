#include "tendril/net/resolve.hpp"

#include <netdb.h>

#include <charconv>
#include <cstdint>
#include <string>
#include <system_error>

#include "tendril/net/error.hpp"
#include "tendril/task/offload.hpp"

namespace tendril::net {
namespace {

struct lookup {
  int rc = 0;
  int err = 0;  // errno, for EAI_SYSTEM
  std::vector<address> found;
};

lookup run_getaddrinfo(const std::string& host, const std::string& service, int family,
                       int socktype, int flags) {
  lookup out;
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = socktype;
  hints.ai_flags = flags | AI_ADDRCONFIG;
  addrinfo* res = nullptr;
  out.rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (out.rc == EAI_SYSTEM) out.err = errno;
  if (out.rc == 0) {
    for (addrinfo* ai = res; ai; ai = ai->ai_next)
      out.found.emplace_back(ai->ai_addr, ai->ai_addrlen);
    ::freeaddrinfo(res);
  }
  return out;
}

// A service that looks like a number must be a port: getaddrinfo would take "70000" modulo
// 65536, and "-1" with a vague error.
bool known_family(int family) noexcept {
  return family == AF_UNSPEC || family == AF_INET || family == AF_INET6;
}

bool bad_port(std::string_view service) noexcept {
  std::size_t i = (!service.empty() && (service[0] == '-' || service[0] == '+')) ? 1 : 0;
  if (i == service.size()) return false;  // a name (or empty)
  for (std::size_t k = i; k < service.size(); ++k) {
    if (service[k] < '0' || service[k] > '9') return false;  // a name, such as "http"
  }
  if (i == 1) return true;  // a signed number
  std::uint32_t v = 0;
  auto [end, err] = std::from_chars(service.data(), service.data() + service.size(), v);
  return err != std::errc() || v > 65535;
}

std::vector<address> resolve_impl(std::string_view host, std::string_view service,
                                  std::error_code& ec, int family, int socktype, int* gai) {
  ec.clear();
  *gai = 0;
  if (!known_family(family) || bad_port(service)) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return {};
  }
  std::string h(host);
  std::string s(service);
  // Numeric hosts need no resolver: parse them here, without a thread.
  std::uint16_t port = 0;
  auto [end, perr] = std::from_chars(s.data(), s.data() + s.size(), port);
  if (perr == std::errc() && end == s.data() + s.size()) {
    try {
      address a = address::ip(h, port);
      if (family == AF_UNSPEC || family == a.family()) return {a};
    } catch (const std::invalid_argument&) {
    }
  }
  lookup r = offload(run_getaddrinfo, h, s, family, socktype, 0);
  *gai = r.rc;
  if (r.rc == 0) {
    if (r.found.empty()) ec = errc::host_not_found;
    return r.found;
  }
  if (r.rc == EAI_NONAME || r.rc == EAI_NODATA
#ifdef EAI_ADDRFAMILY
      || r.rc == EAI_ADDRFAMILY
#endif
  ) {
    ec = errc::host_not_found;
  } else if (r.rc == EAI_SYSTEM) {
    ec = std::error_code(r.err, std::generic_category());
  } else {
    ec = errc::resolve_failed;
  }
  return {};
}

}  // namespace

std::vector<address> resolve(std::string_view host, std::string_view service, std::error_code& ec,
                             int family, int socktype) {
  int gai = 0;
  return resolve_impl(host, service, ec, family, socktype, &gai);
}

std::vector<address> resolve(std::string_view host, std::string_view service, int family,
                             int socktype) {
  std::error_code ec;
  int gai = 0;
  std::vector<address> r = resolve_impl(host, service, ec, family, socktype, &gai);
  if (ec) {
    std::string what =
        "tendril::net::resolve('" + std::string(host) + "', '" + std::string(service) + "')";
    if (bad_port(service)) {
      what += ": the port must be a number from 0 to 65535 or a service name";
    } else if (!known_family(family)) {
      what += ": the family must be AF_UNSPEC, AF_INET or AF_INET6";
    } else if (gai != 0 && gai != EAI_SYSTEM) {
      what += std::string(": ") + ::gai_strerror(gai);
    }
    throw std::system_error(ec, what);
  }
  return r;
}

}  // namespace tendril::net
