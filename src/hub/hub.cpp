#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>

#include "context/sanitizer.hpp"
#include "hub/clock.hpp"
#include "hub/hub_impl.hpp"
#include "hub/thread_pool.hpp"
#include "tendril/hub/deadline.hpp"

namespace tendril {

hub& hub::current() { return detail::hub_impl::current().facade(); }

const char* hub::backend_name() const noexcept { return impl_->io().name(); }

void hub::set_error_handler(error_handler h) { impl_->set_error_handler(std::move(h)); }

namespace detail {

constinit thread_local hub_impl* hub_impl::t_hub_ = nullptr;
constinit thread_local hub_impl** hub_impl::t_holder_h_ = nullptr;

namespace {

std::atomic<interrupt_fn> g_interrupt{nullptr};
std::atomic<hub_impl::start_failed_fn> g_start_failed{nullptr};
thread_local bool t_hub_gone = false;

// Every hub of the process, for a forked child: the hubs of the parent's other threads are
// reachable there from nowhere else (those threads do not exist in the child), and their
// descriptors and rings would stay open for ever. Changed only under g_hubs_mu, which fork()
// holds from its prepare handler on, so that the child finds the list as it was between two
// changes, and no backend half made or half destroyed.
std::mutex g_hubs_mu;
hub_impl* g_hubs = nullptr;

void lock_hubs() noexcept { g_hubs_mu.lock(); }
void unlock_hubs() noexcept { g_hubs_mu.unlock(); }

// In a forked child: only close() and munmap(), on values noted before the fork.
void release_in_child(const backend_resources& r) noexcept {
  for (int fd : r.fds) {
    if (fd >= 0) ::close(fd);
  }
  for (const backend_resources::mapping& m : r.maps) {
    if (m.addr != nullptr) ::munmap(m.addr, m.len);
  }
}

// How long the loop sleeps before it looks again whether another thread is still there to
// set what a greenlet waits on (see someone_else_could_wake()).
constexpr std::int64_t recheck_ns = 250'000'000;

std::string quoted_name(greenlet_record* r) {
  return r ? "'" + record_name(r) + "'" : std::string("(one that has ended since)");
}

// A backend whose wait fails fails again on every pass (a closed epoll descriptor, a ring
// another process owns): the loop would spin without end, waking nothing.
[[noreturn]] void backend_wait_failed(const char* backend, int err) noexcept {
  std::fprintf(stderr, "tendril: the hub's %s backend cannot wait: %s\n", backend,
               std::strerror(err));
  std::abort();
}

// A greenlet parked in the parent's hub was switched into in a forked child, where the
// parent's greenlets never run: the greenlet that forked (whose parent is now the root) ended,
// or something else switched into it. Its wait cannot end there, nor may it go on.
[[noreturn]] void resumed_after_fork(greenlet_record* self, greenlet_record* from) noexcept {
  const std::string who = from != nullptr ? quoted_name(from) : "'?'";
  if (from != nullptr && from->status == greenlet_status::dead) {
    std::fprintf(stderr,
                 "tendril: greenlet %s called fork() and ended in the child process, where "
                 "greenlet %s was waiting in the parent's hub; the parent's greenlets never run "
                 "in the child: end the child with _exit() or exit() before the greenlet that "
                 "forked ends\n",
                 who.c_str(), quoted_name(self).c_str());
  } else {
    std::fprintf(stderr,
                 "tendril: greenlet %s switched into greenlet %s in a forked child, where it was "
                 "waiting in the parent's hub; the parent's greenlets never run in the child\n",
                 who.c_str(), quoted_name(self).c_str());
  }
  std::abort();
}

// The number of threads of this process, from /proc (-1 if it cannot be read).
int process_threads() {
  int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  // Field 20 (num_threads) counts from after the closing parenthesis of the command name.
  const char* p = std::strrchr(buf, ')');
  if (!p) return -1;
  int field = 2;
  for (++p; *p && field < 20; ++p) {
    if (*p == ' ') ++field;
  }
  const int threads = std::atoi(p);
  return threads > 0 ? threads : -1;
}

// for_each_thread() calls f(tid) for each thread /proc/self/task lists; false if it cannot.
template <class F>
bool for_each_thread(F f) {
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return false;
  while (const dirent* e = ::readdir(dir)) {
    if (const auto tid = static_cast<pid_t>(std::atoi(e->d_name)); tid > 0) f(tid);
  }
  ::closedir(dir);
  return true;
}

// process_user_threads() counts the process's threads but for io_uring's kernel workers
// ("iou-wrk-…", "iou-sqp-…"): threads of the process too, one kept for good after the first
// operation the kernel punted, but they run no code of the program. -1 if /proc cannot tell.
int process_user_threads() {
  int threads = 0;
  const bool listed = for_each_thread([&threads](pid_t tid) {
    char path[48];
    std::snprintf(path, sizeof path, "/proc/self/task/%d/comm", static_cast<int>(tid));
    char comm[4] = {};
    if (int fd = ::open(path, O_RDONLY | O_CLOEXEC); fd >= 0) {
      const ssize_t n = ::read(fd, comm, sizeof comm);
      ::close(fd);
      if (n == 4 && std::memcmp(comm, "iou-", 4) == 0) return;
    }
    ++threads;
  });
  return listed && threads > 0 ? threads : -1;
}

// Whether thread tid of this process is still there.
bool thread_alive(pid_t tid) noexcept {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/self/task/%d", static_cast<int>(tid));
  return ::access(path, F_OK) == 0;
}

// ThreadSanitizer's runtime starts a thread of its own with the process's first
// pthread_create() and keeps it. It never sets an event; counted as a thread that might, it
// would keep every cross-thread wait of a TSan build from getting loop_exit once the program
// had started a thread, even one long gone. Its id is learnt at start-up, while the process has
// one thread: start one and join it, and the thread left besides this one is TSan's. (With
// threads there already, it is not learnt, and counts.)
struct sanitizer_thread {
  pid_t pid = 0;
  pid_t tid = 0;

  sanitizer_thread() {
    if constexpr (sanitizer::tsan) learn();
  }

  void learn() {
    if (process_threads() != 1) return;
    pid_t joined = 0;
    try {
      std::thread([&joined] { joined = ::gettid(); }).join();
    } catch (const std::system_error&) {
      return;  // no thread to be had: nothing learnt, and TSan's, if it comes, counts
    }
    // The joined thread leaves /proc a moment after join() returns.
    for (int i = 0; i < 1000 && thread_alive(joined); ++i) ::sched_yield();
    const pid_t self = ::gettid();
    pid_t other = 0;
    int others = 0;
    const bool listed = for_each_thread([&](pid_t id) {
      if (id != self && id != joined) {
        other = id;
        ++others;
      }
    });
    if (listed && others == 1) {
      pid = ::getpid();
      tid = other;
    }
  }
};

const sanitizer_thread g_sanitizer_thread;

}  // namespace

int sanitizer_threads() noexcept {
  // A forked child has another pid, and its own TSan thread if any, which is not known.
  if (g_sanitizer_thread.tid == 0 || g_sanitizer_thread.pid != ::getpid()) return 0;
  return thread_alive(g_sanitizer_thread.tid) ? 1 : 0;
}

struct hub_impl::holder {
  hub_impl* h = nullptr;
  ~holder() {
    delete h;
    t_hub_ = nullptr;
    t_hub_gone = true;
  }
};

hub_impl& hub_impl::make_for_this_thread() {
  if (t_hub_gone) {
    std::fputs(
        "tendril: a blocking call during thread exit, after the thread's hub was destroyed\n",
        stderr);
    std::abort();
  }
  thread_state::get();  // first, so that it outlives the hub (thread_locals end in reverse)
  // Whether or not the hooks are on: a forked child must never run the parent's greenlets,
  // nor share its epoll instance or io_uring ring.
  static std::once_flag at_fork;
  std::call_once(at_fork,
                 [] { pthread_atfork(&lock_hubs, &unlock_hubs, &hub_impl::forget_after_fork); });
  thread_local holder h;
  h.h = new hub_impl();
  t_holder_h_ = &h.h;
  t_hub_ = h.h;
  return *h.h;
}

void hub_impl::forget_after_fork() noexcept {
  // The child of a fork: the parent's hub (its backend, its ring, its queues of greenlets
  // that will never run here) is abandoned, not destroyed; a new one starts on first use.
  if (hub_impl* old = t_hub_) old->abandon();
  if (t_holder_h_) *t_holder_h_ = nullptr;
  t_hub_ = nullptr;
  // No hub of the parent is ever destroyed here, this thread's included: their backends'
  // descriptors and rings go now.
  for (hub_impl* h = g_hubs; h != nullptr; h = h->next_hub_) release_in_child(h->io_resources_);
  g_hubs = nullptr;
  unlock_hubs();
  thread_pool::forget_after_fork();
  // The greenlet that forked ends into the thread's root (its parent may be the old hub).
  // The root, if it waited in the old hub, waits in no hub of the child: the new hub's
  // loop_exit must not pick it (it can never be resumed there, see park()).
  if (thread_state* ts = thread_state::peek()) {
    greenlet_record* cur = ts->current();
    if (cur != ts->root()) {
      unlink_child(cur);
      link_child(ts->root(), cur);
      ts->root()->parked = false;
    }
  }
}

void hub_impl::abandon() noexcept {
  // In the child, the greenlet that forked can still reach this hub's timers and nodes (its
  // timeout scopes, a parent's task it kills or wakes), and such calls find the thread's new
  // hub: a heap index or a queue link of this hub used there would take another timer's slot
  // or corrupt its run queue. Nothing here is armed or queued any more, and a wake of a
  // parent's greenlet is dropped (schedule_remote()). Nothing reaches its backend either
  // (the child's descriptor table is a new one, on the new hub): forget_after_fork() lets go
  // of its descriptors and the ring's mappings, or each generation of children would keep
  // those of all before it.
  abandoned_ = true;
  timers_.disarm_all();
  while (!ready_.empty()) ready_.pop_front()->list = ready_node::in_no_list;
  while (!remote_.empty()) remote_.pop_front()->list = ready_node::in_no_list;
}

hub_impl::hub_impl() : ts_(&thread_state::get()), facade_(this) {
  {
    // Made under the lock, so that a child forked meanwhile finds it listed.
    std::lock_guard lock(g_hubs_mu);
    io_ = make_backend();
    io_resources_ = io_->resources();
    next_hub_ = g_hubs;
    if (g_hubs != nullptr) g_hubs->prev_hub_ = this;
    g_hubs = this;
  }
  try {
    children_.next = children_.prev = &children_;
    greenlet_retain(ts_->root());
    tendril::greenlet root(ts_->root(), tendril::greenlet::adopt_t{});
    hub_ = tendril::greenlet([this] { loop(); }, root);
    hub_.set_name("hub");
    hub_.record()->refuses_thrown = true;  // no user's exception may end the loop
  } catch (...) {
    close_backend();
    throw;
  }
}

hub_impl::~hub_impl() {
  drain_children();
  // The loop ends here, while this object lives: greenlet_exit at its last switch, whatever
  // else holds the hub's greenlet (a handle from greenlet::current().parent() in a static, or
  // on a task's stack that the thread's end unwinds later). Left suspended, it would be
  // unwound later by the thread's end, and every frame of the loop (switch_from_hub(),
  // drained(), loop()) reads this object after its switch: guarding each of those reads
  // would miss the next one added (hub_test's
  // an_ending_thread_whose_hub_greenlet_is_still_referred_to_ends_cleanly).
  greenlet_end_now(hub_.record());
  hub_ = tendril::greenlet();
  close_backend();
}

void hub_impl::close_backend() noexcept {
  // Unlisted and closed under the lock: a child forked in between would close numbers that
  // another thread may have opened again since.
  std::lock_guard lock(g_hubs_mu);
  if (prev_hub_ != nullptr) {
    prev_hub_->next_hub_ = next_hub_;
  } else {
    g_hubs = next_hub_;
  }
  if (next_hub_ != nullptr) next_hub_->prev_hub_ = prev_hub_;
  prev_hub_ = next_hub_ = nullptr;
  io_.reset();
}

void hub_impl::set_interrupt_hook(interrupt_fn f) noexcept {
  g_interrupt.store(f, std::memory_order_release);
}

void hub_impl::set_start_failed_hook(start_failed_fn f) noexcept {
  g_start_failed.store(f, std::memory_order_release);
}

bool hub_impl::ready_to_run(greenlet_record* g) noexcept {
  if (g->status == greenlet_status::dead) return false;
  if (g->ctx != nullptr || g->is_root) return true;
  const int err = greenlet_prepare_stack(g);
  if (err == 0) return true;
  if (start_failed_fn f = g_start_failed.load(std::memory_order_acquire)) f(g, err);
  return false;
}

void hub_impl::unschedule(ready_node& n) noexcept {
  if (n.list == ready_node::in_run_queue) {
    ready_.remove(n);
  } else if (n.list == ready_node::in_remote_queue) {
    std::lock_guard lock(remote_mu_);
    if (n.list == ready_node::in_remote_queue) remote_.remove(n);
  }
  n.list = ready_node::in_no_list;
}

void hub_impl::schedule_remote(ready_node& n) noexcept {
  // A forked child woke a greenlet of the parent's (it never runs in the child); nor may
  // the child write to the parent's wake descriptor, which it shares.
  if (abandoned_) [[unlikely]]
    return;
  {
    std::lock_guard lock(remote_mu_);
    n.list = ready_node::in_remote_queue;
    remote_.push_back(n);
  }
  if (!remote_pending_.exchange(true, std::memory_order_acq_rel)) io_->wake();
}

void hub_impl::run_remote() {
  if (!remote_pending_.load(std::memory_order_acquire)) return;
  std::lock_guard lock(remote_mu_);
  remote_pending_.store(false, std::memory_order_relaxed);
  while (!remote_.empty()) {
    ready_node* n = remote_.pop_front();
    schedule(*n);
  }
}

void hub_impl::adopt(hub_child& c) noexcept {
  c.prev = children_.prev;
  c.next = &children_;
  children_.prev->next = &c;
  children_.prev = &c;
}

void hub_impl::disown(hub_child& c) noexcept {
  if (!c.next) return;
  c.prev->next = c.next;
  c.next->prev = c.prev;
  c.prev = c.next = nullptr;
}

void hub_impl::refuse_on_hub() const {
  if (running_in_hub()) {
    throw blocking_switch_out(
        "tendril: a blocking call on the hub itself (in a link callback or the error handler); "
        "nothing could ever resume it");
  }
}

void hub_impl::park() {
  greenlet_record* self = ts_->current();
  greenlet_record* hub_rec = hub_.record();
  if (self == hub_rec) refuse_on_hub();
  self->parked = true;
  last_parked_ = self;
  // Hand-off: during a pass of the run queue, go straight to the next greenlet of the pass,
  // as the hub would have, instead of through the hub and back (one switch instead of two).
  // The pass, its order and its end stay the hub's; the resumed greenlet sees the hub as
  // the one that switched it in.
  greenlet_record* next = hub_rec;
  while (in_pass_) {
    ready_node* n = ready_.front();
    if (n == nullptr || n == &batch_end_) break;
    ready_.pop_front();
    n->list = ready_node::in_no_list;
    if (ready_to_run(n->greenlet)) {
      next = n->greenlet;
      break;
    }
  }
  switch_plan p = ts_->plan(next, nullptr, nullptr);
  if (next != hub_rec) {
    ts_->set_switched_from(hub_rec);
    ts_->set_handing_off(self);
  }
  jump_to(p);
  ts_->landed(self);
  if (abandoned_) [[unlikely]]
    resumed_after_fork(self, ts_->switched_from());
  self->parked = false;
  // last_parked_ names a greenlet only while it is parked: once resumed it may end and be
  // freed, and deliver_loop_exit() would read it (hub_test's
  // loop_exit_after_a_task_was_started_directly_reaches_the_root).
  if (last_parked_ == self) last_parked_ = nullptr;
  greenlet_record* from = ts_->switched_from();
  if (from != hub_rec) [[unlikely]] {
    // A greenlet_exit is the greenlet's own end (its last handle dropped, or a kill): it
    // goes on unwinding, as from any switch point.
    if (self->pending) {
      try {
        std::rethrow_exception(self->pending);
      } catch (const greenlet_exit&) {
        ts_->drop_inbox();  // raises it
      } catch (...) {
      }
    }
    // Anything else the intruder handed over (a value, an exception from throw_into) goes
    // with the error: it must not come out of the greenlet's next wait instead.
    ts_->clear_inbox();
    throw invalid_switch("tendril: greenlet " + quoted_name(self) +
                         " is waiting in the hub and was switched into by greenlet " +
                         quoted_name(from) + "; only the hub may resume it");
  }
  ts_->drop_inbox();
}

void hub_impl::back_in_hub() noexcept {
  // A task ends by switching to its parent, the hub: it is dead by the time the hub runs
  // again, and its owner may now let go of it (on_dead).
  greenlet_record* from = ts_->switched_from();
  if (from != nullptr && from->status == greenlet_status::dead && from->on_dead) {
    auto f = std::exchange(from->on_dead, nullptr);
    f(from);
  }
}

void hub_impl::take_inbox() {
  try {
    ts_->drop_inbox();
  } catch (const greenlet_exit&) {
    throw;  // the hub itself is being destroyed
  } catch (...) {
    // Only a greenlet whose parent is the hub and that is not a task (tasks catch
    // everything) can raise into the hub: report it like a failed task.
    try {
      report_task_error("a greenlet whose parent is the hub", std::current_exception());
    } catch (const greenlet_exit&) {
      // A handler on the hub cannot have been killed (it cannot block): it threw this itself.
    }
  }
}

void hub_impl::switch_from_hub(greenlet_record* g, std::exception_ptr error) {
  switch_plan p = ts_->plan(g, nullptr, &error);
  if (p.to != nullptr) {
    jump_to(p);
    ts_->landed(ts_->current());
    back_in_hub();
  }
  take_inbox();
}

void hub_impl::resume(greenlet_record* g) {
  if (ready_to_run(g)) switch_from_hub(g, nullptr);
}

void hub_impl::run_timers() {
  if (timers_.empty()) return;
  const std::int64_t now = hub_now_ns();
  // Timers added while these fire (with a sequence number from now on) wait for the next
  // pass, so that a timer that re-arms itself at "now" cannot keep the loop here.
  const std::uint64_t limit_seq = timers_.next_seq();
  while (!timers_.empty()) {
    timer_node* t = timers_.top();
    if (t->deadline_ns > now || t->seq >= limit_seq) break;
    timers_.pop();
    t->fire(t);
  }
}

void hub_impl::run_ready() {
  // One pass: the nodes that were ready when it started, in order; whatever becomes ready
  // meanwhile waits for the next pass, after the timers.
  schedule(batch_end_);
  batch_end_.greenlet = nullptr;
  in_pass_ = true;
  while (true) {
    // A greenlet that parks may take the next nodes of the pass itself (see park()).
    ready_node* n = ready_.pop_front();
    n->list = ready_node::in_no_list;
    if (n == &batch_end_) break;
    resume(n->greenlet);
  }
  in_pass_ = false;
}

bool other_threads_could_wake(int process_threads, std::size_t pool_workers,
                              bool on_pool_worker) noexcept {
  // Not knowing how many threads there are, assume one could (the loop looks again later).
  if (process_threads < 0) return true;
  // Another thread may set the event this thread waits on; tendril's own pool threads
  // cannot. The caller, which may be one of them, is counted once.
  const long pool_others = static_cast<long>(pool_workers) - (on_pool_worker ? 1 : 0);
  return process_threads - 1 - pool_others > 0;
}

bool hub_impl::someone_else_could_wake() const {
  if (cross_thread_waits_ == 0) return false;
  // Without a way to know who holds the event, any other thread counts.
  const auto could = [](int threads) {
    return other_threads_could_wake(threads < 0 ? threads : threads - sanitizer_threads(),
                                    thread_pool::workers(), thread_pool::on_worker());
  };
  // The cheap count first; then, if it says yes, a count without io_uring's kernel workers
  // (file_test's a_wait_nobody_can_end_gets_loop_exit_after_file_io).
  if (could(process_threads()) && could(process_user_threads())) return true;
  // Look at the remote queue again: a thread that woke a greenlet of this hub after the loop
  // last looked and ended before the count above is no longer counted, but its wake is
  // there (hub_test's many_threads_waking_greenlets_of_one_hub_lose_none caught this).
  return remote_pending_.load(std::memory_order_acquire);
}

void hub_impl::deliver_loop_exit() {
  greenlet_record* root = ts_->root();
  greenlet_record* target = root->parked ? root : last_parked_;
  if (target == nullptr || !target->parked) target = root;
  auto error = std::make_exception_ptr(loop_exit(
      "tendril: this operation would block forever: greenlet " + quoted_name(target) +
      " waits, and no ready greenlet, timer, wait on a descriptor, pool job or other thread "
      "is left to wake it"));
  interrupt_fn hook = g_interrupt.load(std::memory_order_acquire);
  if (target->parked && hook && hook(target, error)) return;
  // Nobody parked through a waiter: hand loop_exit to the root wherever it switched away.
  switch_from_hub(root, std::move(error));
}

void hub_impl::loop() {
  // Whether the backend was asked since the last pass of the run queue. A pass that follows a
  // wait which made greenlets ready needs no second look (a system call each time: one per
  // message for a server answering one connection); a pass that follows a pass looks first,
  // so that greenlets that keep each other ready cannot starve I/O.
  bool io_asked = false;
  // The hub's first run may be the end of a task started by a switch_to() by hand, which
  // must be reaped like any other (task_test's
  // a_task_started_by_hand_before_the_hub_ran_is_reaped_when_it_ends), or that of a plain
  // child that threw, which is reported as any later one is (hub_test's
  // a_greenlet_that_throws_into_the_hub_is_reported_whatever_the_hub_was_doing).
  back_in_hub();
  take_inbox();
  while (true) {
    ts_->run_deferred();
    run_timers();
    run_remote();
    if (!ready_.empty()) {
      if (!io_asked && io_->watching() + io_->in_flight() > 0) wait_io(std::chrono::nanoseconds(0));
      io_asked = false;
      run_ready();
      continue;
    }
    if (draining_ && children_.next == &children_ && !any_parked()) {
      drained();
      continue;
    }
    // While the thread ends, a wait that only I/O or another thread could end (a cleanup
    // that waits without a time limit) might never end: once no timer, pool job or
    // uninterruptible wait is left that will end by itself, those waits get loop_exit
    // (hub_test's an_ending_thread_ends_a_cleanup_wait_nothing_bounded_would_end). Not
    // before: a kill or join in a cleanup waits for a greenlet the drain is unwinding.
    if (draining_ && timers_.empty() && pool_jobs_ == 0 && shielded_waits_ == 0 &&
        end_unbounded_waits()) {
      continue;
    }
    std::int64_t timeout = -1;
    if (!timers_.empty()) {
      const std::int64_t now = hub_now_ns();
      const std::int64_t due = timers_.top_deadline();
      timeout = due > now ? due - now : 0;
    }
    if (timeout < 0 && descriptor_waits_ == 0 && io_->in_flight() == 0 && pool_jobs_ == 0 &&
        !remote_pending_.load(std::memory_order_acquire)) {
      if (!someone_else_could_wake()) {
        if (draining_) {
          drained();
        } else {
          deliver_loop_exit();
        }
        continue;
      }
      timeout = recheck_ns;
    }
    if (timeout > 0 && test_clock::paused()) {
      // Paused clock: look for I/O without sleeping; if none, jump to the next timer.
      if (wait_io(std::chrono::nanoseconds(0)) > 0 || remote_pending_.load()) continue;
      if (!timers_.empty()) {
        test_clock::advance_to(timers_.top_deadline());
        continue;
      }
    }
    wait_io(std::chrono::nanoseconds(timeout));
    io_asked = true;
  }
}

int hub_impl::wait_io(std::chrono::nanoseconds timeout) noexcept {
  const int n = io_->wait(timeout);
  // Short of kernel memory (poll's ENOMEM) or resources, a wait is tried again: those pass.
  if (n < 0 && n != -EINTR && n != -ENOMEM && n != -EAGAIN) backend_wait_failed(io_->name(), -n);
  if (n == -EINTR) {
    signal_watch* w = signal_watches_;
    signal_watches_ = nullptr;
    while (w != nullptr) {
      signal_watch* next = w->next;
      w->prev = w->next = nullptr;
      w->linked = false;
      w->on_signal(w);
      w = next;
    }
  }
  return n;
}

void hub_impl::watch_signals(signal_watch& w) noexcept {
  w.prev = nullptr;
  w.next = signal_watches_;
  if (signal_watches_ != nullptr) signal_watches_->prev = &w;
  signal_watches_ = &w;
  w.linked = true;
}

void hub_impl::unwatch_signals(signal_watch& w) noexcept {
  if (!w.linked) return;
  (w.prev ? w.prev->next : signal_watches_) = w.next;
  if (w.next != nullptr) w.next->prev = w.prev;
  w.prev = w.next = nullptr;
  w.linked = false;
}

void hub_impl::drain_children() noexcept {
  // The thread is ending: ask every child (task) to stop, then let the loop run until they
  // have unwound, or until nothing could move any more. Asking one may end others or add new
  // ones (a task that never started ends at once and runs its links here): each child leaves
  // the list before it is asked, so the walk never follows a node that changed under it
  // (hub_test's an_ending_thread_whose_unstarted_task_kills_another_in_a_link_stops_both).
  hub_child asked;
  asked.next = asked.prev = &asked;
  while (children_.next != &children_) {
    hub_child& c = *children_.next;
    disown(c);
    c.prev = asked.prev;
    c.next = &asked;
    asked.prev->next = &c;
    asked.prev = &c;
    c.shutdown(&c);
  }
  while (asked.next != &asked) {
    hub_child& c = *asked.next;
    disown(c);
    adopt(c);
  }
  if (ts_->current() != ts_->root()) return;
  // Greenlets parked here that are not tasks (a plain greenlet a task switched into, one
  // whose task has ended) unwind the same way: their stacks hold sockets and memory too.
  unwind_parked();
  if (children_.next == &children_ && !any_parked()) return;
  draining_ = true;
  // A greenlet whose parent is the root ends into it, before the loop is done. What else
  // than greenlet_exit it ends with (its cleanup threw) has nowhere to go: reported as the
  // thread's end reports it for a greenlet unwound outside the hub, never lost (hub_test's
  // an_ending_thread_reports_what_a_greenlet_ending_into_the_root_throws).
  drain_over_ = false;
  while (!drain_over_) {
    try {
      ts_->switch_to(hub_.record(), {}, nullptr);
    } catch (const greenlet_exit&) {
    } catch (...) {
      report_escaped(ts_->switched_from(), std::current_exception());
    }
    // In a forked child: a cleanup forked, and its greenlet ended into the root, which
    // waited in this hub, now the parent's (hub_death_test's
    // a_cleanup_that_forked_at_its_threads_end_ending_in_the_child_stops_it).
    if (abandoned_) [[unlikely]]
      resumed_after_fork(ts_->root(), ts_->switched_from());
  }
  draining_ = false;
}

void hub_impl::drained() {
  drain_over_ = true;
  switch_from_hub(ts_->root(), nullptr);
}

namespace {

// Calls f on every greenlet of the thread that waits in its hub, but those inherited from the
// parent in a forked child (their frames' work is the parent's).
template <class F>
void for_each_parked(thread_state& ts, F f) {
  greenlet_record* const root = ts.root();
  greenlet_record* r = root->first_child;
  while (r != nullptr) {
    if (r->parked && r->status == greenlet_status::active && !ts.made_in_parent(r)) f(r);
    if (r->first_child != nullptr) {
      r = r->first_child;
      continue;
    }
    while (r != root && r->next_sibling == nullptr) r = r->parent;
    r = r != root ? r->next_sibling : nullptr;
  }
}

}  // namespace

void hub_impl::unwind_parked() noexcept {
  interrupt_fn hook = g_interrupt.load(std::memory_order_acquire);
  if (hook == nullptr) return;  // no waiter was ever made: nothing is parked
  std::exception_ptr exit;
  try {
    exit = std::make_exception_ptr(greenlet_exit{});
  } catch (...) {
    return;  // no memory: they stay parked, and their stacks leak
  }
  // Tasks were asked first (drain_children()): their waits are over already, and the hook
  // refuses a wait that is over, so none is killed twice. Interrupting runs no user code:
  // the tree does not change during the walk. One that parks later without having been
  // asked gets greenlet_exit at that wait (waiter::wait()).
  for_each_parked(*ts_, [&](greenlet_record* r) {
    if (hook(r, exit)) r->asked_to_end = true;
  });
}

bool hub_impl::end_unbounded_waits() noexcept {
  interrupt_fn hook = g_interrupt.load(std::memory_order_acquire);
  if (hook == nullptr) return false;
  bool ended = false;
  // Interrupting runs no user code: the tree does not change during the walk.
  for_each_parked(*ts_, [&](greenlet_record* r) {
    std::exception_ptr e;
    try {
      e = std::make_exception_ptr(
          loop_exit("tendril: greenlet " + quoted_name(r) +
                    " blocked while its thread was ending; the hub is unwinding the thread's "
                    "greenlets and nothing will wake it"));
    } catch (...) {
      return;  // no memory: it stays parked
    }
    if (hook(r, e)) ended = true;
  });
  return ended;
}

bool hub_impl::any_parked() const noexcept {
  bool found = false;
  for_each_parked(*ts_, [&](greenlet_record*) { found = true; });
  return found;
}

void hub_impl::set_error_handler(tendril::hub::error_handler h) {
  on_error_ = h ? std::make_shared<tendril::hub::error_handler>(std::move(h)) : nullptr;
}

void hub_impl::report_task_error(const std::string& task_name, std::exception_ptr error,
                                 claim_fn claim) {
  if (on_error_) {
    // Held, not copied: the handler may replace itself, or block while another greenlet
    // replaces it, and must not be destroyed under its own feet (task_test's
    // an_error_handler_replaced_while_it_runs_keeps_its_state_until_it_returns); a copy would
    // lose what it changes in its own state (a counter of the reports so far).
    try {
      const std::shared_ptr<tendril::hub::error_handler> handler = on_error_;
      (*handler)(task_name, error);
      return;
    } catch (const greenlet_exit&) {
      throw;
    } catch (...) {
      if (claim != nullptr && claim(std::current_exception())) return;
      std::fprintf(stderr, "tendril: the hub's error handler threw while reporting task '%s'\n",
                   task_name.c_str());
    }
  }
  std::string what = "an exception that is not a std::exception";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  std::fprintf(stderr, "tendril: task '%s' failed: %s\n", task_name.c_str(), what.c_str());
}

std::unique_ptr<backend> make_backend() {
  const char* want = std::getenv("TENDRIL_BACKEND");
  if (want == nullptr || *want == '\0') {
#if TENDRIL_HAS_IO_URING
    // The best the kernel allows: io_uring unless it is refused (an old kernel, a seccomp
    // filter, kernel.io_uring_disabled), then epoll.
    try {
      return make_uring_backend();
    } catch (const std::system_error&) {
    }
#endif
    return make_epoll_backend();
  }
  if (std::strcmp(want, "epoll") == 0) return make_epoll_backend();
  if (std::strcmp(want, "poll") == 0) return make_poll_backend();
  if (std::strcmp(want, "io_uring") == 0) {
#if TENDRIL_HAS_IO_URING
    try {
      return make_uring_backend();
    } catch (const std::system_error& e) {
      throw std::system_error(e.code(),
                              "tendril: TENDRIL_BACKEND=io_uring, but the kernel refuses io_uring");
    }
#else
    throw std::invalid_argument(
        "tendril: TENDRIL_BACKEND=io_uring, but this build of tendril has no io_uring support");
#endif
  }
  throw std::invalid_argument(std::string("tendril: TENDRIL_BACKEND='") + want +
                              "' is not a backend (epoll, io_uring, poll)");
}

}  // namespace detail
}  // namespace tendril
