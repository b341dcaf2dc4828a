/* tendril_context_jump: suspend the running context, resume another one (x86-64 System V).
 *
 *   void* tendril_context_jump(void** save, void* to, void* data)
 *
 * Frame (frame_x86_64.hpp), lowest address first:
 *   0x00  rbp
 *   0x08  rip, the resume address (pushed by the inline statement in jump.hpp, which then
 *         jumps here: it makes no call, so that the return stack buffer is left as it was)
 *
 * Only rbp is saved: this function is called solely from the inline statement in
 * include/tendril/context/jump.hpp, which declares every other register clobbered, so
 * the compiler has already put anything live at the call site somewhere safe.
 *
 * The resumed side gets `data` in rax (the result of its own jump), or, if it is a made
 * context that never ran, the trampoline passes rax on to entry. The resume address is
 * reached with an indirect jmp rather than ret: a ret would be predicted from the return
 * stack buffer, which holds this side's caller and not the other side's (measured: 7.4 ns
 * per switch with ret, 2.3 ns with jmp).
 */
#include "../frame_x86_64.hpp"

    .file "jump_x86_64_sysv_elf_gas.S"
    .text
    .globl tendril_context_jump
    .type tendril_context_jump,@function
    .align 16
tendril_context_jump:
    .cfi_startproc
    pushq %rbp                  /* frame slot 0; slot 1 is the resume address */
    .cfi_adjust_cfa_offset 8
    movq %rsp, (%rdi)           /* *save = this context */
    movq %rsi, %rsp             /* switch stacks */
    popq %rbp
    popq %r8                    /* the other side's resume address */
    movq %rdx, %rax             /* data */
    jmp *%r8
    .cfi_endproc
    .size tendril_context_jump,.-tendril_context_jump

    .section .note.GNU-stack,"",%progbits
