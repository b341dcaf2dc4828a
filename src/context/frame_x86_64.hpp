// The saved frame of a suspended context on x86-64 System V, shared by the assembly in
// src/context/asm/*_x86_64_sysv_elf_gas.S (which includes this file) and by C++, where the
// structs below pin every offset with static_assert.
//
// A suspended context is one stack pointer. At that address lies this frame:
//
//   slot  offset  register
//   0     0x00    rbp
//   1     0x08    rip (where the context resumes)
//
// Deliberately not saved, and why:
//  - every other general and vector register: the jump is only ever made from the inline
//    statement in include/tendril/context/jump.hpp, which declares all of them clobbered, so
//    the compiler saves exactly the values live at that call site and nothing else (Photon's
//    "context-aware" switch). rbp cannot be declared clobbered while it is the frame pointer,
//    so the jump saves it.
//  - MXCSR and the x87 control word: they belong to the thread, as in marl and Photon;
//    loading them costs more than the rest of the switch, and tendril never changes them.
//  - the signal mask (a system call per switch) and the thread pointer (greenlets never
//    change threads).
#ifndef TENDRIL_SRC_CONTEXT_FRAME_X86_64_HPP
#define TENDRIL_SRC_CONTEXT_FRAME_X86_64_HPP

#define TENDRIL_FRAME_RBP 0x00
#define TENDRIL_FRAME_RIP 0x08
#define TENDRIL_FRAME_SIZE 0x10

// A made context (tendril_context_make) is a frame whose rip is the trampoline, with the
// entry function and a padding word above it; the trampoline finds entry at its stack
// pointer. The whole of it is 16-aligned.
#define TENDRIL_MADE_ENTRY 0x10
#define TENDRIL_MADE_SIZE 0x20

#ifndef __ASSEMBLER__
#include <cstddef>
#include <cstdint>

namespace tendril::detail::context {

struct frame {
  std::uint64_t rbp;
  std::uint64_t rip;
};

struct made_frame {
  frame saved;
  std::uint64_t entry;
  std::uint64_t pad;
};

static_assert(offsetof(frame, rbp) == TENDRIL_FRAME_RBP);
static_assert(offsetof(frame, rip) == TENDRIL_FRAME_RIP);
static_assert(sizeof(frame) == TENDRIL_FRAME_SIZE);
static_assert(offsetof(made_frame, entry) == TENDRIL_MADE_ENTRY);
static_assert(sizeof(made_frame) == TENDRIL_MADE_SIZE && TENDRIL_MADE_SIZE % 16 == 0);

inline std::uint64_t frame_resume_address(const frame& f) { return f.rip; }
inline std::uint64_t frame_pointer(const frame& f) { return f.rbp; }

}  // namespace tendril::detail::context
#endif
#endif
