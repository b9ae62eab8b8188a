/*
 * Hull tiny test guest: a freestanding 64-bit program booted by hull-vmm through the same loader paths
 * as Linux (PVH or the 64-bit boot protocol). It reports what the VMM handed it on the serial port and
 * then does what the kernel command line asks:
 *   mark          write the boot-time marker byte
 *   ioloop=N      N port writes to 0x80, then the boot marker again (exit-rate benchmark)
 *   virtio=N      read the registers of the first N virtio-mmio windows and print them
 *   spin          print "spinning" and loop forever (the VMM must stop it on SIGTERM)
 *   crash         execute ud2 with no IDT: a triple fault
 * and finally pulses the i8042 reset line, which makes hull-vmm exit with status 0.
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define SERIAL_PORT 0x3f8
#define BOOT_MARKER_ADDR 0xd0000000ULL
#define BOOT_MARKER_MAGIC 123
#define VIRTIO_MMIO_BASE 0xd0001000ULL
#define VIRTIO_MMIO_SIZE 0x1000ULL
#define PVH_MAGIC 0x336ec578u

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 mmio_read32(u64 addr) { return *(volatile u32 *)addr; }
static inline void mmio_write8(u64 addr, u8 v) { *(volatile u8 *)addr = v; }

static void putc_serial(char c) { outb(SERIAL_PORT, (u8)c); }
static void puts_serial(const char *s) { while (*s) putc_serial(*s++); }
static void put_dec(u64 v) {
    char buf[24];
    int i = 0;
    do { buf[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (i) putc_serial(buf[--i]);
}
static void put_hex(u64 v) {
    puts_serial("0x");
    for (int shift = 28; shift >= 0; shift -= 4) putc_serial("0123456789abcdef"[(v >> shift) & 0xf]);
}

/* Finds `key` as a whole word of the command line; returns a pointer after it (at '=' or the end). */
static const char *find_arg(const char *cmdline, const char *key) {
    const char *p = cmdline;
    while (p && *p) {
        while (*p == ' ') p++;
        const char *k = key, *q = p;
        while (*k && *q == *k) { k++; q++; }
        if (!*k && (*q == 0 || *q == ' ' || *q == '=')) return q;
        while (*p && *p != ' ') p++;
    }
    return 0;
}

static u64 parse_dec(const char *p) {
    u64 v = 0;
    while (*p >= '0' && *p <= '9') v = v * 10 + (u64)(*p++ - '0');
    return v;
}

static void reset_via_i8042(void) {
    outb(0x64, 0xfe);
    for (;;) __asm__ volatile("cli; hlt");
}

struct e820 { u64 addr, size; u32 type; } __attribute__((packed));
struct pvh_memmap { u64 addr, size; u32 type, reserved; };

void cmain(u64 pvh_info, u64 boot_params) {
    const char *cmdline = "";
    u64 ram = 0, entries = 0;

    if (pvh_info) {
        puts_serial("tiny-guest: entry=pvh\n");
        if (*(volatile u32 *)pvh_info != PVH_MAGIC) {
            puts_serial("tiny-guest: error: bad PVH start_info magic\n");
            reset_via_i8042();
        }
        cmdline = (const char *)*(u64 *)(pvh_info + 24);
        struct pvh_memmap *map = (struct pvh_memmap *)*(u64 *)(pvh_info + 40);
        entries = *(u32 *)(pvh_info + 48);
        for (u64 i = 0; i < entries; i++)
            if (map[i].type == 1) ram += map[i].size;
    } else {
        puts_serial("tiny-guest: entry=linux64\n");
        if (*(u16 *)(boot_params + 0x1fe) != 0xaa55 || *(u32 *)(boot_params + 0x202) != 0x53726448) {
            puts_serial("tiny-guest: error: bad boot_params header\n");
            reset_via_i8042();
        }
        cmdline = (const char *)(u64)*(u32 *)(boot_params + 0x228);
        entries = *(u8 *)(boot_params + 0x1e8);
        struct e820 *map = (struct e820 *)(boot_params + 0x2d0);
        for (u64 i = 0; i < entries; i++)
            if (map[i].type == 1) ram += map[i].size;
    }
    puts_serial("tiny-guest: cmdline=");
    puts_serial(cmdline);
    puts_serial("\ntiny-guest: memmap_entries=");
    put_dec(entries);
    puts_serial(" ram_mib=");
    put_dec(ram >> 20);
    puts_serial("\n");

    if (find_arg(cmdline, "mark")) mmio_write8(BOOT_MARKER_ADDR, BOOT_MARKER_MAGIC);

    const char *arg = find_arg(cmdline, "ioloop");
    if (arg && *arg == '=') {
        u64 n = parse_dec(arg + 1);
        for (u64 i = 0; i < n; i++) outb(0x80, 0);
        mmio_write8(BOOT_MARKER_ADDR, BOOT_MARKER_MAGIC);
        puts_serial("tiny-guest: ioloop_done=");
        put_dec(n);
        puts_serial("\n");
    }

    arg = find_arg(cmdline, "virtio");
    if (arg && *arg == '=') {
        u64 n = parse_dec(arg + 1);
        for (u64 i = 0; i < n; i++) {
            u64 base = VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE;
            puts_serial("tiny-guest: virtio-mmio ");
            put_dec(i);
            puts_serial(" magic=");
            put_hex(mmio_read32(base + 0x0));
            puts_serial(" version=");
            put_dec(mmio_read32(base + 0x4));
            puts_serial(" device_id=");
            put_dec(mmio_read32(base + 0x8));
            puts_serial("\n");
        }
    }

    if (find_arg(cmdline, "crash")) {
        puts_serial("tiny-guest: crashing\n");
        __asm__ volatile("ud2");
    }

    if (find_arg(cmdline, "spin")) {
        puts_serial("tiny-guest: spinning\n");
        for (;;) __asm__ volatile("pause");
    }

    puts_serial("tiny-guest: done, resetting\n");
    reset_via_i8042();
}
