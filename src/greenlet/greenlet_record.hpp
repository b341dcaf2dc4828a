// The record behind a greenlet handle. Private to the greenlet layer and to the layers above,
// which reach it through greenlet::record().
#ifndef TENDRIL_SRC_GREENLET_GREENLET_RECORD_HPP
#define TENDRIL_SRC_GREENLET_GREENLET_RECORD_HPP

#include <any>
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>

#include "context/context.hpp"
#include "context/sanitizer.hpp"
#include "context/stack_pool.hpp"
#include "greenlet/exception_state.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "tendril/greenlet/switch_core.hpp"

namespace tendril::detail {

class thread_state;

// The fields a switch touches (owner, parent, ctx, status, the saved errno and exception
// state, inbox, pending) are in its base, switch_core (include/tendril/greenlet/switch_core.hpp),
// which the inline switch reaches from a greenlet_record* it cannot see into.
struct greenlet_record : switch_core {
  // References: handles (except those on the greenlet's own stack) and the thread state's
  // link to its root. A parent link is not a reference: a parent holding its child's handle
  // would otherwise never be freed. When a record goes, its children move to its parent.
  std::atomic<std::uint32_t> refs{1};
  bool is_root = false;
  bool parked = false;  // in the hub's park() (L2)
  // A generator's body: it runs for its parent, the consumer (a kill or timeout of the
  // consumer reaches it, see parked_waiter()). Cleared once the generator lets it go.
  bool generator_body = false;
  // It caught the greenlet_exit of its destruction and switched away: never unwound again.
  bool resisted = false;
  // throw_into() refuses to raise an exception here through a dead or unstarted descendant,
  // and a descendant's exception that starts it stays pending for its run to take instead of
  // ending it unrun: the hub (L2), which no user's exception may end.
  bool refuses_thrown = false;
  // The end of its thread asked it to stop (greenlet_exit): it is not asked again (L2, L3).
  bool asked_to_end = false;
  // How many greenlets it is waiting for to unwind (kill_for_destruction()).
  std::uint32_t killing = 0;

  greenlet_record* first_child = nullptr;
  greenlet_record* next_sibling = nullptr;
  greenlet_record* prev_sibling = nullptr;

  stack stk;                    // none for roots, dead greenlets and lazy ones not started yet
  std::size_t stack_want = 0;   // the stack size it asked for
  std::size_t block_align = 0;  // the alignment of its allocation if over-aligned, else 0
  void* callable = nullptr;     // in the record's allocation, while unstarted or active
  const callable_ops* ops = nullptr;

  std::uint64_t id = 0;
  // The name, made up when asked: `name` if set, else name_prefix + name_number (tasks are
  // "Greenlet-N"), else "greenlet-<id>".
  const char* name_prefix = nullptr;
  std::uint64_t name_number = 0;
  std::unique_ptr<std::string> name;

  // Owned by the layers above (L2, L3), which the greenlet layer does not interpret.
  void* waiter = nullptr;                       // the waiter it is parked in
  std::exception_ptr interrupt;                 // a kill that arrived while it was not parked
  void* timeouts = nullptr;                     // its innermost timeout scope
  void* locals = nullptr;                       // its greenlet-local values
  void (*on_dead)(greenlet_record*) = nullptr;  // called by the hub once it died
  // throw_into() before it started or once it died hands `e` here and switches nowhere,
  // instead of raising it in its first live ancestor (a task ends as one killed before it
  // started, or ignores it as a kill once it ended).
  void (*on_thrown_unstarted_or_dead)(greenlet_record*, std::exception_ptr e) noexcept = nullptr;

  void (*extra_destroy)(void*) = nullptr;  // destroys the extra storage after the record

#if defined(TENDRIL_HAS_ASAN)
  void* asan_fake_stack = nullptr;
#endif
#if defined(TENDRIL_HAS_TSAN)
  void* tsan_fiber = nullptr;
#endif
};

// The inline switch finds a record's switch_core at the record's own address.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
static_assert(__builtin_offsetof(greenlet_record, owner) == 0 &&
                  std::is_standard_layout_v<switch_core>,
              "switch_core must lie at the start of greenlet_record");
#pragma GCC diagnostic pop

// Extra storage (a task's state) lives right after the record, in the same allocation.
inline constexpr std::size_t record_extra_offset =
    (sizeof(greenlet_record) + alignof(std::max_align_t) - 1) / alignof(std::max_align_t) *
    alignof(std::max_align_t);

// greenlet_create_ex() is greenlet_create() with a parent record (null: the current
// greenlet) and extra_size bytes after the record, returned in *extra and destroyed with
// extra_destroy when the record goes (the layers above keep a task's state there).
// lazy_stack: the stack is taken when the greenlet first runs (greenlet_prepare_stack()), not
// now; a task spawned in a batch of thousands then runs on a stack just freed by another, still
// in the cache, instead of touching a stack of its own at spawn time.
greenlet_record* greenlet_create_ex(std::size_t callable_size, std::size_t callable_align,
                                    const callable_ops* ops, greenlet_record* parent,
                                    std::size_t stack_bytes, std::size_t extra_size,
                                    void (*extra_destroy)(void*), void** storage, void** extra,
                                    bool lazy_stack);
// greenlet_prepare_stack() gives a lazy greenlet that has not started its stack: 0, or ENOMEM.
int greenlet_prepare_stack(greenlet_record* r) noexcept;
void attach_stack(greenlet_record* r, const stack& s) noexcept;
void* greenlet_extra(greenlet_record* r) noexcept;
// greenlet_discard_unstarted() ends a greenlet that never ran, without a switch: its
// callable is destroyed and its stack released.
void greenlet_discard_unstarted(greenlet_record* r) noexcept;

// greenlet_end_now() unwinds r, a greenlet of this thread that is not running, now, whatever
// still refers to it (one not started yet just never runs); its handles then refer to a dead
// greenlet. For an owner whose greenlet's frames use the owner's memory (the hub's loop), which
// must not outlive it. Switches: yes, into r and back.
void greenlet_end_now(greenlet_record* r) noexcept;

// report_escaped() writes to stderr that r (null: one destroyed since) let e out while it was
// being destroyed (unwound by greenlet_exit), where nothing could catch it: e is lost
// otherwise.
void report_escaped(const greenlet_record* r, const std::exception_ptr& e) noexcept;

// next_greenlet_id() is a process-wide unique id (taken in blocks per thread).
std::uint64_t next_greenlet_id() noexcept;

// The name written into messages.
std::string record_name(const greenlet_record* r);

// link_child() / unlink_child(): the parent's list of children (owner thread only).
void link_child(greenlet_record* parent, greenlet_record* child) noexcept;
void unlink_child(greenlet_record* child) noexcept;

// A hook the layers above install to destroy a greenlet's locals when it ends.
using locals_cleanup_fn = void (*)(greenlet_record*) noexcept;
void set_locals_cleanup(locals_cleanup_fn f) noexcept;
void run_locals_cleanup(greenlet_record* r) noexcept;

}  // namespace tendril::detail

#endif
