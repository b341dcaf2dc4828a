#include "greenlet/thread_state.hpp"

#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <mutex>

#include "context/overflow.hpp"
#include "context/sanitizer.hpp"

namespace tendril::detail {

constinit thread_local thread_core* t_thread_core __attribute__((tls_model("initial-exec"))) =
    nullptr;

namespace {

thread_local bool t_gone = false;

std::atomic<std::uint64_t> g_next_id_block{1};
thread_local std::uint64_t t_next_id = 0;
thread_local std::uint64_t t_id_end = 0;

[[noreturn]] void fatal_used_during_thread_exit() {
  std::fputs("tendril: greenlets used after their thread's state was torn down\n", stderr);
  std::abort();
}

// Writes the decimal digits of v at buf, returns the end.
char* put_number(char* buf, char* end, std::uint64_t v) noexcept {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0 && buf < end) *buf++ = digits[--n];
  return buf;
}

char* put_text(char* buf, char* end, const char* s) noexcept {
  while (*s && buf < end) *buf++ = *s++;
  return buf;
}

// Inside the SIGSEGV handler: is addr the guard of the stack this thread runs on? That is the
// running greenlet's, or, during a switch, the one being left: the target is current before
// the jump, which still pushes onto the stack it leaves (the hub's hand-offs name the hub as
// the switcher: the one left is handing_off()). Records destroyed since are forgotten.
bool describe_overflow(const void* addr, char* buf, std::size_t len) noexcept {
  thread_state* ts = thread_state::peek();
  if (ts == nullptr || len == 0) return false;
  greenlet_record* cur = nullptr;
  for (greenlet_record* r : {ts->current(), ts->switched_from(), ts->handing_off()}) {
    if (r != nullptr && stack_pool::in_guard(r->stk, addr)) {
      cur = r;
      break;
    }
  }
  if (cur == nullptr) return false;
  char* end = buf + len - 1;
  char* p = buf;
  // As record_name() names it, without allocating (a task: "Greenlet-N").
  if (cur->name) {
    p = put_text(p, end, cur->name->c_str());
  } else if (cur->name_prefix) {
    p = put_text(p, end, cur->name_prefix);
    p = put_number(p, end, cur->name_number);
  } else {
    p = put_text(p, end, "greenlet-");
    p = put_number(p, end, cur->id);
  }
  *p = '\0';
  return true;
}

}  // namespace

std::uint64_t next_greenlet_id() noexcept {
  if (t_next_id == t_id_end) {
    constexpr std::uint64_t block = 1024;
    t_next_id = g_next_id_block.fetch_add(block, std::memory_order_relaxed);
    t_id_end = t_next_id + block;
  }
  return t_next_id++;
}

struct thread_state::holder {
  thread_state* ts = nullptr;
  ~holder() {
    if (ts) ts->exit_thread();
  }
};

thread_state& thread_state::make_for_this_thread() {
  if (t_gone) fatal_used_during_thread_exit();
  static std::once_flag at_fork;
  std::call_once(at_fork, [] { pthread_atfork(nullptr, nullptr, &forget_after_fork); });
  thread_local holder h;
  auto* ts = new thread_state();
  h.ts = ts;
  t_thread_core = ts;
  overflow::install(&describe_overflow);
  overflow::ensure_signal_stack();
  return *ts;
}

void thread_state::forget_after_fork() noexcept {
  if (thread_state* ts = peek()) ts->first_own_id_ = next_greenlet_id();
}

thread_state::thread_state() {
  eh_ = thread_eh_globals();
  errno_ = &errno;
  tid_ = static_cast<int>(gettid());
  root_ = new greenlet_record;
  root_->is_root = true;
  root_->status = greenlet_status::active;
  root_->owner = this;
  refs_.fetch_add(1, std::memory_order_relaxed);  // the root's reference
  root_->id = next_greenlet_id();
#if defined(TENDRIL_HAS_TSAN)
  root_->tsan_fiber = sanitizer::tsan_current();
#endif
  current_ = root_;
  from_ = root_;
}

thread_state::~thread_state() = default;

void thread_state::release() noexcept {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

#if defined(TENDRIL_HAS_ASAN)
void thread_state::asan_landed(greenlet_record* self) noexcept {
  const void* left_bottom = nullptr;
  std::size_t left_size = 0;
  sanitizer::asan_finish_switch(self->asan_fake_stack, &left_bottom, &left_size);
  // The first switch away from the root teaches us the bounds of the thread's own stack,
  // which ASan needs when something switches back to it.
  if (root_asan_bottom_ == nullptr && left_bottom != nullptr && self != root_) {
    root_asan_bottom_ = left_bottom;
    root_asan_size_ = left_size;
  }
}
#endif

void thread_state::raise_pending(greenlet_record* self) {
  std::exception_ptr e = std::move(self->pending);
  self->pending = nullptr;
  self->inbox.reset();
  std::rethrow_exception(std::move(e));
}

namespace {

struct death_note {
  greenlet_record* dead;
  greenlet_record* next;
};

// Runs on the successor's stack, right after the jump away from the dead greenlet.
void* after_death(void* p) {
  death_note note = *static_cast<death_note*>(p);  // p lies on the stack released below
  greenlet_record* r = note.dead;
  stack_pool::release(r->stk);
  r->stk = {};
#if defined(TENDRIL_HAS_TSAN)
  sanitizer::tsan_destroy(r->tsan_fiber);
  r->tsan_fiber = nullptr;
#endif
  r->ctx = nullptr;
  // The argument of entry, if the successor had not started. Never null, so a successor
  // suspended in an inline switch lands out of line, where its errno (which the release
  // above may have changed) and exception state are put back (switch_core.hpp).
  return note.next;
}

}  // namespace

void thread_state::start_lazy(greenlet_record* r) noexcept {
  if (greenlet_prepare_stack(r) == 0) return;
  std::fprintf(stderr,
               "tendril: no memory for the stack of greenlet '%s', which had to start to receive "
               "a switch or the end of a child\n",
               record_name(r).c_str());
  std::abort();
}

void thread_state::finish(greenlet_record* self, std::any&& result,
                          std::exception_ptr&& error) noexcept {
  self->status = greenlet_status::dead;
  self->inbox.reset();
  if (self->eh_kept) {  // a dead greenlet keeps nothing (thread_core::slow_)
    self->eh_kept = false;
    self->eh = {};
    slow_.fetch_sub(1, std::memory_order_relaxed);
  }
  greenlet_record* next = self->parent;
  while (next->status == greenlet_status::dead) next = next->parent;
  // A lazy ancestor (a task's greenlet that has not run yet) starts with the result.
  if (next->ctx == nullptr) [[unlikely]]
    start_lazy(next);
  next->status = greenlet_status::active;
  next->inbox = std::move(result);
  next->pending = std::move(error);
  current_ = next;
  from_ = self;
  death_note note{self, next};
  note_leaving(self, next, true);
  context::ontop(&self->ctx, next->ctx, &note, &after_death);
  std::abort();  // a dead greenlet is never resumed
}

void thread_state::defer_destruction(greenlet_record* r) noexcept {
  {
    std::lock_guard lock(deferred_mu_);
    if (!exited_.load(std::memory_order_relaxed)) {
      try {
        deferred_.push_back(r);
        slow_.fetch_or(deferred_bit, std::memory_order_release);
        return;
      } catch (const std::bad_alloc&) {
        std::fprintf(
            stderr,
            "tendril: out of memory queueing greenlet '%s' for unwinding; its stack is leaked\n",
            record_name(r).c_str());
        return;
      }
    }
  }
  // Its thread is gone: nothing can run its frames.
  if (r->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy_record(r);
}

void thread_state::run_deferred_slow() noexcept {
  std::vector<greenlet_record*> todo;
  {
    std::lock_guard lock(deferred_mu_);
    todo.swap(deferred_);
    slow_.fetch_and(~deferred_bit, std::memory_order_relaxed);
  }
  for (greenlet_record* r : todo) greenlet_release(r);  // drops the queue's reference
}

void thread_state::exit_thread() noexcept {
  // From anywhere but the root (exit() called in a greenlet) nothing is unwound: the
  // greenlets that lead to the running one wait in the middle of their switches.
  if (current_ == root_) unwind_at_exit(*this);
  run_deferred();
  std::vector<greenlet_record*> left;
  {
    std::lock_guard lock(deferred_mu_);
    exited_.store(true, std::memory_order_release);
    left.swap(deferred_);
  }
  for (greenlet_record* r : left) {
    if (r->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy_record(r);
  }
  if (root_->locals) run_locals_cleanup(root_);
  t_thread_core = nullptr;
  t_gone = true;
  root_->status = greenlet_status::dead;
  greenlet_release(root_);
  release();
}

void link_child(greenlet_record* parent, greenlet_record* child) noexcept {
  child->parent = parent;
  child->prev_sibling = nullptr;
  child->next_sibling = parent->first_child;
  if (parent->first_child) parent->first_child->prev_sibling = child;
  parent->first_child = child;
}

void unlink_child(greenlet_record* child) noexcept {
  greenlet_record* parent = child->parent;
  if (parent == nullptr) return;
  if (child->prev_sibling) {
    child->prev_sibling->next_sibling = child->next_sibling;
  } else {
    parent->first_child = child->next_sibling;
  }
  if (child->next_sibling) child->next_sibling->prev_sibling = child->prev_sibling;
  child->parent = child->next_sibling = child->prev_sibling = nullptr;
}

void destroy_record(greenlet_record* r) noexcept {
  if (r->status == greenlet_status::unstarted && r->callable) r->ops->destroy(r->callable);
  if (r->stk) stack_pool::release(r->stk);
#if defined(TENDRIL_HAS_TSAN)
  if (!r->is_root) sanitizer::tsan_destroy(r->tsan_fiber);
#endif
  thread_state* owner = owner_of(r);
  // The overflow report and the hub read the switcher through the thread's state.
  if (owner != nullptr && owner == thread_state::peek()) owner->forget(r);
  // Its children now go where it would have sent them: its parent (python's "switching to a
  // dead greenlet goes to its parent" becomes permanent). A thread that ended runs nothing
  // any more, so its records' links no longer matter and are left alone.
  if (owner == nullptr || !owner->exited()) {
    greenlet_record* up = r->parent;
    while (greenlet_record* c = r->first_child) {
      unlink_child(c);
      if (up) link_child(up, c);
    }
    unlink_child(r);
  }
  if (r->extra_destroy) r->extra_destroy(reinterpret_cast<char*>(r) + record_extra_offset);
  const std::size_t align = r->block_align;
  r->~greenlet_record();
  if (align) {
    ::operator delete (r, std::align_val_t{align});
  } else {
    ::operator delete(r);
  }
  if (owner) owner->release();
}

namespace {
std::atomic<locals_cleanup_fn> g_locals_cleanup{nullptr};
}  // namespace

void set_locals_cleanup(locals_cleanup_fn f) noexcept {
  g_locals_cleanup.store(f, std::memory_order_release);
}

void run_locals_cleanup(greenlet_record* r) noexcept {
  if (locals_cleanup_fn f = g_locals_cleanup.load(std::memory_order_acquire)) f(r);
}

}  // namespace tendril::detail
