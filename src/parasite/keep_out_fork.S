/* The sequence a copy-on-write snapshot runs inside the job's stopped
 * leader when ranges are kept out of it (parasite/snapshot.h): madvise
 * MADV_DONTFORK on each range, clone, MADV_DOFORK on each range,
 * then back to the thread's own context. It is never called in snap:
 * keep_out.cc copies the bytes between the two labels into a page of the
 * job, so the code uses only relative jumps and no data, and no stack.
 *
 * Run as one sequence in the job so that it finishes whatever happens to
 * snap: once it starts, the ranges get their own flag back before the
 * thread returns, even if snap dies in between (a range left without its
 * pages in every later fork would crash the job's children).
 *
 * In:  rdi = the data area: 0: n ranges; 8: rsp for the end (the guard's
 *      frame, whose first word is an rt_sigreturn gadget); 16: the clone's
 *      result (out); 24: n entries of four words: start, length, the
 *      DONTFORK result (out) and the DOFORK result (out; DOFORK on every
 *      range: where DONTFORK failed part way, it undoes what it did; a
 *      range keep_out.cc chose holds no mapping flagged so by the job).
 * The clone: no flags, exit signal 0, a stack pointer of 8: its child
 * leaves by exit(0) at once if it ever runs (snap holds it stopped). */
        .text
        .globl  snap_keep_out_fork_start
        .hidden snap_keep_out_fork_start
        .globl  snap_keep_out_fork_end
        .hidden snap_keep_out_fork_end
snap_keep_out_fork_start:
        mov     %rdi, %rbx
        mov     0(%rbx), %r12
        lea     24(%rbx), %r13
        xor     %r14d, %r14d
1:      cmp     %r12, %r14
        jae     2f
        mov     0(%r13), %rdi
        mov     8(%r13), %rsi
        mov     $10, %edx               /* MADV_DONTFORK */
        mov     $28, %eax               /* madvise */
        syscall
        mov     %rax, 16(%r13)
        add     $32, %r13
        inc     %r14
        jmp     1b
2:      xor     %edi, %edi
        mov     $8, %esi
        xor     %edx, %edx
        xor     %r10d, %r10d
        xor     %r8d, %r8d
        mov     $56, %eax               /* clone */
        syscall
        test    %rax, %rax
        jnz     3f
        xor     %edi, %edi              /* the child */
        mov     $60, %eax               /* exit */
        syscall
3:      mov     %rax, 16(%rbx)
        lea     24(%rbx), %r13
        xor     %r14d, %r14d
4:      cmp     %r12, %r14
        jae     6f
        mov     0(%r13), %rdi
        mov     8(%r13), %rsi
        mov     $11, %edx               /* MADV_DOFORK */
        mov     $28, %eax
        syscall
        mov     %rax, 24(%r13)
        add     $32, %r13
        inc     %r14
        jmp     4b
6:      mov     8(%rbx), %rsp
        ret                             /* -> the gadget: rt_sigreturn */
snap_keep_out_fork_end:
        .section .note.GNU-stack, "", @progbits
