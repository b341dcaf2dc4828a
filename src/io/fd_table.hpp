// The I/O layer's record of each descriptor a thread does cooperative I/O on: who waits on
// it, what readiness was seen while nobody waited, the native operations under way, and a
// generation number that guards against the descriptor being closed and its number reused
// (Go's pollDesc). One table per thread, indexed by descriptor, grown as needed; records are
// reused, never freed while the thread lives, so an operation can always find its record.
//
// Waiting (epoll, poll, and io_uring for plain readiness): the caller makes the system call
// itself; on EAGAIN it calls wait(), which parks it until the backend reports readiness. The
// descriptor is registered with the backend once, the first time anyone waits on it.
//
// Native operations (io_uring): run() submits an io_op and parks until it completes. If the
// greenlet is killed or its time runs out meanwhile, run() cancels the operation and waits
// (uninterruptibly) for its completion before the caller's frame goes away: the kernel never
// writes into freed memory. An operation that finished anyway keeps its result: data that
// raced a deadline is returned, not lost.
#ifndef TENDRIL_SRC_IO_FD_TABLE_HPP
#define TENDRIL_SRC_IO_FD_TABLE_HPP

#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "hub/backend.hpp"
#include "tendril/hub/deadline.hpp"
#include "tendril/sync/observer.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril::detail {

class hub_impl;
struct greenlet_record;

// A native operation under way, on its owner's stack.
struct op_state {
  io_op op;
  waiter* w = nullptr;  // who to wake on completion
  bool done = false;
  bool fd_closed = false;  // the descriptor was closed meanwhile: the owner reports EBADF
  op_state* prev = nullptr;
  op_state* next = nullptr;
};

struct fd_record {
  int fd = -1;
  std::uint32_t gen = 0;
  bool open = false;        // a socket (or a hooked descriptor) owns it
  bool watched = false;     // registered with the backend
  bool unwaitable = false;  // the backend cannot wait on it (EPERM): treat as always ready
  bool readable = false;    // readiness reported while nobody waited
  bool writable = false;
  bool hup_seen = false;  // an end of stream, hang-up or error was reported (this life)
  waiter_list readers;
  waiter_list writers;
  io_watch watch;
  op_state* ops = nullptr;            // native operations in flight
  greenlet_record* reader = nullptr;  // the socket API's one reader and one writer
  greenlet_record* writer = nullptr;
  bool borrowed = false;  // the hooks (L5) track it for a descriptor they do not own
  // io::wait_readable / wait_writable: how many of them wait on this life, and whether one of
  // them opened it (then the last to end closes it, unless someone else waits by then).
  std::uint32_t ready_waits = 0;
  bool opened_for_ready_wait = false;
  std::uint64_t watched_ino = 0;  // the hooks: the file (inode) the backend watch was made for
  // Observers of readiness and closing (poll() and select() waiting on many descriptors);
  // notified with the revents seen in `last_events`.
  observer_list observers;
  std::uint32_t last_events = 0;
};

enum class io_direction { read, write };

class fd_table {
 public:
  // current() is the calling thread's table, made on first use (it starts the hub).
  static fd_table& current();
  static fd_table* peek() noexcept;
  // forget_after_fork() abandons the parent's table in a forked child (a pthread_atfork child
  // handler, registered when the process's first table is made). The child's table, made on
  // first use, keeps each record's descriptor, generation and open or borrowed state, so
  // that sockets made before the fork work in the child; nothing of the parent's hub.
  static void forget_after_fork() noexcept;

  // open() starts a new life for descriptor fd (just created or accepted): a fresh
  // generation, no waiters, no stale readiness. Throws std::bad_alloc.
  fd_record& open(int fd);
  // borrow() is fd's record for the hooks: the open life if there is one (a tendril socket's,
  // or an earlier borrow), else a new life marked borrowed. Throws std::bad_alloc.
  fd_record& borrow(int fd);
  // observe() registers o to be notified when r is reported ready for events (or closed),
  // arming the backend as wait() does. 0, or -errno from the backend. unobserve() undoes it,
  // once for each observe() that returned 0 (until then the hub counts a descriptor wait).
  int observe(fd_record& r, std::uint32_t events, observer& o);
  void unobserve(fd_record& r, observer& o) noexcept;

  // find() is fd's record if it is still the life numbered gen, else null.
  fd_record* find(int fd, std::uint32_t gen) noexcept;
  // lookup() is fd's record whatever its life (null if none was ever made).
  fd_record* lookup(int fd) noexcept;

  // wait() parks until r is ready for d (0: try the system call again), the deadline passes
  // (-ETIMEDOUT) or r is closed (-EBADF); -errno if the backend refuses the descriptor.
  // Switches: yes. Throws what interrupts the greenlet.
  int wait(fd_record& r, io_direction d, std::int64_t deadline_ns);

  // native() tells whether run() is available (io_uring).
  bool native() const noexcept { return io_->native_ops(); }
  // run() submits st.op, waits for it and returns its result (>= 0 or -errno; -ETIMEDOUT
  // if the deadline passed first, -EBADF if r was closed). When the greenlet is interrupted
  // it cancels, waits for the completion, calls abandoned(st, ctx) so the caller can keep
  // what completed anyway (received bytes, an accepted descriptor), and rethrows.
  // On the hub itself it throws blocking_switch_out, and submits nothing.
  // r may be null for operations on descriptors outside the table (files).
  std::int64_t run(fd_record* r, op_state& st, std::int64_t deadline_ns,
                   void (*abandoned)(op_state& st, void* ctx) = nullptr, void* ctx = nullptr);

  // close() ends r's life: every greenlet waiting on it wakes with EBADF, native operations
  // on it are cancelled (their owners see EBADF), the backend forgets it. The caller closes
  // the descriptor itself, afterwards.
  void close(fd_record& r) noexcept;

  backend& io() noexcept { return *io_; }

  ~fd_table();

 private:
  explicit fd_table(hub_impl& hub);
  // inherit() starts this (new, empty) table from the parent's records. Throws std::bad_alloc.
  void inherit(const fd_table& parents);
  static void on_ready(io_watch* w, std::uint32_t revents);
  // arm() registers r with the backend (first time) or re-arms ev.
  int arm(fd_record& r, std::uint32_t ev);
  static void on_complete(io_op* op);
  void cancel_and_wait(op_state& st) noexcept;

  hub_impl& hub_;
  backend* io_;
  std::vector<std::unique_ptr<fd_record>> records_;
};

// The value a waiter's payload takes when its descriptor was closed under it.
extern char fd_closed_marker;

// keep_interrupt_pending() keeps a kill or a timeout that ended a wait pending for the current
// greenlet's next blocking call, for a caller that returns what completed meanwhile instead
// (the hooks, which cannot throw through C; a file read that got bytes from a terminal).
void keep_interrupt_pending(std::exception_ptr e) noexcept;

}  // namespace tendril::detail

#endif
