// The errors of tendril's network layer that are not an errno value.
#ifndef TENDRIL_NET_ERROR_HPP
#define TENDRIL_NET_ERROR_HPP

#include <string>
#include <system_error>

namespace tendril::net {

enum class errc {
  end_of_stream = 1,   // the peer closed the stream before the bytes asked for arrived
  host_not_found = 2,  // resolve(): the name does not exist (EAI_NONAME)
  resolve_failed = 3,  // resolve(): another getaddrinfo failure
  tls_handshake = 4,   // TLS: the handshake failed (the message says why)
  tls_verify = 5,      // TLS: the peer's certificate did not verify
  tls_protocol = 6,    // TLS: a protocol error after the handshake
};

// error_category() is the category of these codes ("tendril.net").
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace tendril::net

template <>
struct std::is_error_code_enum<tendril::net::errc> : std::true_type {};

#endif
