// Closing a socket that other greenlets wait on: they wake with EBADF (never with an end of
// stream, never a hang) whether they wait in recv, accept, connect or send_all; and a new
// socket that gets the closed descriptor's number sees nothing of the old one's life.
// Modelled on gevent's test__socket_close.py and Go's netpoll tests of descriptor reuse.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "io/fd_table.hpp"
#include "net_test_support.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;
using tendril::timeout;
using tendril::net::tcp_listener;
using tendril::net::tcp_stream;

namespace {

std::set<int> open_fd_numbers() {
  std::set<int> fds;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return fds;
  const int own = ::dirfd(d);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const int fd = std::atoi(e->d_name);
    if (fd != own) fds.insert(fd);
  }
  ::closedir(d);
  return fds;
}

// Makes fd the lowest free descriptor number once it is closed: fills every free number
// below it (with /dev/null) until release().
class holes_below {
 public:
  explicit holes_below(int fd) {
    while (true) {
      const int f = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (f < 0) break;
      if (f > fd) {
        ::close(f);
        break;
      }
      fillers_.push_back(f);
    }
  }
  ~holes_below() { release(); }
  holes_below(const holes_below&) = delete;
  holes_below& operator=(const holes_below&) = delete;
  void release() {
    for (int f : fillers_) ::close(f);
    fillers_.clear();
  }

 private:
  std::vector<int> fillers_;
};

}  // namespace

TEST(close, close_wakes_a_greenlet_waiting_in_recv_with_ebadf_not_end_of_stream) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  auto twin = spawn([&] {
    char buf[16];
    std::error_code ec;
    const std::size_t n = server.recv(buf, sizeof buf, ec);
    EXPECT_EQ(n, 0u);
    return ec;
  });
  tendril::sleep(20ms);
  ASSERT_FALSE(twin.ready());
  server.close();
  EXPECT_EQ(twin.get(), std::errc::bad_file_descriptor);

  auto [client2, server2] = tendril::test::connected_tcp_pair();
  auto throwing = spawn([&] {
    char buf[16];
    try {
      server2.recv(buf, sizeof buf);
      ADD_FAILURE() << "recv returned";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
    }
  });
  tendril::sleep(20ms);
  server2.close();
  throwing.get();
}

TEST(close, close_wakes_a_greenlet_waiting_in_recv_exact_with_ebadf_not_end_of_stream) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  auto reader = spawn([&] {
    char buf[16];
    std::error_code ec;
    server.recv_exact(buf, sizeof buf, ec);
    return ec;
  });
  client.send_all("part");  // it got some of what it waits for
  tendril::sleep(20ms);
  server.close();
  EXPECT_EQ(reader.get(), std::errc::bad_file_descriptor);
}

TEST(close, close_wakes_a_greenlet_waiting_in_accept_with_ebadf) {
  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  auto acceptor = spawn([&] {
    std::error_code ec;
    tcp_stream s = l.accept(ec);
    EXPECT_FALSE(s.is_open());
    return ec;
  });
  tendril::sleep(20ms);
  ASSERT_FALSE(acceptor.ready());
  l.close();
  EXPECT_EQ(acceptor.get(), std::errc::bad_file_descriptor);

  tcp_listener l2 = tendril::net::listen("127.0.0.1", 0);
  auto throwing = spawn([&] { l2.accept(); });
  tendril::sleep(20ms);
  l2.close();
  try {
    throwing.get();
    ADD_FAILURE() << "accept returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
  }
}

TEST(close, close_wakes_a_greenlet_waiting_in_connect_with_ebadf) {
  // connect() hands out its socket only once connected, so nothing public can close it
  // meanwhile; a close from elsewhere (the monkey layer's close()) ends the socket's life
  // in the descriptor table first, as socket::close() does: that is what is tested here.
  tendril::test::full_listener full = tendril::test::make_full_listener();
  const std::set<int> before = open_fd_numbers();
  const std::size_t count_before = tendril::test::open_descriptors();
  auto connector = spawn([&] {
    std::error_code ec;
    tcp_stream s = tendril::net::connect(full.address(), ec);
    EXPECT_FALSE(s.is_open());
    return ec;
  });
  tendril::sleep(50ms);
  ASSERT_FALSE(connector.ready());
  std::vector<int> added;
  for (int fd : open_fd_numbers()) {
    if (!before.contains(fd)) added.push_back(fd);
  }
  ASSERT_EQ(added.size(), 1u);
  auto& table = tendril::detail::fd_table::current();
  tendril::detail::fd_record* r = table.lookup(added[0]);
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->open);
  table.close(*r);
  EXPECT_EQ(connector.get(), std::errc::bad_file_descriptor);
  EXPECT_EQ(tendril::test::open_descriptors(), count_before);  // connect closed it
}

TEST(close, close_wakes_a_greenlet_waiting_in_send_all_with_ebadf) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  const std::string big = tendril::test::pattern(32 << 20, 21);
  auto writer = spawn([&] {
    std::error_code ec;
    client.send_all(big.data(), big.size(), ec);
    return ec;
  });
  tendril::sleep(20ms);  // the socket buffers are full: it waits for room
  ASSERT_FALSE(writer.ready());
  client.close();
  EXPECT_EQ(writer.get(), std::errc::bad_file_descriptor);

  auto [client2, server2] = tendril::test::connected_tcp_pair();
  auto throwing = spawn([&] { client2.send_all(big); });
  tendril::sleep(20ms);
  client2.close();
  try {
    throwing.get();
    ADD_FAILURE() << "send_all returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
  }
}

TEST(close, close_wakes_a_reader_and_a_writer_of_one_socket_together) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  const std::string big = tendril::test::pattern(32 << 20, 22);
  auto reader = spawn([&] {
    char buf[16];
    std::error_code ec;
    client.recv(buf, sizeof buf, ec);
    return ec;
  });
  auto writer = spawn([&] {
    std::error_code ec;
    client.send_all(big.data(), big.size(), ec);
    return ec;
  });
  tendril::sleep(20ms);
  client.close();
  EXPECT_EQ(reader.get(), std::errc::bad_file_descriptor);
  EXPECT_EQ(writer.get(), std::errc::bad_file_descriptor);
}

TEST(close, bytes_that_arrive_as_the_socket_closes_are_not_returned_by_later_calls) {
  // The reader's receive may complete in the kernel (io_uring) just before the close:
  // those bytes belong to a connection that is gone, and the closed socket stays closed.
  auto [client, server] = tendril::test::connected_tcp_pair();
  auto reader = spawn([&] {
    char buf[16];
    std::error_code ec;
    server.recv(buf, sizeof buf, ec);
    return ec;
  });
  tendril::sleep(0s);  // it waits in recv
  client.send_all("late");
  server.close();  // before the hub saw the bytes arrive
  EXPECT_EQ(reader.get(), std::errc::bad_file_descriptor);
  char buf[16];
  std::error_code ec;
  EXPECT_EQ(server.recv(buf, sizeof buf, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
}

TEST(close, a_greenlet_that_starts_waiting_after_the_close_gets_ebadf_at_once) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  auto reader = spawn([&] {
    char buf[16];
    std::error_code ec;
    server.recv(buf, sizeof buf, ec);
    return ec;
  });
  server.close();  // before the reader ever ran
  timeout guard(10s);
  EXPECT_EQ(reader.get(), std::errc::bad_file_descriptor);
}

TEST(close, a_new_socket_reusing_the_descriptor_number_sees_no_stale_readiness) {
  auto [old_client, old_server] = tendril::test::connected_tcp_pair();
  // The old socket is watched (a reader waited on it), and then has data nobody read.
  auto reader = spawn([&] { return old_server.recv(16); });
  tendril::sleep(0s);
  old_client.send_all("a");
  EXPECT_EQ(reader.get(), "a");
  old_client.send_all("stale");
  tendril::sleep(20ms);  // its readiness is reported while nobody waits

  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  const int number = old_server.native_handle();
  holes_below fill(number);
  old_server.close();
  tcp_stream reused = tendril::net::connect(l.local_address());
  fill.release();
  ASSERT_EQ(reused.native_handle(), number);
  tcp_stream peer = l.accept();

  reused.set_timeout(100ms);
  char buf[16];
  std::error_code ec;
  EXPECT_EQ(reused.recv(buf, sizeof buf, ec), 0u);
  EXPECT_EQ(ec, std::errc::timed_out) << ec.message();
  peer.send_all("fresh");
  EXPECT_EQ(reused.recv_exact(5), "fresh");
}

TEST(close, a_waiter_of_the_old_socket_never_wakes_on_the_new_one) {
  auto [old_client, old_server] = tendril::test::connected_tcp_pair();
  auto old_reader = spawn([&] {
    char buf[16];
    std::error_code ec;
    old_server.recv(buf, sizeof buf, ec);
    return ec;
  });
  tendril::sleep(0s);

  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  const int number = old_server.native_handle();
  holes_below fill(number);
  old_server.close();
  tcp_stream reused = tendril::net::connect(l.local_address());
  fill.release();
  ASSERT_EQ(reused.native_handle(), number);
  tcp_stream peer = l.accept();
  EXPECT_EQ(old_reader.get(), std::errc::bad_file_descriptor);

  auto new_reader = spawn([&] {
    char buf[16];
    std::error_code ec;
    std::size_t n = reused.recv(buf, sizeof buf, ec);
    return ec ? ec.message() : std::string(buf, n);
  });
  tendril::sleep(0s);
  // Traffic on the old connection reaches nobody here (its end is closed).
  std::error_code ec;
  old_client.send("old", 3, ec);
  old_client.close();
  tendril::sleep(50ms);
  EXPECT_FALSE(new_reader.ready());
  peer.send_all("new");
  EXPECT_EQ(new_reader.get(), "new");
}

TEST(close, closing_a_socket_nobody_waits_on_frees_its_descriptor) {
  tendril::test::start_io();
  const std::size_t before = tendril::test::open_descriptors();
  {
    auto [client, server] = tendril::test::connected_tcp_pair();
    client.send_all("x");
    EXPECT_EQ(server.recv_exact(1), "x");
    EXPECT_EQ(tendril::test::open_descriptors(), before + 2);
    client.close();
    EXPECT_EQ(tendril::test::open_descriptors(), before + 1);
  }
  EXPECT_EQ(tendril::test::open_descriptors(), before);
}

// A socket that was waited on ends at its close, even if the thread then blocks outside the
// hub: on io_uring the poll left in flight held the file, so the peer saw the end only once
// the hub ran again (a peer waited on by a blocking join deadlocked).
TEST(close, the_peer_sees_the_end_at_close_without_the_hub_running_again) {
  auto [client, server] = tendril::test::connected_tcp_pair();
  EXPECT_FALSE(tendril::io::wait_readable_for(server.native_handle(), 20ms));  // leaves a watch
  server.close();
  pollfd p{client.native_handle(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);  // a real poll(): the hub does not run
  char c;
  EXPECT_EQ(::recv(client.native_handle(), &c, 1, MSG_DONTWAIT), 0);
}

// A thread that ends while a task waits on a socket: the descriptor table went before the
// hub's tasks were unwound, and each waiting task then unlinked itself from (epoll, poll) or
// cancelled its operation through (io_uring) a freed record (ASan: heap-use-after-free).
TEST(close, a_thread_that_ends_while_a_task_waits_on_a_socket_unwinds_it_cleanly) {
  tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  const std::uint16_t port = l.local_address().port();
  bool unwound = false;
  bool returned = false;
  std::thread t([&] {
    tcp_stream c = tendril::net::connect("127.0.0.1", port);
    auto reader = spawn([&, s = std::move(c)]() mutable {
      struct note {
        bool& flag;
        ~note() { flag = true; }
      } n{unwound};
      char buf[16];
      s.recv(buf, sizeof buf);  // nobody ever sends
      returned = true;
    });
    tendril::sleep(10ms);  // the reader is parked in recv
  });
  tcp_stream peer = l.accept();
  t.join();
  EXPECT_TRUE(unwound);
  EXPECT_FALSE(returned);
}
