// The hub of one OS thread: a greenlet that runs the loop, resuming parked greenlets when
// what they wait for happens. Private to the hub layer and the layers above.
//
// Invariants (asserted where they can break):
//  1. Only the hub resumes a parked greenlet: park() raises invalid_switch in a greenlet
//     that something else switched into (in a forked child, where the parent's hub is
//     abandoned, it stops the process: the parent's greenlets never run there).
//  2. A ready node is in at most one list (the run queue or the remote queue), and only
//     while its greenlet is parked and will stay parked until the hub resumes it.
//  3. Nodes that became ready run in the order they became ready; each loop pass first
//     fires due timers, so a greenlet that keeps yielding cannot starve a timer.
//  4. The hub never blocks while a greenlet is ready, and never waits forever while nothing
//     at all could wake a parked greenlet: it raises loop_exit instead.
//  5. Everything here runs on the hub's own thread, except schedule_remote() and wake().
#ifndef TENDRIL_SRC_HUB_HUB_IMPL_HPP
#define TENDRIL_SRC_HUB_HUB_IMPL_HPP

#include <atomic>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <string>

#include "greenlet/thread_state.hpp"
#include "hub/backend.hpp"
#include "hub/timer_heap.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "tendril/hub/hub.hpp"
#include "tendril/hub/nodes.hpp"

namespace tendril::detail {

// An intrusive FIFO of ready nodes: a circular doubly linked list through a sentinel.
class node_list {
 public:
  node_list() noexcept { head_.next = head_.prev = &head_; }
  node_list(const node_list&) = delete;
  node_list& operator=(const node_list&) = delete;

  bool empty() const noexcept { return head_.next == &head_; }
  std::size_t size() const noexcept { return size_; }
  ready_node* front() const noexcept { return empty() ? nullptr : head_.next; }

  void push_back(ready_node& n) noexcept {
    n.prev = head_.prev;
    n.next = &head_;
    head_.prev->next = &n;
    head_.prev = &n;
    ++size_;
  }
  void remove(ready_node& n) noexcept {
    n.prev->next = n.next;
    n.next->prev = n.prev;
    n.prev = n.next = nullptr;
    --size_;
  }
  ready_node* pop_front() noexcept {
    ready_node* n = head_.next;
    remove(*n);
    return n;
  }
  // splice_back() moves every node of `other` to the end of this list.
  void splice_back(node_list& other) noexcept {
    while (!other.empty()) push_back(*other.pop_front());
  }

 private:
  ready_node head_;
  std::size_t size_ = 0;
};

// The sync layer's way to raise an exception in a greenlet parked in the hub (through its
// waiter); the hub uses it to deliver loop_exit. Returns false if g is not parked there.
using interrupt_fn = bool (*)(greenlet_record* g, std::exception_ptr error);

// A greenlet's interest in signal handlers that run on its hub's thread: the hooked sleep
// family (L5) returns early with EINTR when one runs while it sleeps, as libc's does. The hub
// sees a handler run when it interrupts the backend's wait; it then unlinks every watch and
// calls its on_signal, on the hub.
struct signal_watch {
  void (*on_signal)(signal_watch* self) noexcept = nullptr;
  signal_watch* prev = nullptr;
  signal_watch* next = nullptr;
  bool linked = false;
};

// other_threads_could_wake() is the loop's guess whether a thread other than the caller
// might still end a cross-thread wait: process_threads is the process's thread count, less
// sanitizer_threads() (-1 if unknown), pool_workers the thread pool's threads (which never
// do), on_pool_worker whether the caller is one of those. Switches: no.
bool other_threads_could_wake(int process_threads, std::size_t pool_workers,
                              bool on_pool_worker) noexcept;

// sanitizer_threads() is how many of the process's threads a sanitizer's runtime keeps for
// itself (ThreadSanitizer's one, 0 or 1): they never wake anyone. Switches: no.
int sanitizer_threads() noexcept;

class hub_impl {
 public:
  // current() is the calling thread's hub, made on first use; peek() does not make one.
  static hub_impl& current() {
    hub_impl* h = t_hub_;
    return h ? *h : make_for_this_thread();
  }
  static hub_impl* peek() noexcept { return t_hub_; }
  // end_tasks() asks every task still alive on this thread to stop and unwinds every other
  // greenlet parked here, and lets them end (as the hub's destruction does): for what must go
  // after them at thread exit and before the hub (the descriptor table, whose records parked
  // greenlets unlink themselves from).
  void end_tasks() noexcept { drain_children(); }
  // ending() tells whether the hub is unwinding its thread's greenlets as the thread ends:
  // then nothing wakes a new wait, and the waiter refuses it with loop_exit.
  bool ending() const noexcept { return draining_; }
  // forget_after_fork() leaves the parent's hub and thread pool behind in a forked child;
  // the greenlet that forked then ends into the root. A pthread_atfork child handler,
  // registered when the process's first hub is made. The root, if it waited in the parent's
  // hub, never runs again: the greenlet that forked ending into it stops the process.
  static void forget_after_fork() noexcept;

  tendril::hub& facade() noexcept { return facade_; }
  backend& io() noexcept { return *io_; }
  thread_state& threads() noexcept { return *ts_; }
  greenlet_record* greenlet() const noexcept { return hub_.record(); }
  bool running_in_hub() const noexcept { return ts_->current() == hub_.record(); }

  // schedule() appends n (n.greenlet set, parked) to the run queue; unschedule() takes it
  // back out of whichever queue holds it. Hub thread only.
  void schedule(ready_node& n) noexcept {
    n.list = ready_node::in_run_queue;
    ready_.push_back(n);
  }
  void unschedule(ready_node& n) noexcept;
  // schedule_remote() is schedule() from any thread: the node goes to a locked queue that
  // the hub moves to its run queue at its next pass, and the hub is woken.
  void schedule_remote(ready_node& n) noexcept;

  // Timers: t.deadline_ns and t.fire set. add_timer() throws std::bad_alloc.
  void add_timer(timer_node& t) { timers_.push(t); }
  void cancel_timer(timer_node& t) noexcept { timers_.remove(t); }

  // park() suspends the current greenlet until the hub resumes it. Throws
  // blocking_switch_out when called on the hub itself, invalid_switch when something other
  // than the hub switched the greenlet back in. Switches: yes.
  void park();
  // refuse_on_hub() throws what park() would on the hub itself, for a caller that must know
  // before it starts what it then parks for (an io_uring operation).
  void refuse_on_hub() const;

  // Children: things the hub stops when it goes away (tasks).
  void adopt(hub_child& c) noexcept;
  void disown(hub_child& c) noexcept;

  // Loop-exit accounting: waits that a thread other than this one might end (on an event,
  // an async_result, a semaphore), jobs handed to the thread pool, and greenlets parked
  // until a descriptor is ready (counted by the I/O layer: readers, writers, the hooks'
  // poll() and select()). A watch alone does not count: epoll and poll keep a descriptor
  // watched for its whole life once waited on, and an idle one wakes nobody.
  void add_cross_thread_waits(int delta) noexcept { cross_thread_waits_ += delta; }
  // Waits that cannot be interrupted (an io_uring operation's cancellation), which the end of
  // the thread lets finish before it ends the waits nothing bounded could end.
  void add_shielded_waits(int delta) noexcept { shielded_waits_ += delta; }
  void add_pool_jobs(int delta) noexcept { pool_jobs_ += delta; }
  void add_descriptor_waits(int delta) noexcept { descriptor_waits_ += delta; }

  static void set_interrupt_hook(interrupt_fn f) noexcept;
  // The layer above's way to fail a greenlet the hub could not start (no memory for the
  // stack of a lazy greenlet): it must end it without running it.
  using start_failed_fn = void (*)(greenlet_record* g, int err) noexcept;
  static void set_start_failed_hook(start_failed_fn f) noexcept;

  void set_error_handler(tendril::hub::error_handler h);
  // report_task_error() calls the error handler (on the greenlet that failed, or on the hub
  // for a greenlet that is not a task). It throws only a greenlet_exit that ended the handler
  // (it may block, and its greenlet be killed meanwhile). What else ends the handler is
  // reported and dropped, unless claim (given when the handler runs on another greenlet)
  // takes it as that greenlet's own interrupt.
  using claim_fn = bool (*)(const std::exception_ptr& e) noexcept;
  void report_task_error(const std::string& task_name, std::exception_ptr error,
                         claim_fn claim = nullptr);

  // watch_signals() / unwatch_signals(): see signal_watch. Hub's thread.
  void watch_signals(signal_watch& w) noexcept;
  void unwatch_signals(signal_watch& w) noexcept;

  ~hub_impl();

 private:
  hub_impl();
  static hub_impl& make_for_this_thread();
  struct holder;

  void loop();
  void run_timers();
  void run_remote();
  void run_ready();
  void resume(greenlet_record* g);
  // switch_from_hub() switches the hub to g, handing it error if not null, and once back
  // takes the inbox (take_inbox()). Every switch of the loop away from the hub goes through
  // it, so that a child's exception is reported wherever the hub waits. Throws only the
  // greenlet_exit that destroys the hub.
  void switch_from_hub(greenlet_record* g, std::exception_ptr error);
  // take_inbox() drops what was handed to the hub and reports an exception a plain child
  // ended with through the error handler.
  void take_inbox();
  // ready_to_run() makes sure g can be switched to (a lazy greenlet gets its stack now);
  // false if g is dead or could not be given a stack (then it was failed).
  bool ready_to_run(greenlet_record* g) noexcept;
  void back_in_hub() noexcept;
  // wait_io() is the backend's wait; a signal handler that interrupted it ends the watches.
  int wait_io(std::chrono::nanoseconds timeout) noexcept;
  bool someone_else_could_wake() const;
  void deliver_loop_exit();
  void drain_children() noexcept;
  // unwind_parked() raises greenlet_exit in every greenlet of the thread parked here whose
  // wait can be interrupted; any_parked() tells whether one is still parked. Hub's thread.
  void unwind_parked() noexcept;
  bool any_parked() const noexcept;
  // end_unbounded_waits() raises loop_exit in every greenlet of the thread parked here whose
  // wait can be interrupted; true if it raised it in any. For the end of the thread, once
  // nothing bounded is left that could end those waits.
  bool end_unbounded_waits() noexcept;
  // drained() is the loop's end of a drain: nothing is left, or nothing could move any more.
  void drained();
  // abandon() disarms the timers and empties the queues of the parent's hub in a forked child.
  void abandon() noexcept;
  // close_backend() takes the hub off the process's list of hubs and closes its backend.
  void close_backend() noexcept;

  static constinit thread_local hub_impl* t_hub_ __attribute__((tls_model("initial-exec")));
  static constinit thread_local hub_impl** t_holder_h_;

  thread_state* ts_;
  tendril::hub facade_;
  std::unique_ptr<backend> io_;
  // The process's list of hubs (hub.cpp's g_hubs), with what a forked child closes of io_.
  hub_impl* prev_hub_ = nullptr;
  hub_impl* next_hub_ = nullptr;
  backend_resources io_resources_;
  tendril::greenlet hub_;
  timer_heap timers_;
  node_list ready_;
  ready_node batch_end_;  // marks the end of the current pass of the run queue

  std::mutex remote_mu_;
  node_list remote_;
  std::atomic<bool> remote_pending_{false};

  signal_watch* signal_watches_ = nullptr;
  greenlet_record* last_parked_ = nullptr;
  int cross_thread_waits_ = 0;
  int shielded_waits_ = 0;
  int pool_jobs_ = 0;
  int descriptor_waits_ = 0;

  hub_child children_;  // sentinel of a circular list
  bool draining_ = false;
  bool drain_over_ = false;  // set by drained(); the root may be resumed by something else
  bool in_pass_ = false;     // run_ready() is under way: park() may hand off within the pass
  bool abandoned_ = false;   // the parent's hub, in a forked child
  // Shared: a call holds it while it runs (see report_task_error()).
  std::shared_ptr<tendril::hub::error_handler> on_error_;
};

}  // namespace tendril::detail

#endif
