// Hooks: name resolution. glibc's resolver blocks (and reads /etc/hosts, talks to NSS
// modules and DNS servers on its own descriptors, which the hooks cannot see), so the call
// itself runs on the thread pool while the greenlet waits. It writes into the caller's
// memory, so that wait cannot be cut short: a kill or a timeout stays pending until the call
// is done. h_errno is copied back to the caller's thread.
#include <netdb.h>

#include <cerrno>
#include <vector>

#include "monkey/core.hpp"

extern "C" {
char tendril_hook_anchor_dns = 0;
}

namespace {
using namespace tendril::detail::monkey;
namespace real = tendril::detail::real;

template <class F>
void run_pooled(F& f) {
  on_pool([](void* p) { (*static_cast<F*>(p))(); }, &f);
}

}  // namespace

extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                           addrinfo** res) {
  if (!active()) return real::get().getaddrinfo(node, service, hints, res);
  int rc = 0;
  int err = 0;
  auto call = [&] {
    rc = real::get().getaddrinfo(node, service, hints, res);
    err = errno;
  };
  run_pooled(call);
  if (rc == EAI_SYSTEM) errno = err;
  return rc;
}

extern "C" int getnameinfo(const sockaddr* sa, socklen_t salen, char* host, socklen_t hostlen,
                           char* serv, socklen_t servlen, int flags) {
  if (!active()) return real::get().getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
  int rc = 0;
  int err = 0;
  auto call = [&] {
    rc = real::get().getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
    err = errno;
  };
  run_pooled(call);
  if (rc == EAI_SYSTEM) errno = err;
  return rc;
}

namespace {

// The answers gethostbyname() and gethostbyname2() give a calling thread: theirs, as glibc's
// static ones are the process's, each valid until the thread's next call of the same function
// (glibc keeps one buffer per function, so gethostbyname2 does not spoil gethostbyname's
// answer; dns_test gethostbyname_answer_survives_gethostbyname2). The lookup itself runs on
// the pool with gethostbyname_r into storage of the call's own (two greenlets of one thread
// may look up at once), which then becomes the thread's answer without a switch.
struct host_answer {
  hostent h{};
  std::vector<char> buf;
};
thread_local host_answer t_answer;
thread_local host_answer t_answer2;

hostent* lookup_pooled(const char* name, int af, bool with_af) {
  host_answer mine;
  mine.buf.resize(1024);
  hostent* out = nullptr;
  int herr = 0;
  auto call = [&] {
    while (true) {
      const int rc = with_af ? real::get().gethostbyname2_r(name, af, &mine.h, mine.buf.data(),
                                                            mine.buf.size(), &out, &herr)
                             : real::get().gethostbyname_r(name, &mine.h, mine.buf.data(),
                                                           mine.buf.size(), &out, &herr);
      if (rc != ERANGE || mine.buf.size() >= (std::size_t{1} << 24)) break;
      try {
        mine.buf.resize(mine.buf.size() * 2);
      } catch (...) {
        out = nullptr;
        herr = NO_RECOVERY;
        break;
      }
    }
  };
  on_pool([](void* p) { (*static_cast<decltype(call)*>(p))(); }, &call);
  h_errno = herr;
  if (out == nullptr) return nullptr;
  // The buffer moves without its bytes moving: the pointers in h stay good.
  host_answer& answer = with_af ? t_answer2 : t_answer;
  answer.buf = std::move(mine.buf);
  answer.h = mine.h;
  return &answer.h;
}

}  // namespace

extern "C" hostent* gethostbyname(const char* name) {
  if (!active()) return real::get().gethostbyname(name);
  return lookup_pooled(name, AF_INET, false);
}

extern "C" hostent* gethostbyname2(const char* name, int af) {
  if (!active()) return real::get().gethostbyname2(name, af);
  return lookup_pooled(name, af, true);
}

extern "C" int gethostbyname_r(const char* name, hostent* ret, char* buf, size_t buflen,
                               hostent** result, int* h_errnop) {
  if (!active()) return real::get().gethostbyname_r(name, ret, buf, buflen, result, h_errnop);
  int rc = 0;
  auto call = [&] { rc = real::get().gethostbyname_r(name, ret, buf, buflen, result, h_errnop); };
  run_pooled(call);
  return rc;
}

extern "C" int gethostbyname2_r(const char* name, int af, hostent* ret, char* buf, size_t buflen,
                                hostent** result, int* h_errnop) {
  if (!active()) return real::get().gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
  int rc = 0;
  auto call = [&] {
    rc = real::get().gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
  };
  run_pooled(call);
  return rc;
}
