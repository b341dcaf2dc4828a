// Unix sockets in a temporary directory: stream echo through listen_unix / connect_unix,
// socket pairs (volume both ways, half-close, close while waiting), datagrams with their
// sender's path, and bad input (a path in use, a missing path, a path too long).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "net_test_support.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;
using tendril::net::address;
using tendril::net::shutdown_type;
using tendril::net::unix_datagram;
using tendril::net::unix_listener;
using tendril::net::unix_stream;
using tendril::test::contains;
using tendril::test::temp_dir;

TEST(unix_socket, stream_echo_through_a_path) {
  temp_dir dir;
  const std::string path = dir.file("echo.sock");
  unix_listener l = tendril::net::listen_unix(path);
  EXPECT_EQ(l.local_address().host(), path);
  auto server = spawn([&] {
    unix_stream conn = l.accept();
    char buf[256];
    while (std::size_t n = conn.recv(buf, sizeof buf)) conn.send_all(buf, n);
  });
  unix_stream c = tendril::net::connect_unix(path);
  EXPECT_TRUE(c.peer_address().is_unix());
  EXPECT_EQ(c.peer_address().host(), path);
  for (std::string msg : {"hello", "over", "unix"}) {
    c.send_all(msg);
    EXPECT_EQ(c.recv_exact(msg.size()), msg);
  }
  c.shutdown(shutdown_type::send);
  EXPECT_EQ(c.recv(16), "");
  server.get();
}

TEST(unix_socket, a_pair_carries_large_volumes_both_ways_at_once) {
  auto [a, b] = unix_stream::pair();
  const std::string a_to_b = tendril::test::pattern(4 << 20, 11);
  const std::string b_to_a = tendril::test::pattern(4 << 20, 12);
  tendril::test::checksum at_a;
  tendril::test::checksum at_b;
  auto write_a = spawn([&] {
    a.send_all(a_to_b);
    a.shutdown(shutdown_type::send);
  });
  auto write_b = spawn([&] {
    b.send_all(b_to_a);
    b.shutdown(shutdown_type::send);
  });
  auto read_a = spawn([&] { at_a = tendril::test::recv_all_until_end(a); });
  auto read_b = spawn([&] { at_b = tendril::test::recv_all_until_end(b); });
  tendril::joinall(write_a, write_b, read_a, read_b);
  EXPECT_TRUE(write_a.successful() && write_b.successful());
  EXPECT_TRUE(read_a.successful() && read_b.successful());
  EXPECT_EQ(at_b.size(), a_to_b.size());
  EXPECT_EQ(at_b.value(), tendril::test::checksum_of(a_to_b));
  EXPECT_EQ(at_a.size(), b_to_a.size());
  EXPECT_EQ(at_a.value(), tendril::test::checksum_of(b_to_a));
}

TEST(unix_socket, half_close_of_a_pair_in_both_directions) {
  auto [a, b] = unix_stream::pair();
  a.shutdown(shutdown_type::send);
  char buf[16];
  EXPECT_EQ(b.recv(buf, sizeof buf), 0u);
  b.send_all("back");
  EXPECT_EQ(a.recv_exact(4), "back");
  b.shutdown(shutdown_type::send);
  EXPECT_EQ(a.recv(buf, sizeof buf), 0u);
}

TEST(unix_socket, close_wakes_a_greenlet_waiting_in_recv_with_ebadf) {
  auto [a, b] = unix_stream::pair();
  auto reader = spawn([&] {
    char buf[16];
    std::error_code ec;
    std::size_t n = a.recv(buf, sizeof buf, ec);
    EXPECT_EQ(n, 0u);
    return ec;
  });
  tendril::sleep(20ms);
  a.close();
  EXPECT_EQ(reader.get(), std::errc::bad_file_descriptor);
}

// The hub only looks at the backend without waiting while greenlets keep each other ready;
// that look must still see data that came (on io_uring, whose completions wait for the hub to
// ask for them, it has to ask).
TEST(unix_socket, greenlets_that_keep_yielding_cannot_starve_a_recv) {
  auto [a, b] = unix_stream::pair();
  bool got = false;
  auto reader = spawn([&] {
    char buf[16];
    EXPECT_EQ(a.recv(buf, sizeof buf), 5u);
    got = true;
  });
  long spins = 0;
  auto spinner = spawn([&] {
    while (!got && spins < 50'000'000) {
      ++spins;
      tendril::sleep(0s);
    }
  });
  // Written from another thread with a plain system call, once the hub has spun a while (the
  // read went to the backend by then): nothing in this hub is told.
  std::thread writer([fd = b.native_handle()] {
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(::write(fd, "hello", 5), 5);
  });
  tendril::joinall(reader, spinner);
  writer.join();
  EXPECT_TRUE(got);
  EXPECT_LT(spins, 50'000'000);
}

TEST(unix_socket, recv_past_set_timeout_fails_with_timed_out) {
  auto [a, b] = unix_stream::pair();
  a.set_timeout(30ms);
  char buf[16];
  std::error_code ec;
  a.recv(buf, sizeof buf, ec);
  EXPECT_EQ(ec, std::errc::timed_out);
  b.send_all("x");
  EXPECT_EQ(a.recv_exact(1), "x");
}

TEST(unix_socket, datagrams_carry_their_senders_path) {
  temp_dir dir;
  unix_datagram server = unix_datagram::bind(dir.file("server.sock"));
  unix_datagram client = unix_datagram::bind(dir.file("client.sock"));
  auto echo = spawn([&] {
    char buf[256];
    address from;
    std::size_t n = server.recv_from(buf, sizeof buf, from);
    EXPECT_EQ(from.host(), dir.file("client.sock"));
    server.send_to(buf, n, from);
  });
  client.send_to("datagram", address::unix_path(dir.file("server.sock")));
  char buf[256];
  address from;
  std::size_t n = client.recv_from(buf, sizeof buf, from);
  EXPECT_EQ(std::string(buf, n), "datagram");
  EXPECT_EQ(from.host(), dir.file("server.sock"));
  echo.get();
}

TEST(unix_socket, an_unbound_datagram_socket_can_send_and_a_connected_one_needs_no_address) {
  temp_dir dir;
  unix_datagram server = unix_datagram::bind(dir.file("server.sock"));
  unix_datagram client = unix_datagram::open();
  client.connect(address::unix_path(dir.file("server.sock")));
  EXPECT_EQ(client.send("one"), 3u);
  char buf[16];
  EXPECT_EQ(server.recv(buf, sizeof buf), 3u);
  EXPECT_EQ(std::string(buf, 3), "one");
}

TEST(unix_socket, listening_on_a_path_in_use_fails_naming_it) {
  temp_dir dir;
  const std::string path = dir.file("taken.sock");
  unix_listener first = tendril::net::listen_unix(path);
  try {
    tendril::net::listen_unix(path);
    ADD_FAILURE() << "listened twice";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
  }
  EXPECT_THROW(unix_datagram::bind(path), std::system_error);
}

TEST(unix_socket, connecting_to_a_missing_path_fails_naming_it) {
  temp_dir dir;
  const std::string path = dir.file("nobody.sock");
  try {
    tendril::net::connect_unix(path);
    ADD_FAILURE() << "connected";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
  }
}

TEST(unix_socket, a_path_too_long_or_empty_is_invalid_argument) {
  const std::string long_path = "/tmp/" + std::string(200, 'p');
  try {
    address::unix_path(long_path);
    ADD_FAILURE() << "accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), long_path)) << e.what();
  }
  EXPECT_THROW(address::unix_path(""), std::invalid_argument);
  EXPECT_THROW(tendril::net::listen_unix(long_path), std::invalid_argument);
  EXPECT_THROW(tendril::net::connect_unix(long_path), std::invalid_argument);
}

TEST(unix_socket, the_error_code_twins_report_instead_of_throwing) {
  temp_dir dir;
  const std::string path = dir.file("twins.sock");
  std::error_code ec;
  unix_stream none = tendril::net::connect_unix(path, ec);  // nobody there
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  EXPECT_FALSE(none.is_open());
  unix_listener l = tendril::net::listen_unix(path, ec);
  EXPECT_FALSE(ec);
  unix_listener twice = tendril::net::listen_unix(path, 8, ec);
  EXPECT_EQ(ec, std::errc::address_in_use);
  EXPECT_FALSE(twice.is_open());
  unix_stream c = tendril::net::connect_unix(path, ec);
  EXPECT_FALSE(ec);
  EXPECT_TRUE(c.is_open());
  auto [a, b] = unix_stream::pair(ec);
  EXPECT_FALSE(ec);
  EXPECT_EQ(a.send_all(std::string_view("pair"), ec), 4u);
  EXPECT_EQ(b.recv_exact(4, ec), "pair");
  const std::string dgram = dir.file("twins.dgram");
  unix_datagram d = unix_datagram::bind(dgram, ec);
  EXPECT_FALSE(ec);
  unix_datagram d2 = unix_datagram::bind(dgram, ec);
  EXPECT_EQ(ec, std::errc::address_in_use);
  EXPECT_FALSE(d2.is_open());
  unix_datagram sender = unix_datagram::open(ec);
  EXPECT_FALSE(ec);
  EXPECT_EQ(sender.send_to(std::string_view("d"), d.local_address(), ec), 1u);
}

// A connected pair of unnamed datagram sockets: send() goes to the peer as send(2) does
// (the peer has no address that sendmsg() could be given).
TEST(unix_socket, a_datagram_pair_without_addresses_sends_and_receives) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds), 0);
  unix_datagram a(fds[0]);
  unix_datagram b(fds[1]);
  EXPECT_EQ(a.send(std::string_view("one")), 3u);
  std::error_code ec;
  EXPECT_EQ(b.send(std::string_view("two"), ec), 3u);
  EXPECT_FALSE(ec) << ec.message();
  char buf[8];
  EXPECT_EQ(b.recv(buf, sizeof buf), 3u);
  EXPECT_EQ(std::string(buf, 3), "one");
  EXPECT_EQ(a.recv(buf, sizeof buf, ec), 3u);
  EXPECT_EQ(std::string(buf, 3), "two");
}
