// The machine switch's jump, inline. This is the one part of L0 (src/context/) that public
// headers see: greenlet::switch_to() and generator::yield() are inline so that the jump is
// made from the user's own frame. Nothing here is API.
//
// Why inline: after a switch, every `ret` of the resumed side that leaves a frame entered
// before the switch is mispredicted (the return stack buffer holds the other side's calls).
// With the bookkeeping in calls that return before and after the jump, and the jump itself
// inlined, no such ret remains (measured: 32 ns per switch with three out-of-line frames,
// docs/design/context.md).
//
// The protocol (see src/context/frame_x86_64.hpp, frame_arm64.hpp): the assembly saves only
// the frame pointer and the resume address; the inline statement below declares every other
// register clobbered, so the compiler saves only what is live at the call site.
#ifndef TENDRIL_CONTEXT_JUMP_HPP
#define TENDRIL_CONTEXT_JUMP_HPP

#include "tendril/config.hpp"

extern "C" {
void* tendril_context_jump(void** save, void* to, void* data);
void* tendril_context_ontop(void** save, void* to, void* data, void* (*fn)(void*));
}

namespace tendril::detail::context {

#if TENDRIL_CONTEXT_ASM && defined(__x86_64__)
#if defined(__AVX512F__)
#define TENDRIL_JUMP_CLOBBERS_AVX512                                                            \
  , "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25",   \
      "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k1", "k2", "k3", "k4", "k5", "k6", \
      "k7"
#else
#define TENDRIL_JUMP_CLOBBERS_AVX512
#endif
// The statement skips the 128-byte red zone below rsp, which the enclosing function may use
// (the compiler does not know this statement calls anything). It pushes its own resume
// address and jumps, where a call would push the same address: a call also pushes an entry
// on the return stack buffer that no ret ever pops (the assembly leaves with an indirect
// jmp), so after every switch each ret up the resumed side's frames would be predicted one
// frame off. Without it, a greenlet resumed in the hub's park() returns through wait() and
// the blocking call as predicted whenever the greenlet that parked before it came through the
// same calls (measured: sleep(0) among 1,000 tasks, docs/design/context.md).
#define TENDRIL_JUMP_CALL(fn)                                                                  \
  asm volatile(                                                                                \
      "lea -128(%%rsp), %%rsp\n\t"                                                             \
      "lea 1f(%%rip), %%rax\n\t"                                                               \
      "push %%rax\n\t"                                                                         \
      "jmp " fn                                                                                \
      "\n"                                                                                     \
      "1:\n\t"                                                                                 \
      "lea 128(%%rsp), %%rsp"                                                                  \
      : "+D"(a0), "+S"(a1), "+d"(a2), "+c"(a3), "=a"(result)                                   \
      :                                                                                        \
      : "rbx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2",   \
        "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",     \
        "xmm13", "xmm14", "xmm15", "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", \
        "st(7)", "memory", "cc" TENDRIL_JUMP_CLOBBERS_AVX512)

// jump() suspends the running context into *save and resumes `to` with `data`; returns the
// data of whoever resumes this context. Switches: yes.
[[gnu::always_inline]] inline void* jump(void** save, void* to, void* data) noexcept {
  register void* a0 asm("rdi") = save;
  register void* a1 asm("rsi") = to;
  register void* a2 asm("rdx") = data;
  register void* a3 asm("rcx") = nullptr;
  void* result;
  TENDRIL_JUMP_CALL("tendril_context_jump@PLT");
  return result;
}

// ontop() is jump() that runs fn(data) on `to`'s stack first; `to` receives fn's result.
[[gnu::always_inline]] inline void* ontop(void** save, void* to, void* data,
                                          void* (*fn)(void*)) noexcept {
  register void* a0 asm("rdi") = save;
  register void* a1 asm("rsi") = to;
  register void* a2 asm("rdx") = data;
  register void* a3 asm("rcx") = reinterpret_cast<void*>(fn);
  void* result;
  TENDRIL_JUMP_CALL("tendril_context_ontop@PLT");
  return result;
}
#undef TENDRIL_JUMP_CALL

#elif TENDRIL_CONTEXT_ASM && defined(__aarch64__)
// x29 (frame pointer) is saved by the assembly; x30 is clobbered by the bl itself.
#define TENDRIL_JUMP_CALL(fn)                                                                     \
  asm volatile("bl " fn                                                                           \
               : "+r"(a0), "+r"(a1), "+r"(a2), "+r"(a3)                                           \
               :                                                                                  \
               : "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15",    \
                 "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26",     \
                 "x27", "x28", "x30", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", \
                 "v10", "v11", "v12", "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20",     \
                 "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31",     \
                 "memory", "cc")

[[gnu::always_inline]] inline void* jump(void** save, void* to, void* data) noexcept {
  register void* a0 asm("x0") = save;
  register void* a1 asm("x1") = to;
  register void* a2 asm("x2") = data;
  register void* a3 asm("x3") = nullptr;
  TENDRIL_JUMP_CALL("tendril_context_jump");
  return a0;
}

[[gnu::always_inline]] inline void* ontop(void** save, void* to, void* data,
                                          void* (*fn)(void*)) noexcept {
  register void* a0 asm("x0") = save;
  register void* a1 asm("x1") = to;
  register void* a2 asm("x2") = data;
  register void* a3 asm("x3") = reinterpret_cast<void*>(fn);
  TENDRIL_JUMP_CALL("tendril_context_ontop");
  return a0;
}
#undef TENDRIL_JUMP_CALL

#else
// ucontext: ordinary calls (swapcontext saves every register itself).
inline void* jump(void** save, void* to, void* data) noexcept {
  return tendril_context_jump(save, to, data);
}
inline void* ontop(void** save, void* to, void* data, void* (*fn)(void*)) noexcept {
  return tendril_context_ontop(save, to, data, fn);
}
#endif

}  // namespace tendril::detail::context

#endif
