#include "tendril/net/address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>
#include <stdexcept>

namespace tendril::net {

address::address(const sockaddr* sa, socklen_t len) {
  if (len > sizeof storage_)
    throw std::invalid_argument("tendril::net::address: sockaddr too large");
  std::memcpy(&storage_, sa, len);
  len_ = len;
}

address address::ip(std::string_view host, std::uint16_t port) {
  address a;
  std::string h(host);
  // Brackets are allowed around IPv6 ("[::1]"), and only there.
  const bool bracketed = h.size() > 2 && h.front() == '[' && h.back() == ']';
  if (bracketed) h = h.substr(1, h.size() - 2);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage_);
  // inet_pton() reads up to a NUL: "127.0.0.1\0junk" would pass as 127.0.0.1.
  if (h.find('\0') != std::string::npos) {
    throw std::invalid_argument("tendril::net::address::ip: '" + std::string(host) +
                                "' holds a NUL character");
  }
  if (!bracketed && inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.len_ = sizeof(sockaddr_in);
    return a;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
  if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.len_ = sizeof(sockaddr_in6);
    return a;
  }
  throw std::invalid_argument("tendril::net::address::ip: '" + std::string(host) +
                              "' is not a numeric IPv4 or IPv6 address");
}

address address::unix_path(std::string_view path) {
  address a;
  auto* un = reinterpret_cast<sockaddr_un*>(&a.storage_);
  if (path.empty() || path.size() >= sizeof un->sun_path) {
    throw std::invalid_argument("tendril::net::address::unix_path: '" + std::string(path) +
                                "' is empty or longer than " +
                                std::to_string(sizeof un->sun_path - 1) + " bytes");
  }
  un->sun_family = AF_UNIX;
  std::memcpy(un->sun_path, path.data(), path.size());
  a.len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return a;
}

std::string address::host() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (is_ipv4()) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
    return buf;
  }
  if (is_ipv6()) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf,
              sizeof buf);
    return buf;
  }
  if (is_unix()) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
    if (len_ <= offsetof(sockaddr_un, sun_path)) return "(unnamed)";
    return std::string(un->sun_path, strnlen(un->sun_path, len_ - offsetof(sockaddr_un, sun_path)));
  }
  return {};
}

std::uint16_t address::port() const noexcept {
  if (is_ipv4()) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (is_ipv6()) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

std::string address::to_string() const {
  if (is_ipv4()) return host() + ":" + std::to_string(port());
  if (is_ipv6()) return "[" + host() + "]:" + std::to_string(port());
  if (is_unix()) return host();
  return "(no address)";
}

bool operator==(const address& a, const address& b) noexcept {
  return a.len_ == b.len_ && std::memcmp(&a.storage_, &b.storage_, a.len_) == 0;
}

}  // namespace tendril::net
