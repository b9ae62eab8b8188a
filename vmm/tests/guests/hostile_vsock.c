/*
 * Hull hostile tiny guest: attacks the virtio-mmio transport and the virtio-vsock device (and a
 * virtio-net device, when hull-vmm has one) the way a taken-over guest kernel could, phase by phase, and after each phase checks with one
 * well-formed operation (a vsock connection to host port ECHO_PORT that must echo a line) that
 * hull-vmm still serves. Everything is printed on the serial port for the host test:
 *   hostile: phase NAME begin
 *   hostile: ...                      what the phase saw (counts, statuses)
 *   hostile: phase NAME served        the echo after the phase worked
 *   hostile: phase NAME NOT SERVED: why
 *   hostile: settle NAME begin/end    ~1 s of guest idleness (the host samples the VMM meanwhile)
 * The host side needs: a listener at <uds>_ECHO_PORT that echoes, one at <uds>_SINK_PORT that
 * accepts and never reads, one at <uds>_STUCK_PORT that never accepts; nothing at CLOSED_PORT.
 * Command line: `phases=a,b,...` runs only those phases (default: all).
 * Shares the start-up code (start_pvh.S, common.S) with guest.c; the helpers below are its own.
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define SERIAL_PORT 0x3f8
#define MMIO_BASE 0xd0001000ULL
#define PVH_MAGIC 0x336ec578u
#define ECHO_PORT 5555
#define SINK_PORT 5556
#define STUCK_PORT 5557
#define CLOSED_PORT 7777

/* ---- serial, MMIO, time ---- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline u64 rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }
static inline u32 r32(u64 a) { return *(volatile u32 *)a; }
static inline void w32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline void w16(u64 a, u16 v) { *(volatile u16 *)a = v; }
static inline void w8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline u64 r64(u64 a) { return *(volatile u64 *)a; }
static inline u8 r8(u64 a) { return *(volatile u8 *)a; }

static void putc_serial(char c) { outb(SERIAL_PORT, (u8)c); }
static void puts_serial(const char *s) { while (*s) putc_serial(*s++); }
static void put_dec(u64 v) {
    char buf[24];
    int i = 0;
    do { buf[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (i) putc_serial(buf[--i]);
}
static void say(const char *a, const char *b) { puts_serial("hostile: "); puts_serial(a); puts_serial(b); puts_serial("\n"); }
static void say_num(const char *what, u64 v) { puts_serial("hostile: "); puts_serial(what); puts_serial("="); put_dec(v); puts_serial("\n"); }

/* Timeouts count TSC cycles (2^31 is about 0.85 s on the PVM test host). SERVE_WAIT and LONG_WAIT
 * bound what the device must do (generous: a loaded CI host is slow); QUIET_WAIT is how long the
 * guest looks for something that should not happen. */
#define QUIET_WAIT (1ULL << 28)
#define SHORT_WAIT (1ULL << 29)
#define SERVE_WAIT (1ULL << 31)
#define LONG_WAIT (1ULL << 33)
static int expired(u64 start, u64 limit) { return rdtsc() - start > limit; }

/* ---- virtio-mmio registers ---- */
enum {
    R_MAGIC = 0x00, R_VERSION = 0x04, R_DEVICE_ID = 0x08, R_DEV_FEAT = 0x10, R_DEV_FEAT_SEL = 0x14,
    R_DRV_FEAT = 0x20, R_DRV_FEAT_SEL = 0x24, R_QUEUE_SEL = 0x30, R_QUEUE_NUM_MAX = 0x34,
    R_QUEUE_NUM = 0x38, R_QUEUE_READY = 0x44, R_QUEUE_NOTIFY = 0x50, R_INT_STATUS = 0x60,
    R_INT_ACK = 0x64, R_STATUS = 0x70, R_DESC_LO = 0x80, R_DESC_HI = 0x84, R_AVAIL_LO = 0x90,
    R_AVAIL_HI = 0x94, R_USED_LO = 0xa0, R_USED_HI = 0xa4, R_CONFIG = 0x100,
};
#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 64
#define S_FAILED 128

/* ---- split virtqueues ---- */
#define QSZ 16
#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4
struct desc { u64 addr; u32 len; u16 flags, next; };
struct avail { u16 flags, idx, ring[QSZ], used_event; };
struct used_elem { u32 id, len; };
struct used { u16 flags, idx; struct used_elem ring[QSZ]; u16 avail_event; };
struct vq {
    struct desc desc[QSZ] __attribute__((aligned(16)));
    struct avail avail __attribute__((aligned(16)));
    struct used used __attribute__((aligned(16)));
    u16 last_used;
};
enum { RXQ = 0, TXQ = 1, EVQ = 2 };
static struct vq vqs[3] __attribute__((aligned(4096)));

/* ---- vsock packets ---- */
#define HDR_LEN 44
#define RX_BUF 4096
enum { OP_REQUEST = 1, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST };
struct hdr {
    u64 src_cid, dst_cid;
    u32 src_port, dst_port, len;
    u16 type, op;
    u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static u8 rx_bufs[QSZ][RX_BUF] __attribute__((aligned(64)));
static u8 tx_hdr[HDR_LEN] __attribute__((aligned(64)));
static u8 tx_data[16384] __attribute__((aligned(64)));
static u8 ev_bufs[QSZ][8];
static u8 scratch[8192] __attribute__((aligned(4096)));
static struct desc indirect[8] __attribute__((aligned(16)));
static u64 base = MMIO_BASE, guest_cid, ram_end;
static u64 op_count[8];

/* Received packets kept for the code that waits for them (oldest dropped when full). */
struct msg { struct hdr h; u8 data[64]; u32 n; };
#define MBOX 64
static struct msg mbox[MBOX];
static u32 mbox_next;

static void zero(void *p, u64 n) { u8 *b = p; while (n--) *b++ = 0; }
static void copy(void *d, const void *s, u64 n) { u8 *a = d; const u8 *b = s; while (n--) *a++ = *b++; }

static void publish(int q, u16 head) {
    struct vq *v = &vqs[q];
    v->avail.ring[v->avail.idx % QSZ] = head;
    barrier();
    v->avail.idx++;
    barrier();
    w32(base + R_QUEUE_NOTIFY, (u32)q);
}

static void post_rx(u16 i) {
    struct desc *d = &vqs[RXQ].desc[i];
    d->addr = (u64)rx_bufs[i]; d->len = RX_BUF; d->flags = F_WRITE; d->next = 0;
    publish(RXQ, i);
}

/* Takes every rx packet the device returned, counts it, keeps it in the mailbox, re-posts the buffer. */
static void rx_drain(void) {
    struct vq *v = &vqs[RXQ];
    while (*(volatile u16 *)&v->used.idx != v->last_used) {
        barrier();
        struct used_elem e = v->used.ring[v->last_used % QSZ];
        v->last_used++;
        u16 id = (u16)(e.id % QSZ);
        if (e.len >= HDR_LEN) {
            struct msg *m = &mbox[mbox_next++ % MBOX];
            copy(&m->h, rx_bufs[id], HDR_LEN);
            m->n = m->h.len < sizeof(m->data) ? m->h.len : sizeof(m->data);
            copy(m->data, rx_bufs[id] + HDR_LEN, m->n);
            op_count[m->h.op & 7]++;
        }
        post_rx(id);
    }
}

/* Finds (and removes) a kept packet for local `port` whose op is in `mask`. */
static int take(u32 port, u32 mask, struct msg *out) {
    for (u32 i = 0; i < MBOX; i++) {
        struct msg *m = &mbox[(mbox_next + i) % MBOX];
        if (m->h.op && m->h.dst_port == port && (mask & (1u << m->h.op))) {
            *out = *m;
            m->h.op = 0;
            return 1;
        }
    }
    return 0;
}

static int wait_for(u32 port, u32 mask, struct msg *out, u64 limit) {
    u64 t = rdtsc();
    for (;;) {
        rx_drain();
        if (take(port, mask, out)) return 1;
        if (expired(t, limit)) return 0;
        __asm__ volatile("pause");
    }
}

/* Publishes tx chain `head` and waits until the device used it; rx is drained meanwhile unless
 * `drain` is 0. Returns 0 when the device did not use it in time. */
static int tx_chain(u16 head, int drain, u64 limit) {
    struct vq *v = &vqs[TXQ];
    u16 want = (u16)(v->last_used + 1);
    publish(TXQ, head);
    u64 t = rdtsc();
    while (*(volatile u16 *)&v->used.idx != want) {
        if (drain) rx_drain();
        if (expired(t, limit)) return 0;
        __asm__ volatile("pause");
    }
    v->last_used = want;
    return 1;
}

static u32 send_buf_alloc = 64 * 1024, send_fwd_cnt;
static u64 tx_wait = SERVE_WAIT;

static int send_pkt(u32 src, u32 dst, u16 op, u32 flags, const u8 *data, u32 len, int drain) {
    struct hdr *h = (struct hdr *)tx_hdr;
    struct desc *d = vqs[TXQ].desc;
    h->src_cid = guest_cid; h->dst_cid = 2; h->src_port = src; h->dst_port = dst; h->len = len;
    h->type = 1; h->op = op; h->flags = flags; h->buf_alloc = send_buf_alloc; h->fwd_cnt = send_fwd_cnt;
    if (data && data != tx_data) copy(tx_data, data, len);
    d[0].addr = (u64)tx_hdr; d[0].len = HDR_LEN; d[0].flags = len ? F_NEXT : 0; d[0].next = 1;
    d[1].addr = (u64)tx_data; d[1].len = len; d[1].flags = 0; d[1].next = 0;
    return tx_chain(0, drain, tx_wait);
}

/* Full driver initialisation (reset first, QSZ-entry queues); returns the status after DRIVER_OK. */
static u32 dev_init(void) {
    w32(base + R_STATUS, 0);
    zero(vqs, sizeof(vqs));
    zero(mbox, sizeof(mbox));
    w32(base + R_STATUS, S_ACK);
    w32(base + R_STATUS, S_ACK | S_DRIVER);
    w32(base + R_DRV_FEAT_SEL, 1); w32(base + R_DRV_FEAT, 1);
    w32(base + R_DRV_FEAT_SEL, 0); w32(base + R_DRV_FEAT, 0);
    w32(base + R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    for (u32 q = 0; q < 3; q++) {
        u64 d = (u64)&vqs[q].desc, a = (u64)&vqs[q].avail, u = (u64)&vqs[q].used;
        w32(base + R_QUEUE_SEL, q);
        w32(base + R_QUEUE_NUM, QSZ);
        w32(base + R_DESC_LO, (u32)d); w32(base + R_DESC_HI, (u32)(d >> 32));
        w32(base + R_AVAIL_LO, (u32)a); w32(base + R_AVAIL_HI, (u32)(a >> 32));
        w32(base + R_USED_LO, (u32)u); w32(base + R_USED_HI, (u32)(u >> 32));
        w32(base + R_QUEUE_READY, 1);
    }
    w32(base + R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    u32 status = r32(base + R_STATUS);
    guest_cid = r32(base + R_CONFIG) | ((u64)r32(base + R_CONFIG + 4) << 32);
    for (u16 i = 0; i < QSZ; i++) post_rx(i);
    for (u16 i = 0; i < QSZ; i++) {
        struct desc *d = &vqs[EVQ].desc[i];
        d->addr = (u64)ev_bufs[i]; d->len = 8; d->flags = F_WRITE;
        publish(EVQ, i);
    }
    return status;
}

static u32 next_local_port = 40000;

/* The well-formed operation: connect to the echo port, send a line, expect it back, close. */
static int echo_check(const char *phase) {
    static const u8 line[] = "ping after a hostile phase\n";
    u32 port = next_local_port++;
    struct msg m;
    const char *why = 0;
    send_buf_alloc = 64 * 1024; send_fwd_cnt = 0;
    if (!send_pkt(port, ECHO_PORT, OP_REQUEST, 0, 0, 0, 1)) why = "tx queue not served";
    else if (!wait_for(port, 1u << OP_RESPONSE | 1u << OP_RST, &m, LONG_WAIT)) why = "no answer to REQUEST";
    else if (m.h.op != OP_RESPONSE) why = "REQUEST refused (RST)";
    else if (!send_pkt(port, ECHO_PORT, OP_RW, 0, line, sizeof(line) - 1, 1)) why = "RW not taken";
    else if (!wait_for(port, 1u << OP_RW | 1u << OP_RST, &m, LONG_WAIT)) why = "no echo";
    else if (m.h.op != OP_RW || m.n != sizeof(line) - 1) why = "wrong echo";
    if (!why) {
        for (u32 i = 0; i < m.n; i++) if (m.data[i] != line[i]) why = "echo differs";
        send_fwd_cnt = m.n;
        send_pkt(port, ECHO_PORT, OP_SHUTDOWN, 3, 0, 0, 1);
        wait_for(port, 1u << OP_RST, &m, SERVE_WAIT);
    }
    puts_serial("hostile: phase ");
    puts_serial(phase);
    if (why) { puts_serial(" NOT SERVED: "); puts_serial(why); puts_serial("\n"); return -1; }
    puts_serial(" served\n");
    return 0;
}

static void settle(const char *name) {
    say("settle begin ", name);
    u64 t = rdtsc();
    while (!expired(t, 1ULL << 31)) { rx_drain(); __asm__ volatile("pause"); }
    say("settle end ", name);
}

static void begin(const char *phase) { say("phase begin ", phase); }

#include "hostile_phases.h"

/* ---- entry ---- */
static const char *find_arg(const char *c, const char *key) {
    const char *p = c;
    while (p && *p) {
        while (*p == ' ') p++;
        const char *k = key, *q = p;
        while (*k && *q == *k) { k++; q++; }
        if (!*k && (*q == 0 || *q == ' ' || *q == '=')) return q;
        while (*p && *p != ' ') p++;
    }
    return 0;
}

/* Whether `name` is in the comma-separated `phases=` list (all phases when there is none). */
static int wanted(const char *cmdline, const char *name) {
    const char *p = find_arg(cmdline, "phases");
    if (!p || *p != '=') return 1;
    p++;
    while (*p && *p != ' ') {
        const char *n = name;
        while (*n && *p == *n) { n++; p++; }
        if (!*n && (*p == ',' || *p == ' ' || !*p)) return 1;
        while (*p && *p != ',' && *p != ' ') p++;
        if (*p == ',') p++;
    }
    return 0;
}

struct pvh_memmap { u64 addr, size; u32 type, reserved; };

void cmain(u64 pvh_info, u64 boot_params) {
    (void)boot_params;
    if (!pvh_info || *(volatile u32 *)pvh_info != PVH_MAGIC) {
        puts_serial("hostile: needs the PVH entry\n");
        outb(0x64, 0xfe);
    }
    const char *cmdline = (const char *)*(u64 *)(pvh_info + 24);
    struct pvh_memmap *map = (struct pvh_memmap *)*(u64 *)(pvh_info + 40);
    u32 entries = *(u32 *)(pvh_info + 48);
    for (u32 i = 0; i < entries; i++)
        if (map[i].type == 1 && map[i].addr + map[i].size > ram_end) ram_end = map[i].addr + map[i].size;
    say_num("ram_end", ram_end);
    for (u64 w = 0; w < 8; w++) {
        base = MMIO_BASE + w * 0x1000;
        if (r32(base + R_MAGIC) == 0x74726976 && r32(base + R_DEVICE_ID) == 19) break;
    }
    if (r32(base + R_MAGIC) != 0x74726976 || r32(base + R_DEVICE_ID) != 19) {
        puts_serial("hostile: no virtio-vsock device\n");
        outb(0x64, 0xfe);
    }
    dev_init();
    say_num("guest_cid", guest_cid);
    if (echo_check("baseline") == 0) settle("baseline");
    for (u32 i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
        if (!wanted(cmdline, phases[i].name)) continue;
        begin(phases[i].name);
        phases[i].run();
    }
    dev_init();
    echo_check("final");
    settle("final");
    puts_serial("hostile: done\n");
    outb(0x64, 0xfe);
    for (;;) __asm__ volatile("cli; hlt");
}
