// Hooks: the fortified variants that glibc's headers emit under _FORTIFY_SOURCE (what a
// library built with -D_FORTIFY_SOURCE actually calls instead of read, recv, poll...). Each
// checks its buffer as glibc's does, then goes through the plain hook.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>

extern "C" {
char tendril_hook_anchor_chk = 0;
}

extern "C" [[noreturn]] void __chk_fail();

extern "C" ssize_t __read_chk(int fd, void* buf, size_t nbytes, size_t buflen) {
  if (nbytes > buflen) __chk_fail();
  return read(fd, buf, nbytes);
}

extern "C" ssize_t __recv_chk(int fd, void* buf, size_t len, size_t buflen, int flags) {
  if (len > buflen) __chk_fail();
  return recv(fd, buf, len, flags);
}

extern "C" ssize_t __recvfrom_chk(int fd, void* buf, size_t len, size_t buflen, int flags,
                                  sockaddr* addr, socklen_t* addrlen) {
  if (len > buflen) __chk_fail();
  return recvfrom(fd, buf, len, flags, addr, addrlen);
}

extern "C" int __poll_chk(pollfd* fds, nfds_t nfds, int timeout, size_t fdslen) {
  if (fdslen / sizeof(pollfd) < nfds) __chk_fail();
  return poll(fds, nfds, timeout);
}

extern "C" int __ppoll_chk(pollfd* fds, nfds_t nfds, const timespec* tmo, const sigset_t* mask,
                           size_t fdslen) {
  if (fdslen / sizeof(pollfd) < nfds) __chk_fail();
  return ppoll(fds, nfds, tmo, mask);
}
