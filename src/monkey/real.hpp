// The libc functions the hooks stand in for, found once with dlsym(RTLD_NEXT) (else in libc
// itself): what a hook calls when it is not active, and what it calls to do the actual work
// when it is.
#ifndef TENDRIL_SRC_MONKEY_REAL_HPP
#define TENDRIL_SRC_MONKEY_REAL_HPP

#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <cstdarg>
#include <cstdio>

namespace tendril::detail::real {

struct functions {
  unsigned (*sleep)(unsigned);
  int (*usleep)(useconds_t);
  int (*nanosleep)(const timespec*, timespec*);
  int (*clock_nanosleep)(clockid_t, int, const timespec*, timespec*);
  ssize_t (*read)(int, void*, size_t);
  ssize_t (*readv)(int, const iovec*, int);
  ssize_t (*write)(int, const void*, size_t);
  ssize_t (*writev)(int, const iovec*, int);
  ssize_t (*recv)(int, void*, size_t, int);
  ssize_t (*recvfrom)(int, void*, size_t, int, sockaddr*, socklen_t*);
  ssize_t (*recvmsg)(int, msghdr*, int);
  ssize_t (*send)(int, const void*, size_t, int);
  ssize_t (*sendto)(int, const void*, size_t, int, const sockaddr*, socklen_t);
  ssize_t (*sendmsg)(int, const msghdr*, int);
  int (*accept)(int, sockaddr*, socklen_t*);
  int (*accept4)(int, sockaddr*, socklen_t*, int);
  int (*connect)(int, const sockaddr*, socklen_t);
  int (*poll)(pollfd*, nfds_t, int);
  int (*ppoll)(pollfd*, nfds_t, const timespec*, const sigset_t*);
  int (*select)(int, fd_set*, fd_set*, fd_set*, timeval*);
  int (*pselect)(int, fd_set*, fd_set*, fd_set*, const timespec*, const sigset_t*);
  int (*epoll_wait)(int, epoll_event*, int, int);
  int (*epoll_pwait)(int, epoll_event*, int, int, const sigset_t*);
  int (*epoll_pwait2)(int, epoll_event*, int, const timespec*, const sigset_t*);  // or nullptr
  int (*getaddrinfo)(const char*, const char*, const addrinfo*, addrinfo**);
  int (*getnameinfo)(const sockaddr*, socklen_t, char*, socklen_t, char*, socklen_t, int);
  hostent* (*gethostbyname)(const char*);
  hostent* (*gethostbyname2)(const char*, int);
  int (*gethostbyname_r)(const char*, hostent*, char*, size_t, hostent**, int*);
  int (*gethostbyname2_r)(const char*, int, hostent*, char*, size_t, hostent**, int*);
  int (*socket)(int, int, int);
  int (*socketpair)(int, int, int, int*);
  int (*pipe)(int*);
  int (*pipe2)(int*, int);
  int (*close)(int);
  int (*fclose)(FILE*);
  int (*dup)(int);
  int (*dup2)(int, int);
  int (*dup3)(int, int, int);
  int (*fcntl)(int, int, ...);
  int (*fcntl64)(int, int, ...);
  int (*ioctl)(int, unsigned long, ...);
  int (*setsockopt)(int, int, int, const void*, socklen_t);
  int (*getsockopt)(int, int, int, void*, socklen_t*);
  pid_t (*fork)();
};

// get() is the table, filled on first use (thread-safe).
const functions& get() noexcept;

}  // namespace tendril::detail::real

#endif
