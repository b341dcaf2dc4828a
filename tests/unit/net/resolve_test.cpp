// resolve(): localhost and numeric hosts, service names, the family filter, an unknown
// name (host_not_found naming it, in both the throwing call and the error_code twin), and
// other greenlets running while the resolver works. Loopback and /etc/hosts only; the
// unknown name is under .invalid, which no resolver may answer (RFC 6761).
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <string>
#include <system_error>
#include <vector>

#include "net_test_support.hpp"
#include "tendril/tendril.hpp"

using tendril::spawn;
using tendril::net::address;
using tendril::net::resolve;
using tendril::test::contains;

TEST(resolve, localhost_is_a_loopback_address) {
  const std::vector<address> found = resolve("localhost", "80");
  ASSERT_FALSE(found.empty());
  bool loopback = false;
  for (const address& a : found) {
    EXPECT_EQ(a.port(), 80);
    if (a.host() == "127.0.0.1" || a.host() == "::1") loopback = true;
  }
  EXPECT_TRUE(loopback);
}

TEST(resolve, a_service_name_gives_its_port) {
  const std::vector<address> found = resolve("127.0.0.1", "http");
  ASSERT_FALSE(found.empty());
  EXPECT_EQ(found[0].port(), 80);
  EXPECT_EQ(found[0].host(), "127.0.0.1");
}

TEST(resolve, numeric_hosts_are_parsed_as_they_are) {
  std::vector<address> v4 = resolve("127.0.0.1", "8080");
  ASSERT_EQ(v4.size(), 1u);
  EXPECT_EQ(v4[0], address::ip("127.0.0.1", 8080));
  std::vector<address> v6 = resolve("::1", "8080");
  ASSERT_EQ(v6.size(), 1u);
  EXPECT_EQ(v6[0], address::ip("::1", 8080));
  EXPECT_TRUE(v6[0].is_ipv6());
}

TEST(resolve, the_family_filter_keeps_only_that_family) {
  for (const address& a : resolve("localhost", "80", AF_INET)) EXPECT_TRUE(a.is_ipv4());
  std::error_code ec;
  for (const address& a : resolve("localhost", "80", ec, AF_INET6)) EXPECT_TRUE(a.is_ipv6());
  // An IPv4 literal asked for as IPv6 is no address at all.
  EXPECT_TRUE(resolve("127.0.0.1", "80", ec, AF_INET6).empty());
  EXPECT_TRUE(ec);
}

TEST(resolve, an_unknown_name_is_host_not_found_naming_it) {
  const std::string name = "no-such-host.tendril.invalid";
  try {
    resolve(name, "80");
    ADD_FAILURE() << "resolved";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), tendril::net::errc::host_not_found);
    EXPECT_TRUE(contains(e.what(), name)) << e.what();
    EXPECT_EQ(e.code().category().name(), std::string("tendril.net"));
  }
  std::error_code ec;
  const std::vector<address> found = resolve(name, "80", ec);
  EXPECT_EQ(ec, tendril::net::errc::host_not_found);
  EXPECT_TRUE(found.empty());
  EXPECT_EQ(ec.message(), "host not found");
}

TEST(resolve, connect_to_an_unknown_name_fails_naming_it) {
  const std::string name = "no-such-host.tendril.invalid";
  try {
    tendril::net::connect(name, 80);
    ADD_FAILURE() << "connected";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), tendril::net::errc::host_not_found);
    EXPECT_TRUE(contains(e.what(), name)) << e.what();
  }
  std::error_code ec;
  tendril::net::connect(name, 80, ec);
  EXPECT_EQ(ec, tendril::net::errc::host_not_found);
}

TEST(resolve, an_unknown_service_fails_naming_it) {
  const std::string service = "no-such-service-tendril";
  try {
    resolve("localhost", service);
    ADD_FAILURE() << "resolved";
  } catch (const std::system_error& e) {
    EXPECT_TRUE(e.code());
    EXPECT_TRUE(contains(e.what(), service)) << e.what();
  }
}

// getaddrinfo would take "70000" modulo 65536 (port 4464) and say little about "-1".
TEST(resolve, a_number_that_is_not_a_port_is_einval_naming_it) {
  for (const char* service : {"70000", "65536", "-1", "+80", "99999999999999999999"}) {
    std::error_code ec;
    EXPECT_TRUE(resolve("127.0.0.1", service, ec).empty()) << service;
    EXPECT_EQ(ec, std::errc::invalid_argument) << service;
    try {
      resolve("127.0.0.1", service);
      ADD_FAILURE() << "resolved " << service;
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::invalid_argument);
      EXPECT_TRUE(contains(e.what(), service)) << e.what();
      EXPECT_TRUE(contains(e.what(), "0 to 65535")) << e.what();
    }
  }
  EXPECT_EQ(resolve("127.0.0.1", "65535").at(0).port(), 65535);
  EXPECT_EQ(resolve("127.0.0.1", "0").at(0).port(), 0);
  std::error_code ec;
  resolve("localhost", "80", ec, 12345);
  EXPECT_EQ(ec, std::errc::invalid_argument);
}

// connect(host, port, limit): the limit bounds the name's resolution too. The thread pool
// is kept busy, so that the lookup waits for a pool thread longer than the limit.
TEST(resolve, a_connect_limit_bounds_the_resolution_of_the_name) {
  tendril::net::tcp_listener l = tendril::net::listen("127.0.0.1", 0);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::vector<tendril::task<void>> blockers;
  // More than the pool's threads (10 unless TENDRIL_THREADPOOL_SIZE says otherwise).
  const char* size = std::getenv("TENDRIL_THREADPOOL_SIZE");
  const int jobs = 64 + (size != nullptr ? std::atoi(size) : 0);
  for (int i = 0; i < jobs; ++i) {
    blockers.push_back(spawn([released] {
      tendril::offload([released] { released.wait_for(std::chrono::seconds(10)); });
    }));
  }
  tendril::sleep(std::chrono::milliseconds(1));  // they hold every pool thread
  tendril::test::stopwatch watch;
  std::error_code ec;
  tendril::net::tcp_stream s = tendril::net::connect("localhost", l.local_address().port(),
                                                     std::chrono::milliseconds(100), ec);
  const auto took = watch.elapsed();
  release.set_value();
  for (auto& b : blockers) b.join();
  EXPECT_EQ(ec, std::errc::timed_out) << ec.message();
  EXPECT_FALSE(s.is_open());
  EXPECT_LT(took, std::chrono::seconds(5));
}

TEST(resolve, other_greenlets_run_while_the_resolver_works) {
  // A name lookup goes to the thread pool and the caller waits as a greenlet: another
  // greenlet that is ready runs before the lookup returns.
  bool ran = false;
  auto other = spawn([&] { ran = true; });
  const std::vector<address> found = resolve("localhost", "80");
  EXPECT_TRUE(ran);
  EXPECT_FALSE(found.empty());
  other.get();
}

TEST(resolve, many_lookups_from_many_greenlets_at_once) {
  std::vector<tendril::task<std::size_t>> lookups;
  for (int i = 0; i < 20; ++i) {
    lookups.push_back(spawn([] { return resolve("localhost", "80").size(); }));
  }
  for (auto& l : lookups) EXPECT_GE(l.get(), 1u);
}
