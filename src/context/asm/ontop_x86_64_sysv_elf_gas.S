/* tendril_context_ontop: suspend the running context, run a function on another context's
 * stack, then resume that context with the function's result (x86-64 System V).
 *
 *   void* tendril_context_ontop(void** save, void* to, void* data, void* (*fn)(void*))
 *
 * This is how a finished greenlet frees the stack it ran on: it cannot free it while it
 * stands on it, so the successor does, before anything else, from its own stack.
 *
 * Frame: as tendril_context_jump (frame_x86_64.hpp). fn runs below the other context's saved
 * frame with the stack aligned to 16; r12 (callee-saved, so fn keeps it) remembers where the
 * frame is. Clobbering r12 is allowed: the caller declared it clobbered.
 */
#include "../frame_x86_64.hpp"

    .file "ontop_x86_64_sysv_elf_gas.S"
    .text
    .globl tendril_context_ontop
    .type tendril_context_ontop,@function
    .align 16
tendril_context_ontop:
    .cfi_startproc
    pushq %rbp                  /* frame slot 0 */
    .cfi_adjust_cfa_offset 8
    movq %rsp, (%rdi)           /* *save = this context */
    movq %rsi, %rsp             /* switch stacks; the other frame stays above rsp */
    movq %rsp, %r12
    andq $-16, %rsp             /* align for the call */
    movq %rdx, %rdi
    callq *%rcx                 /* rax = fn(data) */
    movq %r12, %rsp
    popq %rbp
    popq %r8                    /* the other side's resume address */
    jmp *%r8                    /* rax: fn's result */
    .cfi_endproc
    .size tendril_context_ontop,.-tendril_context_ontop

    .section .note.GNU-stack,"",%progbits
