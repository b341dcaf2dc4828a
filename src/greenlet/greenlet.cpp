#include "tendril/greenlet/greenlet.hpp"

#include <unistd.h>

#if defined(__GLIBCXX__)
#include <cxxabi.h>
#endif
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <vector>

#include "context/sanitizer.hpp"
#include "context/stack_pool.hpp"
#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"
#include "tendril/greenlet/generator.hpp"

namespace tendril {
namespace detail {
namespace {

std::string quoted(const greenlet_record* r) { return "'" + record_name(r) + "'"; }

[[noreturn]] void throw_wrong_thread(const char* what, const greenlet_record* target,
                                     const thread_state& here) {
  throw wrong_thread(std::string("tendril: cannot ") + what + " greenlet " + quoted(target) +
                     " of thread " + std::to_string(owner_of(target)->tid()) + " from greenlet " +
                     quoted(here.current()) + " of thread " + std::to_string(here.tid()));
}

thread_state& owner_thread(const char* what, const greenlet_record* r) {
  if (r == nullptr) {
    throw greenlet_error(std::string("tendril: cannot ") + what + " an empty greenlet handle");
  }
  thread_state& ts = thread_state::get();
  if (r->owner != &ts) throw_wrong_thread(what, r, ts);
  return ts;
}

// pthread_exit() and thread cancellation unwind the thread's stack with an exception that
// must be rethrown; it cannot go on past the greenlet's own stack, whose bottom is not the
// thread's. (Its frames have been unwound by then.)
[[noreturn]] void fatal_thread_exit_inside(const greenlet_record* r) {
  std::fprintf(stderr,
               "tendril: pthread_exit() or thread cancellation inside greenlet '%s': it cannot "
               "unwind the thread past the greenlet's own stack (end the thread from its root "
               "greenlet)\n",
               record_name(r).c_str());
  std::abort();
}

// The body of every greenlet: it runs on the greenlet's own stack, from the trampoline of
// its made context, and leaves through finish(). (The forced unwind has no object, which
// UBSan's null check would report when the catch clause binds its reference.)
__attribute__((no_sanitize("undefined"))) void greenlet_entry(void*) {
  thread_state& ts = *thread_state::peek();
  greenlet_record* self = ts.current();
  ts.landed(self);
  std::any result;
  std::exception_ptr error;
  if (self->pending && !self->refuses_thrown) {
    // Started by a descendant that died with an exception: it goes on up, run never runs.
    // (A greenlet that refuses thrown exceptions, the hub, runs with it pending: its run
    // takes it, as from any of its switches.)
    error = std::move(self->pending);
    self->pending = nullptr;
  } else {
    try {
      // Out of the inbox first: a run that takes no value (or a const reference) would leave
      // it there, and the greenlet's next switch_to() would return it again.
      std::any first = std::move(self->inbox);
      self->inbox.reset();
      result = self->ops->invoke(self->callable, std::move(first));
    } catch (const greenlet_exit& e) {
      result = e;
#if defined(__GLIBCXX__)
    } catch (abi::__forced_unwind&) {
      fatal_thread_exit_inside(self);
#endif
    } catch (...) {
      error = std::current_exception();
    }
  }
  if (self->locals) run_locals_cleanup(self);
  self->ops->destroy(self->callable);
  self->callable = nullptr;
  ts.finish(self, std::move(result), std::move(error));
}

bool is_greenlet_exit(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const greenlet_exit&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

void report_escaped(const greenlet_record* r, const std::exception_ptr& e) noexcept {
  std::string what = "an exception that is not a std::exception";
  std::string name = "(one that has ended since)";
  try {
    if (r != nullptr) name = "'" + record_name(r) + "'";
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    what = ex.what();
  } catch (...) {
  }
  std::fprintf(stderr, "tendril: greenlet %s raised while it was being destroyed: %s\n",
               name.c_str(), what.c_str());
}

namespace {

// unwind() raises greenlet_exit in r, a suspended greenlet of this thread, with the current
// greenlet as its parent so that control comes back here. Returns whether r ended.
bool unwind(thread_state& ts, greenlet_record* r) noexcept {
  // Its own parent comes back afterwards, so that its children go there, as they would have
  // (python's greenlet does the same), and so that no cycle of parents outlives the kill: the
  // killer may be r's own descendant (a child that dropped r's last handle), which would
  // otherwise become its own parent when r goes, and its end would loop for ever. The
  // reference keeps that parent alive meanwhile.
  greenlet_record* const killer = ts.current();
  greenlet_record* const parent = r->parent;
  if (parent != nullptr) greenlet_retain(parent);
  unlink_child(r);
  link_child(killer, r);
  // r's frames may drop the killer's last handle: the killer is unwound only once r has
  // ended into it (greenlet_release() queues it meanwhile), or greenlet_exit would cut short
  // its wait here.
  ++killer->killing;
  try {
    ts.switch_to(r, {}, std::make_exception_ptr(greenlet_exit{}));
  } catch (...) {
    report_escaped(r, std::current_exception());
  }
  --killer->killing;
  if (parent != nullptr) {
    unlink_child(r);
    link_child(parent, r);
    greenlet_release(parent);
  }
  if (r->status == greenlet_status::dead) return true;
  // It caught greenlet_exit and switched away instead of ending. Nothing can resume it for
  // good; keep its memory rather than free a stack still in use, and never unwind it again.
  r->resisted = true;
  std::fprintf(stderr,
               "tendril: greenlet '%s' did not end when it was destroyed (it caught "
               "greenlet_exit and switched away); its stack is leaked\n",
               record_name(r).c_str());
  return false;
}

// The last reference to a suspended greenlet of this thread went away.
void kill_for_destruction(thread_state& ts, greenlet_record* r) noexcept {
  if (r->resisted) return;                      // reported once, its stack leaked
  r->refs.store(1, std::memory_order_relaxed);  // ours, while it unwinds
  if (unwind(ts, r)) greenlet_release(r);
}

}  // namespace

void greenlet_end_now(greenlet_record* r) noexcept {
  thread_state& ts = *owner_of(r);
  if (r->status == greenlet_status::unstarted) {
    greenlet_discard_unstarted(r);
    return;
  }
  if (r->status != greenlet_status::active || r->resisted || r == ts.current()) return;
  greenlet_retain(r);  // ours, while it unwinds
  static_cast<void>(unwind(ts, r));
  greenlet_release(r);
}

namespace {

// The next record after r in a walk of the tree of children under root (children first).
greenlet_record* next_in_tree(greenlet_record* r, const greenlet_record* root) noexcept {
  if (r->first_child) return r->first_child;
  for (; r != root; r = r->parent) {
    if (r->next_sibling) return r->next_sibling;
  }
  return nullptr;
}

// prepare_destination() gives the greenlet a switch to `target` lands in (its first live
// ancestor if it is dead) its stack, if it is lazy, so that no switch has to fail later.
// Throws std::system_error (ENOMEM).
void prepare_destination(greenlet_record* target) {
  greenlet_record* to = target;
  while (to->status == greenlet_status::dead) to = to->parent;
  if (int err = greenlet_prepare_stack(to); err != 0) {
    throw std::system_error(
        err, std::generic_category(),
        "tendril::greenlet: no memory for the stack of greenlet '" + record_name(to) + "'");
  }
}

}  // namespace

void unwind_at_exit(thread_state& ts) noexcept {
  greenlet_record* const root = ts.root();
  std::vector<greenlet_record*> left;
  for (;;) {
    ts.run_deferred();
    try {
      for (greenlet_record* r = next_in_tree(root, root); r; r = next_in_tree(r, root)) {
        // Not one parked in the hub, which is gone by now: its wait would resume in it. Nor,
        // in a forked child, one of the parent's: their frames' work is the parent's.
        if (r->status != greenlet_status::active || r->parked || r->resisted ||
            ts.made_in_parent(r))
          continue;
        left.push_back(r);
        greenlet_retain(r);  // unwinding one may drop another's last handle
      }
    } catch (const std::bad_alloc&) {
      // Those found so far are unwound; the rest stay as they are.
    }
    if (left.empty()) return;
    for (greenlet_record* r : left) {
      if (r->status == greenlet_status::active) static_cast<void>(unwind(ts, r));
    }
    for (greenlet_record* r : left) greenlet_release(r);
    left.clear();
  }
}

namespace {
// Guards every record's `name`: name() may read it on any thread while set_name() replaces
// it on the owner thread. One lock for all: names are read for messages only. (The overflow
// handler reads it unlocked, on the owner thread: set_name() frees the old string only after
// the swap.)
std::mutex g_names_mu;
}  // namespace

std::string record_name(const greenlet_record* r) {
  {
    std::lock_guard lock(g_names_mu);
    if (r->name) return *r->name;
  }
  if (r->name_prefix) return r->name_prefix + std::to_string(r->name_number);
  if (r->is_root) {
    if (r->owner && owner_of(r)->tid() == static_cast<int>(getpid())) return "main";
    return "root-" + std::to_string(r->owner ? owner_of(r)->tid() : 0);
  }
  return "greenlet-" + std::to_string(r->id);
}

greenlet_record* greenlet_create(std::size_t callable_size, std::size_t callable_align,
                                 const callable_ops* ops, const greenlet* parent,
                                 std::size_t stack_bytes, void** storage) {
  greenlet_record* p = nullptr;
  if (parent) {
    if (parent->empty()) {
      throw greenlet_error("tendril::greenlet: the parent is an empty greenlet handle");
    }
    p = parent->record();
  }
  void* extra = nullptr;
  return greenlet_create_ex(callable_size, callable_align, ops, p, stack_bytes, 0, nullptr, storage,
                            &extra, false);
}

greenlet_record* greenlet_create_ex(std::size_t callable_size, std::size_t callable_align,
                                    const callable_ops* ops, greenlet_record* parent,
                                    std::size_t stack_bytes, std::size_t extra_size,
                                    void (*extra_destroy)(void*), void** storage, void** extra,
                                    bool lazy_stack) {
  thread_state& ts = thread_state::get();
  ts.run_deferred();
  const std::size_t want = stack_bytes ? stack_bytes : default_stack_size;
  if (want < min_stack_size) [[unlikely]] {
    throw std::invalid_argument("tendril::greenlet: a stack of " + std::to_string(want) +
                                " bytes is below the minimum of " + std::to_string(min_stack_size) +
                                " bytes (tendril::min_stack_size)");
  }
  greenlet_record* p = parent ? parent : ts.current();
  if (p->owner != &ts) [[unlikely]]
    throw_wrong_thread("take as parent", p, ts);
  // One allocation: the record, the extra storage, the callable. The callable does not go
  // on the stack, so that making a greenlet never touches its stack (which a lazy greenlet
  // does not even have yet).
  const std::size_t align =
      callable_align < alignof(std::max_align_t) ? alignof(std::max_align_t) : callable_align;
  const std::size_t callable_at = (record_extra_offset + extra_size + align - 1) & ~(align - 1);
  stack s;
  if (!lazy_stack) {
    if (int err = stack_pool::allocate(want, s); err != 0) [[unlikely]] {
      throw std::system_error(
          err, std::generic_category(),
          "tendril::greenlet: no memory for a stack of " + std::to_string(want) + " bytes");
    }
  }
  void* mem;
  try {
    // Plain new where malloc's own alignment does (the usual case: it is faster).
    mem = align <= __STDCPP_DEFAULT_NEW_ALIGNMENT__
              ? ::operator new(callable_at + callable_size)
              : ::operator new (callable_at + callable_size, std::align_val_t{align});
  } catch (...) {
    stack_pool::release(s);
    throw;
  }
  auto* r = ::new (mem) greenlet_record;
  r->owner = &ts;
  ts.retain();
  link_child(p, r);
  r->ops = ops;
  r->stack_want = want;
  r->block_align = align <= __STDCPP_DEFAULT_NEW_ALIGNMENT__ ? 0 : align;
  r->id = next_greenlet_id();
  r->extra_destroy = extra_destroy;
  *extra = extra_size ? static_cast<char*>(mem) + record_extra_offset : nullptr;
  r->callable = static_cast<char*>(mem) + callable_at;
  *storage = r->callable;
  if (s) attach_stack(r, s);
#if defined(TENDRIL_HAS_TSAN)
  r->tsan_fiber = sanitizer::tsan_create();
#endif
  return r;
}

void attach_stack(greenlet_record* r, const stack& s) noexcept {
  r->stk = s;
  r->ctx = context::make(s.top(), s.size, &greenlet_entry);
}

int greenlet_prepare_stack(greenlet_record* r) noexcept {
  if (r->stk || r->status != greenlet_status::unstarted) return 0;
  stack s;
  if (int err = stack_pool::allocate(r->stack_want, s); err != 0) return err;
  attach_stack(r, s);
  return 0;
}

void* greenlet_extra(greenlet_record* r) noexcept {
  return reinterpret_cast<char*>(r) + record_extra_offset;
}

void greenlet_discard_unstarted(greenlet_record* r) noexcept {
  if (r->status != greenlet_status::unstarted) return;
  r->status = greenlet_status::dead;
  r->ops->destroy(r->callable);
  r->callable = nullptr;
  if (r->stk) stack_pool::release(r->stk);
  r->stk = {};
  r->ctx = nullptr;  // a dead greenlet has no context (can_switch_fast() relies on it)
#if defined(TENDRIL_HAS_TSAN)
  sanitizer::tsan_destroy(r->tsan_fiber);
  r->tsan_fiber = nullptr;
#endif
}

void greenlet_abandon_create(greenlet_record* r) noexcept {
  r->callable = nullptr;  // never constructed
  r->refs.store(0, std::memory_order_relaxed);
  destroy_record(r);
}

void greenlet_retain(greenlet_record* r) noexcept {
  r->refs.fetch_add(1, std::memory_order_relaxed);
}

// Records are only ever taken apart on their own thread (their relatives' lists are that
// thread's), a running greenlet only once it has switched away, and one waiting for a
// greenlet it kills only once that one ended (kill_for_destruction()). Elsewhere, the last
// reference is not dropped but handed to the owner's queue, so the count reaches zero only on
// the owner thread while the greenlet is not running: there, nothing can race the zero. (A
// greenlet may take references to itself from nothing, through current_; had another thread
// taken the count to zero, both threads could see it reach zero and both queue it.)
void greenlet_release(greenlet_record* r) noexcept {
  thread_state* owner = owner_of(r);
  thread_state* here = thread_state::peek();
  if (here != owner || r == owner->current() || r->killing != 0) [[unlikely]] {
    std::uint32_t n = r->refs.load(std::memory_order_relaxed);
    while (n > 1) {
      if (r->refs.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel,
                                        std::memory_order_relaxed))
        return;
    }
    owner->defer_destruction(r);  // takes our reference
    return;
  }
  if (r->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  if (owner->exited()) {
    destroy_record(r);  // nothing will ever run on that thread again
    return;
  }
  if (r->status != greenlet_status::active || r->is_root) {
    destroy_record(r);
    return;
  }
  kill_for_destruction(*here, r);
}

namespace {
// Whether a handle at `where` counts: not when it lies on the stack of the greenlet it names.
bool counts(const greenlet_record* r, const void* where) noexcept {
  // On another thread the handle cannot lie on r's stack, and r's stack field is its owner's
  // to change (after_death gives the stack back): not read from here.
  if (owner_of(r) != thread_state::peek()) return true;
  auto* p = static_cast<const std::byte*>(where);
  return !(p >= r->stk.base && p < r->stk.top());
}
}  // namespace

void greenlet_handle_adopted(greenlet_record* r, const void* where) noexcept {
  if (!counts(r, where)) greenlet_release(r);
}
void greenlet_handle_copied(greenlet_record* r, const void* where) noexcept {
  if (counts(r, where)) greenlet_retain(r);
}
void greenlet_handle_moved(greenlet_record* r, const void* from, const void* to) noexcept {
  bool had = counts(r, from);
  bool has = counts(r, to);
  if (has && !had) greenlet_retain(r);
  if (had && !has) greenlet_release(r);
}
void greenlet_handle_dropped(greenlet_record* r, const void* where) noexcept {
  if (counts(r, where)) greenlet_release(r);
}

void* greenlet_callable(greenlet_record* g) noexcept { return g->callable; }

void mark_generator_body(greenlet_record* g) noexcept { g->generator_body = true; }
void unmark_generator_body(greenlet_record* g) noexcept { g->generator_body = false; }

namespace {

[[gnu::noinline]] switch_plan plan_switch_slow(greenlet_record* target, std::any* value) {
  thread_state& ts = owner_thread("switch to", target);
  ts.run_deferred();
  prepare_destination(target);
  return ts.plan(target, value, nullptr);
}

[[gnu::noinline]] std::any complete_switch_slow(thread_state* ts) { return ts->take_inbox(); }

}  // namespace

// The fast paths below are leaf functions on purpose: every switch runs them.
switch_plan plan_switch(greenlet_record* target, std::any* value) {
  thread_state* ts = thread_state::peek();
  if (target == nullptr || ts == nullptr || target->owner != ts || ts->has_deferred() ||
      target->status == greenlet_status::dead || target == ts->current() || !target->ctx)
      [[unlikely]] {
    return plan_switch_slow(target, value);
  }
  if (value != nullptr && value->has_value()) target->inbox = std::move(*value);
  return ts->plan_fast(target);
}

std::any complete_switch(bool jumped) {
  thread_state* ts = thread_state::peek();
  greenlet_record* self = ts->current();
  if (jumped) ts->landed(self);
  if (self->pending || self->inbox.has_value()) [[unlikely]]
    return complete_switch_slow(ts);
  return {};
}

std::any land_with_mail() {
  thread_state* ts = thread_state::peek();
  ts->landed(ts->current());
  return ts->take_inbox();
}

void refuse_resume(greenlet_record* g, greenlet_record* const* inside) {
  thread_state& ts = owner_thread("resume the generator on", g);
  throw generator_running("tendril::generator: next() or send() from greenlet " +
                          quoted(ts.current()) +
                          " on a generator that is already running: greenlet " + quoted(*inside) +
                          " is inside its next() or send()");
}

switch_plan plan_resume(greenlet_record* g) {
  thread_state& ts = owner_thread("resume the generator on", g);
  // The slow path of every switch unwinds the greenlets other threads dropped (a thread that
  // only iterates generators would otherwise never get to them).
  ts.run_deferred();
  greenlet_record* cur = ts.current();
  for (greenlet_record* a = cur; a; a = a->parent) {
    if (a == g)
      throw generator_running(
          "tendril::generator: next() or send() from greenlet " + quoted(cur) +
          " on a generator that is already running: it is inside the generator's body");
  }
  if (g->parent != cur) {
    unlink_child(g);
    link_child(cur, g);
  }
  return ts.plan(g, nullptr, nullptr);
}

switch_plan plan_suspend(greenlet_record* g) {
  return owner_of(g)->plan(g->parent, nullptr, nullptr);
}

void complete_bare(bool jumped) {
  thread_state& ts = *thread_state::peek();
  if (jumped) ts.landed(ts.current());
  ts.drop_inbox();
}

}  // namespace detail

using detail::greenlet_record;
using detail::greenlet_status;
using detail::thread_state;

std::any greenlet::throw_into(std::exception_ptr e) {
  thread_state& ts = detail::owner_thread("throw into", rec_);
  if (!e) {
    throw std::invalid_argument(
        "tendril::greenlet::throw_into: null exception_ptr thrown into greenlet '" +
        detail::record_name(rec_) + "'");
  }
  const bool unstarted = rec_->status == greenlet_status::unstarted;
  if (rec_->on_thrown_unstarted_or_dead && rec_->status != greenlet_status::active) {
    rec_->on_thrown_unstarted_or_dead(rec_, std::move(e));
    return {};
  }
  // Where it would be raised: here, or past dead and unstarted greenlets (which it ends
  // unrun) in the first live ancestor. In a hub it would end the loop, and the next wait
  // would jump into a dead hub (task_test's
  // throwing_into_a_greenlet_that_would_raise_it_in_the_hub_is_refused); a greenlet_exit that
  // reaches it from a descendant arrives as a value, harmlessly.
  greenlet_record* at = rec_;
  while (!at->refuses_thrown && at->status != greenlet_status::active && at->parent) {
    at = at->parent;
  }
  if (at->refuses_thrown && (at == rec_ || !detail::is_greenlet_exit(e))) {
    throw greenlet_error(
        "tendril::greenlet::throw_into: the exception thrown into greenlet '" +
        detail::record_name(rec_) + "'" +
        (at == rec_ ? std::string()
                    : std::string(unstarted ? ", not started," : ", which has ended,") +
                          " would be raised in greenlet '" + detail::record_name(at) + "'") +
        ", a thread's hub: only its loop runs there");
  }
  // Where it lands may be a lazy greenlet that has no stack yet; given one before anything
  // changes, so that running out of memory leaves everything as it was.
  detail::prepare_destination(unstarted ? rec_->parent : rec_);
  if (unstarted) {
    // It dies without running: the exception surfaces in its parent, a greenlet_exit as a
    // value, exactly as if run had raised it on its first line.
    detail::greenlet_discard_unstarted(rec_);
    if (detail::is_greenlet_exit(e))
      return ts.switch_to(rec_->parent, std::any(greenlet_exit{}), nullptr);
    return ts.switch_to(rec_->parent, {}, std::move(e));
  }
  if (rec_->status == greenlet_status::dead && detail::is_greenlet_exit(e)) {
    // Killing a greenlet that already ended must not kill whoever receives the switch: as in
    // python, the dead greenlet swallows it and its first live ancestor gets it as a value
    // (greenlet_test: throw_greenlet_exit_into_a_dead_greenlet_returns_greenlet_exit).
    return ts.switch_to(rec_, std::any(greenlet_exit{}), nullptr);
  }
  return ts.switch_to(rec_, {}, std::move(e));
}

// A handle made where it is returned counts only if it lies off the greenlet's own stack, as
// greenlet_handle_copied() would count it; the usual greenlet::current() inside the greenlet
// then touches no count at all.
greenlet greenlet::current() {
  greenlet g;
  g.rec_ = thread_state::get().current();
  if (detail::counts(g.rec_, &g)) detail::greenlet_retain(g.rec_);
  return g;
}

greenlet greenlet::parent() const {
  if (!rec_) return {};
  detail::owner_thread("look at the parent of", rec_);
  greenlet g;
  g.rec_ = rec_->parent;
  if (g.rec_ && detail::counts(g.rec_, &g)) detail::greenlet_retain(g.rec_);
  return g;
}

void greenlet::set_parent(const greenlet& parent) {
  thread_state& ts = detail::owner_thread("set the parent of", rec_);
  if (parent.empty())
    throw greenlet_error("tendril: set_parent() of greenlet '" + detail::record_name(rec_) +
                         "' to an empty handle");
  greenlet_record* p = parent.rec_;
  if (p->owner != &ts) {
    throw wrong_thread("tendril: cannot make greenlet " + detail::quoted(p) + " of thread " +
                       std::to_string(detail::owner_of(p)->tid()) + " the parent of greenlet " +
                       detail::quoted(rec_) + " of thread " + std::to_string(ts.tid()));
  }
  if (rec_->is_root) {
    throw greenlet_error("tendril: the root greenlet '" + detail::record_name(rec_) +
                         "' has no parent to set");
  }
  for (greenlet_record* a = p; a; a = a->parent) {
    if (a == rec_) {
      throw parent_cycle("tendril: making greenlet '" + detail::record_name(p) +
                         "' the parent of greenlet '" + detail::record_name(rec_) +
                         "' would make a cycle of parents");
    }
  }
  detail::unlink_child(rec_);
  detail::link_child(p, rec_);
}

bool greenlet::is_root() const noexcept { return rec_ && rec_->is_root; }

std::string greenlet::name() const { return rec_ ? detail::record_name(rec_) : std::string(); }

void greenlet::set_name(std::string name) {
  if (!rec_) throw greenlet_error("tendril: set_name() on an empty greenlet handle");
  detail::owner_thread("set the name of", rec_);
  auto fresh = std::make_unique<std::string>(std::move(name));
  std::lock_guard lock(detail::g_names_mu);
  rec_->name.swap(fresh);
}

std::uint64_t greenlet::id() const noexcept { return rec_ ? rec_->id : 0; }

std::size_t trim_stack_cache() noexcept { return detail::stack_pool::trim(); }

}  // namespace tendril
