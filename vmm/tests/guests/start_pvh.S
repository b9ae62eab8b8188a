/* PVH entry: 32-bit protected mode, paging off, ebx = hvm_start_info. Switch to long mode ourselves. */
    .section .note.Xen, "a"
    .align 4
    .long 4                      /* namesz: "Xen\0" */
    .long 4                      /* descsz */
    .long 18                     /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_entry

    .section .text.entry, "ax"
    .code32
    .globl pvh_entry
pvh_entry:
    outb %al, $0x80              /* first instruction: one I/O exit (start-up latency figure) */
    mov %ebx, %esi               /* keep start_info */
    /* pml4[0] -> pdpt; pdpt[0..7] -> pd[0..7]; pd: 4096 x 2 MiB identity pages = 8 GiB
       (the pmem window lies above 4 GiB) */
    movl $pdpt + 3, pml4
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $12, %eax
    add $pd + 3, %eax
    mov %eax, pdpt(,%ecx,8)
    inc %ecx
    cmp $8, %ecx
    jne 1b
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax               /* present | writable | 2 MiB page */
    mov %eax, pd(,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax                /* bits 32+ of the physical address */
    mov %eax, pd+4(,%ecx,8)
    inc %ecx
    cmp $4096, %ecx
    jne 2b
    mov $pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax               /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx        /* EFER */
    rdmsr
    or $0x100, %eax              /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax         /* PG | PE */
    mov %eax, %cr0
    lgdt gdt64_ptr
    ljmp $0x08, $long_mode

    .code64
long_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    lea stack_top(%rip), %rsp
    mov %esi, %edi               /* cmain(pvh_info, 0) */
    xor %esi, %esi
    call cmain
3:  cli
    hlt
    jmp 3b

    .section .rodata
    .align 8
gdt64:
    .quad 0
    .quad 0x00af9a000000ffff     /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff     /* 0x10: data */
gdt64_ptr:
    .word gdt64_ptr - gdt64 - 1
    .long gdt64
