/*
 * Hull tiny test guest: a freestanding 64-bit program booted by hull-vmm through the same loader paths
 * as Linux (PVH or the 64-bit boot protocol). It reports what the VMM handed it on the serial port and
 * then does what the kernel command line asks:
 *   mark          write the boot-time marker byte
 *   ioloop=N      N port writes to 0x80, then the boot marker again (exit-rate benchmark)
 *   virtio=N      read the registers of the first N virtio-mmio windows and print them
 *   spin          print "spinning" and loop forever (the VMM must stop it on SIGTERM)
 *   crash         execute ud2 with no IDT: a triple fault
 *   vsock-connect=P   drive the virtio-vsock device in window 0: connect to host (CID 2) port P, send a
 *                 line, print the reply, shut the connection down
 *   vsock-listen=P    accept one host-initiated connection on port P and echo what arrives, upper-cased
 *   net-echo      drive the virtio-net device in window 0: send one broadcast frame (ethertype 0x88b5,
 *                 payload "hello from the tiny guest"), then print the payload of the first 0x88b5
 *                 frame that arrives
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

static void put_hex64(u64 v) {
    puts_serial("0x");
    for (int shift = 60; shift >= 0; shift -= 4) putc_serial("0123456789abcdef"[(v >> shift) & 0xf]);
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

/* ---- a minimal polling virtio-vsock driver (virtio-mmio v2, split queues) ---- */
#define QSZ 8
#define VSOCK_HDR_LEN 44
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define OP_CREDIT_REQUEST 7
#define VQ_DESC_F_NEXT 1
#define VQ_DESC_F_WRITE 2

struct vq_desc { u64 addr; u32 len; u16 flags, next; };
struct vq_avail { u16 flags, idx, ring[QSZ], used_event; };
struct vq_used_elem { u32 id, len; };
struct vq_used { u16 flags, idx; struct vq_used_elem ring[QSZ]; u16 avail_event; };
struct vq {
    struct vq_desc desc[QSZ] __attribute__((aligned(16)));
    struct vq_avail avail __attribute__((aligned(16)));
    struct vq_used used __attribute__((aligned(16)));
    u16 last_used;
};
struct vsock_hdr {
    u64 src_cid, dst_cid;
    u32 src_port, dst_port, len;
    u16 type, op;
    u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static struct vq vqs[3] __attribute__((aligned(4096)));
static u8 rx_bufs[QSZ][VSOCK_HDR_LEN + 1024] __attribute__((aligned(64)));
static u8 tx_hdr[VSOCK_HDR_LEN] __attribute__((aligned(64)));
static u8 tx_data[1024] __attribute__((aligned(64)));
static u8 ev_bufs[QSZ][8];
static u64 vsock_base, guest_cid;
static u32 rx_fwd_cnt;

static inline void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline void mmio_write32(u64 addr, u32 v) { *(volatile u32 *)addr = v; }

static void vq_publish(int q, u16 head) {
    struct vq *v = &vqs[q];
    v->avail.ring[v->avail.idx % QSZ] = head;
    barrier();
    v->avail.idx++;
    barrier();
    mmio_write32(vsock_base + 0x50, (u32)q);
}

static void post_rx(u16 i) {
    struct vq *v = &vqs[0];
    v->desc[i].addr = (u64)rx_bufs[i];
    v->desc[i].len = sizeof(rx_bufs[i]);
    v->desc[i].flags = VQ_DESC_F_WRITE;
    v->desc[i].next = 0;
    vq_publish(0, i);
}

/* The virtio-mmio init sequence for the device in window `vsock_base`: checks it is `device_id`,
 * accepts VERSION_1 and the bits of `want_lo` the device offers (returned in *got_lo), sets up
 * `nqueues` queues of QSZ on vqs[] and sets DRIVER_OK. 0 on success; prints why not. */
static int virtio_init(const char *name, u32 device_id, u32 want_lo, u32 nqueues, u32 *got_lo) {
    u64 b = vsock_base;
    if (mmio_read32(b) != 0x74726976 || mmio_read32(b + 4) != 2 || mmio_read32(b + 8) != device_id) {
        puts_serial("tiny-guest: "); puts_serial(name); puts_serial(": not the device in window 0\n");
        return -1;
    }
    mmio_write32(b + 0x70, 0);
    mmio_write32(b + 0x70, 1);
    mmio_write32(b + 0x70, 1 | 2);
    mmio_write32(b + 0x14, 1);                 /* DeviceFeaturesSel = 1 */
    if (!(mmio_read32(b + 0x10) & 1)) { puts_serial("tiny-guest: "); puts_serial(name); puts_serial(": no VERSION_1\n"); return -1; }
    mmio_write32(b + 0x14, 0);
    u32 lo = mmio_read32(b + 0x10) & want_lo;
    if (got_lo) *got_lo = lo;
    mmio_write32(b + 0x24, 1); mmio_write32(b + 0x20, 1);   /* VERSION_1 */
    mmio_write32(b + 0x24, 0); mmio_write32(b + 0x20, lo);
    mmio_write32(b + 0x70, 1 | 2 | 8);
    if (!(mmio_read32(b + 0x70) & 8)) { puts_serial("tiny-guest: "); puts_serial(name); puts_serial(": FEATURES_OK refused\n"); return -1; }
    for (u32 q = 0; q < nqueues; q++) {
        mmio_write32(b + 0x30, q);
        if (mmio_read32(b + 0x34) < QSZ) { puts_serial("tiny-guest: "); puts_serial(name); puts_serial(": queue too small\n"); return -1; }
        mmio_write32(b + 0x38, QSZ);
        u64 d = (u64)&vqs[q].desc, a = (u64)&vqs[q].avail, u = (u64)&vqs[q].used;
        mmio_write32(b + 0x80, (u32)d); mmio_write32(b + 0x84, (u32)(d >> 32));
        mmio_write32(b + 0x90, (u32)a); mmio_write32(b + 0x94, (u32)(a >> 32));
        mmio_write32(b + 0xa0, (u32)u); mmio_write32(b + 0xa4, (u32)(u >> 32));
        mmio_write32(b + 0x44, 1);
    }
    mmio_write32(b + 0x70, 1 | 2 | 8 | 4);
    return 0;
}

static int vsock_init(void) {
    u64 b = vsock_base;
    if (virtio_init("vsock", 19, 0, 3, 0) != 0) return -1;
    guest_cid = (u64)mmio_read32(b + 0x100) | ((u64)mmio_read32(b + 0x104) << 32);
    puts_serial("tiny-guest: vsock guest_cid=");
    put_dec(guest_cid);
    puts_serial("\n");
    for (u16 i = 0; i < QSZ; i++) post_rx(i);
    for (u16 i = 0; i < QSZ; i++) {
        vqs[2].desc[i].addr = (u64)ev_bufs[i];
        vqs[2].desc[i].len = 8;
        vqs[2].desc[i].flags = VQ_DESC_F_WRITE;
        vq_publish(2, i);
    }
    return 0;
}

static void vsock_send(u32 src_port, u32 dst_port, u16 op, u32 flags, const u8 *data, u32 len) {
    struct vsock_hdr *h = (struct vsock_hdr *)tx_hdr;
    struct vq *v = &vqs[1];
    h->src_cid = guest_cid; h->dst_cid = 2; h->src_port = src_port; h->dst_port = dst_port;
    h->len = len; h->type = 1; h->op = op; h->flags = flags;
    h->buf_alloc = 64 * 1024; h->fwd_cnt = rx_fwd_cnt;
    for (u32 i = 0; i < len; i++) tx_data[i] = data[i];
    v->desc[0].addr = (u64)tx_hdr; v->desc[0].len = VSOCK_HDR_LEN; v->desc[0].flags = len ? VQ_DESC_F_NEXT : 0; v->desc[0].next = 1;
    v->desc[1].addr = (u64)tx_data; v->desc[1].len = len; v->desc[1].flags = 0; v->desc[1].next = 0;
    u16 want = (u16)(v->last_used + 1);
    vq_publish(1, 0);
    while ((u16)(*(volatile u16 *)&v->used.idx) != want) __asm__ volatile("pause");
    v->last_used = want;
}

/* Waits for the next rx packet; copies header and payload out and re-posts the buffer. */
static void vsock_recv(struct vsock_hdr *out, u8 *payload, u32 max) {
    struct vq *v = &vqs[0];
    while ((u16)(*(volatile u16 *)&v->used.idx) == v->last_used) __asm__ volatile("pause");
    barrier();
    struct vq_used_elem e = v->used.ring[v->last_used % QSZ];
    v->last_used++;
    u8 *buf = rx_bufs[e.id % QSZ];
    struct vsock_hdr *h = (struct vsock_hdr *)buf;
    *out = *h;
    u32 n = h->len < max ? h->len : max;
    for (u32 i = 0; i < n; i++) payload[i] = buf[VSOCK_HDR_LEN + i];
    if (h->op == OP_RW) rx_fwd_cnt += h->len;
    post_rx((u16)(e.id % QSZ));
}

static void print_packet(const char *what, struct vsock_hdr *h) {
    puts_serial("tiny-guest: vsock ");
    puts_serial(what);
    puts_serial(" op=");
    put_dec(h->op);
    puts_serial(" src_port=");
    put_dec(h->src_port);
    puts_serial(" dst_port=");
    put_dec(h->dst_port);
    puts_serial(" len=");
    put_dec(h->len);
    puts_serial("\n");
}

static void print_payload(const char *what, const u8 *p, u32 len) {
    puts_serial("tiny-guest: vsock ");
    puts_serial(what);
    puts_serial(": ");
    for (u32 i = 0; i < len; i++) putc_serial(p[i] == '\n' ? '|' : (char)p[i]);
    puts_serial("\n");
}

static void vsock_connect(u32 port) {
    struct vsock_hdr h;
    static u8 payload[1024];
    const u32 local = 5000;
    vsock_send(local, port, OP_REQUEST, 0, 0, 0);
    vsock_recv(&h, payload, sizeof(payload));
    if (h.op != OP_RESPONSE) {
        print_packet("connect refused", &h);
        return;
    }
    puts_serial("tiny-guest: vsock connected\n");
    static const u8 hello[] = "hello from the guest\n";
    vsock_send(local, port, OP_RW, 0, hello, sizeof(hello) - 1);
    for (;;) {
        vsock_recv(&h, payload, sizeof(payload));
        if (h.op == OP_RW) { print_payload("received", payload, h.len); break; }
        if (h.op == OP_RST || h.op == OP_SHUTDOWN) { print_packet("closed early", &h); return; }
    }
    vsock_send(local, port, OP_SHUTDOWN, 3, 0, 0);
    for (;;) {
        vsock_recv(&h, payload, sizeof(payload));
        if (h.op == OP_RST) break;
    }
    puts_serial("tiny-guest: vsock closed\n");
}

static void vsock_listen(u32 port) {
    struct vsock_hdr h;
    static u8 payload[1024];
    for (;;) {
        vsock_recv(&h, payload, sizeof(payload));
        if (h.op == OP_REQUEST && h.dst_port == port) break;
        print_packet("ignored", &h);
    }
    u32 peer = h.src_port;
    vsock_send(port, peer, OP_RESPONSE, 0, 0, 0);
    puts_serial("tiny-guest: vsock accepted\n");
    for (;;) {
        vsock_recv(&h, payload, sizeof(payload));
        if (h.op == OP_RW) {
            print_payload("received", payload, h.len);
            for (u32 i = 0; i < h.len; i++)
                if (payload[i] >= 'a' && payload[i] <= 'z') payload[i] = (u8)(payload[i] - 32);
            vsock_send(port, peer, OP_RW, 0, payload, h.len);
        } else if (h.op == OP_SHUTDOWN || h.op == OP_RST) {
            print_packet("peer closed", &h);
            if (h.op == OP_SHUTDOWN) vsock_send(port, peer, OP_RST, 0, 0, 0);
            break;
        } else if (h.op == OP_CREDIT_REQUEST) {
            vsock_send(port, peer, OP_CREDIT_UPDATE, 0, 0, 0);
        }
    }
    puts_serial("tiny-guest: vsock closed\n");
}


/* ---- a minimal polling virtio-net driver on the same queues: rx = vqs[0], tx = vqs[1] ---- */
#define NET_HDR_LEN 12
#define NET_ETHERTYPE_HI 0x88
#define NET_ETHERTYPE_LO 0xb5

static void net_echo(void) {
    u64 b = vsock_base;
    if (virtio_init("net", 1, 1u << 5, 2, 0) != 0) return;   /* MAC if offered */
    u8 mac[6];
    for (int i = 0; i < 6; i++) mac[i] = *(volatile u8 *)(b + 0x100 + i);
    puts_serial("tiny-guest: net mac=");
    for (int i = 0; i < 6; i++) { put_dec(mac[i]); puts_serial(i < 5 ? ":" : " (decimal)\n"); }
    for (u16 i = 0; i < QSZ; i++) post_rx(i);

    /* tx: header and a 60-byte broadcast frame in one descriptor. */
    static const char hello[] = "hello from the tiny guest";
    for (u32 i = 0; i < NET_HDR_LEN + 60; i++) tx_data[i] = 0;
    u8 *f = tx_data + NET_HDR_LEN;
    for (int i = 0; i < 6; i++) { f[i] = 0xff; f[6 + i] = mac[i]; }
    f[12] = NET_ETHERTYPE_HI; f[13] = NET_ETHERTYPE_LO;
    for (u32 i = 0; hello[i]; i++) f[14 + i] = (u8)hello[i];
    struct vq *t = &vqs[1];
    t->desc[0].addr = (u64)tx_data; t->desc[0].len = NET_HDR_LEN + 60; t->desc[0].flags = 0; t->desc[0].next = 0;
    u16 want = (u16)(t->last_used + 1);
    vq_publish(1, 0);
    while ((u16)(*(volatile u16 *)&t->used.idx) != want) __asm__ volatile("pause");
    t->last_used = want;
    puts_serial("tiny-guest: net sent\n");

    /* rx: skip anything that is not ours, print the first frame of our ethertype. */
    struct vq *r = &vqs[0];
    for (;;) {
        while ((u16)(*(volatile u16 *)&r->used.idx) == r->last_used) __asm__ volatile("pause");
        barrier();
        struct vq_used_elem e = r->used.ring[r->last_used % QSZ];
        r->last_used++;
        u8 *buf = rx_bufs[e.id % QSZ];
        u8 *g = buf + NET_HDR_LEN;
        if (e.len > NET_HDR_LEN + 14 && g[12] == NET_ETHERTYPE_HI && g[13] == NET_ETHERTYPE_LO) {
            puts_serial("tiny-guest: net received num_buffers=");
            put_dec(buf[10] | (buf[11] << 8));
            puts_serial(" len=");
            put_dec(e.len);
            puts_serial(": ");
            for (u32 i = NET_HDR_LEN + 14; i < e.len && buf[i]; i++) putc_serial((char)buf[i]);
            puts_serial("|\n");
            return;
        }
        post_rx((u16)(e.id % QSZ));
    }
}

/* Free page reporting through the virtio-balloon in window 0: touch 4 MiB at 16 MiB, report it
 * free in one device-writable descriptor, wait for the device to return it, then check the
 * memory reads back as zero (the host released it). */
#define BALLOON_FREE_AT 0x1000000ULL
#define BALLOON_FREE_LEN 0x400000U
static void balloon_report(void) {
    u32 features = 0;
    if (virtio_init("balloon", 5, 1u << 5, 3, &features) != 0) return;
    if (!(features & (1u << 5))) { puts_serial("tiny-guest: balloon: no REPORTING\n"); return; }
    volatile u8 *area = (volatile u8 *)BALLOON_FREE_AT;
    for (u32 i = 0; i < BALLOON_FREE_LEN; i += 4096) area[i] = 0xa5;
    puts_serial("tiny-guest: balloon touched=4096KiB first_byte=");
    put_dec(area[0]);
    puts_serial("\n");
    struct vq *r = &vqs[2];
    r->desc[0].addr = BALLOON_FREE_AT;
    r->desc[0].len = BALLOON_FREE_LEN;
    r->desc[0].flags = VQ_DESC_F_WRITE;
    r->desc[0].next = 0;
    u16 want = (u16)(r->last_used + 1);
    vq_publish(2, 0);
    while ((u16)(*(volatile u16 *)&r->used.idx) != want) __asm__ volatile("pause");
    r->last_used = want;
    u32 nonzero = 0;
    for (u32 i = 0; i < BALLOON_FREE_LEN; i += 4096) nonzero += area[i] != 0;
    puts_serial("tiny-guest: balloon reported, nonzero_pages=");
    put_dec(nonzero);
    puts_serial("\n");
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

    const char *vc = find_arg(cmdline, "vsock-connect");
    const char *vl = find_arg(cmdline, "vsock-listen");
    if ((vc && *vc == '=') || (vl && *vl == '=')) {
        vsock_base = VIRTIO_MMIO_BASE;
        if (vsock_init() == 0) {
            if (vc && *vc == '=') vsock_connect((u32)parse_dec(vc + 1));
            else vsock_listen((u32)parse_dec(vl + 1));
        }
    }

    if (find_arg(cmdline, "net-echo")) {
        vsock_base = VIRTIO_MMIO_BASE;
        net_echo();
    }

    if (find_arg(cmdline, "balloon-report")) {
        vsock_base = VIRTIO_MMIO_BASE;
        balloon_report();
    }

    /* pmem: device 0 is virtio-pmem; print its window (config: le64 start, le64 size), the
       first and last 8 bytes in it, then write the first 8 and read them back. */
    if (find_arg(cmdline, "pmem")) {
        u64 cfg = VIRTIO_MMIO_BASE + 0x100;
        u64 start = (u64)mmio_read32(cfg) | ((u64)mmio_read32(cfg + 4) << 32);
        u64 size = (u64)mmio_read32(cfg + 8) | ((u64)mmio_read32(cfg + 12) << 32);
        puts_serial("tiny-guest: pmem start=");
        put_hex64(start);
        puts_serial(" size=");
        put_hex64(size);
        volatile u64 *first = (volatile u64 *)start;
        volatile u64 *last = (volatile u64 *)(start + size - 8);
        puts_serial(" first=");
        put_hex64(*first);
        puts_serial(" last=");
        put_hex64(*last);
        *first = 0x1122334455667788ULL;
        puts_serial(" after_write=");
        put_hex64(*first);
        puts_serial("\n");
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
