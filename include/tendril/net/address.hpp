// tendril::net::address: an IPv4, IPv6 or Unix socket address.
#ifndef TENDRIL_NET_ADDRESS_HPP
#define TENDRIL_NET_ADDRESS_HPP

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace tendril::net {

class address {
 public:
  address() = default;
  // From a sockaddr of len bytes (std::invalid_argument if it does not fit).
  address(const sockaddr* sa, socklen_t len);

  // ip() parses a numeric IPv4 or IPv6 address ("127.0.0.1", "::1"); throws
  // std::invalid_argument naming the text if it is not one.
  static address ip(std::string_view host, std::uint16_t port);
  // unix_path() is a Unix socket address (std::invalid_argument if the path is too long).
  static address unix_path(std::string_view path);

  int family() const noexcept { return storage_.ss_family; }
  bool is_ipv4() const noexcept { return family() == AF_INET; }
  bool is_ipv6() const noexcept { return family() == AF_INET6; }
  bool is_unix() const noexcept { return family() == AF_UNIX; }
  bool empty() const noexcept { return len_ == 0; }

  // host() is the numeric host ("127.0.0.1"), or the path of a Unix address.
  std::string host() const;
  std::uint16_t port() const noexcept;
  // to_string() is "127.0.0.1:8080", "[::1]:8080" or the Unix path.
  std::string to_string() const;

  const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  sockaddr* data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
  socklen_t size() const noexcept { return len_; }
  socklen_t* size_ptr() noexcept { return &len_; }
  static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }

  friend bool operator==(const address& a, const address& b) noexcept;

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

}  // namespace tendril::net

#endif
