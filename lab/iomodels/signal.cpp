// Model 4, signal-driven I/O: the kernel sends a signal when a descriptor becomes ready.
//
// What it is: with O_ASYNC on a descriptor and an owner set (F_SETOWN), the kernel signals
// the owner whenever the descriptor's state changes: data arrived, room to send, a new
// connection, the peer closed. With F_SETSIG and a real-time signal the signal is queued
// once per event and carries the descriptor (si_fd) and what happened (si_band), so the
// server knows which connection to serve without asking about all of them.
//
// How it works: the signal is blocked and the loop takes one queued signal at a time with
// sigwaitinfo() (no handler: the loop stays ordinary code). A signal for the listener means
// accept; for a connection, serve it until EAGAIN: like edge-triggered epoll, a signal says
// "something changed", once, so whatever is not read now gets no second signal.
//
// Its limits: real-time signals queue in the kernel, up to RLIMIT_SIGPENDING per user (ulimit
// -i). When the queue is full the kernel drops the event and sends a plain SIGIO instead,
// which says only "you lost some": the server must then try every connection, as the
// non-blocking model does on every turn. A busy server spends its time taking signals one by
// one, each a system call. Signals are per thread or per process state, awkward to share
// with libraries and other threads; few programs use this model (epoll replaced it).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "model.hpp"
#include "models_impl.hpp"
#include "service.hpp"

namespace tendril::lab {
namespace {

// O_ASYNC for fd, signalling this thread (F_SETOWN_EX: a signal for the process could go to
// any thread that does not block it) with sig.
void arm(int fd, int sig) {
  f_owner_ex owner{F_OWNER_TID, ::gettid()};
  int flags = ::fcntl(fd, F_GETFL);
  if (::fcntl(fd, F_SETSIG, sig) < 0 || ::fcntl(fd, F_SETOWN_EX, &owner) < 0 || flags < 0 ||
      ::fcntl(fd, F_SETFL, flags | O_ASYNC | O_NONBLOCK) < 0)
    throw_errno("fcntl(O_ASYNC)");
}

class server {
 public:
  server(int listen_fd, int sig) : lfd_(listen_fd), sig_(sig) { arm(lfd_, sig_); }

  void run(const sigset_t& set) {
    accept_all();  // connections that were waiting before arm() raised no signal
    while (true) {
      siginfo_t si;
      int s = ::sigwaitinfo(&set, &si);
      if (s < 0) {
        if (errno == EINTR) continue;
        throw_errno("sigwaitinfo");
      }
      if (s == SIGIO) {
        report_overflow();
        rescan();
      } else if (si.si_fd == lfd_) {
        accept_all();
      } else {
        serve(si.si_fd);
      }
    }
  }

 private:
  void accept_all() {
    int fd;
    while ((fd = accept_connection(lfd_, true)) >= 0) {
      try {
        arm(fd, sig_);
      } catch (const std::system_error&) {
        ::close(fd);
        continue;
      }
      conns_.emplace(fd, connection(fd));
      // Bytes that arrived before arm() raised no signal: serve them now.
      serve(fd);
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && !pause_after_accept_error(errno))
      throw_errno("accept");
  }

  // A signal may be stale: for a connection closed since, or whose descriptor number is
  // now another connection's. Serving a connection with nothing to do costs an EAGAIN.
  void serve(int fd) {
    auto it = conns_.find(fd);
    if (it == conns_.end()) return;
    if (it->second.drain() == connection::status::closed) {
      ::close(fd);
      conns_.erase(it);
    }
  }

  void rescan() {
    accept_all();
    std::vector<int> fds;
    fds.reserve(conns_.size());
    for (const auto& [fd, c] : conns_) fds.push_back(fd);
    for (int fd : fds) serve(fd);
  }

  static void report_overflow() {
    static bool reported = false;
    if (reported) return;
    reported = true;
    std::fprintf(stderr,
                 "signal: the real-time signal queue overflowed (SIGIO): rescanning every "
                 "connection\n");
  }

  int lfd_;
  int sig_;
  std::unordered_map<int, connection> conns_;
};

void serve(const serve_options& o) {
  const int sig = SIGRTMIN + 1;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigaddset(&set, SIGIO);
  if (int e = ::pthread_sigmask(SIG_BLOCK, &set, nullptr); e != 0) {
    errno = e;
    throw_errno("pthread_sigmask");
  }
  server s(o.listen_fd, sig);
  s.run(set);
}

}  // namespace

model signal_model() {
  return {"signal",
          "signal-driven I/O: O_ASYNC, a real-time signal per event, taken with sigwaitinfo()",
          "lab/iomodels/signal.cpp",
          [](const serve_options&) -> std::size_t { return 0; },
          []() -> std::string { return {}; },
          &serve};
}

}  // namespace tendril::lab
