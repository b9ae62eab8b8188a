/*
 * The net phase of hostile_vsock.c (included by hostile_phases.h): when hull-vmm also has a
 * virtio-net device, its registers and tx queue are attacked while vsock is off, then vsock must
 * come back and echo.
 */

/* ---- the virtio-net device in another window, if there is one: attacked while vsock waits ---- */
#define NET_HDR 12
static void net_try(const char *name, u32 *used) {
    struct vq *v = &vqs[TXQ];
    u16 want = (u16)(v->last_used + 1);
    publish(TXQ, 2);
    u64 t = rdtsc();
    while (*(volatile u16 *)&v->used.idx != want && !expired(t, SERVE_WAIT)) __asm__ volatile("pause");
    int ok = *(volatile u16 *)&v->used.idx == want;
    v->last_used = *(volatile u16 *)&v->used.idx;
    *used += (u32)ok;
    puts_serial("hostile: net chain "); puts_serial(name); puts_serial(ok ? " used\n" : " NOT USED\n");
}

static void phase_net(void) {
    u64 net = 0;
    for (u64 w = 0; w < 8 && !net; w++)
        if (r32(MMIO_BASE + w * 0x1000) == 0x74726976 && r32(MMIO_BASE + w * 0x1000 + R_DEVICE_ID) == 1) net = MMIO_BASE + w * 0x1000;
    if (!net) { say("no virtio-net device: phase skipped", ""); return; }
    w32(base + R_STATUS, 0);               /* vsock off while its rings are lent to net */
    u64 vsock = base;
    base = net;
    set_status(0); poke_registers(); fuzz_status(); report_status("net after reset+pokes");
    set_status(0); set_status(S_ACK); set_status(S_ACK | S_DRIVER); poke_registers(); fuzz_status();
    /* A proper start with VERSION_1 only, then hostile tx chains. */
    set_status(0); zero(vqs, sizeof(vqs));
    set_status(S_ACK); set_status(S_ACK | S_DRIVER);
    w32(base + R_DRV_FEAT_SEL, 1); w32(base + R_DRV_FEAT, 1);
    w32(base + R_DRV_FEAT_SEL, 0); w32(base + R_DRV_FEAT, 0);
    set_status(S_ACK | S_DRIVER | S_FEATURES_OK);
    for (u32 q = 0; q < 2; q++) {
        u64 d = (u64)&vqs[q].desc, a = (u64)&vqs[q].avail, u = (u64)&vqs[q].used;
        w32(base + R_QUEUE_SEL, q); w32(base + R_QUEUE_NUM, QSZ);
        w32(base + R_DESC_LO, (u32)d); w32(base + R_AVAIL_LO, (u32)a); w32(base + R_USED_LO, (u32)u);
        w32(base + R_QUEUE_READY, 1);
    }
    set_status(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    report_status("net after init");
    poke_registers();
    struct desc *d = vqs[TXQ].desc;
    u64 frame = (u64)scratch;
    zero(scratch, 128);
    for (u32 i = 0; i < 6; i++) scratch[NET_HDR + i] = 0xff;
    scratch[NET_HDR + 12] = 0x88; scratch[NET_HDR + 13] = 0xb5;
    u32 used = 0;
    set_desc(&d[2], frame, NET_HDR + 60, 0, 0); net_try("good-frame", &used);
    set_desc(&d[2], frame, NET_HDR + 60, F_NEXT, 2); net_try("self-loop", &used);
    set_desc(&d[2], frame, 8, F_NEXT, 3); set_desc(&d[3], frame, 8, F_NEXT, 2); net_try("two-cycle", &used);
    set_desc(&d[2], 0xfffffffffffff000ULL, 100, 0, 0); net_try("outside-ram", &used);
    set_desc(&d[2], ram_end - 20, 100, 0, 0); net_try("straddles-ram-end", &used);
    set_desc(&d[2], frame, 0xffffffff, 0, 0); net_try("len-4g", &used);
    set_desc(&d[2], frame, 0, 0, 0); net_try("len-0", &used);
    set_desc(&d[2], frame, NET_HDR + 60, F_WRITE, 0); net_try("write-only", &used);
    set_desc(&d[2], frame, NET_HDR + 60, F_NEXT, 300); net_try("next-out-of-table", &used);
    set_desc(&indirect[0], frame, NET_HDR + 60, 0, 0);
    set_desc(&d[2], (u64)indirect, 16, F_INDIRECT, 0); net_try("indirect-not-negotiated", &used);
    set_desc(&d[2], (u64)indirect, 17, F_INDIRECT, 0); net_try("indirect-len-17", &used);
    set_desc(&d[2], frame, NET_HDR + 60, 0, 0); net_try("good-frame-after", &used);
    say_num("net chains used", used);
    /* Heads past the table, then the avail index far ahead. */
    struct vq *t = &vqs[TXQ];
    for (u32 k = 0; k < 200; k++) {
        for (u32 i = 0; i < QSZ - 1; i++) t->avail.ring[(t->avail.idx + i) % QSZ] = 0xffff;
        barrier();
        t->avail.idx += QSZ - 1;
        set_desc(&d[2], frame, NET_HDR + 60, 0, 0);
        u32 ok = 0;
        u16 want = (u16)(t->last_used + 1);
        publish(TXQ, 2);
        u64 w = rdtsc();
        while (*(volatile u16 *)&t->used.idx != want && !expired(w, SERVE_WAIT)) __asm__ volatile("pause");
        ok = *(volatile u16 *)&t->used.idx == want;
        t->last_used = *(volatile u16 *)&t->used.idx;
        if (!ok) { say_num("net bad-head round not served", k); break; }
    }
    t->avail.idx += 1000;
    vqs[RXQ].avail.idx += 30000;
    w32(base + R_QUEUE_NOTIFY, TXQ);
    w32(base + R_QUEUE_NOTIFY, RXQ);
    set_status(0);
    report_status("net after reset");
    base = vsock;
    dev_init();
    echo_check("net");
}
