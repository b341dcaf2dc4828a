// The backend contract (src/hub/backend.hpp), checked on each backend directly: watch, rearm
// and unwatch on pipes and socketpairs, edge-triggered reports, errors for bad descriptors,
// watches changed from inside callbacks of the same batch, descriptors closed and reused,
// wait() with and without a limit, and wake() from other threads.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "hub/backend.hpp"
#include "test_scale.hpp"

using namespace std::chrono_literals;
using tendril::detail::backend;
using tendril::detail::io_watch;

namespace {

using clock_type = std::chrono::steady_clock;

// A watch that notes what it was told, and may run something from inside its callback.
struct probe : io_watch {
  std::vector<std::uint32_t> reports;
  std::function<void(probe&)> on_ready;

  explicit probe(int fd_, std::uint32_t events_ = POLLIN) {
    fd = fd_;
    events = events_;
    ready = [](io_watch* self, std::uint32_t revents) {
      auto* p = static_cast<probe*>(self);
      p->reports.push_back(revents);
      if (p->on_ready) p->on_ready(*p);
    };
  }
  std::size_t count() const { return reports.size(); }
  std::uint32_t last() const { return reports.empty() ? 0 : reports.back(); }
};

// An owned descriptor.
struct fd_guard {
  int fd = -1;
  fd_guard() = default;
  explicit fd_guard(int f) : fd(f) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  int get() const { return fd; }
};

struct pipe_pair {
  fd_guard read;
  fd_guard write;
  pipe_pair() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) std::abort();
    read.fd = p[0];
    write.fd = p[1];
  }
};

struct socket_pair {
  fd_guard a;
  fd_guard b;
  socket_pair() {
    int s[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, s) != 0) std::abort();
    a.fd = s[0];
    b.fd = s[1];
  }
};

void put(int fd, const char* bytes = "x") {
  ASSERT_GT(::write(fd, bytes, std::char_traits<char>::length(bytes)), 0) << errno;
}

// Reads until EAGAIN; the number of bytes read.
std::size_t drain(int fd) {
  std::size_t total = 0;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    total += static_cast<std::size_t>(n);
  }
  return total;
}

// Calls wait() until `done` holds or a generous limit passes; false if it never did.
template <class Done>
bool wait_until(backend& b, Done done, std::chrono::nanoseconds limit = 10s) {
  const auto give_up = clock_type::now() + limit;
  while (!done()) {
    if (clock_type::now() > give_up) return false;
    b.wait(100ms);
  }
  return true;
}

// A thread that writes to a watched pipe after a long time unless cancelled first, so that
// a wait(-1) that a broken wake() never ends fails the test instead of hanging it.
class watchdog {
 public:
  explicit watchdog(backend& b) : guard_(pipes_.read.get()) {
    EXPECT_EQ(b.watch(guard_), 0);
    thread_ = std::thread([this] {
      std::unique_lock lock(mu_);
      if (!cv_.wait_for(lock, 30s, [this] { return cancelled_; })) put(pipes_.write.get());
    });
  }
  ~watchdog() {
    {
      std::lock_guard lock(mu_);
      cancelled_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bool fired() const { return guard_.count() > 0; }
  probe& watch() { return guard_; }

 private:
  pipe_pair pipes_;
  probe guard_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool cancelled_ = false;
  std::thread thread_;
};

struct backend_kind {
  const char* name;
  std::unique_ptr<backend> (*make)();
};

void PrintTo(const backend_kind& kind, std::ostream* os) { *os << kind.name; }

class backend_contract : public ::testing::TestWithParam<backend_kind> {
 protected:
  void SetUp() override {
    b_ = GetParam().make();
    ASSERT_NE(b_, nullptr);
  }
  backend& b() { return *b_; }
  bool is_epoll() const { return std::string(GetParam().name) == "epoll"; }
  bool is_uring() const { return std::string(GetParam().name) == "io_uring"; }

  std::unique_ptr<backend> b_;
};

}  // namespace

// --- identity and counting -----------------------------------------------------------------

TEST_P(backend_contract, backend_names_itself) { EXPECT_STREQ(b().name(), GetParam().name); }

TEST_P(backend_contract, watching_counts_watches) {
  pipe_pair p1, p2;
  probe r1(p1.read.get()), r2(p2.read.get()), w1(p1.write.get(), POLLOUT);
  EXPECT_EQ(b().watching(), 0u);
  ASSERT_EQ(b().watch(r1), 0);
  EXPECT_EQ(b().watching(), 1u);
  ASSERT_EQ(b().watch(r2), 0);
  ASSERT_EQ(b().watch(w1), 0);
  EXPECT_EQ(b().watching(), 3u);
  b().unwatch(r2);
  EXPECT_EQ(b().watching(), 2u);
  b().unwatch(r2);  // twice: a no-op
  EXPECT_EQ(b().watching(), 2u);
  b().unwatch(r1);
  b().unwatch(w1);
  EXPECT_EQ(b().watching(), 0u);
}

TEST_P(backend_contract, unwatching_a_watch_never_made_does_nothing) {
  pipe_pair p;
  probe never(p.read.get());
  b().unwatch(never);
  EXPECT_EQ(b().watching(), 0u);
}

// --- errors --------------------------------------------------------------------------------

TEST_P(backend_contract, second_watch_of_a_descriptor_fails_with_eexist) {
  if (is_uring())
    GTEST_SKIP() << "io_uring keeps no table by descriptor: its owner never watches one twice";
  pipe_pair p;
  probe first(p.read.get()), second(p.read.get(), POLLIN | POLLOUT);
  ASSERT_EQ(b().watch(first), 0);
  EXPECT_EQ(b().watch(second), -EEXIST);
  EXPECT_EQ(b().watching(), 1u);
  // The failed watch left the first one alone.
  put(p.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return first.count() > 0; }));
  EXPECT_EQ(second.count(), 0u);
  b().unwatch(second);  // never watched: harmless, and does not drop the first
  EXPECT_EQ(b().watching(), 1u);
  b().unwatch(first);
}

TEST_P(backend_contract, watch_of_a_negative_descriptor_fails_with_ebadf) {
  probe bad(-1);
  EXPECT_EQ(b().watch(bad), -EBADF);
  EXPECT_EQ(b().watching(), 0u);
}

TEST_P(backend_contract, watch_of_a_closed_descriptor_fails_with_ebadf) {
  int fd;
  {
    pipe_pair p;
    fd = p.read.get();
  }
  probe closed(fd);
  EXPECT_EQ(b().watch(closed), -EBADF);
  EXPECT_EQ(b().watching(), 0u);
}

TEST_P(backend_contract, watch_of_a_regular_file_is_refused_by_epoll_only) {
  char path[] = "/tmp/tendril_backend_test_XXXXXX";
  fd_guard file(::mkstemp(path));
  ASSERT_GE(file.get(), 0);
  ::unlink(path);
  probe w(file.get());
  const int rc = b().watch(w);
  if (is_epoll()) {
    EXPECT_EQ(rc, -EPERM);
    EXPECT_EQ(b().watching(), 0u);
  } else {
    // poll(2) says a regular file is always ready.
    ASSERT_EQ(rc, 0);
    ASSERT_TRUE(wait_until(b(), [&] { return w.count() > 0; }));
    EXPECT_TRUE(w.last() & POLLIN);
    b().unwatch(w);
  }
}

// --- readiness -----------------------------------------------------------------------------

TEST_P(backend_contract, pipe_reports_pollin_once_data_arrives) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  EXPECT_EQ(b().wait(0ns), 0);
  EXPECT_EQ(r.count(), 0u);
  put(p.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() > 0; }));
  EXPECT_EQ(r.count(), 1u);
  EXPECT_EQ(r.last(), static_cast<std::uint32_t>(POLLIN));
  b().unwatch(r);
}

TEST_P(backend_contract, wait_returns_the_number_of_callbacks_made) {
  pipe_pair p1, p2, p3;
  probe r1(p1.read.get()), r2(p2.read.get()), r3(p3.read.get());
  ASSERT_EQ(b().watch(r1), 0);
  ASSERT_EQ(b().watch(r2), 0);
  ASSERT_EQ(b().watch(r3), 0);
  put(p1.write.get());
  put(p3.write.get());
  int total = 0;
  const auto give_up = clock_type::now() + 10s;
  while (r1.count() + r3.count() < 2 && clock_type::now() < give_up) {
    int n = b().wait(100ms);
    ASSERT_GE(n, 0);
    total += n;
  }
  EXPECT_EQ(total, 2);
  EXPECT_EQ(r1.count(), 1u);
  EXPECT_EQ(r2.count(), 0u);
  EXPECT_EQ(r3.count(), 1u);
  b().unwatch(r1);
  b().unwatch(r2);
  b().unwatch(r3);
}

TEST_P(backend_contract, empty_pipe_reports_pollout_at_once) {
  pipe_pair p;
  probe w(p.write.get(), POLLOUT);
  ASSERT_EQ(b().watch(w), 0);
  ASSERT_TRUE(wait_until(b(), [&] { return w.count() > 0; }));
  EXPECT_EQ(w.last(), static_cast<std::uint32_t>(POLLOUT));
  b().unwatch(w);
}

TEST_P(backend_contract, only_the_events_asked_for_are_reported) {
  socket_pair s;
  probe in_only(s.a.get(), POLLIN);
  ASSERT_EQ(b().watch(in_only), 0);
  // Writable at once, but nobody asked for POLLOUT.
  EXPECT_EQ(b().wait(0ns), 0);
  EXPECT_EQ(in_only.count(), 0u);
  put(s.b.get());
  ASSERT_TRUE(wait_until(b(), [&] { return in_only.count() > 0; }));
  EXPECT_EQ(in_only.last() & POLLOUT, 0u);
  EXPECT_TRUE(in_only.last() & POLLIN);
  b().unwatch(in_only);
}

TEST_P(backend_contract, socketpair_reports_pollout_then_pollin) {
  socket_pair s;
  probe both(s.a.get(), POLLIN | POLLOUT);
  ASSERT_EQ(b().watch(both), 0);
  ASSERT_TRUE(wait_until(b(), [&] { return both.count() > 0; }));
  EXPECT_EQ(both.reports.front(), static_cast<std::uint32_t>(POLLOUT));
  put(s.b.get(), "hello");
  ASSERT_TRUE(wait_until(b(), [&] { return (both.last() & POLLIN) != 0; }));
  EXPECT_EQ(drain(s.a.get()), 5u);
  b().unwatch(both);
}

TEST_P(backend_contract, closing_the_peer_of_a_socketpair_reports_pollhup) {
  socket_pair s;
  probe r(s.a.get());
  ASSERT_EQ(b().watch(r), 0);
  EXPECT_EQ(b().wait(0ns), 0);
  s.b.reset();
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() > 0; }));
  EXPECT_TRUE(r.reports.front() & POLLHUP) << r.reports.front();
  EXPECT_TRUE(r.reports.front() & POLLIN) << "a read would see the end: " << r.reports.front();
  b().unwatch(r);
}

TEST_P(backend_contract, closing_the_write_end_of_a_pipe_reports_pollhup_to_the_reader) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  p.write.reset();
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() > 0; }));
  EXPECT_TRUE(r.reports.front() & POLLHUP) << r.reports.front();
  b().unwatch(r);
}

TEST_P(backend_contract, closing_the_read_end_of_a_pipe_reports_pollerr_to_the_writer) {
  pipe_pair p;
  probe w(p.write.get(), POLLOUT);
  ASSERT_EQ(b().watch(w), 0);
  ASSERT_TRUE(wait_until(b(), [&] { return w.count() > 0; }));
  EXPECT_EQ(w.reports.front() & POLLERR, 0u);
  p.read.reset();  // a change: writes now fail with EPIPE
  // epoll reports the change by itself, poll(2) reports errors whatever was asked; io_uring's
  // one-shot poll was used up by the first report: it reports at the next rearm().
  if (is_uring()) b().rearm(w, POLLOUT);
  ASSERT_TRUE(wait_until(b(), [&] { return (w.last() & POLLERR) != 0; })) << w.last();
  b().unwatch(w);
}

// A hang-up or an error is reported once, like readiness: a backend that polled on would
// report it on every wait and never sleep (a pipe whose writer is gone polls POLLHUP without
// POLLIN). The owner learns it then (the I/O layer notes it: hup_seen).
TEST_P(backend_contract, a_hang_up_is_reported_once_until_rearm) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  p.write.reset();
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() > 0; }));
  EXPECT_TRUE(r.last() & POLLHUP) << r.last();
  EXPECT_EQ(b().wait(0ns), 0);
  EXPECT_EQ(b().wait(20ms), 0);
  EXPECT_EQ(r.count(), 1u);
  b().unwatch(r);
}

TEST_P(backend_contract, an_error_is_reported_once_until_rearm) {
  pipe_pair p;
  probe w(p.write.get(), POLLOUT);
  ASSERT_EQ(b().watch(w), 0);
  ASSERT_TRUE(wait_until(b(), [&] { return w.count() > 0; }));
  b().rearm(w, POLLOUT);  // the pipe stays writable: wanted again, so the error is seen
  p.read.reset();
  ASSERT_TRUE(wait_until(b(), [&] { return (w.last() & POLLERR) != 0; })) << w.last();
  const std::size_t seen = w.count();
  EXPECT_EQ(b().wait(0ns), 0);
  EXPECT_EQ(b().wait(20ms), 0);
  EXPECT_EQ(w.count(), seen);
  b().unwatch(w);
}

// `count` pipes, each with a probe watching its read end.
struct watched_pipes {
  std::vector<std::unique_ptr<pipe_pair>> pipes;
  std::vector<std::unique_ptr<probe>> probes;
  watched_pipes(backend& b, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
      pipes.push_back(std::make_unique<pipe_pair>());
      probes.push_back(std::make_unique<probe>(pipes.back()->read.get()));
      EXPECT_EQ(b.watch(*probes.back()), 0);
    }
  }
};

TEST_P(backend_contract, many_ready_descriptors_are_each_reported_once) {
  // More than one batch of epoll_wait (256 events).
  const std::size_t count = 300;
  watched_pipes w(b(), count);
  auto& [pipes, probes] = w;
  for (auto& p : pipes) put(p->write.get());
  EXPECT_EQ(b().watching(), count);
  std::size_t reported = 0;
  ASSERT_TRUE(wait_until(b(), [&] {
    reported = 0;
    for (auto& p : probes) reported += p->count() > 0 ? 1 : 0;
    return reported == count;
  }));
  for (auto& p : probes) EXPECT_EQ(p->count(), 1u);
  for (auto& p : probes) b().unwatch(*p);
  EXPECT_EQ(b().watching(), 0u);
}

// Every descriptor that became ready while the backend waited for none is reported by the
// next wait(), not a few per wait(): a hub serving many connections would otherwise leave
// some of them waiting for many passes (io_uring's deferred task run, Linux 6.13 and later,
// ran at most 20 completions a wait(), and some connections waited 50 ms and more).
TEST_P(backend_contract, one_wait_reports_every_descriptor_that_became_ready) {
  const std::size_t count = 200;  // under epoll's 256 a call
  watched_pipes w(b(), count);
  auto& [pipes, probes] = w;
  EXPECT_EQ(b().wait(0ns), 0);  // armed, nothing ready yet
  for (auto& p : pipes) put(p->write.get());
  const int n = b().wait(10s);
  std::size_t reported = 0;
  for (auto& p : probes) reported += p->count();
  EXPECT_EQ(reported, count);
  EXPECT_EQ(n, static_cast<int>(count));
  for (auto& p : probes) b().unwatch(*p);
}

// --- edge-triggered reports ----------------------------------------------------------------

TEST_P(backend_contract, readiness_is_reported_once_until_rearm) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  put(p.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() > 0; }));
  // Still readable (nobody read), but reported already.
  EXPECT_EQ(b().wait(0ns), 0);
  EXPECT_EQ(b().wait(20ms), 0);
  EXPECT_EQ(r.count(), 1u);
  b().unwatch(r);
}

TEST_P(backend_contract, drained_and_rearmed_watch_reports_the_next_data) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  for (int round = 1; round <= 3; ++round) {
    put(p.write.get());
    ASSERT_TRUE(wait_until(b(), [&] { return r.count() == static_cast<std::size_t>(round); }))
        << "round " << round;
    EXPECT_EQ(drain(p.read.get()), 1u);
    b().rearm(r, POLLIN);
    // Nothing new: nothing to report.
    EXPECT_EQ(b().wait(0ns), 0) << "round " << round;
  }
  EXPECT_EQ(r.count(), 3u);
  b().unwatch(r);
}

TEST_P(backend_contract, rearm_before_drain_may_report_again_and_new_data_after_rearm_is_reported) {
  // After rearm() the backend may report again at once (poll does) or wait for new data
  // (epoll, edge-triggered, does): both keep the contract, since the owner only rearms after
  // EAGAIN. Either way, new data after the rearm is reported.
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  put(p.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() == 1; }));
  b().rearm(r, POLLIN);
  b().wait(0ns);
  if (is_epoll()) {
    EXPECT_EQ(r.count(), 1u);
  } else {
    EXPECT_EQ(r.count(), 2u);
  }
  const std::size_t before = r.count();
  b().rearm(r, POLLIN);
  put(p.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() > before; }));
  b().unwatch(r);
}

TEST_P(backend_contract, new_data_without_rearm_is_reported_by_epoll_only) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  put(p.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() == 1; }));
  put(p.write.get());
  if (is_epoll()) {
    // Each arrival is an edge.
    ASSERT_TRUE(wait_until(b(), [&] { return r.count() == 2; }));
  } else {
    // Disarmed until rearm().
    EXPECT_EQ(b().wait(20ms), 0);
    EXPECT_EQ(r.count(), 1u);
    b().rearm(r, POLLIN);
    ASSERT_TRUE(wait_until(b(), [&] { return r.count() == 2; }));
  }
  EXPECT_EQ(r.last(), static_cast<std::uint32_t>(POLLIN));
  b().unwatch(r);
}

TEST_P(backend_contract, rearm_of_pollin_on_a_watch_of_both_events_reports_new_data) {
  socket_pair s;
  probe both(s.a.get(), POLLIN | POLLOUT);
  ASSERT_EQ(b().watch(both), 0);
  put(s.b.get());
  ASSERT_TRUE(wait_until(b(), [&] { return both.count() > 0; }));
  // Whatever came in separate reports, both events have been seen by now.
  ASSERT_TRUE(wait_until(b(), [&] {
    std::uint32_t seen = 0;
    for (auto r : both.reports) seen |= r;
    return (seen & (POLLIN | POLLOUT)) == (POLLIN | POLLOUT);
  }));
  drain(s.a.get());
  const std::size_t before = both.count();
  b().rearm(both, POLLIN);
  put(s.b.get());
  ASSERT_TRUE(wait_until(b(), [&] { return both.count() > before; }));
  EXPECT_TRUE(both.last() & POLLIN);
  // poll keeps POLLOUT disarmed, as it was not rearmed; epoll reports the whole state.
  if (!is_epoll()) {
    EXPECT_EQ(both.last() & POLLOUT, 0u);
  }
  b().unwatch(both);
}

// --- changes from inside callbacks ---------------------------------------------------------

TEST_P(backend_contract, watch_unwatched_by_another_callback_of_the_same_batch_is_not_reported) {
  pipe_pair p1, p2;
  probe r1(p1.read.get()), r2(p2.read.get());
  // Whichever runs first unwatches the other; both are ready in the same batch.
  r1.on_ready = [&](probe&) { b().unwatch(r2); };
  r2.on_ready = [&](probe&) { b().unwatch(r1); };
  ASSERT_EQ(b().watch(r1), 0);
  ASSERT_EQ(b().watch(r2), 0);
  put(p1.write.get());
  put(p2.write.get());
  // Both ready before the wait, so that they come in one batch.
  EXPECT_EQ(b().wait(1s), 1);
  ASSERT_EQ(r1.count() + r2.count(), 1u);
  EXPECT_EQ(b().watching(), 1u);
  probe& kept = r1.count() == 1 ? r1 : r2;
  probe& dropped = r1.count() == 1 ? r2 : r1;
  // Never afterwards either.
  put(p1.write.get());
  put(p2.write.get());
  for (int i = 0; i < 3; ++i) b().wait(10ms);
  EXPECT_EQ(dropped.count(), 0u);
  EXPECT_GE(kept.count(), 1u);
  b().unwatch(kept);
}

TEST_P(backend_contract, callback_may_unwatch_itself) {
  pipe_pair p;
  probe r(p.read.get());
  r.on_ready = [&](probe& self) { b().unwatch(self); };
  ASSERT_EQ(b().watch(r), 0);
  put(p.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() > 0; }));
  EXPECT_EQ(b().watching(), 0u);
  put(p.write.get());
  b().rearm(r, POLLIN);  // after unwatch: ignored
  EXPECT_EQ(b().wait(20ms), 0);
  EXPECT_EQ(r.count(), 1u);
}

TEST_P(backend_contract, callback_may_watch_new_descriptors) {
  // Watches added from a callback are reported in a later wait; adding many of them
  // (the backend's tables grow) must not disturb the batch under way.
  pipe_pair trigger, other;
  std::vector<std::unique_ptr<pipe_pair>> extra;
  std::vector<std::unique_ptr<probe>> added;
  probe t(trigger.read.get()), o(other.read.get());
  t.on_ready = [&](probe&) {
    for (int i = 0; i < 64; ++i) {
      extra.push_back(std::make_unique<pipe_pair>());
      added.push_back(std::make_unique<probe>(extra.back()->read.get()));
      ASSERT_EQ(b().watch(*added.back()), 0);
      put(extra.back()->write.get());
    }
  };
  o.on_ready = t.on_ready;
  ASSERT_EQ(b().watch(t), 0);
  ASSERT_EQ(b().watch(o), 0);
  put(trigger.write.get());
  put(other.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return t.count() > 0 && o.count() > 0; }));
  ASSERT_EQ(added.size(), 128u);
  ASSERT_TRUE(wait_until(b(), [&] {
    for (auto& a : added) {
      if (a->count() == 0) return false;
    }
    return true;
  }));
  for (auto& a : added) EXPECT_EQ(a->count(), 1u);
  for (auto& a : added) b().unwatch(*a);
  b().unwatch(t);
  b().unwatch(o);
  EXPECT_EQ(b().watching(), 0u);
}

TEST_P(backend_contract, descriptor_closed_and_reused_sees_no_stale_event) {
  pipe_pair old_pipe;
  probe old_watch(old_pipe.read.get());
  ASSERT_EQ(b().watch(old_watch), 0);
  put(old_pipe.write.get());  // pending on the old descriptor, never waited for
  const int fd = old_pipe.read.get();
  b().unwatch(old_watch);
  old_pipe.read.reset();

  pipe_pair fresh;
  ASSERT_GE(::dup2(fresh.read.get(), fd), 0);  // the same number, now an empty pipe
  fd_guard reused(fd);
  probe new_watch(fd);
  ASSERT_EQ(b().watch(new_watch), 0);
  EXPECT_EQ(b().wait(20ms), 0);
  EXPECT_EQ(old_watch.count(), 0u);
  EXPECT_EQ(new_watch.count(), 0u);
  // It works for real data.
  put(fresh.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return new_watch.count() > 0; }));
  EXPECT_EQ(old_watch.count(), 0u);
  b().unwatch(new_watch);
}

// In one batch, the first callback unwatches and closes the other watched descriptor and
// puts an empty pipe under the same number, watched anew: the event the batch still holds
// for the old descriptor must reach neither the old watch nor the new one.
void reuse_inside_a_batch(backend& b, bool same_watch_object) {
  pipe_pair p1, p2, fresh;
  probe r1(p1.read.get()), r2(p2.read.get());
  probe other(-1);
  fd_guard reused;
  bool swapped = false;
  auto reuse = [&](probe& victim, pipe_pair& victim_pipe) {
    if (swapped) return;
    swapped = true;
    const int fd = victim.fd;
    b.unwatch(victim);
    victim_pipe.read.reset();
    ASSERT_EQ(::dup2(fresh.read.get(), fd), fd);
    reused.fd = fd;
    probe& w = same_watch_object ? victim : other;
    w.fd = fd;
    w.reports.clear();
    w.on_ready = nullptr;
    ASSERT_EQ(b.watch(w), 0);
  };
  r1.on_ready = [&](probe&) { reuse(r2, p2); };
  r2.on_ready = [&](probe&) { reuse(r1, p1); };
  ASSERT_EQ(b.watch(r1), 0);
  ASSERT_EQ(b.watch(r2), 0);
  put(p1.write.get());
  put(p2.write.get());
  EXPECT_EQ(b.wait(1s), 1);
  ASSERT_TRUE(swapped);
  // Exactly one report so far: the callback that did the swap.
  EXPECT_EQ(r1.count() + r2.count() + other.count(), 1u);
  EXPECT_EQ(b.wait(20ms), 0);
  EXPECT_EQ(r1.count() + r2.count() + other.count(), 1u);
  b.unwatch(r1);
  b.unwatch(r2);
  b.unwatch(other);
  EXPECT_EQ(b.watching(), 0u);
}

TEST_P(backend_contract, descriptor_reused_inside_a_batch_with_a_new_watch_sees_no_stale_event) {
  reuse_inside_a_batch(b(), false);
}

TEST_P(backend_contract, descriptor_reused_inside_a_batch_by_the_same_watch_sees_no_stale_event) {
  reuse_inside_a_batch(b(), true);
}

TEST_P(backend_contract, unwatch_of_a_descriptor_closed_meanwhile_never_fails) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  put(p.write.get());
  p.read.reset();
  b().unwatch(r);
  EXPECT_EQ(b().watching(), 0u);
  EXPECT_EQ(b().wait(20ms), 0);
  EXPECT_EQ(r.count(), 0u);
}

// --- waiting -------------------------------------------------------------------------------

TEST_P(backend_contract, wait_zero_only_looks) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  const auto start = clock_type::now();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(b().wait(0ns), 0);
  // A hundred waits that each slept even a millisecond would take this long.
  EXPECT_LT(clock_type::now() - start, 5s);
  put(p.write.get());
  ASSERT_TRUE(wait_until(b(), [&] { return r.count() > 0; }));
  b().unwatch(r);
}

TEST_P(backend_contract, wait_zero_with_nothing_watched_returns_zero) {
  EXPECT_EQ(b().wait(0ns), 0);
}

TEST_P(backend_contract, wait_with_a_limit_returns_zero_once_it_passed) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  for (auto limit : {1ms, 30ms, 100ms}) {
    const auto start = clock_type::now();
    EXPECT_EQ(b().wait(limit), 0);
    const auto took = clock_type::now() - start;
    EXPECT_GE(took, limit) << "returned early";
    EXPECT_LT(took, limit + 5s);
  }
  EXPECT_EQ(r.count(), 0u);
  b().unwatch(r);
}

TEST_P(backend_contract, wait_with_a_limit_returns_early_when_a_descriptor_is_ready) {
  pipe_pair p;
  probe r(p.read.get());
  ASSERT_EQ(b().watch(r), 0);
  std::thread writer([&] {
    std::this_thread::sleep_for(20ms);
    put(p.write.get());
  });
  const auto start = clock_type::now();
  int n = 0;
  while (n == 0 && clock_type::now() - start < 60s) n = b().wait(60s);
  writer.join();
  EXPECT_EQ(n, 1);
  EXPECT_LT(clock_type::now() - start, 30s);
  b().unwatch(r);
}

TEST_P(backend_contract, wake_from_another_thread_ends_a_wait_without_limit) {
  watchdog dog(b());
  std::atomic<bool> woke{false};
  std::thread waker([&] {
    std::this_thread::sleep_for(20ms);
    woke = true;
    b().wake();
  });
  int n = 0;
  do {
    n = b().wait(std::chrono::nanoseconds(-1));
  } while (!woke.load() && !dog.fired());  // a wait that returned before the wake: again
  waker.join();
  EXPECT_EQ(n, 0) << "a wake is not a callback";
  EXPECT_FALSE(dog.fired()) << "wake() did not end wait(-1)";
  b().unwatch(dog.watch());
}

TEST_P(backend_contract, wake_before_wait_makes_the_next_wait_return_at_once) {
  watchdog dog(b());
  b().wake();
  EXPECT_EQ(b().wait(std::chrono::nanoseconds(-1)), 0);
  EXPECT_FALSE(dog.fired());
  b().unwatch(dog.watch());
}

TEST_P(backend_contract, repeated_wakes_are_merged_into_one) {
  for (int i = 0; i < 1000; ++i) b().wake();
  EXPECT_EQ(b().wait(std::chrono::nanoseconds(-1)), 0);
  // Nothing left over: the next wait runs to its limit.
  const auto start = clock_type::now();
  EXPECT_EQ(b().wait(50ms), 0);
  EXPECT_GE(clock_type::now() - start, 50ms);
}

TEST_P(backend_contract, wakes_from_many_threads_are_merged_and_none_is_lost) {
  watchdog dog(b());
  constexpr int threads = 4;
  const int per_thread = static_cast<int>(tendril::test::scaled(2000, 50));
  const int total = threads * per_thread;
  std::atomic<int> published{0};
  std::vector<std::thread> wakers;
  for (int t = 0; t < threads; ++t) {
    wakers.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i) {
        published.fetch_add(1);
        b().wake();
      }
    });
  }
  // Each wake ends the wait under way or makes the next one return at once, so the waiting
  // side always comes to see the last thing published before a wake.
  while (published.load() < total && !dog.fired()) b().wait(std::chrono::nanoseconds(-1));
  for (auto& w : wakers) w.join();
  EXPECT_FALSE(dog.fired()) << "a wake was lost";
  // Whatever wakes are still pending now end at most one wait.
  b().wait(0ns);
  const auto start = clock_type::now();
  EXPECT_EQ(b().wait(30ms), 0);
  EXPECT_GE(clock_type::now() - start, 30ms);
  b().unwatch(dog.watch());
}

// --- operations (io_uring) -----------------------------------------------------------------

// More operations submitted without a wait() between them than the submission and completion
// queues hold (reads of /dev/zero complete at once, so the completions pile up in the kernel):
// submit() never spins or drops one, and each completes exactly once, with its own result.
TEST_P(backend_contract, more_operations_than_the_queues_hold_each_complete_once) {
  if (!b().native_ops()) GTEST_SKIP() << "operations are io_uring's";
  fd_guard zero(::open("/dev/zero", O_RDONLY | O_CLOEXEC));
  ASSERT_GE(zero.fd, 0);
  constexpr std::size_t count = 40'000;  // the ring holds 4,096 submissions, 8,192 completions
  struct done_op : tendril::detail::io_op {
    int completions = 0;
    char byte = 1;
  };
  std::vector<done_op> ops(count);
  std::atomic<bool> finished{false};
  std::thread dog([&] {
    for (int i = 0; i < 600 && !finished.load(); ++i) std::this_thread::sleep_for(100ms);
    if (!finished.load()) {
      std::fprintf(stderr, "the submissions hung\n");
      std::_Exit(3);
    }
  });
  for (auto& op : ops) {
    op.op = tendril::detail::io_op::code::read;
    op.fd = zero.fd;
    op.buf = &op.byte;
    op.len = 1;
    op.complete = [](tendril::detail::io_op* self) { ++static_cast<done_op*>(self)->completions; };
    b().submit(op);
  }
  std::size_t waits = 0;
  while (b().in_flight() > 0 && waits < 100'000) {
    b().wait(100ms);
    ++waits;
  }
  finished = true;
  dog.join();
  EXPECT_EQ(b().in_flight(), 0u);
  std::size_t wrong = 0;
  for (const auto& op : ops) {
    if (op.completions != 1 || op.result != 1 || op.byte != 0) ++wrong;
  }
  EXPECT_EQ(wrong, 0u);
}

// The same for operations: receives that were waiting when their data came all complete
// in the next wait().
TEST_P(backend_contract, one_wait_completes_every_operation_that_became_ready) {
  if (!b().native_ops()) GTEST_SKIP() << "operations are io_uring's";
  constexpr std::size_t count = 200;
  struct recv_op : tendril::detail::io_op {
    int completions = 0;
    char byte = 0;
  };
  std::vector<std::unique_ptr<socket_pair>> pairs;
  std::vector<recv_op> ops(count);
  for (std::size_t i = 0; i < count; ++i) {
    pairs.push_back(std::make_unique<socket_pair>());
    recv_op& op = ops[i];
    op.op = tendril::detail::io_op::code::recv;
    op.fd = pairs.back()->a.get();
    op.buf = &op.byte;
    op.len = 1;
    op.complete = [](tendril::detail::io_op* self) { ++static_cast<recv_op*>(self)->completions; };
    b().submit(op);
  }
  EXPECT_EQ(b().wait(0ns), 0);  // submitted, nothing received yet
  for (auto& p : pairs) put(p->b.get(), "y");
  const int n = b().wait(10s);
  std::size_t done = 0;
  for (const auto& op : ops) done += (op.completions == 1 && op.result == 1 && op.byte == 'y');
  EXPECT_EQ(done, count);
  EXPECT_EQ(n, static_cast<int>(count));
  EXPECT_EQ(b().in_flight(), 0u);
  // Whatever is left in flight (on a failure) completes before the ops go away.
  for (auto& p : pairs) p->b.reset();
  while (b().in_flight() > 0) b().wait(100ms);
}

std::vector<backend_kind> readiness_backends() {
  return {{"epoll", &tendril::detail::make_epoll_backend},
          {"poll", &tendril::detail::make_poll_backend}};
}

INSTANTIATE_TEST_SUITE_P(backends, backend_contract, ::testing::ValuesIn(readiness_backends()),
                         [](const ::testing::TestParamInfo<backend_kind>& param) {
                           return param.param.name;
                         });

#if TENDRIL_HAS_IO_URING
// io_uring apart, so that its tests run after the others when the binary runs whole: a ring
// torn down in a thread may interrupt that thread's next blocking system call once (EINTR),
// which an epoll test right after it would take for a failure. (ctest runs each test in a
// process of its own.)
INSTANTIATE_TEST_SUITE_P(
    uring, backend_contract,
    ::testing::Values(backend_kind{"io_uring", &tendril::detail::make_uring_backend}),
    [](const ::testing::TestParamInfo<backend_kind>& param) { return param.param.name; });
#endif
