// tendril::net::resolve(): name resolution that never blocks the hub.
#ifndef TENDRIL_NET_RESOLVE_HPP
#define TENDRIL_NET_RESOLVE_HPP

#include <sys/socket.h>

#include <string_view>
#include <system_error>
#include <vector>

#include "tendril/net/address.hpp"

namespace tendril::net {

// resolve() is the addresses of host for service (a port number or a name from
// /etc/services), through getaddrinfo run on the thread pool (numeric hosts are parsed on the
// spot). family: AF_UNSPEC, AF_INET or AF_INET6; socktype: SOCK_STREAM or SOCK_DGRAM.
// Throws std::system_error: net::errc::host_not_found for an unknown name, resolve_failed
// otherwise, with the name and the resolver's reason in the message; EINVAL for a service
// that is a number but not a port (0 to 65535) and for another family. Switches: yes.
std::vector<address> resolve(std::string_view host, std::string_view service,
                             int family = AF_UNSPEC, int socktype = SOCK_STREAM);
std::vector<address> resolve(std::string_view host, std::string_view service, std::error_code& ec,
                             int family = AF_UNSPEC, int socktype = SOCK_STREAM);

}  // namespace tendril::net

#endif
