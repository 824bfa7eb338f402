/* The loop a SyscallBatch runs inside a stopped thread (see batch.h). It is
 * never called in snap: batch.cc copies the bytes between the two labels
 * into the target, so the code uses only relative jumps and no data.
 *
 * In:  rdi = the first entry, rsi = the number of entries. An entry is
 *      eight words: nr, a1..a6, flags (bit 0: the call may fail; bit 1: it
 *      must return a1, as a fixed mmap must return its address).
 * Out: each entry's last word becomes the call's result; r12 = the index of
 *      the entry that stopped the loop, or the count when all ran. The loop
 *      ends on int3, which the tracer catches. */
        .text
        .globl  snap_batch_loop_start
        .hidden snap_batch_loop_start
        .globl  snap_batch_loop_end
        .hidden snap_batch_loop_end
snap_batch_loop_start:
        mov     %rdi, %rbx
        mov     %rsi, %r13
        xor     %r12d, %r12d
1:      cmp     %r13, %r12
        jae     3f
        mov     0(%rbx), %rax
        mov     8(%rbx), %rdi
        mov     16(%rbx), %rsi
        mov     24(%rbx), %rdx
        mov     32(%rbx), %r10
        mov     40(%rbx), %r8
        mov     48(%rbx), %r9
        mov     56(%rbx), %r14
        syscall
        mov     %rax, 56(%rbx)
        cmp     $-4095, %rax
        jae     4f
        test    $2, %r14
        jz      2f
        cmp     8(%rbx), %rax
        jne     3f
2:      add     $64, %rbx
        inc     %r12
        jmp     1b
4:      test    $1, %r14
        jnz     2b
3:      int3
snap_batch_loop_end:
        .section .note.GNU-stack, "", @progbits
