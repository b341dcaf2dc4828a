#include "tendril/net/error.hpp"

namespace tendril::net {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "tendril.net"; }
  std::string message(int v) const override {
    switch (static_cast<errc>(v)) {
      case errc::end_of_stream:
        return "end of stream";
      case errc::host_not_found:
        return "host not found";
      case errc::resolve_failed:
        return "name resolution failed";
      case errc::tls_handshake:
        return "TLS handshake failed";
      case errc::tls_verify:
        return "TLS certificate verification failed";
      case errc::tls_protocol:
        return "TLS protocol error";
    }
    return "unknown tendril.net error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const category c;
  return c;
}

}  // namespace tendril::net
