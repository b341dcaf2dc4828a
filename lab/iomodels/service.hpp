// The lab's service, written once for every model: upper-case what was read and send it
// back. The blocking models call echo_blocking() on a connection; the event-driven ones keep
// a connection per descriptor and call its read_some() and flush() when the descriptor is
// ready. Nothing here raises SIGPIPE: every send passes MSG_NOSIGNAL.
#ifndef TENDRIL_LAB_IOMODELS_SERVICE_HPP
#define TENDRIL_LAB_IOMODELS_SERVICE_HPP

#include <cstddef>
#include <string>

namespace tendril::lab {

// upper_case() turns ASCII letters of buf[0, n) to upper case, in place.
void upper_case(char* buf, std::size_t n) noexcept;

// echo_blocking() serves one blocking connection until the client closes or fails, then
// closes fd. It blocks the calling thread all along.
void echo_blocking(int fd) noexcept;

// throw_errno() throws std::system_error for errno, naming what failed.
[[noreturn]] void throw_errno(const char* what);

// set_nonblocking() sets O_NONBLOCK on fd (throws std::system_error).
void set_nonblocking(int fd);

// accept_connection() accepts one connection on a listener, non-blocking (SOCK_NONBLOCK)
// when asked: the descriptor, or -1 with errno (EAGAIN: none waiting). Errors that concern
// only the connection that was being accepted (ECONNABORTED, EINTR...) are retried.
int accept_connection(int listen_fd, bool nonblocking) noexcept;

// A failed accept on a busy machine (EMFILE, ENFILE, ENOBUFS, ENOMEM): the thread that
// accepts waits a moment instead of spinning on the same error (the connection waits in
// the backlog). pause_after_accept_error() does that and returns true for those errors.
bool pause_after_accept_error(int err) noexcept;

// connection: one non-blocking connection of an event-driven model, and the upper-cased
// bytes that could not be sent yet because its send buffer was full.
class connection {
 public:
  enum class status {
    done,         // read_some(): read and echoed something; flush(): nothing left to send
    would_block,  // nothing to read now, or (pending() true) the send buffer is full
    closed,       // the client closed or failed: close the descriptor
  };

  explicit connection(int fd) noexcept : fd_(fd) {}
  int fd() const noexcept { return fd_; }
  // pending() is true while there are bytes to send: wait for writability, not readability.
  bool pending() const noexcept { return sent_ < out_.size(); }

  // read_some() reads once (at most one buffer), upper-cases and sends it; what does not
  // fit stays pending (and it returns would_block). Call it only when !pending().
  status read_some();
  // flush() sends what is pending.
  status flush();
  // drain() is read_some() and flush() until the socket would block or the client is gone:
  // what an edge-triggered model must do on every notification, because it will not hear
  // about this descriptor again until its state changes.
  status drain();

 private:
  int fd_;
  std::string out_;
  std::size_t sent_ = 0;
};

}  // namespace tendril::lab

#endif
