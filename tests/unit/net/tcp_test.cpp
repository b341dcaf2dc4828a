// TCP streams over loopback: echo, a 10 MiB send_all, full duplex from two greenlets, recv
// time limits (set_timeout and timeout scopes), connect refused and connect time limits,
// half-close both ways, a peer that resets mid-transfer, one reader and one writer at a
// time, and bad input (addresses, a port in use, closed and unconnected sockets, empty
// buffers, negative time limits); a forked child's sockets. Modelled on gevent's
// test__socket.py and test__socket_timeout.py.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "io/fd_table.hpp"
#include "net_test_support.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;
using tendril::timeout;
using tendril::timeout_error;
using tendril::net::shutdown_type;
using tendril::net::tcp_listener;
using tendril::net::tcp_stream;
using tendril::test::contains;
using tendril::test::stopwatch;

namespace {

// A port nobody listens on (it was free a moment ago).
std::uint16_t closed_port() {
  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  return l.local_address().port();
}

// Keeps SIGPIPE at its default (which kills the process) for the test, so that a SIGPIPE
// from our own calls could not go unnoticed.
class sigpipe_kills {
 public:
  sigpipe_kills() { old_ = ::signal(SIGPIPE, SIG_DFL); }
  ~sigpipe_kills() { ::signal(SIGPIPE, old_); }
  sigpipe_kills(const sigpipe_kills&) = delete;
  sigpipe_kills& operator=(const sigpipe_kills&) = delete;

 private:
  sighandler_t old_;
};

void reset_on_close(tcp_stream& s) {
  linger l{1, 0};
  ASSERT_EQ(::setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l), 0);
}

}  // namespace

// --- echo and volume --------------------------------------------------------------------------

TEST(tcp, echo_over_loopback) {
  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  EXPECT_TRUE(l.local_address().is_ipv4());
  EXPECT_NE(l.local_address().port(), 0);
  auto server = spawn([&] {
    tendril::net::address peer;
    tcp_stream conn = l.accept(&peer);
    EXPECT_EQ(peer.host(), "127.0.0.1");
    char buf[256];
    while (std::size_t n = conn.recv(buf, sizeof buf)) conn.send_all(buf, n);
  });
  tcp_stream c = tendril::net::connect("127.0.0.1", l.local_address().port());
  EXPECT_EQ(c.peer_address(), l.local_address());
  for (const std::string& msg :
       {std::string("hello"), std::string("tendril"), std::string(1000, 'x')}) {
    c.send_all(msg);
    EXPECT_EQ(c.recv_exact(msg.size()), msg);
  }
  c.shutdown(shutdown_type::send);
  EXPECT_EQ(c.recv(16), "");  // the server saw the end and closed
  server.get();
}

TEST(tcp, echo_over_ipv6_loopback) {
  tcp_listener l;
  try {
    l = tendril::net::listen("::1", 0);
  } catch (const std::system_error& e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
  EXPECT_TRUE(l.local_address().is_ipv6());
  tcp_stream c = tendril::net::connect("::1", l.local_address().port());
  tcp_stream s = l.accept();
  EXPECT_EQ(s.peer_address().host(), "::1");
  c.send_all("six");
  EXPECT_EQ(s.recv_exact(3), "six");
  s.send_all("back");
  EXPECT_EQ(c.recv_exact(4), "back");
}

TEST(tcp, connect_by_name_tries_each_address_of_localhost) {
  // localhost may resolve to ::1 first, where nobody listens: connect goes on to 127.0.0.1.
  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  tcp_stream c = tendril::net::connect("localhost", l.local_address().port());
  tcp_stream s = l.accept();
  c.send_all("hi");
  EXPECT_EQ(s.recv_exact(2), "hi");
}

TEST(tcp, send_all_of_10_mib_arrives_intact) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  const std::string data = tendril::test::pattern(10 << 20, 1);
  auto sender = spawn([&] {
    client.send_all(data);
    client.shutdown(shutdown_type::send);
  });
  tendril::test::checksum got = tendril::test::recv_all_until_end(server);
  sender.get();
  EXPECT_EQ(got.size(), data.size());
  EXPECT_EQ(got.value(), tendril::test::checksum_of(data));
}

TEST(tcp, full_duplex_from_two_greenlets_on_each_socket) {
  // On each end one greenlet writes 8 MiB while another reads what the other end writes:
  // neither side could finish if a blocked writer stopped its socket's reader.
  auto [a, b] = tendril::test::connected_tcp_pair();
  const std::string a_to_b = tendril::test::pattern(8 << 20, 2);
  const std::string b_to_a = tendril::test::pattern(8 << 20, 3);
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

TEST(tcp, recv_returns_what_is_there_without_waiting_for_the_whole_buffer) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  client.send_all("abc");
  char buf[100];
  EXPECT_EQ(server.recv(buf, sizeof buf), 3u);
  EXPECT_EQ(std::string(buf, 3), "abc");
}

// After a short read the next recv waits for the backend's report before asking the kernel;
// an end of stream or a reset that arrived together with the data must still be seen at once
// (an edge-triggered backend reports it only once).
TEST(tcp, a_short_read_then_the_end_of_stream_that_came_with_it) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  char buf[100];
  client.send_all("abc");
  EXPECT_EQ(server.recv(buf, sizeof buf), 3u);  // short: the socket is empty now
  client.send_all("def");
  client.close();
  tendril::sleep(50ms);  // data and end of stream arrive before the next read
  timeout limit(10s);
  EXPECT_EQ(server.recv(buf, sizeof buf), 3u);
  EXPECT_EQ(std::string(buf, 3), "def");
  EXPECT_EQ(server.recv(buf, sizeof buf), 0u);
}

TEST(tcp, a_short_read_then_a_reset_that_came_with_it) {
  sigpipe_kills guard;
  auto [client, server] = tendril::test::connected_tcp_pair();
  char buf[100];
  client.send_all("abc");
  EXPECT_EQ(server.recv(buf, sizeof buf), 3u);
  reset_on_close(client);
  client.close();
  tendril::sleep(50ms);
  timeout limit(10s);
  std::error_code ec;
  EXPECT_EQ(server.recv(buf, sizeof buf, ec), 0u);
  EXPECT_EQ(ec, std::errc::connection_reset);
}

TEST(tcp, recv_exact_reports_end_of_stream_when_the_peer_closes_first) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  client.send_all("abc");
  client.close();
  try {
    server.recv_exact(10);
    ADD_FAILURE() << "recv_exact returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), tendril::net::errc::end_of_stream);
    EXPECT_TRUE(contains(e.what(), "10 bytes")) << e.what();
  }
  std::error_code ec;
  char buf[4];
  server.recv_exact(buf, sizeof buf, ec);
  EXPECT_EQ(ec, tendril::net::errc::end_of_stream);
}

// --- time limits ------------------------------------------------------------------------------

TEST(tcp, recv_past_set_timeout_fails_with_timed_out) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  server.set_timeout(50ms);
  char buf[16];
  stopwatch w;
  try {
    server.recv(buf, sizeof buf);
    ADD_FAILURE() << "recv returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out);
    EXPECT_TRUE(contains(e.what(), "recv")) << e.what();
    // The message names the connection by its peer.
    EXPECT_TRUE(contains(e.what(), client.local_address().to_string())) << e.what();
  }
  EXPECT_GE(w.elapsed(), 45ms);
  EXPECT_LT(w.elapsed(), 10s);

  std::error_code ec;
  EXPECT_EQ(server.recv(buf, sizeof buf, ec), 0u);
  EXPECT_EQ(ec, std::errc::timed_out);

  // The socket still works, and nothing sent after the time limit is lost.
  client.send_all("late");
  EXPECT_EQ(server.recv_exact(4), "late");
  server.clear_timeout();
  auto later = spawn([&] {
    tendril::sleep(100ms);
    client.send_all("x");
  });
  EXPECT_EQ(server.recv_exact(1), "x");  // no limit any more
  later.get();
}

TEST(tcp, an_idle_socket_waited_on_once_does_not_keep_loop_exit_away) {
  // epoll and poll keep a socket watched for its whole life once waited on, and the hub took
  // any watch for something that could end a wait: a wait that nothing could end then hung
  // instead of raising loop_exit (io_uring, which receives without a watch, raised it).
  // On a thread of its own, so that a hang fails the test instead of stopping it.
  auto outcome = std::make_shared<std::promise<std::string>>();
  std::future<std::string> seen = outcome->get_future();
  std::thread t([outcome] {
    std::string what = "q.get() returned";
    try {
      auto [client, server] = tendril::test::connected_tcp_pair();
      server.set_timeout(10ms);
      char buf[4];
      std::error_code ec;
      server.recv(buf, sizeof buf, ec);  // waits on the socket once
      tendril::queue<int> q;             // that nothing will ever put into
      try {
        q.get();
      } catch (const tendril::loop_exit&) {
        what = ec == std::errc::timed_out ? "loop_exit" : "recv: " + ec.message();
      }
    } catch (const std::exception& e) {
      what = e.what();
    }
    outcome->set_value(what);
  });
  if (seen.wait_for(30s) != std::future_status::ready) {
    t.detach();  // parked for good: the process ends with it
    FAIL() << "q.get() still waits, with an idle socket open";
  }
  t.join();
  EXPECT_EQ(seen.get(), "loop_exit");
}

TEST(tcp, a_set_timeout_limits_each_call_not_their_sum) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  server.set_timeout(300ms);
  auto sender = spawn([&] {
    for (int i = 0; i < 4; ++i) {
      tendril::sleep(100ms);
      client.send_all("x");
    }
  });
  EXPECT_EQ(server.recv_exact(4), "xxxx");  // 400 ms in all, never 300 ms without a byte
  sender.get();
}

TEST(tcp, accept_past_set_timeout_fails_with_timed_out_naming_the_listener) {
  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  l.set_timeout(50ms);
  stopwatch w;
  try {
    l.accept();
    ADD_FAILURE() << "accept returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out);
    EXPECT_TRUE(contains(e.what(), l.local_address().to_string())) << e.what();
  }
  EXPECT_GE(w.elapsed(), 45ms);
  // A connection that comes afterwards is accepted.
  tcp_stream c = tendril::net::connect(l.local_address());
  tcp_stream s = l.accept();
  EXPECT_EQ(s.peer_address(), c.local_address());
}

TEST(tcp, accept_with_a_zero_timeout_takes_a_waiting_connection_or_fails_at_once) {
  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  l.set_timeout(0s);
  timeout guard(10s);
  std::error_code ec;
  l.accept(ec);
  EXPECT_EQ(ec, std::errc::timed_out);
  tcp_stream c = tendril::net::connect(l.local_address());
  tcp_stream s = l.accept(ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(s.is_open());
}

TEST(tcp, send_all_past_set_timeout_fails_with_timed_out_when_the_peer_does_not_read) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  client.set_timeout(100ms);
  const std::string big = tendril::test::pattern(64 << 20, 6);
  std::error_code ec;
  client.send_all(big.data(), big.size(), ec);
  EXPECT_EQ(ec, std::errc::timed_out);
}

TEST(tcp, recv_inside_a_timeout_scope_throws_timeout_error) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  char buf[16];
  {
    timeout t(50ms);
    try {
      server.recv(buf, sizeof buf);
      ADD_FAILURE() << "recv returned";
    } catch (const timeout_error& e) {
      EXPECT_EQ(e.source(), &t);
    }
  }
  {
    // The error_code twin reports I/O failures only: the scope still propagates.
    timeout t(50ms);
    std::error_code ec;
    EXPECT_THROW(server.recv(buf, sizeof buf, ec), timeout_error);
  }
  client.send_all("after");
  EXPECT_EQ(server.recv_exact(5), "after");
}

TEST(tcp, a_negative_timeout_acts_as_zero) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  server.set_timeout(-5s);
  timeout guard(10s);  // fails the test instead of hanging if the limit were "forever"
  char buf[16];
  std::error_code ec;
  stopwatch w;
  EXPECT_EQ(server.recv(buf, sizeof buf, ec), 0u);
  EXPECT_EQ(ec, std::errc::timed_out);
  EXPECT_LT(w.elapsed(), 5s);
  // Bytes already there are returned: a zero limit only forbids waiting.
  client.send_all("now");
  ASSERT_TRUE(tendril::test::eventually([&] {
    std::error_code e;
    std::size_t n = server.recv(buf, sizeof buf, e);
    if (e) return false;
    EXPECT_EQ(std::string(buf, n), "now");
    return true;
  }));
}

// --- connect ----------------------------------------------------------------------------------

TEST(tcp, connect_to_a_closed_port_is_refused_naming_the_address) {
  const std::uint16_t port = closed_port();
  const std::string where = "127.0.0.1:" + std::to_string(port);
  try {
    tendril::net::connect("127.0.0.1", port);
    ADD_FAILURE() << "connect returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_refused);
    EXPECT_TRUE(contains(e.what(), where)) << e.what();
  }
  std::error_code ec;
  tcp_stream s = tendril::net::connect("127.0.0.1", port, ec);
  EXPECT_EQ(ec, std::errc::connection_refused);
  EXPECT_FALSE(s.is_open());

  try {
    tendril::net::connect(tendril::net::address::ip("127.0.0.1", port));
    ADD_FAILURE() << "connect returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_refused);
    EXPECT_TRUE(contains(e.what(), where)) << e.what();
  }
}

TEST(tcp, connect_with_a_time_limit_to_a_listener_that_never_answers_times_out) {
  tendril::test::full_listener full = tendril::test::make_full_listener();
  const std::string where = full.address().to_string();
  stopwatch w;
  try {
    tendril::net::connect("127.0.0.1", full.address().port(), 200ms);
    ADD_FAILURE() << "connect returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out);
    EXPECT_TRUE(contains(e.what(), where)) << e.what();
  }
  EXPECT_GE(w.elapsed(), 190ms);
  EXPECT_LT(w.elapsed(), 10s);

  std::error_code ec;
  tcp_stream s = tendril::net::connect(full.address(), 100ms, ec);
  EXPECT_EQ(ec, std::errc::timed_out);
  EXPECT_FALSE(s.is_open());
}

TEST(tcp, connect_inside_a_timeout_scope_throws_timeout_error) {
  tendril::test::full_listener full = tendril::test::make_full_listener();
  timeout t(100ms);
  try {
    tendril::net::connect(full.address());
    ADD_FAILURE() << "connect returned";
  } catch (const timeout_error& e) {
    EXPECT_EQ(e.source(), &t);
  }
}

// --- half-close and reset ---------------------------------------------------------------------

TEST(tcp, half_close_by_the_client_leaves_the_other_direction_open) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  client.send_all("last words");
  client.shutdown(shutdown_type::send);
  EXPECT_EQ(server.recv_exact(10), "last words");
  char buf[16];
  EXPECT_EQ(server.recv(buf, sizeof buf), 0u);  // end of stream, and it stays so
  EXPECT_EQ(server.recv(buf, sizeof buf), 0u);
  server.send_all("reply");
  EXPECT_EQ(client.recv_exact(5), "reply");
  server.close();
  EXPECT_EQ(client.recv(buf, sizeof buf), 0u);
}

TEST(tcp, half_close_by_the_server_leaves_the_other_direction_open) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  server.shutdown(shutdown_type::send);
  char buf[16];
  EXPECT_EQ(client.recv(buf, sizeof buf), 0u);
  client.send_all("still here");
  EXPECT_EQ(server.recv_exact(10), "still here");
  // Writing on the side that was shut down fails (EPIPE), without a SIGPIPE.
  sigpipe_kills guard;
  std::error_code ec;
  server.send("x", 1, ec);
  EXPECT_EQ(ec, std::errc::broken_pipe);
}

TEST(tcp, a_reader_parked_before_the_half_close_wakes_with_end_of_stream) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  auto reader = spawn([&] { return server.recv(16); });
  tendril::sleep(20ms);
  client.shutdown(shutdown_type::send);
  EXPECT_EQ(reader.get(), "");
}

TEST(tcp, peer_reset_mid_transfer_fails_the_sender_without_sigpipe) {
  sigpipe_kills guard;
  auto [client, server] = tendril::test::connected_tcp_pair();
  auto sender = spawn([&] {
    const std::string chunk = tendril::test::pattern(64 * 1024, 4);
    std::error_code ec;
    for (int i = 0; i < 16 * 1024 && !ec; ++i) client.send_all(chunk.data(), chunk.size(), ec);
    return ec;
  });
  server.recv_exact(256 * 1024);  // the transfer is under way
  reset_on_close(server);
  server.close();
  const std::error_code ec = sender.get();
  EXPECT_TRUE(ec == std::errc::connection_reset || ec == std::errc::broken_pipe) << ec.message();
  EXPECT_THROW(client.send_all("more"), std::system_error);
}

TEST(tcp, peer_reset_wakes_a_parked_reader_with_econnreset) {
  sigpipe_kills guard;
  auto [client, server] = tendril::test::connected_tcp_pair();
  auto reader = spawn([&] {
    char buf[16];
    std::error_code ec;
    client.recv(buf, sizeof buf, ec);
    return ec;
  });
  tendril::sleep(20ms);
  reset_on_close(server);
  server.close();
  EXPECT_EQ(reader.get(), std::errc::connection_reset);
}

// --- one reader and one writer at a time ------------------------------------------------------

TEST(tcp, a_second_concurrent_reader_gets_logic_error_naming_the_first) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  auto first = spawn([&] { return server.recv(16); });
  first.set_name("first-reader");
  tendril::sleep(0s);  // it parks in recv
  char buf[16];
  try {
    server.recv(buf, sizeof buf);
    ADD_FAILURE() << "a second reader was let in";
  } catch (const std::logic_error& e) {
    EXPECT_TRUE(contains(e.what(), "first-reader")) << e.what();
  }
  std::error_code ec;
  EXPECT_THROW(server.recv(buf, sizeof buf, ec), std::logic_error);
  // A writer is not a reader: it goes ahead.
  server.send_all("ok");
  EXPECT_EQ(client.recv_exact(2), "ok");
  // The first reader was not disturbed, and once it is done the next one may read.
  client.send_all("one");
  EXPECT_EQ(first.get(), "one");
  client.send_all("two");
  EXPECT_EQ(server.recv_exact(3), "two");
}

TEST(tcp, a_second_concurrent_writer_gets_logic_error_naming_the_first) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  const std::string big = tendril::test::pattern(32 << 20, 5);
  auto first = spawn([&] { client.send_all(big); });
  first.set_name("first-writer");
  tendril::sleep(20ms);  // it filled the socket buffers and waits for room
  ASSERT_FALSE(first.ready());
  try {
    client.send_all("x");
    ADD_FAILURE() << "a second writer was let in";
  } catch (const std::logic_error& e) {
    EXPECT_TRUE(contains(e.what(), "first-writer")) << e.what();
  }
  tendril::test::checksum got;
  std::vector<char> buf(64 * 1024);
  while (got.size() < big.size()) {
    std::size_t n = server.recv(buf.data(), std::min(buf.size(), big.size() - got.size()));
    got.add(buf.data(), n);
  }
  first.get();
  EXPECT_EQ(got.value(), tendril::test::checksum_of(big));
}

// --- bad input --------------------------------------------------------------------------------

TEST(tcp, a_bad_address_is_invalid_argument_naming_it) {
  try {
    tendril::net::address::ip("not an ip", 80);
    ADD_FAILURE() << "parsed";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), "not an ip")) << e.what();
  }
  EXPECT_THROW(tendril::net::address::ip("127.0.0.256", 80), std::invalid_argument);
  EXPECT_THROW(tendril::net::address::ip("", 80), std::invalid_argument);
  EXPECT_THROW(tendril::net::address::ip("::1::2", 80), std::invalid_argument);
  // Brackets are for IPv6 only; text after a NUL is not ignored.
  EXPECT_THROW(tendril::net::address::ip("[127.0.0.1]", 80), std::invalid_argument);
  EXPECT_THROW(tendril::net::address::ip(std::string_view("127.0.0.1\0junk", 14), 80),
               std::invalid_argument);
  // What does parse, and how it prints.
  EXPECT_EQ(tendril::net::address::ip("127.0.0.1", 8080).to_string(), "127.0.0.1:8080");
  EXPECT_EQ(tendril::net::address::ip("::1", 8080).to_string(), "[::1]:8080");
  EXPECT_EQ(tendril::net::address::ip("[::1]", 8080).to_string(), "[::1]:8080");
  EXPECT_EQ(tendril::net::address().to_string(), "(no address)");
}

TEST(tcp, listening_on_a_port_in_use_fails_with_eaddrinuse_naming_the_address) {
  tcp_listener first = tendril::net::listen("127.0.0.1", 0);
  const std::uint16_t port = first.local_address().port();
  try {
    tendril::net::listen("127.0.0.1", port);
    ADD_FAILURE() << "listened twice";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
    EXPECT_TRUE(contains(e.what(), "127.0.0.1:" + std::to_string(port))) << e.what();
  }
}

TEST(tcp, calls_on_a_closed_socket_fail_with_ebadf) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  server.close();
  EXPECT_FALSE(server.is_open());
  server.close();  // twice is harmless
  char buf[16];
  try {
    server.recv(buf, sizeof buf);
    ADD_FAILURE() << "recv returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
  }
  std::error_code ec;
  EXPECT_EQ(server.recv(buf, sizeof buf, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_EQ(server.send("x", 1, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_THROW(server.send_all("x"), std::system_error);
  // Empty buffers too: a closed socket is EBADF before anything else, and says it is closed.
  EXPECT_EQ(server.send(buf, 0, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_EQ(server.send_all(buf, 0, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_EQ(server.recv(buf, 0, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  try {
    server.send(buf, 0);
    ADD_FAILURE() << "send on a closed socket returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
    EXPECT_NE(std::string(e.what()).find("a closed socket"), std::string::npos) << e.what();
  }
  server.shutdown(shutdown_type::both, ec);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_THROW(server.local_address(), std::system_error);

  tcp_stream never_opened;
  EXPECT_EQ(never_opened.recv(buf, sizeof buf, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);

  tcp_listener closed = tendril::net::listen("127.0.0.1", 0);
  closed.close();
  closed.accept(ec);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_THROW(closed.accept(), std::system_error);
}

TEST(tcp, recv_on_a_never_connected_socket_fails_with_enotconn) {
  tcp_stream s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s.is_open());
  char buf[16];
  try {
    s.recv(buf, sizeof buf);
    ADD_FAILURE() << "recv returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::not_connected);
  }
  std::error_code ec;
  EXPECT_EQ(s.recv(buf, sizeof buf, ec), 0u);
  EXPECT_EQ(ec, std::errc::not_connected);
  sigpipe_kills guard;
  s.send("x", 1, ec);
  EXPECT_TRUE(ec == std::errc::not_connected || ec == std::errc::broken_pipe) << ec.message();
  EXPECT_THROW(s.peer_address(), std::system_error);
}

TEST(tcp, a_zero_length_recv_is_einval) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  char buf[1];
  try {
    server.recv(buf, 0);
    ADD_FAILURE() << "recv returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument);
  }
  std::error_code ec;
  EXPECT_EQ(server.recv(buf, 0, ec), 0u);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  // recv_exact of nothing has nothing to wait for.
  server.recv_exact(buf, 0, ec);
  EXPECT_FALSE(ec);
}

TEST(tcp, set_nodelay_works_on_an_open_stream_and_fails_on_a_closed_one) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  EXPECT_NO_THROW(client.set_nodelay(true));
  EXPECT_NO_THROW(client.set_nodelay(false));
  client.close();
  EXPECT_THROW(client.set_nodelay(true), std::system_error);
}

TEST(tcp, release_gives_up_the_descriptor_without_closing_it) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  const int fd = client.release();
  EXPECT_FALSE(client.is_open());
  tcp_stream again(fd);  // a new owner
  again.send_all("ok");
  EXPECT_EQ(server.recv_exact(2), "ok");
}

TEST(tcp, a_moved_stream_keeps_working_and_the_source_is_closed) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  tcp_stream moved = std::move(client);
  EXPECT_FALSE(client.is_open());  // NOLINT(bugprone-use-after-move): the moved-from state
  moved.send_all("moved");
  EXPECT_EQ(server.recv_exact(5), "moved");
  tcp_stream assigned;
  assigned = std::move(moved);
  assigned.send_all("again");
  EXPECT_EQ(server.recv_exact(5), "again");
}

// --- the error_code twins -------------------------------------------------------------------

TEST(tcp, recv_exact_twins_return_what_they_read_before_the_failure) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  client.send_all("abc");
  server.set_timeout(50ms);
  std::error_code ec;
  char buf[10] = {};
  EXPECT_EQ(server.recv_exact(buf, sizeof buf, ec), 3u);  // then the time limit
  EXPECT_EQ(ec, std::errc::timed_out);
  EXPECT_EQ(std::string(buf, 3), "abc");
  client.send_all("defg");
  EXPECT_EQ(server.recv_exact(10, ec), "defg");  // the string twin keeps them too
  EXPECT_EQ(ec, std::errc::timed_out);
  client.send_all("hi");
  client.close();
  EXPECT_EQ(server.recv_exact(5, ec), "hi");
  EXPECT_EQ(ec, tendril::net::errc::end_of_stream);
  EXPECT_EQ(server.recv(4, ec), "");  // end of stream: no error, nothing
  EXPECT_FALSE(ec);
}

TEST(tcp, every_throwing_call_has_a_twin_that_reports_instead) {
  std::error_code ec;
  // listen on a port in use
  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  tcp_listener again = tendril::net::listen("127.0.0.1", l.local_address().port(), ec);
  EXPECT_EQ(ec, std::errc::address_in_use);
  EXPECT_FALSE(again.is_open());
  again = tendril::net::listen("no-such-host.invalid", 0, 16, ec);
  EXPECT_TRUE(ec);
  // connect: refused, by address and by name, with and without a limit
  const std::uint16_t closed = closed_port();
  const tendril::net::address to = tendril::net::address::ip("127.0.0.1", closed);
  EXPECT_FALSE(tendril::net::connect(to, ec).is_open());
  EXPECT_EQ(ec, std::errc::connection_refused);
  EXPECT_FALSE(tendril::net::connect(to, 5s, ec).is_open());
  EXPECT_EQ(ec, std::errc::connection_refused);
  EXPECT_FALSE(tendril::net::connect("127.0.0.1", closed, 5s, ec).is_open());
  EXPECT_EQ(ec, std::errc::connection_refused);
  // and a success clears ec
  tcp_stream s = tendril::net::connect(l.local_address(), 5s, ec);
  EXPECT_FALSE(ec);
  EXPECT_TRUE(s.is_open());
  s.set_nodelay(true, ec);
  EXPECT_FALSE(ec);
  EXPECT_EQ(s.send("x", ec), 1u);
  EXPECT_EQ(s.send_all(std::string_view("yz"), ec), 2u);
  EXPECT_FALSE(ec);
  s.close();
  s.set_nodelay(true, ec);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_EQ(s.send_all(std::string_view("yz"), ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
}

// --- fork -------------------------------------------------------------------------------------

namespace {

using tendril::test::child_outcome;

// The parent's hub runs while it waits for a child (its waits are what took a child's events
// when the two shared an epoll instance).
child_outcome wait_for_child(pid_t pid, const int (&fds)[2]) {
  return tendril::test::collect_child(pid, fds, [] { tendril::sleep(2ms); });
}

}  // namespace

// Without monkey::patch_all() a forked child kept the parent's hub and descriptor records:
// its sockets were watched in the epoll instance or io_uring ring it shared with the parent,
// whose own waits took their events (epoll), or whose waits failed for ever (io_uring).
TEST(tcp, a_child_forked_without_the_hooks_has_a_table_of_its_own_and_its_sockets_work) {
  // The parent waits on a socket of its own when it forks, and goes on waiting after.
  tcp_listener parent_listener = tendril::net::listen("127.0.0.1", 0);
  auto parent_accept = spawn([&] { return parent_listener.accept(); });
  tendril::sleep(1ms);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string r = tendril::detail::fd_table::peek() ? "the parent's table\n" : "no table\n";
    try {
      timeout limit(10s);
      tcp_listener l = tendril::net::listen("127.0.0.1", 0);
      auto server = spawn([&] {
        tcp_stream conn = l.accept();
        char buf[64];
        while (std::size_t n = conn.recv(buf, sizeof buf)) conn.send_all(buf, n);
      });
      tcp_stream c = tendril::net::connect("127.0.0.1", l.local_address().port());
      tendril::sleep(5ms);
      c.send_all(std::string("hello"));
      r += "echo=" + c.recv_exact(5) + "\n";
      c.shutdown(shutdown_type::send);
      server.get();
    } catch (const timeout_error&) {
      r += "timed out\n";
    } catch (const std::exception& e) {
      r += std::string("error: ") + e.what() + "\n";
    }
    [[maybe_unused]] ssize_t n = ::write(fds[1], r.data(), r.size());
    ::_exit(0);
  }
  ASSERT_GT(pid, 0);
  const child_outcome c = wait_for_child(pid, fds);
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(c.report, "no table\necho=hello\n");
  // And the parent's own wait was not disturbed.
  tcp_stream conn = tendril::net::connect("127.0.0.1", parent_listener.local_address().port());
  EXPECT_EQ(parent_accept.get().peer_address(), conn.local_address());
}

// The pre-fork server (gunicorn's workers under gevent): the listener is made, and waited on,
// in the parent; the child accepts on it, and talks on a socket pair made before the fork.
// The child's table had no records: every call on those sockets failed with EBADF there.
TEST(tcp, sockets_made_before_a_fork_work_in_the_child_without_the_hooks) {
  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  auto [mine, theirs] = tendril::net::unix_stream::pair();
  {  // both have been waited on in the parent's hub (watched in its backend) when it forks
    auto first = spawn([&] { return l.accept(); });
    auto ping = spawn([&, &theirs = theirs] { return theirs.recv_exact(4); });
    tendril::sleep(1ms);
    tcp_stream c = tendril::net::connect("127.0.0.1", l.local_address().port());
    mine.send_all(std::string("ping"));
    EXPECT_EQ(first.get().peer_address(), c.local_address());
    EXPECT_EQ(ping.get(), "ping");
  }
  auto reader = spawn([&, &theirs = theirs] { return theirs.recv_exact(5); });
  tendril::sleep(1ms);  // the parent waits on the pair's other end as it forks
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string r;
    try {
      timeout limit(10s);
      tcp_stream conn = l.accept();
      r += "accepted: " + conn.recv_exact(5) + "\n";
      mine.send_all(std::string("child"));
      r += "sent on the pair\n";
    } catch (const timeout_error&) {
      r += "timed out\n";
    } catch (const std::exception& e) {
      r += std::string("error: ") + e.what() + "\n";
    }
    [[maybe_unused]] ssize_t n = ::write(fds[1], r.data(), r.size());
    ::_exit(0);
  }
  ASSERT_GT(pid, 0);
  tcp_stream c = tendril::net::connect("127.0.0.1", l.local_address().port());
  c.send_all(std::string("hello"));
  const child_outcome out = wait_for_child(pid, fds);
  EXPECT_EQ(out.status, 0);
  EXPECT_EQ(out.report, "accepted: hello\nsent on the pair\n");
  {
    timeout limit(10s);
    EXPECT_EQ(reader.get(), "child");
  }
}
