// The poll backend: one poll(2) over every watched descriptor per wait. O(descriptors) per
// wait, so it is not for servers; it exists for the tests (the whole suite runs once on it)
// and for systems without epoll. Edge-triggered behaviour is emulated: an event that was
// reported is left out of the poll set until rearm().
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <system_error>
#include <vector>

#include "hub/backend.hpp"

namespace tendril::detail {
namespace {

class poll_backend final : public backend {
 public:
  poll_backend() {
    if (pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw std::system_error(errno, std::generic_category(), "tendril: pipe2");
    }
    fds_.push_back(pollfd{wake_pipe_[0], POLLIN, 0});
    watches_.push_back(nullptr);
    seqs_.push_back(0);
  }
  ~poll_backend() override {
    if (wake_pipe_[0] >= 0) ::close(wake_pipe_[0]);
    if (wake_pipe_[1] >= 0) ::close(wake_pipe_[1]);
  }
  backend_resources resources() const noexcept override {
    return {{wake_pipe_[0], wake_pipe_[1]}, {}};
  }

  const char* name() const noexcept override { return "poll"; }

  int watch(io_watch& w) noexcept override {
    if (w.fd < 0) return -EBADF;
    if (fcntl(w.fd, F_GETFD) < 0) return -EBADF;
    for (std::size_t i = 1; i < fds_.size(); ++i) {
      if (fd_of(fds_[i]) == w.fd) return -EEXIST;
    }
    try {
      fds_.reserve(fds_.size() + 1);
      watches_.reserve(fds_.size() + 1);
      seqs_.reserve(fds_.size() + 1);
      ready_.reserve(fds_.size() + 1);  // wait() never allocates
    } catch (...) {
      return -ENOMEM;
    }
    fds_.push_back(pollfd{w.fd, static_cast<short>(w.events), 0});
    watches_.push_back(&w);
    seqs_.push_back(++next_seq_);
    w.slot = static_cast<int>(fds_.size() - 1);
    return 0;
  }

  void rearm(io_watch& w, std::uint32_t events) noexcept override {
    if (w.slot <= 0) return;
    pollfd& p = fds_[static_cast<std::size_t>(w.slot)];
    p.events |= static_cast<short>(events & w.events);
    if (p.events != 0) p.fd = w.fd;  // back in, after a hang-up or an error parked it
  }

  void unwatch(io_watch& w) noexcept override {
    if (w.slot <= 0) return;
    auto i = static_cast<std::size_t>(w.slot);
    const std::size_t last = fds_.size() - 1;
    if (i != last) {
      fds_[i] = fds_[last];
      watches_[i] = watches_[last];
      seqs_[i] = seqs_[last];
      watches_[i]->slot = static_cast<int>(i);
    }
    fds_.pop_back();
    watches_.pop_back();
    seqs_.pop_back();
    w.slot = -1;
    ++epoch_;
  }

  int wait(std::chrono::nanoseconds timeout) noexcept override {
    int ms = -1;
    if (timeout.count() >= 0) {
      // Round up, so that the hub never wakes before its next timer is due.
      const auto up = (timeout.count() + 999'999) / 1'000'000;
      ms = up > INT_MAX ? INT_MAX : static_cast<int>(up);
    }
    int n = ::poll(fds_.data(), fds_.size(), ms);
    if (n < 0) return -errno;  // -EINTR: a signal handler ran
    if (n == 0) return 0;
    if (fds_[0].revents & POLLIN) {
      char buf[64];
      while (::read(wake_pipe_[0], buf, sizeof buf) > 0) {
      }
      // A read-modify-write, not a store: it reads the true of every wake() that merged
      // into this one, so that what those wakers published before calling wake() is
      // visible to the owner once wait() returns (a plain store could let the owner's
      // next loads pass it, and such a wake would be lost).
      wake_pending_.exchange(false, std::memory_order_acq_rel);
    }
    // Callbacks may add and remove watches: walk a snapshot of who was ready, checking
    // before each call that the watch is still the same registration (the same io_watch
    // may have been unwatched and watched again, maybe on a reused descriptor). By index:
    // a watch() from a callback may grow ready_.
    ready_.clear();
    for (std::size_t i = 1; i < fds_.size(); ++i) {
      short rev = fds_[i].revents;
      if (rev == 0) continue;
      if (rev & POLLNVAL) rev = POLLERR;
      // Disarm what is reported until rearm(). poll(2) reports a hang-up or an error whatever
      // the events asked for, so such a descriptor leaves the set (a negative number, which
      // poll skips) until rearm(): else every wait would report it again and never sleep.
      if (rev & (POLLERR | POLLHUP)) {
        fds_[i].events = 0;
        fds_[i].fd = ~fds_[i].fd;
      } else {
        fds_[i].events = static_cast<short>(fds_[i].events & ~rev);
      }
      ready_.push_back({watches_[i], seqs_[i], static_cast<std::uint32_t>(rev)});
    }
    int dispatched = 0;
    const std::uint64_t epoch = epoch_;
    for (std::size_t k = 0; k < ready_.size(); ++k) {
      const ready_watch r = ready_[k];
      if (epoch_ != epoch && !still_watched(r.w, r.seq)) continue;
      std::uint32_t rev = r.revents & (r.w->events | POLLERR | POLLHUP);
      if (rev == 0) continue;
      r.w->ready(r.w, rev);
      ++dispatched;
    }
    return dispatched;
  }

  void wake() noexcept override {
    if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
    char one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake_pipe_[1], &one, 1);
  }

  std::size_t watching() const noexcept override { return fds_.size() - 1; }

 private:
  // The descriptor of an entry, also while a hang-up keeps it out of the set.
  static int fd_of(const pollfd& p) noexcept { return p.fd < 0 ? ~p.fd : p.fd; }

  // Compares pointers only: an unwatched io_watch may be gone already.
  bool still_watched(io_watch* w, std::uint64_t seq) const noexcept {
    for (std::size_t i = 1; i < watches_.size(); ++i) {
      if (watches_[i] == w) return seqs_[i] == seq;
    }
    return false;
  }

  struct ready_watch {
    io_watch* w;
    std::uint64_t seq;
    std::uint32_t revents;
  };

  int wake_pipe_[2] = {-1, -1};
  std::atomic<bool> wake_pending_{false};
  std::vector<pollfd> fds_;
  std::vector<io_watch*> watches_;
  std::vector<std::uint64_t> seqs_;  // of each registration, so that a re-watch is told apart
  std::vector<ready_watch> ready_;
  std::uint64_t epoch_ = 0;
  std::uint64_t next_seq_ = 0;
};

}  // namespace

std::unique_ptr<backend> make_poll_backend() { return std::make_unique<poll_backend>(); }

}  // namespace tendril::detail
