/* 64-bit Linux boot protocol entry: long mode, rsi = boot_params, the VMM's identity map (1 GiB). */
    .section .text.entry, "ax"
    .code64
    .globl _start
_start:
    outb %al, $0x80              /* first instruction: one I/O exit (start-up latency figure) */
    mov %rsi, %r12               /* keep boot_params */
    call build_page_tables_8g    /* map 8 GiB: the MMIO windows at 0xd0000000, the pmem window above 4 GiB */
    mov $pml4, %rax
    mov %rax, %cr3
    lea stack_top(%rip), %rsp
    xor %edi, %edi               /* no PVH start_info */
    mov %r12, %rsi
    call cmain
1:  cli
    hlt
    jmp 1b
