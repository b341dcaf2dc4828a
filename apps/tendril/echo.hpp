// The seed's echo service, shared by the commands and the tour.
#ifndef TENDRIL_APPS_TENDRIL_ECHO_HPP
#define TENDRIL_APPS_TENDRIL_ECHO_HPP

#include <cstdint>

#include "tendril/net/socket.hpp"

namespace tendril::app {

inline constexpr std::uint16_t default_echo_port = 9999;

// serve_echo() answers each chunk upper-cased until the peer closes.
void serve_echo(net::tcp_stream& conn, const net::address& peer, bool chatty);

}  // namespace tendril::app

#endif
