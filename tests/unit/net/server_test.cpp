// stream_server: many clients at once, max_connections never exceeded, serve_forever and
// a graceful stop(grace) that waits for handlers and then kills the rest, a handler's
// exception reported to the hub's error handler without stopping the server, a port in
// use, and an accept loop that survives running out of descriptors (EMFILE) without
// spinning. Modelled on gevent's test__server.py.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "net_test_support.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::event;
using tendril::spawn;
using tendril::task;
using tendril::timeout;
using tendril::net::address;
using tendril::net::stream_server;
using tendril::net::tcp_stream;
using tendril::test::contains;
using tendril::test::stopwatch;

namespace {

// Echoes what it receives until the client closes.
void echo(tcp_stream& conn, const address&) {
  char buf[1024];
  while (std::size_t n = conn.recv(buf, sizeof buf)) conn.send_all(buf, n);
}

// Captures what the hub's error handler receives, for as long as it lives.
struct error_log {
  std::vector<std::string> names;
  std::vector<std::string> whats;
  error_log() {
    tendril::hub::current().set_error_handler(
        [this](const std::string& name, std::exception_ptr e) {
          names.push_back(name);
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& x) {
            whats.push_back(x.what());
          } catch (...) {
            whats.push_back("?");
          }
        });
  }
  ~error_log() { tendril::hub::current().set_error_handler({}); }
  error_log(const error_log&) = delete;
  error_log& operator=(const error_log&) = delete;
};

// Sets a flag when destroyed: shows that a killed handler unwound.
struct sets_on_destruction {
  bool* flag;
  ~sets_on_destruction() { *flag = true; }
};

}  // namespace

TEST(stream_server, serves_one_client) {
  stream_server server("127.0.0.1", 0, echo);
  EXPECT_FALSE(server.serving());
  server.start();
  EXPECT_TRUE(server.serving());
  tcp_stream c = tendril::net::connect(server.local_address());
  c.send_all("hello");
  EXPECT_EQ(c.recv_exact(5), "hello");
  c.close();
  server.stop();
  EXPECT_FALSE(server.serving());
}

TEST(stream_server, the_handler_gets_the_peers_address) {
  address seen;
  stream_server server("127.0.0.1", 0, [&](tcp_stream& conn, const address& peer) {
    seen = peer;
    conn.send_all("x");
  });
  server.start();
  tcp_stream c = tendril::net::connect(server.local_address());
  EXPECT_EQ(c.recv_exact(1), "x");
  EXPECT_EQ(seen, c.local_address());
  server.stop();
}

TEST(stream_server, serves_many_clients_at_once) {
  // Every handler waits until all of them are in: a server that served one at a time
  // would never get there.
  constexpr int n = 50;
  int active = 0;
  int gave_up = 0;
  event all_in;
  stream_server server("127.0.0.1", 0, [&](tcp_stream& conn, const address& peer) {
    if (++active == n) all_in.set();
    if (!all_in.wait_for(10s)) ++gave_up;
    echo(conn, peer);
    --active;
  });
  server.start();
  std::vector<task<std::string>> clients;
  for (int i = 0; i < n; ++i) {
    clients.push_back(spawn([&, i] {
      tcp_stream c = tendril::net::connect(server.local_address());
      const std::string msg = "client " + std::to_string(i);
      c.send_all(msg);
      return c.recv_exact(msg.size());
    }));
  }
  for (int i = 0; i < n; ++i)
    EXPECT_EQ(clients[static_cast<std::size_t>(i)].get(), "client " + std::to_string(i));
  EXPECT_TRUE(all_in.is_set());
  EXPECT_EQ(gave_up, 0);
  server.stop(5s);
  EXPECT_EQ(active, 0);
}

TEST(stream_server, max_connections_is_never_exceeded) {
  constexpr std::size_t limit = 3;
  constexpr int n = 20;
  std::size_t active = 0;
  std::size_t peak = 0;
  std::size_t peak_reported = 0;
  int served = 0;
  stream_server* self = nullptr;
  stream_server::options o;
  o.max_connections = limit;
  stream_server server(
      "127.0.0.1", 0,
      [&](tcp_stream& conn, const address&) {
        ++active;
        peak = std::max(peak, active);
        peak_reported = std::max(peak_reported, self->connections());
        tendril::sleep(20ms);
        conn.send_all(conn.recv_exact(1));
        --active;
        ++served;
      },
      o);
  self = &server;
  server.start();
  std::vector<task<std::string>> clients;
  for (int i = 0; i < n; ++i) {
    clients.push_back(spawn([&] {
      tcp_stream c = tendril::net::connect(server.local_address());
      c.send_all("x");
      return c.recv_exact(1);
    }));
  }
  for (auto& c : clients) EXPECT_EQ(c.get(), "x");
  server.stop(5s);
  EXPECT_EQ(served, n);
  EXPECT_EQ(peak, limit);  // reached, never passed
  EXPECT_LE(peak_reported, limit);
}

TEST(stream_server, serve_forever_returns_once_stopped) {
  stream_server server("127.0.0.1", 0, echo);
  auto runner = spawn([&] { server.serve_forever(); });
  tendril::sleep(0s);
  EXPECT_TRUE(server.serving());
  tcp_stream c = tendril::net::connect(server.local_address());
  c.send_all("ping");
  EXPECT_EQ(c.recv_exact(4), "ping");
  EXPECT_FALSE(runner.ready());
  c.close();
  server.stop(1s);
  runner.get();
}

TEST(stream_server, stop_returns_as_soon_as_the_handlers_end_within_the_grace) {
  stream_server server("127.0.0.1", 0, [](tcp_stream& conn, const address&) {
    tendril::sleep(30ms);
    conn.send_all("done");
  });
  server.start();
  tcp_stream c = tendril::net::connect(server.local_address());
  ASSERT_TRUE(tendril::test::eventually([&] { return server.connections() == 1; }));
  stopwatch w;
  server.stop(30s);
  EXPECT_LT(w.elapsed(), 10s);
  EXPECT_EQ(c.recv_exact(4), "done");
  EXPECT_EQ(server.connections(), 0u);
}

TEST(stream_server, stop_waits_for_handlers_up_to_the_grace_then_kills_the_rest) {
  event never;
  int finished = 0;
  bool stuck_unwound[2] = {false, false};
  int stuck_returned = 0;
  stream_server server("127.0.0.1", 0, [&](tcp_stream& conn, const address&) {
    const std::string kind = conn.recv_exact(1);
    if (kind == "q") {
      tendril::sleep(50ms);
      conn.send_all("bye");
      ++finished;
    } else {
      sets_on_destruction mark{&stuck_unwound[kind == "a" ? 0 : 1]};
      never.wait();
      ++stuck_returned;
    }
  });
  server.start();
  const address at = server.local_address();
  std::vector<tcp_stream> clients;
  for (const char* kind : {"q", "a", "q", "b"}) {
    clients.push_back(tendril::net::connect(at));
    clients.back().send_all(kind);
  }
  ASSERT_TRUE(tendril::test::eventually([&] { return server.connections() == 4; }));
  stopwatch w;
  server.stop(300ms);
  EXPECT_GE(w.elapsed(), 250ms);
  EXPECT_LT(w.elapsed(), 10s);
  EXPECT_EQ(finished, 2);
  EXPECT_TRUE(stuck_unwound[0]);
  EXPECT_TRUE(stuck_unwound[1]);
  EXPECT_EQ(stuck_returned, 0);
  EXPECT_EQ(server.connections(), 0u);
  EXPECT_FALSE(server.serving());
  EXPECT_EQ(clients[0].recv_exact(3), "bye");
  EXPECT_EQ(clients[2].recv_exact(3), "bye");
  // The killed handlers' connections were closed.
  EXPECT_EQ(clients[1].recv(8), "");
  EXPECT_EQ(clients[3].recv(8), "");
  // And no one is accepted any more.
  std::error_code ec;
  tendril::net::connect(at, ec);
  EXPECT_EQ(ec, std::errc::connection_refused);
}

TEST(stream_server, stop_returns_after_the_grace_when_stuck_handlers_hold_every_slot) {
  // The accept loop waits for a free slot, not in accept: closing the listener alone
  // would not end it.
  event never;
  int unwound = 0;
  stream_server::options o;
  o.max_connections = 2;
  stream_server server(
      "127.0.0.1", 0,
      [&](tcp_stream&, const address&) {
        struct count_unwind {
          int* n;
          ~count_unwind() { ++*n; }
        } mark{&unwound};
        never.wait();
      },
      o);
  server.start();
  tcp_stream a = tendril::net::connect(server.local_address());
  tcp_stream b = tendril::net::connect(server.local_address());
  tcp_stream waiting = tendril::net::connect(server.local_address());  // in the backlog
  ASSERT_TRUE(tendril::test::eventually([&] { return server.connections() == 2; }));
  stopwatch w;
  {
    timeout guard(10s);
    server.stop(100ms);
  }
  EXPECT_LT(w.elapsed(), 10s);
  EXPECT_EQ(unwound, 2);
  EXPECT_EQ(server.connections(), 0u);
  EXPECT_EQ(a.recv(8), "");
  EXPECT_EQ(b.recv(8), "");
}

TEST(stream_server, destroying_a_started_server_kills_the_connections_it_serves) {
  event never;
  bool unwound = false;
  tcp_stream c;
  {
    stream_server server("127.0.0.1", 0, [&](tcp_stream&, const address&) {
      sets_on_destruction mark{&unwound};
      never.wait();
    });
    server.start();
    c = tendril::net::connect(server.local_address());
    ASSERT_TRUE(tendril::test::eventually([&] { return server.connections() == 1; }));
  }
  EXPECT_TRUE(unwound);
  EXPECT_EQ(c.recv(8), "");
}

TEST(stream_server, a_handler_exception_is_reported_and_the_server_goes_on) {
  error_log log;
  stream_server server("127.0.0.1", 0, [](tcp_stream& conn, const address&) {
    const std::string what = conn.recv_exact(4);
    if (what == "boom") throw std::runtime_error("handler failed on boom");
    conn.send_all(what);
  });
  server.start();
  tcp_stream bad = tendril::net::connect(server.local_address());
  bad.send_all("boom");
  // The failed handler's connection is closed.
  bad.set_timeout(10s);
  EXPECT_EQ(bad.recv(8), "");
  ASSERT_TRUE(tendril::test::eventually([&] { return !log.whats.empty(); }));
  ASSERT_EQ(log.whats.size(), 1u);
  EXPECT_EQ(log.whats[0], "handler failed on boom");
  EXPECT_TRUE(server.serving());
  for (int i = 0; i < 3; ++i) {
    tcp_stream good = tendril::net::connect(server.local_address());
    good.send_all("fine");
    EXPECT_EQ(good.recv_exact(4), "fine");
  }
  EXPECT_EQ(log.whats.size(), 1u);
  server.stop();
}

TEST(stream_server, binding_a_port_in_use_fails_with_eaddrinuse_naming_the_address) {
  stream_server first("127.0.0.1", 0, echo);
  const std::uint16_t port = first.local_address().port();
  try {
    stream_server second("127.0.0.1", port, echo);
    ADD_FAILURE() << "bound twice";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
    EXPECT_TRUE(contains(e.what(), "127.0.0.1:" + std::to_string(port))) << e.what();
  }
}

TEST(stream_server, an_empty_handler_is_invalid_argument) {
  EXPECT_THROW(stream_server("127.0.0.1", 0, stream_server::handler{}), std::invalid_argument);
}

TEST(stream_server, a_listener_that_is_closed_or_not_listening_is_invalid_argument) {
  EXPECT_THROW(stream_server(tendril::net::tcp_listener(), echo), std::invalid_argument);
  const int bound_only = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(bound_only, 0);
  try {
    stream_server s(tendril::net::tcp_listener(bound_only), echo);
    ADD_FAILURE() << "served on a socket that does not listen";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), "not a listening")) << e.what();
  }
}

// A stop() before start() closes the listener: a client is refused rather than left waiting
// in the backlog for a server that will never accept it.
TEST(stream_server, stop_before_start_refuses_clients) {
  stream_server server("127.0.0.1", 0, echo);
  const address at = server.local_address();
  server.stop();
  std::error_code ec;
  tendril::net::connect(at, ec);
  EXPECT_EQ(ec, std::errc::connection_refused);
}

// The listener fails for good (here shut down underneath: accept then says EINVAL): the
// server stops accepting at once instead of retrying without end (which never yielded on a
// readiness backend), the connection being served goes on to its end, and serve_forever()
// then throws the error.
TEST(stream_server, a_listener_that_fails_for_good_ends_serve_forever_with_its_error) {
  tendril::net::tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  const int listen_fd = l.native_handle();
  event go;
  bool handler_began = false;
  stream_server server(std::move(l), [&](tcp_stream& conn, const address&) {
    handler_began = true;
    char buf[16];
    const std::size_t n = conn.recv(buf, sizeof buf);
    go.wait();
    conn.send_all(buf, n);
  });
  std::error_code error;
  std::string what;
  auto runner = spawn([&] {
    try {
      server.serve_forever();
    } catch (const std::system_error& e) {
      error = e.code();
      what = e.what();
    }
  });
  tcp_stream client = tendril::net::connect(server.local_address());
  client.send_all("hi");
  while (!handler_began) tendril::sleep(1ms);
  ASSERT_EQ(::shutdown(listen_fd, SHUT_RDWR), 0);
  tendril::sleep(20ms);
  EXPECT_FALSE(server.serving());
  EXPECT_FALSE(runner.ready()) << "serve_forever() returned with a handler still running";
  go.set();
  client.set_timeout(5s);
  EXPECT_EQ(client.recv_exact(2), "hi");
  runner.join();
  EXPECT_EQ(error, std::errc::invalid_argument) << what;
  EXPECT_TRUE(contains(what, "accept")) << what;
  EXPECT_TRUE(contains(what, "127.0.0.1")) << what;
}

TEST(stream_server, stop_before_start_and_twice_does_nothing_harmful) {
  stream_server server("127.0.0.1", 0, echo);
  server.stop();
  EXPECT_FALSE(server.serving());
  server.stop();
  stream_server started("127.0.0.1", 0, echo);
  started.start();
  started.stop();
  started.stop();
  EXPECT_FALSE(started.serving());
}

// --- out of descriptors ----------------------------------------------------------------------

namespace {

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// In the child process, on a thread of its own (so that its hub is its own, not a copy of
// the parent's). Returns the exit code: 0 when all went well.
int serve_while_out_of_descriptors() {
  try {
    int served = 0;
    stream_server server("127.0.0.1", 0, [&](tcp_stream& conn, const address&) {
      conn.send_all(conn.recv_exact(4));
      ++served;
    });
    // The client connects before the descriptors run out: the kernel queues it.
    tcp_stream client = tendril::net::connect(server.local_address());
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 10;
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_cur, tendril::test::open_descriptors() + 32);
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return 11;
    std::vector<int> spare;
    while (true) {
      const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        if (errno != EMFILE) return 12;
        break;
      }
      spare.push_back(fd);
    }
    server.start();
    tendril::sleep(100ms);  // the accept loop has met EMFILE by now
    if (served != 0) return 13;
    const double cpu_before = cpu_seconds();
    tendril::sleep(1s);
    const double cpu = cpu_seconds() - cpu_before;
    // A loop retrying accept at once would burn the whole second; backing off burns little.
    if (cpu > 0.5) return 14;
    if (served != 0) return 15;
    for (int fd : spare) ::close(fd);
    {
      timeout t(10s);
      client.send_all("ping");
      if (client.recv_exact(4) != "ping") return 16;
    }
    if (served != 1) return 17;
    // And it goes on serving.
    tcp_stream another = tendril::net::connect(server.local_address());
    another.send_all("pong");
    if (another.recv_exact(4) != "pong") return 18;
    server.stop(1s);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: %s\n", e.what());
    return 20;
  } catch (...) {
    return 21;
  }
}

}  // namespace

TEST(stream_server, an_accept_loop_out_of_descriptors_does_not_spin_and_recovers) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int code = 30;
    std::thread t([&] { code = serve_while_out_of_descriptors(); });
    t.join();
    ::_exit(code);
  }
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  ASSERT_EQ(r, pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died (status " << status << ")";
  // 14: it spun; 13, 15: it served without descriptors; 16-18: it did not recover.
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A "shutdown" command served by a handler: stop() from inside it waits for the other
// connections up to the grace, kills the rest, and serve_forever() returns; the handler that
// called it is spared and finishes its reply.
TEST(stream_server, a_handler_can_stop_the_server_it_runs_in) {
  event never;
  bool other_unwound = false;
  stream_server* self = nullptr;
  stream_server server("127.0.0.1", 0, [&](tcp_stream& conn, const address&) {
    if (conn.recv_exact(1) == "s") {
      self->stop(50ms);
      conn.send_all("stopped");
    } else {
      sets_on_destruction mark{&other_unwound};
      never.wait();
    }
  });
  self = &server;
  auto runner = spawn([&] { server.serve_forever(); });
  tcp_stream other = tendril::net::connect(server.local_address());
  other.send_all("x");
  ASSERT_TRUE(tendril::test::eventually([&] { return server.connections() == 1; }));
  tcp_stream admin = tendril::net::connect(server.local_address());
  admin.send_all("s");
  timeout guard(30s);  // a hang fails the test instead
  runner.get();        // serve_forever() returned
  EXPECT_FALSE(server.serving());
  EXPECT_EQ(admin.recv_exact(7), "stopped");
  EXPECT_TRUE(other_unwound);
  EXPECT_EQ(other.recv(8), "");
  ASSERT_TRUE(tendril::test::eventually([&] { return server.connections() == 0; }));
}

TEST(stream_server, serves_on_an_address_or_a_listener_made_beforehand) {
  stream_server by_address(address::ip("127.0.0.1", 0), echo);
  by_address.start();
  stream_server by_listener(tendril::net::listen(address::ip("127.0.0.1", 0)), echo);
  by_listener.start();
  for (stream_server* s : {&by_address, &by_listener}) {
    tcp_stream c = tendril::net::connect(s->local_address());
    c.send_all("hi");
    EXPECT_EQ(c.recv_exact(2), "hi");
  }
  // The address form names what it could not bind.
  try {
    stream_server taken(by_address.local_address(), echo);
    ADD_FAILURE() << "bound a port in use";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
    EXPECT_TRUE(contains(e.what(), by_address.local_address().to_string())) << e.what();
  }
}

// The handler that stopped the server may go on serving its connection: serve_forever()
// returns only once it has ended, and a second stop() waits for the first, so that the
// server can be destroyed as soon as either returns (ASan would see a handler outlive it).
TEST(stream_server, serve_forever_and_a_second_stop_wait_for_the_stop_under_way) {
  event release;
  bool stopper_done = false;
  bool waiter_done = false;
  std::unique_ptr<stream_server> server;
  server = std::make_unique<stream_server>("127.0.0.1", 0, [&](tcp_stream& conn, const address&) {
    if (conn.recv_exact(1) == "s") {
      server->stop(30s);
      tendril::sleep(20ms);  // finishing its reply after the stop
      conn.send_all("bye");
      stopper_done = true;
    } else {
      release.wait();
      waiter_done = true;
    }
  });
  auto runner = spawn([&] { server->serve_forever(); });
  tcp_stream w = tendril::net::connect(server->local_address());
  w.send_all("w");
  ASSERT_TRUE(tendril::test::eventually([&] { return server->connections() == 1; }));
  tcp_stream s = tendril::net::connect(server->local_address());
  s.send_all("s");
  ASSERT_TRUE(tendril::test::eventually([&] { return !server->serving(); }));
  auto second = spawn([&] { server->stop(); });
  tendril::sleep(20ms);
  EXPECT_FALSE(second.ready()) << "the second stop returned while the first waited";
  EXPECT_FALSE(runner.ready());
  release.set();
  timeout guard(30s);  // a hang fails the test instead
  second.get();
  runner.get();
  EXPECT_TRUE(waiter_done);
  EXPECT_TRUE(stopper_done);
  server.reset();
  EXPECT_EQ(s.recv_exact(3), "bye");
}

// A task that owns a server whose handler waits in recv, left so when its thread ends: the
// server's destructor got loop_exit at its wait for the handlers (refused as a wait without a
// time limit), returned while the handler still ran, and freed what the handler used.
TEST(stream_server, a_thread_that_ends_with_a_server_in_a_task_unwinds_its_handlers_first) {
  std::vector<std::string> order;
  std::thread th([&] {
    std::uint16_t port = 0;
    event ready;
    event in_recv;
    spawn([&] {
      stream_server::options o;
      o.max_connections = 4;
      struct server_gone {
        std::vector<std::string>& order;
        ~server_gone() { order.push_back("server destroyed"); }
      } after{order};  // destroyed after srv, declared before it
      stream_server srv(
          "127.0.0.1", 0,
          [&order, &in_recv](tcp_stream& c, const address&) {
            struct handler_gone {
              std::vector<std::string>& order;
              ~handler_gone() { order.push_back("handler unwound"); }
            } g{order};
            in_recv.set();
            char buf[16];
            c.recv(buf, sizeof buf);
          },
          o);
      port = srv.local_address().port();
      ready.set();
      srv.serve_forever();
    });
    ready.wait();
    static thread_local std::unique_ptr<tcp_stream> client;  // outlives the tasks
    client = std::make_unique<tcp_stream>(tendril::net::connect("127.0.0.1", port));
    in_recv.wait();
  });
  th.join();
  EXPECT_EQ(order, (std::vector<std::string>{"handler unwound", "server destroyed"}));
}
