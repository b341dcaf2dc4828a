// Name resolution under the hooks, without the network (localhost, numeric addresses):
// getaddrinfo, getnameinfo, gethostbyname, gethostbyname2 and gethostbyname_r run on the thread
// pool while the calling greenlet waits and a ticker greenlet keeps running, and give what
// libc gives on a thread that never used tendril: the same addresses, names, error codes and
// h_errno.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "monkey_test_support.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using namespace tendril::test::monkey;
using tendril::spawn;

namespace {

class hooked_dns : public hooked_test {};

// What a lookup found, in a comparable form.
struct found {
  int rc = 0;
  std::set<std::string> items;
  bool operator==(const found&) const = default;
};

std::string numeric(const sockaddr* sa, socklen_t len) {
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  return std::string(host) + "/" + serv;
}

found lookup_addrinfo(const char* node, const char* service, int flags) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = flags;
  addrinfo* res = nullptr;
  found f;
  f.rc = ::getaddrinfo(node, service, &hints, &res);
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    f.items.insert(std::to_string(a->ai_family) + ":" + numeric(a->ai_addr, a->ai_addrlen));
  }
  if (res) ::freeaddrinfo(res);
  return f;
}

found lookup_nameinfo(const char* ip, int flags) {
  sockaddr_in a = loopback(80);
  ::inet_pton(AF_INET, ip, &a.sin_addr);
  char host[NI_MAXHOST] = {};
  char serv[NI_MAXSERV] = {};
  found f;
  f.rc = ::getnameinfo(reinterpret_cast<sockaddr*>(&a), sizeof a, host, sizeof host, serv,
                       sizeof serv, flags);
  f.items = {host, serv};
  return f;
}

found from_hostent(const hostent* h, int rc, int herr) {
  found f;
  f.rc = rc;
  f.items.insert("h_errno=" + std::to_string(herr));
  if (h == nullptr) return f;
  f.items.insert(std::string("name=") + h->h_name);
  for (char** a = h->h_addr_list; *a; ++a) {
    char buf[INET6_ADDRSTRLEN];
    ::inet_ntop(h->h_addrtype, *a, buf, sizeof buf);
    f.items.insert(buf);
  }
  return f;
}

found lookup_hostbyname_r(const char* name, std::size_t buflen) {
  hostent he{};
  hostent* result = nullptr;
  std::vector<char> buf(buflen);
  int herr = 0;
  const int rc = ::gethostbyname_r(name, &he, buf.data(), buf.size(), &result, &herr);
  return from_hostent(result, rc, result ? 0 : herr);
}

found lookup_hostbyname(const char* name) {
  const hostent* h = ::gethostbyname(name);
  return from_hostent(h, h ? 0 : -1, h ? 0 : h_errno);
}

found lookup_hostbyname2(const char* name, int af) {
  const hostent* h = ::gethostbyname2(name, af);
  return from_hostent(h, h ? 0 : -1, h ? 0 : h_errno);
}

struct named_lookup {
  const char* name;
  std::function<found()> run;
};

std::vector<named_lookup> lookups() {
  return {
      {"getaddrinfo localhost", [] { return lookup_addrinfo("localhost", "80", 0); }},
      {"getaddrinfo numeric", [] { return lookup_addrinfo("127.0.0.1", "http", 0); }},
      {"getaddrinfo AI_NUMERICHOST with a name",
       [] { return lookup_addrinfo("localhost", "80", AI_NUMERICHOST); }},
      {"getaddrinfo no node no service", [] { return lookup_addrinfo(nullptr, nullptr, 0); }},
      {"getnameinfo", [] { return lookup_nameinfo("127.0.0.1", 0); }},
      {"getnameinfo numeric",
       [] { return lookup_nameinfo("127.0.0.1", NI_NUMERICHOST | NI_NUMERICSERV); }},
      {"getnameinfo NI_NAMEREQD numeric-only address",
       [] { return lookup_nameinfo("127.0.0.1", NI_NAMEREQD | NI_NUMERICHOST); }},
      {"gethostbyname_r localhost", [] { return lookup_hostbyname_r("localhost", 4096); }},
      {"gethostbyname_r too small a buffer", [] { return lookup_hostbyname_r("localhost", 8); }},
      {"gethostbyname localhost", [] { return lookup_hostbyname("localhost"); }},
      {"gethostbyname2 localhost", [] { return lookup_hostbyname2("localhost", AF_INET); }},
  };
}

}  // namespace

TEST_F(hooked_dns, each_lookup_gives_libcs_answer_while_a_ticker_runs) {
  for (const named_lookup& l : lookups()) {
    SCOPED_TRACE(l.name);
    found libc;
    on_plain_thread([&] { libc = l.run(); });
    found hooked;
    int ticks = 0;
    int seen = -1;
    bool stop = false;
    // The resolver greenlet runs first and parks; the ticker, ready by then, runs before the
    // pool thread's answer can wake it.
    auto resolver = spawn([&] {
      hooked = l.run();
      seen = ticks;
      stop = true;
    });
    auto ticker = spawn([&] {
      while (!stop) {
        ++ticks;
        tendril::sleep(0ms);
      }
    });
    tendril::joinall(resolver, ticker);
    EXPECT_GE(seen, 1);
    EXPECT_EQ(hooked, libc);
  }
}

TEST_F(hooked_dns, getaddrinfo_localhost_finds_the_loopback_address) {
  found f;
  auto t = spawn([&] { f = lookup_addrinfo("localhost", "80", 0); });
  t.join();
  EXPECT_EQ(f.rc, 0);
  EXPECT_TRUE(f.items.count(std::to_string(AF_INET) + ":127.0.0.1/80") == 1 ||
              f.items.count(std::to_string(AF_INET6) + ":::1/80") == 1);
}

// A bad TENDRIL_THREADPOOL_SIZE: offload() refuses it naming it, but the hooks, which cannot
// throw, ran every lookup on the calling thread without a word.
TEST_F(hooked_dns, a_bad_pool_size_is_named_once_and_lookups_still_answer) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: no pool made yet
  EXPECT_EXIT(
      {
        ::setenv("TENDRIL_THREADPOOL_SIZE", "abc", 1);
        found a;
        found b;
        spawn([&] {
          a = lookup_addrinfo("127.0.0.1", "80", AI_NUMERICHOST);
          b = lookup_addrinfo("localhost", "80", 0);
        }).join();
        std::_Exit(a.rc == 0 && b.rc == 0 ? 0 : 1);
      },
      testing::ExitedWithCode(0),
      "^tendril: TENDRIL_THREADPOOL_SIZE='abc'[^\n]*; the hooks' blocking calls run on the "
      "calling thread\n$");
}

// A lookup made on a pool thread (inside offload(), once that thread has a hub) ran on the
// pool too and waited for it: with a pool of one thread, for itself, for ever.
TEST_F(hooked_dns, a_lookup_on_a_pool_thread_runs_there_instead_of_waiting_for_the_pool) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: no pool made yet
  EXPECT_EXIT(
      {
        ::setenv("TENDRIL_THREADPOOL_SIZE", "1", 1);
        ::alarm(30);  // a hang ends the child with SIGALRM, not exit code 0
        const found f = tendril::offload([] {
          tendril::sleep(0s);  // the pool thread now has a hub: the hooks are active on it
          return lookup_addrinfo("localhost", "80", 0);
        });
        std::_Exit(f.rc == 0 && !f.items.empty() ? 0 : 1);
      },
      testing::ExitedWithCode(0), "");
}

TEST_F(hooked_dns, many_greenlets_resolve_at_once) {
  std::vector<found> results(20);
  std::vector<tendril::task<void>> tasks;
  for (std::size_t i = 0; i < results.size(); ++i) {
    tasks.push_back(spawn([&, i] { results[i] = lookup_addrinfo("localhost", "443", 0); }));
  }
  tendril::joinall(tasks);
  for (const found& f : results) {
    EXPECT_EQ(f.rc, 0);
    EXPECT_EQ(f, results[0]);
  }
}

// gethostbyname's answer is the caller's until its thread's next call: greenlets that look up
// at once each get their own name back, not another's.
TEST_F(hooked_dns, concurrent_gethostbyname_calls_each_get_their_own_answer) {
  const char* names[] = {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"};
  int wrong = 0;
  for (int round = 0; round < 40; ++round) {
    std::vector<tendril::task<void>> tasks;
    for (int i = 0; i < 4; ++i) {
      tasks.push_back(spawn([&, i] {
        hostent* h = (i % 2) ? ::gethostbyname2(names[i], AF_INET) : ::gethostbyname(names[i]);
        if (h == nullptr || std::strcmp(h->h_name, names[i]) != 0) ++wrong;
      }));
    }
    for (auto& t : tasks) t.join();
  }
  EXPECT_EQ(wrong, 0);
}

// glibc keeps one static answer per function: gethostbyname's answer, and the storage its
// pointers reach, stays good across a gethostbyname2 call (and the other way round).
TEST_F(hooked_dns, gethostbyname_answer_survives_gethostbyname2) {
  auto run = [] {
    std::vector<std::string> seen;
    hostent* a = ::gethostbyname("127.0.0.1");
    const char* a_name = a ? a->h_name : nullptr;
    hostent* b = ::gethostbyname2("127.0.0.2", AF_INET);
    seen.push_back(a_name ? a_name : "null");
    seen.push_back(a ? a->h_name : "null");
    seen.push_back(b ? b->h_name : "null");
    hostent* c = ::gethostbyname("127.0.0.3");
    seen.push_back(b ? b->h_name : "null");
    seen.push_back(c ? c->h_name : "null");
    return seen;
  };
  std::vector<std::string> libc;
  on_plain_thread([&] { libc = run(); });
  const std::vector<std::string> expected = {"127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2",
                                             "127.0.0.3"};
  EXPECT_EQ(libc, expected);
  std::vector<std::string> hooked;
  spawn([&] { hooked = run(); }).join();
  EXPECT_EQ(hooked, expected);
}
