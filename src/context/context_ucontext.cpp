// The machine switch on glibc's ucontext: slower than the assembly (swapcontext saves the
// signal mask with a system call on every switch) but understood by valgrind and portable to
// targets without an assembly port. Same contract as context.hpp.
//
// A context is a pointer to a ucontext_t. A made context keeps its record at the top of its
// own stack; a context that suspends by jumping keeps it in the jump's own frame, which lives
// exactly as long as the suspension. What travels across a switch (the data, and the function
// ontop runs) passes through a thread-local slot, read by the resumed side first thing.
#include <ucontext.h>

#include <cstdint>
#include <cstdlib>
#include <new>

#include "context/context.hpp"

namespace {

struct made_record {
  ucontext_t uc;
  tendril::detail::context::entry_fn entry;
};

struct pending_transfer {
  void* data;
  tendril::detail::context::ontop_fn fn;
};

thread_local pending_transfer t_pending{nullptr, nullptr};

void* take_pending() {
  pending_transfer p = t_pending;
  t_pending = {nullptr, nullptr};
  return p.fn ? p.fn(p.data) : p.data;
}

void trampoline(unsigned hi, unsigned lo) {
  auto* rec = reinterpret_cast<made_record*>((static_cast<std::uintptr_t>(hi) << 32) | lo);
  rec->entry(take_pending());
  std::abort();  // entry must leave with a jump
}

void* swap_to(void** save, void* to, void* data, tendril::detail::context::ontop_fn fn) {
  ucontext_t here;
  *save = &here;
  t_pending = {data, fn};
  swapcontext(&here, static_cast<ucontext_t*>(to));
  return take_pending();
}

}  // namespace

extern "C" void* tendril_context_make(void* stack_top, std::size_t size, void (*entry)(void*)) {
  auto top = reinterpret_cast<std::uintptr_t>(stack_top);
  top = (top - sizeof(made_record)) & ~std::uintptr_t{63};
  auto* rec = new (reinterpret_cast<void*>(top)) made_record{};
  rec->entry = entry;
  getcontext(&rec->uc);
  rec->uc.uc_link = nullptr;
  std::size_t used = reinterpret_cast<std::uintptr_t>(stack_top) - top;
  rec->uc.uc_stack.ss_sp = static_cast<char*>(stack_top) - size;
  rec->uc.uc_stack.ss_size = size - used - 64;
  auto bits = reinterpret_cast<std::uintptr_t>(rec);
  makecontext(&rec->uc, reinterpret_cast<void (*)()>(&trampoline), 2,
              static_cast<unsigned>(bits >> 32), static_cast<unsigned>(bits & 0xffffffffu));
  return &rec->uc;
}

extern "C" void* tendril_context_jump(void** save, void* to, void* data) {
  return swap_to(save, to, data, nullptr);
}

extern "C" void* tendril_context_ontop(void** save, void* to, void* data, void* (*fn)(void*)) {
  return swap_to(save, to, data, fn);
}
