// The saved frame of a suspended context on aarch64 (AAPCS64), shared by the assembly in
// src/context/asm/*_arm64_aapcs_elf_gas.S (which includes this file) and by C++, where the
// structs below pin every offset with static_assert.
//
// A suspended context is one stack pointer. At that address lies this frame:
//
//   slot  offset  register
//   0     0x00    x29 (frame pointer)
//   1     0x08    pc (where the context resumes: the link register of the jump)
//
// Deliberately not saved, and why: x0-x28, x30 and v0-v31 are declared clobbered by the
// inline statement in include/tendril/context/jump.hpp, the only place a jump is made from,
// so the compiler saves exactly what is live at the call site (x29 cannot be declared
// clobbered while it is the frame pointer, so the jump saves it). FPCR/FPSR belong to the
// thread and TPIDR_EL0 never changes (greenlets never change threads).
#ifndef TENDRIL_SRC_CONTEXT_FRAME_ARM64_HPP
#define TENDRIL_SRC_CONTEXT_FRAME_ARM64_HPP

#define TENDRIL_FRAME_X29 0x00
#define TENDRIL_FRAME_PC 0x08
#define TENDRIL_FRAME_SIZE 0x10

// A made context: a frame whose pc is the trampoline, then the entry function and a
// padding word; the trampoline finds entry at its stack pointer.
#define TENDRIL_MADE_ENTRY 0x10
#define TENDRIL_MADE_SIZE 0x20

#ifndef __ASSEMBLER__
#include <cstddef>
#include <cstdint>

namespace tendril::detail::context {

struct frame {
  std::uint64_t x29;
  std::uint64_t pc;
};

struct made_frame {
  frame saved;
  std::uint64_t entry;
  std::uint64_t pad;
};

static_assert(offsetof(frame, x29) == TENDRIL_FRAME_X29);
static_assert(offsetof(frame, pc) == TENDRIL_FRAME_PC);
static_assert(sizeof(frame) == TENDRIL_FRAME_SIZE);
static_assert(offsetof(made_frame, entry) == TENDRIL_MADE_ENTRY);
static_assert(sizeof(made_frame) == TENDRIL_MADE_SIZE && TENDRIL_MADE_SIZE % 16 == 0);

inline std::uint64_t frame_resume_address(const frame& f) { return f.pc; }
inline std::uint64_t frame_pointer(const frame& f) { return f.x29; }

}  // namespace tendril::detail::context
#endif
#endif
