#include "monkey/real.hpp"

#include <dlfcn.h>
#if __has_include(<gnu/lib-names.h>)
#include <gnu/lib-names.h>
#endif

#include <cstdio>
#include <cstdlib>

#ifndef LIBC_SO
#define LIBC_SO "libc.so.6"
#endif

namespace tendril::detail::real {
namespace {

// The C library itself, for names RTLD_NEXT cannot reach: preloaded into a program that does
// not link libtendril.so (or into the child a hooked program starts, which inherits
// LD_PRELOAD), libtendril.so comes after libc in the lookup order, so nothing follows it.
void* libc_handle() {
  static void* const h = dlopen(LIBC_SO, RTLD_LAZY | RTLD_NOLOAD);
  return h;
}

// The next definition of name after tendril's, else libc's own; nullptr if neither has it.
void* lookup(const char* name) {
  if (void* p = dlsym(RTLD_NEXT, name)) return p;
  void* libc = libc_handle();
  return libc ? dlsym(libc, name) : nullptr;
}

template <class F>
void find(F& slot, const char* name) {
  slot = reinterpret_cast<F>(lookup(name));
  if (slot == nullptr) {
    // Without the real function nothing sensible can be done: say which and stop.
    std::fprintf(stderr, "tendril: the libc function '%s' cannot be found (dlsym)\n", name);
    std::abort();
  }
}

// A function that an older libc lacks (then nothing linked against it calls the hook either).
template <class F>
void find_optional(F& slot, const char* name) {
  slot = reinterpret_cast<F>(lookup(name));
}

functions load() {
  functions f{};
  find(f.sleep, "sleep");
  find(f.usleep, "usleep");
  find(f.nanosleep, "nanosleep");
  find(f.clock_nanosleep, "clock_nanosleep");
  find(f.read, "read");
  find(f.readv, "readv");
  find(f.write, "write");
  find(f.writev, "writev");
  find(f.recv, "recv");
  find(f.recvfrom, "recvfrom");
  find(f.recvmsg, "recvmsg");
  find(f.send, "send");
  find(f.sendto, "sendto");
  find(f.sendmsg, "sendmsg");
  find(f.accept, "accept");
  find(f.accept4, "accept4");
  find(f.connect, "connect");
  find(f.poll, "poll");
  find(f.ppoll, "ppoll");
  find(f.select, "select");
  find(f.pselect, "pselect");
  find(f.epoll_wait, "epoll_wait");
  find(f.epoll_pwait, "epoll_pwait");
  find_optional(f.epoll_pwait2, "epoll_pwait2");  // glibc 2.35
  find(f.getaddrinfo, "getaddrinfo");
  find(f.getnameinfo, "getnameinfo");
  find(f.gethostbyname, "gethostbyname");
  find(f.gethostbyname2, "gethostbyname2");
  find(f.gethostbyname_r, "gethostbyname_r");
  find(f.gethostbyname2_r, "gethostbyname2_r");
  find(f.socket, "socket");
  find(f.socketpair, "socketpair");
  find(f.pipe, "pipe");
  find(f.pipe2, "pipe2");
  find(f.close, "close");
  find(f.fclose, "fclose");
  find(f.dup, "dup");
  find(f.dup2, "dup2");
  find(f.dup3, "dup3");
  find(f.fcntl, "fcntl");
  find_optional(f.fcntl64, "fcntl64");  // glibc 2.28; the same function on 64-bit systems
  if (f.fcntl64 == nullptr) f.fcntl64 = f.fcntl;
  find(f.ioctl, "ioctl");
  find(f.setsockopt, "setsockopt");
  find(f.getsockopt, "getsockopt");
  find(f.fork, "fork");
  return f;
}

}  // namespace

const functions& get() noexcept {
  static const functions table = load();
  return table;
}

}  // namespace tendril::detail::real
