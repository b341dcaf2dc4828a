// The epoll backend. Each watched descriptor is registered once, edge-triggered, for its
// whole life (no epoll_ctl per wait); rearm() therefore has nothing to do. Events carry the
// descriptor and a generation number, so that an event that arrives for a descriptor which
// was unwatched (and maybe reused) within the same batch is recognised and dropped.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <system_error>
#include <vector>

#include "hub/backend.hpp"

namespace tendril::detail {
namespace {

constexpr std::uint64_t wake_token = ~std::uint64_t{0};

class epoll_backend final : public backend {
 public:
  epoll_backend() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0)
      throw std::system_error(errno, std::generic_category(), "tendril: epoll_create1");
    wakefd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakefd_ < 0) {
      int err = errno;
      ::close(epfd_);
      throw std::system_error(err, std::generic_category(), "tendril: eventfd");
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = wake_token;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev);
  }
  ~epoll_backend() override {
    if (wakefd_ >= 0) ::close(wakefd_);
    if (epfd_ >= 0) ::close(epfd_);
  }
  backend_resources resources() const noexcept override { return {{epfd_, wakefd_}, {}}; }

  const char* name() const noexcept override { return "epoll"; }
  bool persistent() const noexcept override { return true; }

  int watch(io_watch& w) noexcept override {
    if (w.fd < 0) return -EBADF;
    if (static_cast<std::size_t>(w.fd) >= table_.size()) {
      try {
        table_.resize(static_cast<std::size_t>(w.fd) + 1 + table_.size() / 2);
      } catch (...) {
        return -ENOMEM;
      }
    }
    entry& e = table_[static_cast<std::size_t>(w.fd)];
    if (e.w != nullptr) return -EEXIST;
    epoll_event ev{};
    ev.events = EPOLLET | EPOLLRDHUP | to_epoll(w.events);
    ev.data.u64 = (static_cast<std::uint64_t>(e.gen) << 32) | static_cast<std::uint32_t>(w.fd);
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, w.fd, &ev) != 0) return -errno;
    e.w = &w;
    w.slot = w.fd;
    ++count_;
    return 0;
  }

  void rearm(io_watch&, std::uint32_t) noexcept override {}

  void unwatch(io_watch& w) noexcept override {
    if (w.slot < 0) return;
    entry& e = table_[static_cast<std::size_t>(w.slot)];
    if (e.w == &w) {
      // Fails harmlessly with EBADF when the descriptor was closed first (the kernel then
      // dropped the registration itself, unless a dup keeps the file open: then this works).
      epoll_ctl(epfd_, EPOLL_CTL_DEL, w.slot, nullptr);
      e.w = nullptr;
      ++e.gen;
      --count_;
    }
    w.slot = -1;
  }

  int wait(std::chrono::nanoseconds timeout) noexcept override {
    int n;
    if (timeout.count() < 0) {
      n = epoll_wait(epfd_, events_, max_events, -1);
    } else {
      timespec ts{static_cast<time_t>(timeout.count() / 1'000'000'000),
                  static_cast<long>(timeout.count() % 1'000'000'000)};
      n = has_pwait2_ ? epoll_pwait2(epfd_, events_, max_events, &ts, nullptr) : -1;
      if (n < 0 && (!has_pwait2_ || errno == ENOSYS)) {
        // Before Linux 5.11: milliseconds, rounded up so that a timer is never early.
        has_pwait2_ = false;
        const auto up = (timeout.count() + 999'999) / 1'000'000;
        n = epoll_wait(epfd_, events_, max_events, up > INT_MAX ? INT_MAX : static_cast<int>(up));
      }
    }
    if (n < 0) return -errno;  // -EINTR: a signal handler ran
    int dispatched = 0;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t token = events_[i].data.u64;
      if (token == wake_token) {
        std::uint64_t drained;
        [[maybe_unused]] ssize_t r = ::read(wakefd_, &drained, sizeof drained);
        // A read-modify-write, not a store: it reads the true of every wake() that merged
        // into this one, so that what those wakers published before calling wake() is
        // visible to the owner once wait() returns (a plain store could let the owner's
        // next loads pass it, and such a wake would be lost).
        wake_pending_.exchange(false, std::memory_order_acq_rel);
        continue;
      }
      const auto fd = static_cast<std::size_t>(token & 0xffffffffu);
      const auto gen = static_cast<std::uint32_t>(token >> 32);
      if (fd >= table_.size()) continue;
      entry& e = table_[fd];
      if (e.w == nullptr || e.gen != gen) continue;  // unwatched earlier in this batch
      std::uint32_t rev =
          from_epoll(events_[i].events) & (e.w->events | POLLERR | POLLHUP | POLLRDHUP);
      if (rev == 0) continue;
      e.w->ready(e.w, rev);
      ++dispatched;
    }
    return dispatched;
  }

  void wake() noexcept override {
    if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wakefd_, &one, sizeof one);
  }

  std::size_t watching() const noexcept override { return count_; }

 private:
  static std::uint32_t to_epoll(std::uint32_t ev) {
    std::uint32_t out = 0;
    if (ev & POLLIN) out |= EPOLLIN;
    if (ev & POLLOUT) out |= EPOLLOUT;
    if (ev & POLLPRI) out |= EPOLLPRI;
    return out;
  }
  static std::uint32_t from_epoll(std::uint32_t ev) {
    std::uint32_t out = 0;
    if (ev & EPOLLIN) out |= POLLIN;
    if (ev & EPOLLRDHUP) out |= POLLIN | POLLRDHUP;
    if (ev & EPOLLOUT) out |= POLLOUT;
    if (ev & EPOLLPRI) out |= POLLPRI;
    if (ev & EPOLLERR) out |= POLLERR | POLLIN | POLLOUT;
    if (ev & EPOLLHUP) out |= POLLHUP | POLLIN | POLLOUT;
    return out;
  }

  struct entry {
    io_watch* w = nullptr;
    std::uint32_t gen = 0;
  };
  static constexpr int max_events = 256;

  int epfd_ = -1;
  bool has_pwait2_ = true;
  int wakefd_ = -1;
  std::atomic<bool> wake_pending_{false};
  std::vector<entry> table_;
  std::size_t count_ = 0;
  epoll_event events_[max_events];
};

}  // namespace

std::unique_ptr<backend> make_epoll_backend() { return std::make_unique<epoll_backend>(); }

}  // namespace tendril::detail
