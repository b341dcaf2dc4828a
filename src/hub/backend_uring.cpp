// The io_uring backend (through liburing). Operations complete natively: submit() queues an
// SQE, and every wait() submits what was queued and reaps completions in the same system
// call, so a hub serving many sockets pays one io_uring_enter per pass. Watches are one-shot
// IORING_OP_POLL_ADD requests, re-submitted by rearm() (multishot where a one-shot poll would
// complete at once every pass, see dispatch()); they live in a slot the backend owns,
// so that a poll still in flight when its watch goes away completes into the slot, not into
// freed memory. Cross-thread wake-ups come through an eventfd under a multishot poll.
//
// user_data of each SQE: an io_op* (low bits 0), a watch slot (tag 1), the wake eventfd's
// poll (tag 2), or something whose completion is ignored (tag 3: cancellations).
//
// A full submission queue is handed to the kernel at once. A kernel that takes no more until
// completions are reaped (EBUSY: its completion queue overflowed; EAGAIN) gets them reaped
// then: they are set aside, in order, for the next wait() to dispatch, as callbacks never run
// from within submit(). For the same reason wait() takes each completion out of the ring
// before its callback runs: a callback that submits may set aside the ones after it.
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <new>
#include <system_error>
#include <vector>

#include "hub/backend.hpp"

namespace tendril::detail {
namespace {

constexpr std::uintptr_t tag_mask = 3;
constexpr std::uintptr_t tag_op = 0;
constexpr std::uintptr_t tag_watch = 1;
constexpr std::uintptr_t tag_wake = 2;
// The most one read or write system call moves (Linux's MAX_RW_COUNT: INT_MAX rounded down to a
// page).
constexpr std::size_t max_rw_count = 0x7ffff000;
constexpr std::uintptr_t tag_ignore = 3;

struct watch_slot {
  io_watch* w;             // null once unwatched
  std::uint32_t want = 0;  // events asked for and not reported since
  bool poll_pending = false;
  bool multishot = false;  // the poll in flight (or the next one) is multishot
  std::uint32_t pending_mask = 0;
  // Among the orphans (unwatched while their poll was in flight), until that poll completes.
  watch_slot* prev = nullptr;
  watch_slot* next = nullptr;
};

class uring_backend final : public backend {
 public:
  uring_backend() {
    // Completions' task work runs at the next return from a system call of this thread
    // (cooperative task run, Linux 5.19), without an interrupt, and the flag in the SQ ring
    // says when some is waiting. Not the deferred task run of Linux 6.1: since Linux 6.13 it
    // runs at most 20 completions a wait, so that a hub serving 1,000 connections left some of
    // them waiting pass after pass (50-80 ms at the 99.9th percentile against 12-15 ms, for
    // the same CPU a message; docs/benchmarks.md). Older kernels: none of these flags.
    int rc = -EINVAL;
    unsigned features = 0;
    for (unsigned flags :
         {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SINGLE_ISSUER,
          IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, 0u}) {
      io_uring_params p{};
      p.flags = flags;
      rc = io_uring_queue_init_params(entries, &ring_, &p);
      features = p.features;
      if (rc != -EINVAL) break;  // -EINVAL: a kernel without these flags
    }
    if (rc < 0)
      throw std::system_error(-rc, std::generic_category(), "tendril: io_uring_queue_init");
    // The wake-up's multishot poll needs Linux 5.13 (before, it fails at once, every pass: a
    // spin), and recv and send need 5.6. A ring without 5.13's resource tags is refused, so
    // that the hub takes epoll instead.
    if (!(features & IORING_FEAT_RSRC_TAGS)) {
      io_uring_queue_exit(&ring_);
      throw std::system_error(ENOSYS, std::generic_category(),
                              "tendril: io_uring of a kernel older than Linux 5.13");
    }
    wakefd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakefd_ < 0) {
      int err = errno;
      io_uring_queue_exit(&ring_);
      throw std::system_error(err, std::generic_category(), "tendril: eventfd");
    }
    try {
      set_aside_.reserve(ring_.cq.ring_entries);
    } catch (...) {
      io_uring_queue_exit(&ring_);
      ::close(wakefd_);
      throw;
    }
    arm_wake();
    io_uring_submit(&ring_);
  }
  ~uring_backend() override {
    io_uring_queue_exit(&ring_);
    if (wakefd_ >= 0) ::close(wakefd_);
    // Polls still in flight died with the ring: free their slots, which only their
    // completions would have freed. Test (ASan): wait_ready.wait_readable_for_returns_false_
    // when_the_time_runs_out, whose last wait leaves a cancelled poll behind.
    while (watch_slot* slot = orphans_) {
      orphans_ = slot->next;
      delete slot;
    }
  }

  backend_resources resources() const noexcept override {
    // What io_uring_queue_exit() unmaps and closes (liburing's own sizes). The ring's
    // descriptor is never registered, so a child needs no io_uring_register call either.
    backend_resources r;
    r.fds[0] = ring_.ring_fd;
    r.fds[1] = wakefd_;
    const std::size_t sqe_size =
        sizeof(io_uring_sqe) + ((ring_.flags & IORING_SETUP_SQE128) ? 64 : 0);
    r.maps[0] = {ring_.sq.sqes, sqe_size * ring_.sq.ring_entries};
    r.maps[1] = {ring_.sq.ring_ptr, ring_.sq.ring_sz};
    if (ring_.cq.ring_ptr != ring_.sq.ring_ptr) r.maps[2] = {ring_.cq.ring_ptr, ring_.cq.ring_sz};
    return r;
  }

  const char* name() const noexcept override { return "io_uring"; }
  bool persistent() const noexcept override { return true; }  // a poll in flight holds its file

  int watch(io_watch& w) noexcept override {
    if (w.fd < 0) return -EBADF;
    if (w.backend_data != nullptr) return -EEXIST;
    // The poll would say so only when it completes; the contract says it now.
    if (::fcntl(w.fd, F_GETFD) < 0) return -EBADF;
    auto* slot = new (std::nothrow) watch_slot{&w};
    if (slot == nullptr) return -ENOMEM;
    w.backend_data = slot;
    w.slot = w.fd;
    ++watches_;
    // Reading and writing only: POLLPRI is armed when asked (rearm()). A poll left asking for
    // it alone once the others were reported would complete at once, every pass, as soon as
    // the peer shuts its side (io_uring reports POLLRDHUP whatever the mask), and the hub
    // would never sleep (test: tcp.an_idle_socket_whose_peer_shut_its_side_costs_no_cpu).
    slot->want = w.events & (POLLIN | POLLOUT);
    submit_poll(slot);
    return 0;
  }

  void rearm(io_watch& w, std::uint32_t events) noexcept override {
    auto* slot = static_cast<watch_slot*>(w.backend_data);
    if (slot == nullptr) return;
    slot->want |= events & w.events;
    if (!slot->poll_pending) {
      submit_poll(slot);
    } else if (slot->want & ~slot->pending_mask) {
      // The poll in flight does not cover the new events: cancel it; its completion
      // re-submits with everything wanted.
      submit_cancel(reinterpret_cast<std::uintptr_t>(slot) | tag_watch);
    }
  }

  void unwatch(io_watch& w) noexcept override {
    auto* slot = static_cast<watch_slot*>(w.backend_data);
    if (slot == nullptr) return;
    slot->w = nullptr;
    w.backend_data = nullptr;
    w.slot = -1;
    --watches_;
    if (slot->poll_pending) {
      submit_cancel(reinterpret_cast<std::uintptr_t>(slot) | tag_watch);  // freed on its completion
      slot->prev = nullptr;
      slot->next = orphans_;
      if (orphans_) orphans_->prev = slot;
      orphans_ = slot;
    } else {
      delete slot;
    }
  }

  int wait(std::chrono::nanoseconds timeout) noexcept override {
    // Completions set aside by a submit() since the last wait: only look.
    if (!set_aside_.empty()) timeout = std::chrono::nanoseconds(0);
    int rc;
    if (timeout.count() == 0) {
      // A look: a system call only if there is something to submit or task work to run.
      const bool task_work = IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN;
      rc = task_work ? io_uring_submit_and_get_events(&ring_) : io_uring_submit(&ring_);
    } else {
      io_uring_cqe* cqe = nullptr;
      __kernel_timespec ts{timeout.count() / 1'000'000'000, timeout.count() % 1'000'000'000};
      rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, timeout.count() < 0 ? nullptr : &ts,
                                            nullptr);
    }
    // Completions may queue new SQEs (a re-armed poll); they go out with the next wait().
    int dispatched = 0;
    do {
      // Those set aside first: they came before the ones still in the ring. (A callback may
      // set aside more, which this loop then reaches.)
      for (std::size_t i = 0; i < set_aside_.size(); ++i) {
        const completion c = set_aside_[i];
        dispatched += dispatch(c.data, c.res, c.flags);
      }
      set_aside_.clear();
      // Until a callback sets some aside: they are older than what is left in the ring.
      const io_uring_cqe* cqe;
      while (set_aside_.empty() && (cqe = next_cqe()) != nullptr) {
        const completion c{cqe->user_data, cqe->res, cqe->flags};
        io_uring_cq_advance(&ring_, 1);  // out of the ring before its callback runs
        dispatched += dispatch(c.data, c.res, c.flags);
      }
    } while (!set_aside_.empty());
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) return rc;
    return rc == -EINTR ? -EINTR : dispatched;  // -EINTR: a signal handler ran
  }

  void wake() noexcept override {
    if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wakefd_, &one, sizeof one);
  }

  std::size_t watching() const noexcept override { return watches_; }

  bool native_ops() const noexcept override { return true; }

  void submit(io_op& op) noexcept override {
    io_uring_sqe* s = sqe();
    // A request's length is 32 bits: 4 GiB would become 0 (a false end of file). The kernel
    // moves at most 0x7ffff000 bytes a call anyway (MAX_RW_COUNT), and a short count is fine.
    const auto len = static_cast<unsigned>(std::min<std::size_t>(op.len, max_rw_count));
    switch (op.op) {
      case io_op::code::recv:
        io_uring_prep_recv(s, op.fd, op.buf, len, op.flags);
        break;
      case io_op::code::send:
        io_uring_prep_send(s, op.fd, op.buf, len, op.flags | MSG_NOSIGNAL);
        break;
      case io_op::code::recvmsg:
        io_uring_prep_recvmsg(s, op.fd, op.msg, static_cast<unsigned>(op.flags));
        break;
      case io_op::code::sendmsg:
        io_uring_prep_sendmsg(s, op.fd, op.msg, static_cast<unsigned>(op.flags | MSG_NOSIGNAL));
        break;
      case io_op::code::accept:
        io_uring_prep_accept(s, op.fd, op.addr, op.addrlen, op.flags);
        break;
      case io_op::code::connect:
        io_uring_prep_connect(s, op.fd, op.addr, op.peerlen);
        break;
      case io_op::code::read:
        io_uring_prep_read(s, op.fd, op.buf, len, op.offset);
        break;
      case io_op::code::write:
        io_uring_prep_write(s, op.fd, op.buf, len, op.offset);
        break;
    }
    io_uring_sqe_set_data64(s, reinterpret_cast<std::uintptr_t>(&op) | tag_op);
    ++in_flight_;
  }

  void release_now() noexcept override {
    if (io_uring_sq_ready(&ring_) == 0) return;
    // The cancelled requests finish (and let go of their files) in the task work run on the
    // way out of this call; their completions wait in the ring for the next wait().
    io_uring_submit(&ring_);
  }

  void cancel(io_op& op) noexcept override {
    submit_cancel(reinterpret_cast<std::uintptr_t>(&op) | tag_op);
  }

  std::size_t in_flight() const noexcept override { return in_flight_; }

 private:
  static constexpr unsigned entries = 4096;

  // A completion taken out of the ring before wait() dispatches it.
  struct completion {
    std::uint64_t data;
    int res;
    unsigned flags;
  };

  // The oldest completion still in the ring, or null.
  io_uring_cqe* next_cqe() noexcept {
    const unsigned head = *ring_.cq.khead;
    if (head == io_uring_smp_load_acquire(ring_.cq.ktail)) return nullptr;
    return &ring_.cq.cqes[io_uring_cqe_index(&ring_, head, ring_.cq.ring_mask)];
  }

  io_uring_sqe* sqe() noexcept {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    while (s == nullptr) {
      // The submission queue is full: hand it to the kernel and take a fresh entry.
      const int rc = io_uring_submit(&ring_);
      if (rc == -EBUSY || rc == -EAGAIN) {
        set_aside();  // it wants completions reaped first
      } else if (rc < 0 && rc != -EINTR) {
        // The ring itself is unusable (used from another thread, or gone): nothing can queue
        // an operation or a watch any more, and returning would lose it.
        std::fprintf(stderr, "tendril: io_uring: cannot submit: %s\n", std::strerror(-rc));
        std::abort();
      }
      s = io_uring_get_sqe(&ring_);
    }
    return s;
  }

  // Moves the ring's completions to set_aside_ (room for a full completion queue is reserved
  // at the start, untouched until needed; more is allocated only if several fills pile up
  // between two wait()s). With none there yet, waits up to a millisecond for one: the kernel
  // then gets time to finish something, and the caller's retry is not a spin.
  void set_aside() noexcept {
    bool moved = false;
    while (const io_uring_cqe* cqe = next_cqe()) {
      try {
        set_aside_.push_back({cqe->user_data, cqe->res, cqe->flags});
      } catch (const std::bad_alloc&) {
        break;
      }
      io_uring_cq_advance(&ring_, 1);
      moved = true;
    }
    if (!moved) {
      __kernel_timespec ms{0, 1'000'000};
      io_uring_cqe* cqe = nullptr;
      io_uring_wait_cqe_timeout(&ring_, &cqe, &ms);
    }
  }

  void submit_poll(watch_slot* slot) noexcept {
    io_uring_sqe* s = sqe();
    // io_uring matches a wake-up against the mask without POLLPRI, so a poll for POLLPRI
    // alone is never woken when out-of-band data arrives (Linux 6.18; poll() and epoll are).
    // TCP's wake-up for it also says POLLRDBAND, which is asked for with it and not reported
    // (test: hooked_poll.exceptfds_on_a_socket_already_waited_on_wakes_on_out_of_band_data).
    const std::uint32_t mask = slot->want & POLLPRI ? slot->want | POLLRDBAND : slot->want;
    if (slot->multishot) {
      io_uring_prep_poll_multishot(s, slot->w->fd, mask);
    } else {
      io_uring_prep_poll_add(s, slot->w->fd, mask);
    }
    io_uring_sqe_set_data64(s, reinterpret_cast<std::uintptr_t>(slot) | tag_watch);
    slot->poll_pending = true;
    slot->pending_mask = slot->want;
  }

  void submit_cancel(std::uint64_t target) noexcept {
    io_uring_sqe* s = sqe();
    io_uring_prep_cancel64(s, target, 0);
    io_uring_sqe_set_data64(s, tag_ignore);
  }

  void arm_wake() noexcept {
    io_uring_sqe* s = sqe();
    io_uring_prep_poll_multishot(s, wakefd_, POLLIN);
    io_uring_sqe_set_data64(s, tag_wake);
  }

  int dispatch(std::uint64_t data, int res, unsigned flags) noexcept {
    const std::uintptr_t tag = data & tag_mask;
    if (tag == tag_op) {
      auto* op = reinterpret_cast<io_op*>(data);
      --in_flight_;
      op->result = res;
      op->complete(op);
      return 1;
    }
    if (tag == tag_watch) {
      auto* slot = reinterpret_cast<watch_slot*>(data & ~tag_mask);
      // A multishot poll stays in flight while its completions say "more".
      slot->poll_pending = slot->multishot && (flags & IORING_CQE_F_MORE);
      if (!slot->poll_pending) slot->multishot = false;
      if (slot->w == nullptr) {
        if (slot->poll_pending) return 0;  // its cancellation's completion comes later
        (slot->prev ? slot->prev->next : orphans_) = slot->next;
        if (slot->next) slot->next->prev = slot->prev;
        delete slot;  // unwatched while its poll was in flight
        return 0;
      }
      if (res < 0) {
        if (res == -ECANCELED) {
          if (slot->want && !slot->poll_pending) submit_poll(slot);  // cancelled to widen the mask
          return 0;
        }
        res = POLLERR;
      }
      if (slot->want == 0) return 0;  // a multishot poll being cancelled: nothing is waited for
      io_watch* w = slot->w;
      const auto got = static_cast<std::uint32_t>(res);
      const auto revents = got & (slot->want | POLLERR | POLLHUP);
      // A hang-up or an error is reported once, as epoll's edge does: polling on for what is
      // still wanted would complete at once, every pass (a pipe whose writer is gone polls
      // POLLHUP without POLLIN), and the hub would never sleep. The owner rearm()s if it
      // wants another report.
      if (revents & (POLLERR | POLLHUP)) {
        slot->want = 0;
      } else {
        slot->want &= ~revents;
      }
      if (slot->want == 0) {
        if (slot->poll_pending) submit_cancel(reinterpret_cast<std::uintptr_t>(slot) | tag_watch);
      } else if (!slot->poll_pending) {
        // Still waiting for the other direction. A poll that completed with nothing asked for
        // came for POLLRDHUP, which io_uring polls whatever the mask: once the peer shut its
        // side, a one-shot poll for room (or POLLPRI) alone would complete at once, every pass.
        // A multishot poll completes only when the socket wakes its waiters (test:
        // wait_ready.waiting_for_room_on_a_socket_whose_peer_shut_its_side_costs_no_cpu).
        if (revents == 0) slot->multishot = true;
        submit_poll(slot);
      }
      if (revents == 0) return 0;
      w->ready(w, revents);
      return 1;
    }
    if (tag == tag_wake) {
      std::uint64_t drained;
      [[maybe_unused]] ssize_t r = ::read(wakefd_, &drained, sizeof drained);
      // A read-modify-write, not a store: see backend_epoll.cpp.
      wake_pending_.exchange(false, std::memory_order_acq_rel);
      if (!(flags & IORING_CQE_F_MORE)) arm_wake();
      return 0;
    }
    return 0;  // tag_ignore
  }

  io_uring ring_{};
  int wakefd_ = -1;
  std::atomic<bool> wake_pending_{false};
  std::size_t watches_ = 0;
  std::size_t in_flight_ = 0;
  watch_slot* orphans_ = nullptr;
  std::vector<completion> set_aside_;
};

}  // namespace

std::unique_ptr<backend> make_uring_backend() { return std::make_unique<uring_backend>(); }

}  // namespace tendril::detail
