#include "tendril/net/resolve.hpp"

#include <netdb.h>

#include <charconv>
#include <string>

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

}  // namespace

std::vector<address> resolve(std::string_view host, std::string_view service, std::error_code& ec,
                             int family, int socktype) {
  ec.clear();
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

std::vector<address> resolve(std::string_view host, std::string_view service, int family,
                             int socktype) {
  std::error_code ec;
  std::vector<address> r = resolve(host, service, ec, family, socktype);
  if (ec) {
    throw std::system_error(
        ec, "tendril::net::resolve('" + std::string(host) + "', '" + std::string(service) + "')");
  }
  return r;
}

}  // namespace tendril::net
