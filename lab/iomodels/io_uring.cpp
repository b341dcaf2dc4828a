// Model 5, asynchronous I/O with io_uring.
//
// What it is: the program does not ask "is it ready?" and then make the call; it hands the
// whole operation to the kernel ("accept on this listener", "receive into this buffer",
// "send these bytes") and is told later that it is done, with its result. The waiting, and
// the copying, happen in the kernel while the program does something else.
//
// How it works: two rings shared with the kernel. The server puts operations on the
// submission ring (one accept for the listener; one receive or send per connection at any
// time, the pointer to the connection as its user_data), then io_uring_submit_and_wait()
// submits them all in one system call and sleeps until at least one has completed. Each
// completion on the completion ring says which operation ended and how (res: bytes, or
// -errno), and handling it submits the connection's next operation: after a receive, a
// send of those bytes upper-cased; after a send, the rest of it, or the next receive.
//
// Its limits: Linux 5.1 and later, and many hosts refuse it (kernel.io_uring_disabled,
// seccomp filters in containers) for its record of kernel bugs. Buffers belong to the
// kernel until the operation completes: each connection keeps its own, even while idle
// (multishot receive with provided buffers avoids that; not shown here). A program in this
// style is a chain of completion handlers, the state of each connection spelled out by
// hand: the callback structure that greenlets were invented to hide.
#include <cerrno>
#include <system_error>

#include "model.hpp"
#include "models_impl.hpp"
#include "service.hpp"

#if TENDRIL_LAB_HAS_IO_URING

#include <liburing.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace tendril::lab {
namespace {

struct conn {
  explicit conn(int f) : fd(f) {}
  int fd;
  bool sending = false;
  std::size_t len = 0, sent = 0;
  char buf[16 * 1024];
};

class server {
 public:
  explicit server(int listen_fd) : lfd_(listen_fd) {
    // One thread submits and reaps: the kernel may run completion work when that thread
    // next enters it instead of interrupting it (kernels before 5.19/6.0 lack the flags).
    io_uring_params p{};
    p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER;
    int e = ::io_uring_queue_init_params(1024, &ring_, &p);
    if (e == -EINVAL) {
      p = io_uring_params{};
      e = ::io_uring_queue_init_params(1024, &ring_, &p);
    }
    if (e < 0) throw std::system_error(-e, std::generic_category(), "io_uring_queue_init");
  }

  void run() {
    submit_accept();
    while (true) {
      int e = ::io_uring_submit_and_wait(&ring_, 1);
      if (e < 0 && e != -EINTR) throw std::system_error(-e, std::generic_category(), "io_uring");
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        complete(static_cast<conn*>(::io_uring_cqe_get_data(cqe)), cqe->res);
        ++seen;
      }
      ::io_uring_cq_advance(&ring_, seen);
    }
  }

 private:
  // A free slot on the submission ring; when it is full, submit what is there first.
  io_uring_sqe* sqe() {
    io_uring_sqe* s = ::io_uring_get_sqe(&ring_);
    if (s == nullptr) {
      ::io_uring_submit(&ring_);
      s = ::io_uring_get_sqe(&ring_);
    }
    if (s == nullptr) throw std::system_error(EBUSY, std::generic_category(), "io_uring_get_sqe");
    return s;
  }

  void submit_accept() {
    io_uring_sqe* s = sqe();
    ::io_uring_prep_accept(s, lfd_, nullptr, nullptr, 0);
    ::io_uring_sqe_set_data(s, nullptr);  // the accept is the operation without a connection
  }
  void submit_recv(conn* c) {
    io_uring_sqe* s = sqe();
    ::io_uring_prep_recv(s, c->fd, c->buf, sizeof c->buf, 0);
    ::io_uring_sqe_set_data(s, c);
  }
  void submit_send(conn* c) {
    io_uring_sqe* s = sqe();
    ::io_uring_prep_send(s, c->fd, c->buf + c->sent, c->len - c->sent, MSG_NOSIGNAL);
    ::io_uring_sqe_set_data(s, c);
  }

  void complete(conn* c, int res) {
    if (c == nullptr) {  // an accept ended: a connection, or an error
      if (res >= 0) {
        submit_recv(new conn(res));
      } else if (res == -EBADF || res == -EINVAL || res == -ENOTSOCK) {
        throw std::system_error(-res, std::generic_category(), "accept");  // no listener
      } else {
        pause_after_accept_error(-res);  // else the next one may do: ECONNABORTED...
      }
      submit_accept();
    } else if (res < 0 || (res == 0 && !c->sending)) {
      ::close(c->fd);  // the client closed (a receive of 0) or failed
      delete c;
    } else if (!c->sending) {  // a receive ended: send the bytes back
      upper_case(c->buf, static_cast<std::size_t>(res));
      c->len = static_cast<std::size_t>(res);
      c->sent = 0;
      c->sending = true;
      submit_send(c);
    } else {  // a send ended: the rest of it (a partial send), or the next receive
      c->sent += static_cast<std::size_t>(res);
      if (c->sent < c->len) {
        submit_send(c);
      } else {
        c->sending = false;
        submit_recv(c);
      }
    }
  }

  int lfd_;
  io_uring ring_{};
};

void serve(const serve_options& o) {
  server s(o.listen_fd);
  s.run();
}

}  // namespace

std::string io_uring_refused() {
  io_uring ring{};
  int e = ::io_uring_queue_init(8, &ring, 0);
  if (e == 0) {
    ::io_uring_queue_exit(&ring);
    return {};
  }
  std::string why = std::string("io_uring_queue_init: ") + std::strerror(-e);
  if (e == -EPERM) why += " (kernel.io_uring_disabled, or a seccomp filter)";
  if (e == -ENOSYS) why += " (a kernel without io_uring)";
  return why;
}

model io_uring_model() {
  return {"io_uring",
          "asynchronous I/O with io_uring: accept, recv and send submitted, completed",
          "lab/iomodels/io_uring.cpp",
          [](const serve_options&) -> std::size_t { return 0; },
          &io_uring_refused,
          &serve};
}

}  // namespace tendril::lab

#else

namespace tendril::lab {

std::string io_uring_refused() { return "this build has no liburing (TENDRIL_WITH_IO_URING off)"; }

model io_uring_model() {
  return {"io_uring",
          "asynchronous I/O with io_uring: accept, recv and send submitted, completed",
          "lab/iomodels/io_uring.cpp",
          [](const serve_options&) -> std::size_t { return 0; },
          &io_uring_refused,
          [](const serve_options&) {
            throw std::system_error(ENOSYS, std::generic_category(), io_uring_refused());
          }};
}

}  // namespace tendril::lab

#endif
