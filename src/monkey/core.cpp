#include "monkey/core.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <vector>

#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "hub/hub_impl.hpp"
#include "hub/thread_pool.hpp"
#include "tendril/sync/observer.hpp"
#include "tendril/task/timeout.hpp"

namespace tendril::detail::monkey {

std::atomic<bool> g_patched{false};

bool active_slow() noexcept {
  hub_impl* hub = hub_impl::peek();
  return hub != nullptr && !hub->running_in_hub();
}

// --- mode bits: chunks of 4096 descriptors, made on demand, never moved or freed -----------

namespace {
constexpr std::size_t chunk_bits = 12;
constexpr std::size_t chunk_size = std::size_t{1} << chunk_bits;
constexpr std::size_t max_chunks = 1024;  // 4 M descriptors

// A descriptor's bits, and the inode of the file they were set for: a number closed where no
// hook saw it (a raw system call) and reused names another file, whose bits must not be taken
// from the old one.
struct fd_mode {
  std::atomic<std::uint8_t> bits{0};
  std::atomic<std::uint64_t> ino{0};
};

std::atomic<fd_mode*> g_chunks[max_chunks];
std::mutex g_chunk_mu;

fd_mode* slot(int fd, bool make) noexcept {
  if (fd < 0) return nullptr;
  const auto i = static_cast<std::size_t>(fd) >> chunk_bits;
  if (i >= max_chunks) return nullptr;
  fd_mode* c = g_chunks[i].load(std::memory_order_acquire);
  if (c == nullptr) {
    if (!make) return nullptr;
    std::lock_guard lock(g_chunk_mu);
    c = g_chunks[i].load(std::memory_order_relaxed);
    if (c == nullptr) {
      c = new (std::nothrow) fd_mode[chunk_size]();
      if (c == nullptr) return nullptr;
      g_chunks[i].store(c, std::memory_order_release);
    }
  }
  return &c[static_cast<std::size_t>(fd) & (chunk_size - 1)];
}

std::uint64_t inode_of(int fd) noexcept {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_ino) : 0;
}
}  // namespace

std::uint8_t bits(int fd) noexcept {
  auto* s = slot(fd, false);
  return s ? s->bits.load(std::memory_order_relaxed) : 0;
}

void set_bits(int fd, std::uint8_t b) noexcept {
  auto* s = slot(fd, b != 0);
  if (s == nullptr) return;
  // Only the O_NONBLOCK bits need the identity check: a stale not_a_socket costs a readiness
  // wait, never a wrong answer.
  if (b & we_set_nonblock) s->ino.store(inode_of(fd), std::memory_order_relaxed);
  s->bits.store(b, std::memory_order_relaxed);
}

void reset_bits(int fd) noexcept { set_bits(fd, 0); }

std::uint8_t checked_bits(int fd) noexcept {
  auto* s = slot(fd, false);
  if (s == nullptr) return 0;
  const std::uint8_t b = s->bits.load(std::memory_order_relaxed);
  if (!(b & we_set_nonblock) || inode_of(fd) == s->ino.load(std::memory_order_relaxed)) return b;
  s->bits.store(0, std::memory_order_relaxed);  // another file took the number: start afresh
  return 0;
}

void note_read(int fd, ssize_t n, std::size_t count) noexcept {
  fd_mode* s = slot(fd, false);
  if (s == nullptr) return;  // a descriptor the hooks did not make: no shortcut for it
  const std::uint8_t b = s->bits.load(std::memory_order_relaxed);
  const bool short_read = n > 0 && static_cast<std::size_t>(n) < count && (b & stream);
  const bool was = b & drained;
  if (short_read && !was) s->bits.fetch_or(drained, std::memory_order_relaxed);
  if (!short_read && was)
    s->bits.fetch_and(static_cast<std::uint8_t>(~drained), std::memory_order_relaxed);
}

bool wait_before_read(int fd) noexcept {
  const std::uint8_t b = bits(fd);
  if (!(b & drained) || !(b & mode_known) || (b & (user_nonblock | not_a_socket))) return false;
  fd_table* t = fd_table::peek();
  fd_record* r = t ? t->lookup(fd) : nullptr;
  return r != nullptr && r->open && r->borrowed && r->watched && !r->hup_seen;
}

void forget_drained(int fd) noexcept {
  fd_mode* s = slot(fd, false);
  if (s != nullptr && (s->bits.load(std::memory_order_relaxed) & drained))
    s->bits.fetch_and(static_cast<std::uint8_t>(~drained), std::memory_order_relaxed);
}

bool caller_nonblocking(int fd) noexcept {
  const std::uint8_t b = bits(fd);
  if (b & (we_set_nonblock | mode_known)) return b & user_nonblock;
  const int fl = real::get().fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_NONBLOCK);
}

bool make_nonblocking(int fd) noexcept {
  const std::uint8_t b = bits(fd);
  if (b & we_set_nonblock) return true;
  const int fl = real::get().fcntl(fd, F_GETFL);
  if (fl < 0) return false;
  if (fl & O_NONBLOCK) return true;
  if (real::get().fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return false;
  set_bits(fd, static_cast<std::uint8_t>((b & (not_a_socket | no_timeouts)) | we_set_nonblock));
  return true;
}

bool hooks_made_nonblocking(int fd) noexcept {
  if (!(bits(fd) & we_set_nonblock)) return false;  // no system call on the common path
  const std::uint8_t b = checked_bits(fd);
  return (b & we_set_nonblock) && !(b & user_nonblock);
}

namespace {
std::int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

std::int64_t plain_deadline(int fd, int optname) noexcept {
  timeval tv{};
  socklen_t len = sizeof tv;
  if (real::get().getsockopt(fd, SOL_SOCKET, optname, &tv, &len) != 0) return forever_ns;
  if (tv.tv_sec == 0 && tv.tv_usec == 0) return forever_ns;
  return steady_ns() + static_cast<std::int64_t>(tv.tv_sec) * 1'000'000'000 +
         static_cast<std::int64_t>(tv.tv_usec) * 1000;
}

int wait_plain(int fd, short events, std::int64_t deadline_ns) noexcept {
  while (true) {
    int ms = -1;
    if (deadline_ns != forever_ns) {
      const std::int64_t left = deadline_ns - steady_ns();
      if (left <= 0) return -ETIMEDOUT;
      const std::int64_t up = (left + 999'999) / 1'000'000;  // never early
      ms = up > INT_MAX ? INT_MAX : static_cast<int>(up);
    }
    pollfd p{fd, events, 0};
    const int rc = real::get().poll(&p, 1, ms);
    if (rc > 0) return (p.revents & POLLNVAL) ? -EBADF : 0;
    if (rc < 0 && errno != EINTR) return -errno;
  }
}

void pause_plain(std::int64_t ns) noexcept {
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (real::get().nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// --- waiting -------------------------------------------------------------------------------

namespace {

// A kill or a timeout that ended a hooked wait cannot travel through the C caller as an
// exception: keep it pending for the greenlet's next cooperative call instead.
void keep_pending(std::exception_ptr e) noexcept { keep_interrupt_pending(std::move(e)); }

}  // namespace

namespace {
fd_record& borrow_checked(fd_table& t, int fd) {
  fd_record& r = t.borrow(fd);
  // A backend that keeps watches in the kernel between waits (epoll, io_uring) silently lost
  // the one of a number closed behind the hooks' back (a raw close, glibc's own fclose of an
  // fdopen'd socket), or still watches the old file: when the number names another file now,
  // start a new life for it. (A tendril socket's own record is closed by its owner, never
  // behind its back.)
  // Numbers the hooks handed out themselves were checked then (fresh()): no system call here.
  // The file is noted in the record, not with the number's mode bits: each thread has its
  // own table, and its own watch to check.
  if (!r.borrowed || !t.io().persistent() || (bits(fd) & mode_known)) return r;
  const std::uint64_t now = inode_of(fd);
  if (!r.watched) {
    r.watched_ino = now;
    return r;
  }
  if (r.watched_ino == now) return r;
  t.close(r);  // whoever waited on the old file learns it is gone (EBADF)
  fd_record& fresh = t.borrow(fd);
  fresh.watched_ino = now;
  return fresh;
}
}  // namespace

int wait_fd(int fd, io_direction d, std::int64_t deadline_ns) noexcept {
  try {
    fd_table& t = fd_table::current();
    fd_record& r = borrow_checked(t, fd);
    return t.wait(r, d, deadline_ns);
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (...) {
    keep_pending(std::current_exception());
    return -ECANCELED;
  }
}

// MAX_RW_COUNT: the most one read(2) or recv(2) transfers (INT_MAX rounded down to pages).
constexpr std::size_t max_read_count = 0x7ffff000;

std::int64_t recv_native(int fd, void* buf, std::size_t len, std::int64_t deadline_ns) noexcept {
  fd_table* t = fd_table::peek();
  // A descriptor the hooks made non-blocking underneath: the kernel may complete the read
  // with EAGAIN instead of waiting. Readiness serves it.
  if (t == nullptr || !t->native() || (bits(fd) & we_set_nonblock)) return not_native;
  struct kept {
    std::int64_t result = -ECANCELED;
  } k;
  try {
    fd_record& r = borrow_checked(*t, fd);
    op_state st;
    st.op.op = io_op::code::recv;
    st.op.fd = fd;
    st.op.buf = buf;
    // The ring's length is 32 bits: at most what the kernel reads in one call anyway.
    st.op.len = std::min<std::size_t>(len, max_read_count);
    const std::int64_t n = t->run(
        &r, st, deadline_ns,
        [](op_state& s, void* ctx) { static_cast<kept*>(ctx)->result = s.op.result; }, &k);
    return n == -EAGAIN ? not_native : n;
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (...) {
    keep_pending(std::current_exception());
    // The read finished anyway, racing the kill: its bytes are the caller's, not lost.
    return k.result >= 0 ? k.result : -ECANCELED;
  }
}

int wait_many(const pollfd* fds, nfds_t n, std::int64_t deadline_ns) noexcept {
  struct watch {
    observer obs;
    waiter* w;
    fd_record* r;
  };
  try {
    fd_table& t = fd_table::current();
    waiter w;
    std::vector<watch> watches(n);
    struct drop {
      fd_table& t;
      std::vector<watch>& v;
      ~drop() {
        for (auto& x : v) {
          if (x.r) t.unobserve(*x.r, x.obs);
        }
      }
    } guard{t, watches};
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].fd < 0) continue;
      // Only what was asked is armed (events 0 arms nothing: a hang-up, an error or a close
      // still wake): re-arming POLLIN for a readable descriptor polled for nothing would end
      // every wait at once. POLLPRI goes to the backend as it is (out-of-band data is not
      // POLLIN). An observer is notified once, whatever was reported: the caller looks, and
      // waits again if what it asked for is not there.
      std::uint32_t ev = 0;
      if (fds[i].events & (POLLIN | POLLRDHUP)) ev |= POLLIN;
      if (fds[i].events & POLLPRI) ev |= POLLPRI;
      if (fds[i].events & POLLOUT) ev |= POLLOUT;
      watches[i].w = &w;
      watches[i].obs.notify = [](observer* o) noexcept { reinterpret_cast<watch*>(o)->w->wake(); };
      fd_record& r = borrow_checked(t, fds[i].fd);
      if (t.observe(r, ev, watches[i].obs) == 0) watches[i].r = &r;
    }
    return w.wait(deadline_ns) ? 0 : -ETIMEDOUT;
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (...) {
    keep_pending(std::current_exception());
    return -ECANCELED;
  }
}

int sleep_until(std::int64_t deadline_ns) noexcept {
  struct watch : signal_watch {
    waiter* w = nullptr;
    bool fired = false;
  };
  try {
    waiter w;
    watch sw;
    sw.w = &w;
    sw.on_signal = [](signal_watch* s) noexcept {
      auto* me = static_cast<watch*>(s);
      me->fired = me->w->wake();
    };
    hub_impl& hub = hub_impl::current();
    hub.watch_signals(sw);
    struct unwatch {
      hub_impl& h;
      watch& s;
      ~unwatch() { h.unwatch_signals(s); }
    } guard{hub, sw};
    const bool woken = w.wait(deadline_ns);
    return woken && sw.fired ? -EINTR : 0;
  } catch (...) {
    keep_pending(std::current_exception());
    return -ECANCELED;
  }
}

std::int64_t option_deadline(int fd, int optname) noexcept {
  if (bits(fd) & no_timeouts) return forever_ns;
  timeval tv{};
  socklen_t len = sizeof tv;
  if (real::get().getsockopt(fd, SOL_SOCKET, optname, &tv, &len) != 0) return forever_ns;
  if (tv.tv_sec == 0 && tv.tv_usec == 0) return forever_ns;
  return deadline_after(std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec));
}

void closing(int fd) noexcept {
  reset_bits(fd);
  if (fd_table* t = fd_table::peek()) {
    if (fd_record* r = t->lookup(fd); r != nullptr && r->open && r->borrowed) t->close(*r);
  }
}

void fresh(int fd, std::uint8_t b) noexcept {
  closing(fd);
  set_bits(fd, b);
}

void on_pool(void (*fn)(void*), void* ctx) noexcept {
  if (thread_pool::on_worker()) {
    // A pool thread that waited for the pool could wait for itself (every worker busy the
    // same way, or a pool of one): the call runs here, blocking, as offload() does there.
    fn(ctx);
    return;
  }
  struct job {
    pool_job node;
    void (*fn)(void*);
    void* ctx;
    std::mutex mu;
    waiter* w = nullptr;
    bool done = false;
  };
  job j;
  j.fn = fn;
  j.ctx = ctx;
  j.node.run = [](pool_job* p) noexcept {
    auto* jb = reinterpret_cast<job*>(p);  // node is the first member
    jb->fn(jb->ctx);
    std::lock_guard lock(jb->mu);
    jb->done = true;
    if (jb->w) jb->w->wake();
  };
  try {
    // Shielded: the pool thread writes into the caller's memory, so the caller's frame must
    // outlive the call whatever happens.
    waiter w(true, true);
    {
      std::lock_guard lock(j.mu);
      j.w = &w;
    }
    hub_impl& hub = hub_impl::current();
    thread_pool::submit(j.node);
    hub.add_pool_jobs(1);
    w.wait();
    hub.add_pool_jobs(-1);
    std::lock_guard lock(j.mu);
    j.w = nullptr;
  } catch (const std::invalid_argument& e) {
    // A bad TENDRIL_THREADPOOL_SIZE: a hook cannot throw it, so it says so (once) and does
    // the work here, blocking, as libc would.
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      std::fprintf(stderr, "%s; the hooks' blocking calls run on the calling thread\n", e.what());
    }
    if (!j.done) fn(ctx);
  } catch (...) {
    // No thread could be started: do it here, blocking, as libc would.
    if (!j.done) fn(ctx);
  }
}

}  // namespace tendril::detail::monkey
