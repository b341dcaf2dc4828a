/* tendril_context_ontop: suspend the running context, run fn(data) on another context's
 * stack, then resume it with fn's result (aarch64, AAPCS64).
 *
 *   void* tendril_context_ontop(void** save, void* to, void* data, void* (*fn)(void*))
 *
 * Frame: as tendril_context_jump (frame_arm64.hpp). fn runs just below the other context's
 * saved frame; sp is always 16-aligned on aarch64, so no adjustment is needed.
 */
#include "../frame_arm64.hpp"

    .file "ontop_arm64_aapcs_elf_gas.S"
    .text
    .globl tendril_context_ontop
    .type tendril_context_ontop,%function
    .align 4
tendril_context_ontop:
    .cfi_startproc
    sub sp, sp, #TENDRIL_FRAME_SIZE
    stp x29, x30, [sp, #TENDRIL_FRAME_X29]
    mov x4, sp
    str x4, [x0]                            /* *save = this context */
    mov sp, x1                              /* switch stacks */
    mov x0, x2
    blr x3                                  /* x0 = fn(data) */
    ldp x29, x4, [sp, #TENDRIL_FRAME_X29]
    add sp, sp, #TENDRIL_FRAME_SIZE
    br x4
    .cfi_endproc
    .size tendril_context_ontop,.-tendril_context_ontop

    .section .note.GNU-stack,"",%progbits
