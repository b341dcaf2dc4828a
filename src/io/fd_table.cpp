#include "io/fd_table.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>

#include <cerrno>
#include <cstddef>
#include <mutex>

#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "hub/hub_impl.hpp"
#include "tendril/task/timeout.hpp"

namespace tendril::detail {

char fd_closed_marker;

void keep_interrupt_pending(std::exception_ptr e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const timeout_error& t) {
    if (t.source() != nullptr) repend_timeout(const_cast<timeout*>(t.source()));
  } catch (...) {
    greenlet_record* g = thread_state::get().current();
    if (!g->interrupt) g->interrupt = e;
  }
}

namespace {
thread_local fd_table* t_table = nullptr;
thread_local bool t_table_gone = false;
struct table_holder;
thread_local table_holder* t_holder = nullptr;
// In a forked child, until its first cooperative I/O: the parent's table, whose records the
// child's table starts from.
thread_local fd_table* t_inherited = nullptr;

struct table_holder {
  fd_table* t = nullptr;
  ~table_holder() {
    // The table goes before the hub (made after it): the hub's tasks unwind first, while
    // their records are here, since a task parked on a socket unlinks itself from a record
    // (or cancels its operation through it) as it goes.
    if (t != nullptr) {
      if (hub_impl* h = hub_impl::peek()) h->end_tasks();
    }
    delete t;
    t_table = nullptr;
    t_table_gone = true;
  }
};

fd_record* record_of(io_watch* w) {
  return reinterpret_cast<fd_record*>(reinterpret_cast<char*>(w) - offsetof(fd_record, watch));
}

void wake_all(waiter_list& l, void* payload) noexcept {
  while (waiter* w = l.pop_front()) {
    if (w->claim()) {
      w->payload = payload;
      w->schedule();
    }
  }
}

void link_op(fd_record& r, op_state& st) noexcept {
  st.prev = nullptr;
  st.next = r.ops;
  if (r.ops) r.ops->prev = &st;
  r.ops = &st;
}

void unlink_op(fd_record& r, op_state& st) noexcept {
  if (st.prev) {
    st.prev->next = st.next;
  } else if (r.ops == &st) {
    r.ops = st.next;
  } else {
    return;  // not linked (close() took it out)
  }
  if (st.next) st.next->prev = st.prev;
  st.prev = st.next = nullptr;
}

}  // namespace

fd_table& fd_table::current() {
  if (fd_table* t = t_table) return *t;
  if (t_table_gone) throw std::logic_error("tendril: cooperative I/O during thread exit");
  hub_impl& hub = hub_impl::current();  // first, so that the hub outlives the table
  // A forked child starts a table of its own: the parent's records name watches in its
  // backend, and waiters and operations of greenlets that never run in the child.
  static std::once_flag at_fork;
  std::call_once(at_fork, [] { pthread_atfork(nullptr, nullptr, &fd_table::forget_after_fork); });
  thread_local table_holder holder;
  t_holder = &holder;
  auto fresh = std::unique_ptr<fd_table>(new fd_table(hub));
  if (t_inherited != nullptr) {
    fresh->inherit(*t_inherited);
    t_inherited = nullptr;
  }
  holder.t = fresh.release();
  t_table = holder.t;
  return *t_table;
}

fd_table* fd_table::peek() noexcept { return t_table; }

void fd_table::forget_after_fork() noexcept {
  // Abandoned with the parent's hub, not destroyed (its destructor would unwatch descriptors
  // in the epoll instance the child shares with the parent). A second fork before the first
  // table of the child keeps the one inherited.
  if (t_table != nullptr) t_inherited = t_table;
  if (t_holder) t_holder->t = nullptr;
  t_table = nullptr;
}

void fd_table::inherit(const fd_table& parents) {
  // The child has the parent's descriptors: a socket made before the fork looks its record up
  // by number and generation, and the hooks know a descriptor they borrowed by its record.
  // What belonged to the parent's hub is not carried: the watch (the next wait registers the
  // descriptor with the child's backend, which then reports its readiness afresh), readiness
  // seen, waiters, operations in flight, observers.
  records_.resize(parents.records_.size());
  for (std::size_t i = 0; i < records_.size(); ++i) {
    const fd_record* old = parents.records_[i].get();
    if (old == nullptr) continue;
    auto r = std::make_unique<fd_record>();
    r->fd = old->fd;
    r->gen = old->gen;  // a later life of the number must not match a stale socket's
    // Closed before this first use (a socket's close() found no table to tell).
    r->open = old->open && ::fcntl(old->fd, F_GETFD) >= 0;
    r->borrowed = old->borrowed;
    records_[i] = std::move(r);
  }
}

fd_table::fd_table(hub_impl& hub) : hub_(hub), io_(&hub.io()) {}

fd_table::~fd_table() {
  for (auto& r : records_) {
    if (r && r->watched) io_->unwatch(r->watch);
  }
}

fd_record& fd_table::open(int fd) {
  if (fd < 0) throw std::invalid_argument("tendril: a negative descriptor");
  if (static_cast<std::size_t>(fd) >= records_.size())
    records_.resize(static_cast<std::size_t>(fd) + 1 + records_.size() / 2);
  auto& slot = records_[static_cast<std::size_t>(fd)];
  if (!slot) slot = std::make_unique<fd_record>();
  fd_record& r = *slot;
  if (r.open) close(r);  // the number was reused behind our back (a raw close)
  if (r.watched) {
    io_->unwatch(r.watch);
    r.watched = false;
  }
  r.fd = fd;
  ++r.gen;
  r.open = true;
  r.borrowed = false;
  r.ready_waits = 0;
  r.opened_for_ready_wait = false;
  r.watched_ino = 0;
  r.unwaitable = false;
  r.readable = r.writable = false;
  r.hup_seen = false;
  r.reader = r.writer = nullptr;
  return r;
}

fd_record& fd_table::borrow(int fd) {
  fd_record* r = lookup(fd);
  if (r && r->open) return *r;
  fd_record& fresh = open(fd);
  fresh.borrowed = true;
  return fresh;
}

int fd_table::observe(fd_record& r, std::uint32_t events, observer& o) {
  if (!r.open) return -EBADF;
  if (int rc = arm(r, events); rc < 0) return rc;
  r.observers.push_back(o);
  hub_.add_descriptor_waits(1);
  return 0;
}

void fd_table::unobserve(fd_record& r, observer& o) noexcept {
  r.observers.remove(o);  // notify_all() may have done it already
  hub_.add_descriptor_waits(-1);
}

fd_record* fd_table::find(int fd, std::uint32_t gen) noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= records_.size()) return nullptr;
  fd_record* r = records_[static_cast<std::size_t>(fd)].get();
  return r && r->open && r->gen == gen ? r : nullptr;
}

fd_record* fd_table::lookup(int fd) noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= records_.size()) return nullptr;
  return records_[static_cast<std::size_t>(fd)].get();
}

void fd_table::on_ready(io_watch* w, std::uint32_t revents) {
  fd_record* r = record_of(w);
  const bool err = revents & (POLLERR | POLLHUP);
  if (revents & (POLLERR | POLLHUP | POLLRDHUP)) r->hup_seen = true;
  if ((revents & POLLIN) || err) {
    if (r->readers.empty()) {
      r->readable = true;
    } else {
      wake_all(r->readers, nullptr);
    }
  }
  if ((revents & POLLOUT) || err) {
    if (r->writers.empty()) {
      r->writable = true;
    } else {
      wake_all(r->writers, nullptr);
    }
  }
  if (!r->observers.empty()) {
    r->last_events = revents;
    r->observers.notify_all();
  }
}

int fd_table::arm(fd_record& r, std::uint32_t ev) {
  if (!r.watched) {
    r.watch.fd = r.fd;
    // POLLPRI too, for the hooks' poll() and select() on out-of-band data; nothing waits for
    // it but their observers, and it is armed only when asked (rearm()).
    r.watch.events = POLLIN | POLLOUT | POLLPRI;
    r.watch.ready = &on_ready;
    int rc = io_->watch(r.watch);
    if (rc == -EPERM) {
      r.unwaitable = true;  // a regular file: always "ready", the system call just runs
      return 0;
    }
    if (rc < 0) return rc;
    r.watched = true;
    // A watch starts with reading and writing (on io_uring); anything more is asked for.
    if (ev & ~(POLLIN | POLLOUT)) io_->rearm(r.watch, ev);
  } else {
    io_->rearm(r.watch, ev);
  }
  return 0;
}

int fd_table::wait(fd_record& r, io_direction d, std::int64_t deadline_ns) {
  if (!r.open) return -EBADF;
  if (r.unwaitable) return 0;
  const bool reading = d == io_direction::read;
  bool& seen = reading ? r.readable : r.writable;
  if (seen) {
    // Readiness came while nobody waited: the caller's system call may succeed now.
    seen = false;
    return 0;
  }
  const std::uint32_t ev = reading ? POLLIN : POLLOUT;
  if (int rc = arm(r, ev); rc < 0 || r.unwaitable) return rc;
  waiter w;
  waiter_list& l = reading ? r.readers : r.writers;
  l.push_back(w);
  // Counted for the hub's loop_exit check: the descriptor may still end this wait.
  hub_.add_descriptor_waits(1);
  struct unlink {
    hub_impl& h;
    waiter_list& l;
    waiter& w;
    ~unlink() {
      l.remove(w);
      h.add_descriptor_waits(-1);
    }
  } guard{hub_, l, w};
  if (!w.wait(deadline_ns)) return -ETIMEDOUT;
  if (w.payload == &fd_closed_marker) return -EBADF;
  return 0;
}

void fd_table::on_complete(io_op* op) {
  auto* st = static_cast<op_state*>(op->context);
  st->done = true;
  if (st->w) st->w->wake();
}

void fd_table::cancel_and_wait(op_state& st) noexcept {
  if (st.done) return;
  // Shielded: nothing may interrupt this wait, or the kernel could write into a frame that
  // is about to unwind (an interrupt that arrives meanwhile stays pending).
  waiter w(false, true);
  st.w = &w;
  io_->cancel(st.op);
  try {
    w.wait();
  } catch (...) {
    // A shielded wait only throws for misuse (a blocking call on the hub itself); the
    // operation is still in flight, so the frame must not go: there is no safe way on.
    std::terminate();
  }
  st.w = nullptr;
}

std::int64_t fd_table::run(fd_record* r, op_state& st, std::int64_t deadline_ns,
                           void (*abandoned)(op_state&, void*), void* ctx) {
  // Before the submission: once the kernel has the operation, the frame must wait for its
  // end, and on the hub nothing can (std::terminate in cancel_and_wait()).
  // Test: file.file_io_on_the_hub_itself_throws_blocking_switch_out.
  if (hub_.running_in_hub()) [[unlikely]]
    hub_.refuse_on_hub();
  st.op.complete = &on_complete;
  st.op.context = &st;
  st.done = false;
  st.fd_closed = false;
  if (r) link_op(*r, st);
  struct unlink {
    fd_record* r;
    op_state& st;
    ~unlink() {
      if (r) unlink_op(*r, st);
    }
  } guard{r, st};
  waiter w;
  st.w = &w;
  io_->submit(st.op);
  bool woken;
  try {
    woken = w.wait(deadline_ns);
  } catch (...) {
    st.w = nullptr;
    cancel_and_wait(st);
    if (abandoned) abandoned(st, ctx);
    throw;
  }
  st.w = nullptr;
  if (!woken) {
    cancel_and_wait(st);
    // It may have finished anyway, racing the deadline: then its result stands.
    // (-EINTR: how an operation a kernel worker had taken ends when cancelled.)
    if (st.op.result == -ECANCELED || st.op.result == -EINTR)
      return st.fd_closed ? -EBADF : -ETIMEDOUT;
  }
  if (st.fd_closed) {
    if (abandoned) abandoned(st, ctx);
    return -EBADF;
  }
  return st.op.result;
}

void fd_table::close(fd_record& r) noexcept {
  if (!r.open) return;
  r.open = false;
  wake_all(r.readers, &fd_closed_marker);
  wake_all(r.writers, &fd_closed_marker);
  r.last_events = POLLNVAL;
  r.observers.notify_all();
  while (op_state* st = r.ops) {
    unlink_op(r, *st);
    st->fd_closed = true;
    if (!st->done) io_->cancel(st->op);
  }
  if (r.watched) {
    io_->unwatch(r.watch);
    r.watched = false;
  }
  // io_uring: the poll or operation in flight holds the file; let it go now, so that the
  // socket ends with its close.
  io_->release_now();
  r.readable = r.writable = false;
  r.reader = r.writer = nullptr;
}

}  // namespace tendril::detail
