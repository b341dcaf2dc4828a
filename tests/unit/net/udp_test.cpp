// UDP sockets over loopback: echo, connected sockets, datagram boundaries and truncation,
// receive time limits, close while waiting, and bad input (a port in use, an address of
// another family). Modelled on gevent's test__socket.py (UDP cases).
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <system_error>

#include "net_test_support.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;
using tendril::timeout;
using tendril::timeout_error;
using tendril::net::address;
using tendril::net::udp_socket;
using tendril::test::contains;
using tendril::test::stopwatch;

TEST(udp, echo_over_loopback) {
  udp_socket server = udp_socket::bind("127.0.0.1", 0);
  const address server_at = server.local_address();
  EXPECT_EQ(server_at.host(), "127.0.0.1");
  EXPECT_NE(server_at.port(), 0);
  auto echo = spawn([&] {
    char buf[1500];
    for (int i = 0; i < 3; ++i) {
      address from;
      std::size_t n = server.recv_from(buf, sizeof buf, from);
      server.send_to(buf, n, from);
    }
  });
  udp_socket client = udp_socket::open();
  for (std::string msg : {"one", "two", "three"}) {
    EXPECT_EQ(client.send_to(msg, server_at), msg.size());
    char buf[64];
    address from;
    std::size_t n = client.recv_from(buf, sizeof buf, from);
    EXPECT_EQ(std::string(buf, n), msg);
    EXPECT_EQ(from, server_at);
  }
  echo.get();
}

TEST(udp, a_connected_socket_sends_and_receives_without_addresses) {
  udp_socket server = udp_socket::bind("127.0.0.1", 0);
  udp_socket client = udp_socket::bind("127.0.0.1", 0);
  client.connect(server.local_address());
  EXPECT_EQ(client.peer_address(), server.local_address());
  EXPECT_EQ(client.send("ping"), 4u);
  char buf[16];
  address from;
  std::size_t n = server.recv_from(buf, sizeof buf, from);
  EXPECT_EQ(std::string(buf, n), "ping");
  EXPECT_EQ(from, client.local_address());
  server.send_to("pong", from);
  n = client.recv(buf, sizeof buf);
  EXPECT_EQ(std::string(buf, n), "pong");
}

TEST(udp, each_datagram_is_received_whole_and_apart) {
  udp_socket server = udp_socket::bind("127.0.0.1", 0);
  udp_socket client = udp_socket::open();
  const std::string big = tendril::test::pattern(8000, 7);
  client.send_to("a", server.local_address());
  client.send_to(big, server.local_address());
  client.send_to("", server.local_address());  // an empty datagram is a datagram
  client.send_to("last", server.local_address());
  std::string buf(65536, '\0');
  address from;
  EXPECT_EQ(server.recv_from(buf.data(), buf.size(), from), 1u);
  std::size_t n = server.recv_from(buf.data(), buf.size(), from);
  EXPECT_EQ(n, big.size());
  EXPECT_EQ(buf.substr(0, n), big);
  EXPECT_EQ(server.recv_from(buf.data(), buf.size(), from), 0u);
  n = server.recv_from(buf.data(), buf.size(), from);
  EXPECT_EQ(buf.substr(0, n), "last");
}

TEST(udp, a_datagram_larger_than_the_buffer_is_cut_to_it) {
  udp_socket server = udp_socket::bind("127.0.0.1", 0);
  udp_socket client = udp_socket::open();
  client.send_to("0123456789", server.local_address());
  client.send_to("next", server.local_address());
  char buf[4];
  address from;
  EXPECT_EQ(server.recv_from(buf, sizeof buf, from), 4u);
  EXPECT_EQ(std::string(buf, 4), "0123");
  // The rest of the cut datagram is gone; the next receive is the next datagram.
  EXPECT_EQ(server.recv_from(buf, sizeof buf, from), 4u);
  EXPECT_EQ(std::string(buf, 4), "next");
}

TEST(udp, recv_from_a_waiting_greenlet_gets_a_datagram_sent_later) {
  udp_socket server = udp_socket::bind("127.0.0.1", 0);
  udp_socket client = udp_socket::open();
  auto receiver = spawn([&] {
    char buf[16];
    address from;
    return std::string(buf, server.recv_from(buf, sizeof buf, from));
  });
  tendril::sleep(20ms);
  EXPECT_FALSE(receiver.ready());
  client.send_to("late", server.local_address());
  EXPECT_EQ(receiver.get(), "late");
}

TEST(udp, recv_from_past_set_timeout_fails_with_timed_out) {
  udp_socket server = udp_socket::bind("127.0.0.1", 0);
  server.set_timeout(50ms);
  char buf[16];
  address from;
  stopwatch w;
  try {
    server.recv_from(buf, sizeof buf, from);
    ADD_FAILURE() << "recv_from returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out);
    EXPECT_TRUE(contains(e.what(), server.local_address().to_string())) << e.what();
  }
  EXPECT_GE(w.elapsed(), 45ms);
  std::error_code ec;
  EXPECT_EQ(server.recv_from(buf, sizeof buf, from, ec), 0u);
  EXPECT_EQ(ec, std::errc::timed_out);
  // A datagram that comes afterwards is not lost.
  udp_socket client = udp_socket::open();
  client.send_to("ok", server.local_address());
  EXPECT_EQ(server.recv_from(buf, sizeof buf, from), 2u);
}

TEST(udp, recv_from_inside_a_timeout_scope_throws_timeout_error) {
  udp_socket server = udp_socket::bind("127.0.0.1", 0);
  timeout t(50ms);
  char buf[16];
  address from;
  try {
    server.recv_from(buf, sizeof buf, from);
    ADD_FAILURE() << "recv_from returned";
  } catch (const timeout_error& e) {
    EXPECT_EQ(e.source(), &t);
  }
}

TEST(udp, close_wakes_a_greenlet_waiting_in_recv_from_with_ebadf) {
  udp_socket server = udp_socket::bind("127.0.0.1", 0);
  auto receiver = spawn([&] {
    char buf[16];
    address from;
    std::error_code ec;
    std::size_t n = server.recv_from(buf, sizeof buf, from, ec);
    EXPECT_EQ(n, 0u);
    return ec;
  });
  tendril::sleep(20ms);
  server.close();
  EXPECT_EQ(receiver.get(), std::errc::bad_file_descriptor);
}

TEST(udp, binding_a_port_in_use_fails_with_eaddrinuse_naming_the_address) {
  udp_socket first = udp_socket::bind("127.0.0.1", 0);
  const std::uint16_t port = first.local_address().port();
  try {
    udp_socket::bind("127.0.0.1", port);
    ADD_FAILURE() << "bound twice";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
    EXPECT_TRUE(contains(e.what(), "127.0.0.1:" + std::to_string(port))) << e.what();
  }
}

TEST(udp, send_to_an_address_of_another_family_fails_naming_it) {
  udp_socket s = udp_socket::open(AF_INET);
  const address v6 = address::ip("::1", 9);
  try {
    s.send_to("x", v6);
    ADD_FAILURE() << "sent";
  } catch (const std::system_error& e) {
    EXPECT_TRUE(e.code());
    EXPECT_TRUE(contains(e.what(), "[::1]:9")) << e.what();
  }
  std::error_code ec;
  EXPECT_EQ(s.send_to("x", 1, v6, ec), 0u);
  EXPECT_TRUE(ec);
}

TEST(udp, calls_on_a_closed_socket_fail_with_ebadf) {
  udp_socket s = udp_socket::bind("127.0.0.1", 0);
  const address to = s.local_address();
  s.close();
  char buf[4];
  address from;
  std::error_code ec;
  s.recv_from(buf, sizeof buf, from, ec);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  s.send_to("x", 1, to, ec);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_THROW(s.recv_from(buf, sizeof buf, from), std::system_error);
  EXPECT_THROW(s.connect(to), std::system_error);
}

// An empty buffer would take a datagram and keep none of it: EINVAL, and the datagram stays.
TEST(udp, a_receive_into_an_empty_buffer_is_einval_and_loses_no_datagram) {
  udp_socket a = udp_socket::bind("127.0.0.1", 0);
  udp_socket b = udp_socket::bind("127.0.0.1", 0);
  b.send_to(std::string_view("hello"), a.local_address());
  char buf[16];
  address from;
  std::error_code ec;
  EXPECT_EQ(a.recv_from(buf, 0, from, ec), 0u);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_EQ(a.recv(buf, 0, ec), 0u);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  try {
    a.recv(buf, 0);
    ADD_FAILURE() << "an empty buffer was accepted";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument);
    EXPECT_TRUE(contains(e.what(), "recv (")) << e.what();
  }
  a.set_timeout(5s);
  EXPECT_EQ(a.recv_from(buf, sizeof buf, from), 5u);
  EXPECT_EQ(std::string(buf, 5), "hello");
}

TEST(udp, the_error_code_twins_report_instead_of_throwing) {
  std::error_code ec;
  udp_socket a = udp_socket::bind("127.0.0.1", 0);
  udp_socket b = udp_socket::bind("127.0.0.1", a.local_address().port(), ec);
  EXPECT_EQ(ec, std::errc::address_in_use);
  EXPECT_FALSE(b.is_open());
  udp_socket u = udp_socket::open(AF_UNIX, ec);  // unix_datagram is the one for that
  EXPECT_EQ(ec, std::errc::address_family_not_supported);
  EXPECT_FALSE(u.is_open());
  udp_socket c = udp_socket::open(ec);
  EXPECT_FALSE(ec);
  char buf[8];
  EXPECT_EQ(c.send("x", ec), 0u);  // not connected: no peer to send to
  EXPECT_TRUE(ec == std::errc::destination_address_required || ec == std::errc::not_connected)
      << ec.message();
  c.connect(a.local_address(), ec);
  EXPECT_FALSE(ec);
  EXPECT_EQ(c.send(std::string_view("ping"), ec), 4u);
  EXPECT_FALSE(ec);
  EXPECT_EQ(a.recv(buf, sizeof buf, ec), 4u);
  EXPECT_FALSE(ec);
  EXPECT_EQ(std::string(buf, 4), "ping");
  EXPECT_EQ(a.send_to(std::string_view("pong"), c.local_address(), ec), 4u);
  c.set_timeout(0s);
  EXPECT_EQ(c.recv(buf, sizeof buf, ec), 4u);
  EXPECT_EQ(c.recv(buf, sizeof buf, ec), 0u);  // nothing more: the zero time limit
  EXPECT_EQ(ec, std::errc::timed_out);
  c.close();
  c.connect(a.local_address(), ec);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_EQ(udp_socket::open(12345, ec).is_open(), false);  // no such family
  EXPECT_TRUE(ec);
}
