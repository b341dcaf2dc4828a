/* tendril_context_make: prepare a context that runs a function on a fresh stack
 * (aarch64, AAPCS64).
 *
 *   void* tendril_context_make(void* stack_top, size_t size, void (*entry)(void* data))
 *
 * Returns the context without running anything; the first jump to it lands in the
 * trampoline, which calls entry(data). entry must never return (udf traps if it does).
 *
 * The made frame (frame_arm64.hpp), from the returned pointer up, 16-aligned:
 *   0x00  x29 = 0, which ends frame-pointer backtraces
 *   0x08  pc  = the trampoline
 *   0x10  entry
 *   0x18  0   padding
 */
#include "../frame_arm64.hpp"

    .file "make_arm64_aapcs_elf_gas.S"
    .text
    .globl tendril_context_make
    .type tendril_context_make,%function
    .align 4
tendril_context_make:
    .cfi_startproc
    and x0, x0, #~15                        /* 16-align the top */
    sub x0, x0, #TENDRIL_MADE_SIZE
    adr x3, tendril_context_trampoline
    stp xzr, x3, [x0, #TENDRIL_FRAME_X29]
    stp x2, xzr, [x0, #TENDRIL_MADE_ENTRY]
    ret
    .cfi_endproc
    .size tendril_context_make,.-tendril_context_make

/* Arrives with sp at the entry slot and the jump's data in x0. */
    .globl tendril_context_trampoline
    .hidden tendril_context_trampoline
    .type tendril_context_trampoline,%function
    .align 4
tendril_context_trampoline:
    .cfi_startproc
    .cfi_undefined x30
    ldr x4, [sp]                            /* entry */
    mov x29, xzr
    mov x30, xzr
    blr x4
    udf #0                                  /* entry returned: it must leave with a jump */
    .cfi_endproc
    .size tendril_context_trampoline,.-tendril_context_trampoline

    .section .note.GNU-stack,"",%progbits
