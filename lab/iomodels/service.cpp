#include "service.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>
#include <cerrno>
#include <chrono>
#include <system_error>
#include <thread>

namespace tendril::lab {
namespace {

constexpr std::size_t chunk = 64 * 1024;

// send_some() sends what the socket takes now: bytes sent, 0 when it would block, -1 when
// the client is gone.
ssize_t send_some(int fd, const char* p, std::size_t n) noexcept {
  while (true) {
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k >= 0) return k;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }
}

}  // namespace

void upper_case(char* buf, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] = static_cast<char>(buf[i] - 'a' + 'A');
  }
}

void echo_blocking(int fd) noexcept {
  char buf[chunk];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    upper_case(buf, static_cast<std::size_t>(n));
    // A blocking send may still send less than asked (a signal, a huge buffer): loop.
    std::size_t sent = 0;
    while (sent < static_cast<std::size_t>(n)) {
      ssize_t k = ::send(fd, buf + sent, static_cast<std::size_t>(n) - sent, MSG_NOSIGNAL);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        ::close(fd);
        return;
      }
      sent += static_cast<std::size_t>(k);
    }
  }
  ::close(fd);
}

void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw_errno("fcntl(O_NONBLOCK)");
}

int accept_connection(int listen_fd, bool nonblocking) noexcept {
  while (true) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, nonblocking ? SOCK_NONBLOCK : 0);
    if (fd >= 0) return fd;
    // The connection that failed is gone (aborted before accept, or a network error the
    // man page says to treat like EAGAIN); the next one may be fine.
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == ENETDOWN ||
        errno == ENOPROTOOPT || errno == EHOSTDOWN || errno == ENONET || errno == EHOSTUNREACH ||
        errno == EOPNOTSUPP || errno == ENETUNREACH)
      continue;
    return -1;
  }
}

bool pause_after_accept_error(int err) noexcept {
  if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) return false;
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return true;
}

connection::status connection::read_some() {
  static thread_local char buf[chunk];
  ssize_t n;
  do {
    n = ::recv(fd_, buf, sizeof buf, 0);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return status::closed;
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? status::would_block : status::closed;
  upper_case(buf, static_cast<std::size_t>(n));
  // Send at once; only what the socket does not take is copied and kept.
  ssize_t k = send_some(fd_, buf, static_cast<std::size_t>(n));
  if (k < 0) return status::closed;
  if (k == n) return status::done;
  out_.assign(buf + k, static_cast<std::size_t>(n - k));
  sent_ = 0;
  return status::would_block;
}

connection::status connection::flush() {
  while (pending()) {
    ssize_t k = send_some(fd_, out_.data() + sent_, out_.size() - sent_);
    if (k < 0) return status::closed;
    if (k == 0) return status::would_block;
    sent_ += static_cast<std::size_t>(k);
  }
  out_.clear();
  sent_ = 0;
  return status::done;
}

connection::status connection::drain() {
  while (true) {
    status s = pending() ? flush() : read_some();
    if (s != status::done) return s;
  }
}

}  // namespace tendril::lab
