/* Page tables and stack shared by both entries. */
    .section .text, "ax"
    .code64
    .globl build_page_tables_8g
build_page_tables_8g:
    lea pdpt(%rip), %rax
    or $3, %rax
    mov %rax, pml4(%rip)
    xor %ecx, %ecx
1:  mov %rcx, %rax
    shl $12, %rax
    lea pd(%rip), %rdx
    add %rdx, %rax
    or $3, %rax
    lea pdpt(%rip), %rdx
    mov %rax, (%rdx,%rcx,8)
    inc %rcx
    cmp $8, %rcx
    jne 1b
    xor %ecx, %ecx
    lea pd(%rip), %rdx
2:  mov %rcx, %rax
    shl $21, %rax
    or $0x83, %rax
    mov %rax, (%rdx,%rcx,8)
    inc %rcx
    cmp $4096, %rcx
    jne 2b
    ret

    .section .bss
    .align 4096
    .globl pml4, pdpt, pd
pml4:  .skip 4096
pdpt:  .skip 4096
pd:    .skip 4096 * 8
stack: .skip 16384
    .globl stack_top
stack_top:
