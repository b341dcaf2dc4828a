/* tendril_context_make: prepare a context that runs a function on a fresh stack
 * (x86-64 System V).
 *
 *   void* tendril_context_make(void* stack_top, size_t size, void (*entry)(void* data))
 *
 * Returns the context, a stack pointer, without running anything. The first jump to it
 * lands in the trampoline, which calls entry(data) with the jump's data. entry must never
 * return (a finished context leaves with tendril_context_ontop); if it does, ud2 stops the
 * process. size is not needed here; other implementations use it.
 *
 * The made frame (frame_x86_64.hpp), from the returned pointer up, 16-aligned:
 *   0x00  rbp   = 0, which ends frame-pointer backtraces
 *   0x08  rip   = the trampoline
 *   0x10  entry
 *   0x18  0     padding
 */
#include "../frame_x86_64.hpp"

    .file "make_x86_64_sysv_elf_gas.S"
    .text
    .globl tendril_context_make
    .type tendril_context_make,@function
    .align 16
tendril_context_make:
    .cfi_startproc
    movq %rdi, %rax
    andq $-16, %rax                             /* 16-align the top */
    subq $TENDRIL_MADE_SIZE, %rax
    movq $0, TENDRIL_FRAME_RBP(%rax)
    leaq tendril_context_trampoline(%rip), %rcx
    movq %rcx, TENDRIL_FRAME_RIP(%rax)
    movq %rdx, TENDRIL_MADE_ENTRY(%rax)
    movq $0, TENDRIL_MADE_ENTRY+8(%rax)
    ret
    .cfi_endproc
    .size tendril_context_make,.-tendril_context_make

/* The first jump into a made context pops rbp and rip and arrives here with rsp at the
 * entry slot (16-aligned) and the jump's data in rax. */
    .globl tendril_context_trampoline
    .hidden tendril_context_trampoline
    .type tendril_context_trampoline,@function
    .align 16
tendril_context_trampoline:
    .cfi_startproc
    .cfi_undefined rip          /* the outermost frame of a greenlet: backtraces end here */
    movq (%rsp), %rcx           /* entry */
    movq %rax, %rdi             /* data */
    callq *%rcx
    ud2                         /* entry returned: it must leave with a jump */
    .cfi_endproc
    .size tendril_context_trampoline,.-tendril_context_trampoline

    .section .note.GNU-stack,"",%progbits
