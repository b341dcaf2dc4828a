/* tendril_context_jump: suspend the running context, resume another one (aarch64, AAPCS64).
 *
 *   void* tendril_context_jump(void** save, void* to, void* data)
 *
 * Frame (frame_arm64.hpp), lowest address first:
 *   0x00  x29, the frame pointer
 *   0x08  pc, the resume address (x30 on entry)
 *
 * Only x29 and the resume address are saved: this function is called solely from the inline
 * statement in include/tendril/context/jump.hpp, which declares every other register
 * clobbered. The resumed side gets `data` in x0.
 */
#include "../frame_arm64.hpp"

    .file "jump_arm64_aapcs_elf_gas.S"
    .text
    .globl tendril_context_jump
    .type tendril_context_jump,%function
    .align 4
tendril_context_jump:
    .cfi_startproc
    sub sp, sp, #TENDRIL_FRAME_SIZE
    stp x29, x30, [sp, #TENDRIL_FRAME_X29]  /* frame pointer, resume address */
    mov x4, sp
    str x4, [x0]                            /* *save = this context */
    mov sp, x1                              /* switch stacks */
    ldp x29, x4, [sp, #TENDRIL_FRAME_X29]
    add sp, sp, #TENDRIL_FRAME_SIZE
    mov x0, x2                              /* data */
    br x4
    .cfi_endproc
    .size tendril_context_jump,.-tendril_context_jump

    .section .note.GNU-stack,"",%progbits
