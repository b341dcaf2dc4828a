// resolve(): localhost and numeric hosts, service names, the family filter, an unknown
// name (host_not_found naming it, in both the throwing call and the error_code twin), and
// other greenlets running while the resolver works. Loopback and /etc/hosts only; the
// unknown name is under .invalid, which no resolver may answer (RFC 6761).
#include <gtest/gtest.h>

#include <sys/socket.h>

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
