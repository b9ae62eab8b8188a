/*
 * The hostile phases of hostile_vsock.c. Each one attacks, prints what it saw, and ends with
 * echo_check(): without a device reset where hull-vmm must keep serving the same queues, after a
 * reset where the guest broke its own queues (the device may refuse them, but must recover).
 */

/* ---- MMIO: every register, every state ---- */
static const u32 patterns[] = {0, 1, 2, 0xffffffff, 0x80000000, 0x10000, QSZ};

/* Writes every pattern to every register but Status (and reads each back), then narrow, wide and
 * unaligned accesses everywhere in the register block and the config space. */
static void poke_registers(void) {
    for (u32 off = 0; off < R_CONFIG; off += 4) {
        if (off == R_STATUS) continue;
        for (u32 i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
            w32(base + off, patterns[i]);
            (void)r32(base + off);
        }
    }
    for (u32 off = 0; off < R_CONFIG + 0x10; off++) {
        if (off >= R_STATUS && off < R_STATUS + 4) continue;
        w8(base + off, 0xff);
        (void)r8(base + off);
        if (!(off & 1)) w16(base + off, 0xffff);
        if (!(off & 7)) { (void)r64(base + off); *(volatile u64 *)(base + off) = ~0ULL; }
    }
}

/* Reads far outside what the device has: the rest of its 4 KiB window, the windows of devices that
 * do not exist, the boot marker page and the start of the MMIO gap. */
static void read_out_of_range(void) {
    u64 sum = 0;
    for (u64 off = R_CONFIG; off < 0x1000; off += 4) sum += r32(base + off);
    for (u64 off = 0xff8; off < 0x1000; off++) sum += r8(base + off);
    for (u64 w = 1; w < 16; w++) sum += r32(base + w * 0x1000) + r32(base + w * 0x1000 + 0xffc);
    sum += r32(0xd0000000ULL + 4) + r32(0xc0000000ULL) + r32(0xcffffffcULL);
    w32(base + R_CONFIG, 0xdeadbeef);
    w32(base + R_CONFIG + 0xefc, 0xdeadbeef);
    say_num("out-of-range reads sum (ignored)", sum);
    u64 cid = r32(base + R_CONFIG) | ((u64)r32(base + R_CONFIG + 4) << 32);
    say_num("guest_cid after config writes", cid);
}

static void set_status(u32 s) { w32(base + R_STATUS, s); }
static void report_status(const char *when) {
    puts_serial("hostile: status "); puts_serial(when); puts_serial(" = ");
    put_dec(r32(base + R_STATUS)); puts_serial("\n");
}

/* Status writes that skip, undo or invent bits, in the current state. */
static void fuzz_status(void) {
    u32 now = r32(base + R_STATUS);
    static const u32 bad[] = {S_DRIVER_OK, S_FEATURES_OK, S_NEEDS_RESET, 0x0f | S_NEEDS_RESET, 0x30, 0x7f, 0xff00, S_ACK};
    for (u32 i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) if (bad[i] != now) set_status(bad[i]);
}

static void phase_mmio_states(void) {
    set_status(0); poke_registers(); fuzz_status(); report_status("after reset+pokes");
    set_status(0); set_status(S_ACK); poke_registers(); fuzz_status(); report_status("ACK+pokes");
    set_status(0); set_status(S_ACK); set_status(S_ACK | S_DRIVER); poke_registers(); fuzz_status();
    report_status("DRIVER+pokes");
    /* FEATURES_OK with queues made ready by the pokes (garbage addresses): DRIVER_OK must fail cleanly. */
    set_status(0); set_status(S_ACK); set_status(S_ACK | S_DRIVER);
    w32(base + R_DRV_FEAT_SEL, 1); w32(base + R_DRV_FEAT, 1);
    set_status(S_ACK | S_DRIVER | S_FEATURES_OK);
    poke_registers();
    for (u32 q = 0; q < 3; q++) {
        w32(base + R_QUEUE_SEL, q);
        for (u32 r = R_QUEUE_NUM; r <= R_USED_HI; r += 4) if (r != R_QUEUE_READY && r != R_QUEUE_NOTIFY) w32(base + r, 0xfffff00f);
        w32(base + R_QUEUE_READY, 1);
    }
    report_status("FEATURES_OK+pokes");
    set_status(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    report_status("DRIVER_OK with poked queues (64 = needs reset)");
    fuzz_status();
    /* A good device, then every register poked while it runs: it must go on serving. */
    dev_init();
    report_status("after good init");
    poke_registers();
    fuzz_status();
    report_status("DRIVER_OK+pokes");
    echo_check("mmio-driver-ok-pokes");
    set_status(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK | S_FAILED);
    report_status("FAILED");
    set_status(0); poke_registers(); fuzz_status(); report_status("reset again+pokes");
    read_out_of_range();
    dev_init();
    echo_check("mmio-states");
}

/* Many register writes the transport must refuse after DRIVER_OK: the log must stay bounded. */
static void phase_mmio_flood(void) {
    dev_init();
    for (u32 i = 0; i < 20000; i++) {
        w32(base + R_QUEUE_NUM, 2);
        w32(base + R_STATUS, S_ACK);
        w32(base + R_QUEUE_NOTIFY, 7);
    }
    echo_check("mmio-flood");
}

/* ---- descriptor chains on the tx queue ---- */
static void put_hdr(void *at, u16 op, u32 len) {
    struct hdr *h = at;
    h->src_cid = guest_cid; h->dst_cid = 2; h->src_port = 777; h->dst_port = CLOSED_PORT;
    h->len = len; h->type = 1; h->op = op; h->flags = 0; h->buf_alloc = 4096; h->fwd_cnt = 0;
}

static void set_desc(struct desc *d, u64 addr, u32 len, u16 flags, u16 next) {
    d->addr = addr; d->len = len; d->flags = flags; d->next = next;
}

/* Publishes the hostile chain starting at tx descriptor 2 and reports whether it was consumed. */
static u32 chains_used, chains_stuck;
static void try_chain(const char *name) {
    int used = tx_chain(2, 1, SERVE_WAIT);
    if (used) chains_used++; else chains_stuck++;
    puts_serial("hostile: chain "); puts_serial(name); puts_serial(used ? " used\n" : " NOT USED\n");
}

static void phase_tx_chains(void) {
    dev_init();
    struct desc *d = vqs[TXQ].desc;
    u64 hdr = (u64)scratch, data = (u64)scratch + 256;
    put_hdr(scratch, OP_REQUEST, 0);
    set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 2); try_chain("self-loop");
    put_hdr(scratch, OP_RW, 100);
    set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 3); set_desc(&d[3], data, 8, F_NEXT, 2); try_chain("two-cycle");
    set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 3); set_desc(&d[3], data, 8, F_NEXT, 3); try_chain("data-self-loop");
    set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 300); try_chain("next-out-of-table");
    static const u64 outside[] = {0xd0000000ULL, 0xfee00000ULL, 0xfffffffffffff000ULL, 0xffffffffffffffffULL, 0x100000000000ULL};
    for (u32 i = 0; i < 5; i++) { set_desc(&d[2], outside[i], HDR_LEN, 0, 0); try_chain("header-outside-ram"); }
    set_desc(&d[2], ram_end - 20, HDR_LEN, 0, 0); try_chain("header-straddles-ram-end");
    put_hdr(scratch, OP_RW, 100);
    for (u32 i = 0; i < 5; i++) {
        set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 3); set_desc(&d[3], outside[i], 100, 0, 0);
        try_chain("data-outside-ram");
    }
    set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 3); set_desc(&d[3], ram_end - 50, 100, 0, 0); try_chain("data-straddles-ram-end");
    /* lengths near 4 GiB */
    set_desc(&d[2], hdr, 0xffffffff, 0, 0); try_chain("header-len-4g");
    set_desc(&d[2], hdr, 0, 0, 0); try_chain("header-len-0");
    set_desc(&d[2], hdr, HDR_LEN - 1, 0, 0); try_chain("header-len-43");
    put_hdr(scratch, OP_RW, 0xffffffff);
    set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 3); set_desc(&d[3], data, 0xffffffff, 0, 0); try_chain("rw-len-4g");
    put_hdr(scratch, OP_RW, 0xfffffff0);
    set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 3); set_desc(&d[3], 0x100000, 0xfffffff0, 0, 0); try_chain("rw-len-4g-from-1m");
    put_hdr(scratch, OP_RW, 64);
    for (u16 i = 2; i < QSZ; i++) set_desc(&d[i], i == 2 ? hdr : data, i == 2 ? HDR_LEN : 0xffffffff, i + 1 < QSZ ? F_NEXT : 0, (u16)(i + 1));
    try_chain("chain-over-4g-total");
    put_hdr(scratch, OP_RW, 4);
    set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 3); set_desc(&d[3], data, 0x10000000, 0, 0); try_chain("data-desc-longer-than-header-len");
    /* wrong flags */
    put_hdr(scratch, OP_REQUEST, 0);
    set_desc(&d[2], hdr, HDR_LEN, F_WRITE, 0); try_chain("header-write-only");
    put_hdr(scratch, OP_RW, 8);
    set_desc(&d[2], hdr, HDR_LEN, F_NEXT, 3); set_desc(&d[3], data, 8, F_WRITE, 0); try_chain("data-write-only");
    set_desc(&d[2], hdr, HDR_LEN, 0xfff8, 0); try_chain("unknown-flag-bits");
    /* INDIRECT, never negotiated: a good table, then broken ones */
    put_hdr(scratch, OP_REQUEST, 0);
    set_desc(&indirect[0], hdr, HDR_LEN, 0, 0);
    set_desc(&d[2], (u64)indirect, 16, F_INDIRECT, 0); try_chain("indirect-not-negotiated");
    set_desc(&d[2], (u64)indirect, 17, F_INDIRECT, 0); try_chain("indirect-len-17");
    set_desc(&d[2], (u64)indirect, 0, F_INDIRECT, 0); try_chain("indirect-len-0");
    set_desc(&d[2], (u64)indirect, 0xfffffff0, F_INDIRECT, 0); try_chain("indirect-len-4g");
    set_desc(&d[2], 0xfffffffffffff000ULL, 64, F_INDIRECT, 0); try_chain("indirect-outside-ram");
    set_desc(&indirect[0], (u64)indirect, 16, F_INDIRECT, 0);
    set_desc(&d[2], (u64)indirect, 16, F_INDIRECT, 0); try_chain("indirect-nested");
    set_desc(&indirect[0], hdr, HDR_LEN, F_NEXT, 1); set_desc(&indirect[1], data, 8, F_NEXT, 0);
    set_desc(&d[2], (u64)indirect, 32, F_INDIRECT, 0); try_chain("indirect-loop");
    set_desc(&d[2], (u64)indirect, 32, F_INDIRECT | F_NEXT, 3); set_desc(&d[3], data, 8, F_NEXT, 2); try_chain("indirect-with-next-loop");
    say_num("chains used", chains_used);
    say_num("chains stuck", chains_stuck);
    echo_check("tx-chains");
}

/* ---- descriptor chains on the rx queue: the device must write only where and what it may ---- */
static void phase_rx_chains(void) {
    dev_init();
    struct vq *v = &vqs[RXQ];
    /* dev_init posted 16 good buffers; make the next 8 ring entries hostile by rewriting those
     * buffers' descriptors before the device looks (it only reads a chain when it has a packet). */
    u8 *ro = scratch;
    for (u32 i = 0; i < 256; i++) ro[i] = 0xa5;
    set_desc(&v->desc[0], (u64)ro, 256, 0, 0);                      /* read-only rx buffer */
    set_desc(&v->desc[1], 0xfffffffffffff000ULL, 256, F_WRITE, 0);  /* outside RAM */
    set_desc(&v->desc[2], ram_end - 8, 256, F_WRITE, 0);            /* straddles RAM end */
    set_desc(&v->desc[3], (u64)rx_bufs[3], 0xffffffff, F_WRITE, 0); /* 4 GiB long */
    set_desc(&v->desc[4], (u64)rx_bufs[4], 20, F_WRITE, 0);         /* shorter than a header */
    set_desc(&v->desc[5], (u64)rx_bufs[5], HDR_LEN, F_WRITE | F_NEXT, 5); /* loop */
    set_desc(&v->desc[6], (u64)indirect, 16, F_INDIRECT, 0);        /* indirect, not negotiated */
    set_desc(&indirect[0], (u64)ro + 512, 256, 0, 0);                /* ... to a read-only buffer */
    for (u32 i = 512; i < 768; i++) ro[i] = 0x5a;
    barrier();
    /* A REQUEST to a closed port: the device owes an RST and walks the rx ring to deliver it. */
    send_pkt(41000, CLOSED_PORT, OP_REQUEST, 0, 0, 0, 0);
    u64 t = rdtsc();
    while (*(volatile u16 *)&v->used.idx == 0 && !expired(t, SERVE_WAIT)) __asm__ volatile("pause");
    t = rdtsc();
    while (!expired(t, QUIET_WAIT)) __asm__ volatile("pause");
    u32 used = *(volatile u16 *)&v->used.idx, zero_len = 0, rst_at = 99;
    for (u32 i = 0; i < used && i < QSZ; i++) {
        if (v->used.ring[i].len == 0) zero_len++;
        else if (rst_at == 99) rst_at = v->used.ring[i].id;
    }
    int ro_intact = 1;
    for (u32 i = 0; i < 256; i++) if (ro[i] != 0xa5 || ro[512 + i] != 0x5a) ro_intact = 0;
    say_num("rx used", used);
    say_num("rx used with len 0", zero_len);
    say_num("rx first packet in buffer", rst_at);
    say(ro_intact ? "read-only rx buffers intact" : "READ-ONLY RX BUFFER WRITTEN", "");
    dev_init();
    echo_check("rx-chains");
}

/* ---- queue registers after activation ---- */
static void phase_queue_resize(void) {
    dev_init();
    for (u32 q = 0; q < 3; q++) {
        w32(base + R_QUEUE_SEL, q);
        w32(base + R_QUEUE_NUM, 2); w32(base + R_QUEUE_NUM, 0); w32(base + R_QUEUE_NUM, 32768);
        w32(base + R_QUEUE_READY, 0);
        w32(base + R_DESC_LO, 0x10); w32(base + R_AVAIL_LO, 0xfffffff0); w32(base + R_USED_LO, 0);
    }
    w32(base + R_QUEUE_SEL, TXQ);
    say_num("tx queue ready after un-ready attempt", r32(base + R_QUEUE_READY));
    echo_check("queue-resize");
    /* Queues whose rings run past the end of RAM at DRIVER_OK: activation must be refused. */
    w32(base + R_STATUS, 0);
    w32(base + R_STATUS, S_ACK); w32(base + R_STATUS, S_ACK | S_DRIVER);
    w32(base + R_DRV_FEAT_SEL, 1); w32(base + R_DRV_FEAT, 1);
    w32(base + R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    for (u32 q = 0; q < 3; q++) {
        w32(base + R_QUEUE_SEL, q);
        w32(base + R_QUEUE_NUM, 256);
        w32(base + R_DESC_LO, (u32)(ram_end - 2048)); w32(base + R_DESC_HI, (u32)(ram_end >> 32));
        w32(base + R_AVAIL_LO, (u32)(u64)&vqs[q].avail); w32(base + R_AVAIL_HI, 0);
        w32(base + R_USED_LO, (u32)(u64)&vqs[q].used); w32(base + R_USED_HI, 0);
        w32(base + R_QUEUE_READY, 1);
    }
    w32(base + R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    report_status("DRIVER_OK with rings past RAM end (64 = needs reset)");
    dev_init();
    echo_check("queue-past-ram");
}

/* ---- avail index far ahead, and heads outside the table ---- */
static void phase_avail_jump(void) {
    dev_init();
    struct vq *t = &vqs[TXQ];
    /* Heads past the queue size, then a jump far beyond the queue size. */
    for (u32 i = 0; i < 4; i++) t->avail.ring[(t->avail.idx + i) % QSZ] = (u16)(200 + i);
    barrier();
    t->avail.idx += 4;
    w32(base + R_QUEUE_NOTIFY, TXQ);
    u64 w = rdtsc();
    while (!expired(w, QUIET_WAIT)) __asm__ volatile("pause");
    say_num("tx used after heads past the table", *(volatile u16 *)&t->used.idx);
    t->last_used = *(volatile u16 *)&t->used.idx;
    echo_check("bad-heads");
    /* A flood of bad heads: each round publishes 15 of them and one good chain (a REQUEST to a
     * closed port), and waits for the good one, so the ring never runs more than a queue ahead. */
    u32 rounds = 0;
    for (u32 k = 0; k < 2000; k++) {
        for (u32 i = 0; i < QSZ - 1; i++) t->avail.ring[(t->avail.idx + i) % QSZ] = 0xffff;
        barrier();
        t->avail.idx += QSZ - 1;
        if (!send_pkt(50000 + k, CLOSED_PORT, OP_REQUEST, 0, 0, 0, 1)) break;
        rounds++;
    }
    say_num("bad-head rounds served", rounds);
    echo_check("bad-heads-flood");
    dev_init();
    t->avail.idx += 1000;
    vqs[RXQ].avail.idx += 30000;
    barrier();
    w32(base + R_QUEUE_NOTIFY, TXQ);
    w32(base + R_QUEUE_NOTIFY, RXQ);
    settle("after-avail-jump");
    say_num("tx used after jump", *(volatile u16 *)&t->used.idx);
    dev_init();
    echo_check("avail-jump");
}

/* ---- vsock floods ---- */
static void clear_counts(void) { for (u32 i = 0; i < 8; i++) op_count[i] = 0; }

/* Many REQUESTs to the echo listener (held open), then to a listener that never accepts. */
static void phase_connect_flood(void) {
    dev_init();
    clear_counts();
    for (u32 i = 0; i < 1100; i++) send_pkt(10000 + i, ECHO_PORT, OP_REQUEST, 0, 0, 0, 1);
    u64 t = rdtsc();
    while (op_count[OP_RESPONSE] + op_count[OP_RST] < 1100 && !expired(t, LONG_WAIT)) rx_drain();
    say_num("flood responses", op_count[OP_RESPONSE]);
    say_num("flood resets", op_count[OP_RST]);
    settle("connections-open");
    echo_check("connect-flood-while-full");
    for (u32 i = 0; i < 1100; i++) send_pkt(10000 + i, ECHO_PORT, OP_RST, 0, 0, 0, 1);
    clear_counts();
    for (u32 i = 0; i < 300; i++) send_pkt(20000 + i, STUCK_PORT, OP_REQUEST, 0, 0, 0, 1);
    t = rdtsc();
    while (op_count[OP_RESPONSE] + op_count[OP_RST] < 300 && !expired(t, LONG_WAIT)) rx_drain();
    say_num("never-accepting listener responses", op_count[OP_RESPONSE]);
    say_num("never-accepting listener resets", op_count[OP_RST]);
    for (u32 i = 0; i < 300; i++) send_pkt(20000 + i, STUCK_PORT, OP_RST, 0, 0, 0, 1);
    settle("connections-closed");
    echo_check("connect-flood");
}

/* REQUESTs to a closed port while the guest takes no replies: tx must pause, not queue forever. */
static void phase_closed_flood(void) {
    dev_init();
    clear_counts();
    u32 sent = 0;
    tx_wait = QUIET_WAIT;
    while (sent < 3000 && send_pkt(30000 + sent, CLOSED_PORT, OP_REQUEST, 0, 0, 0, 0)) sent++;
    tx_wait = SERVE_WAIT;
    say_num("closed-port requests taken before tx paused", sent);
    /* The packet that stalled was published: it counts once the device resumes. */
    struct vq *t = &vqs[TXQ];
    u64 w = rdtsc();
    while (*(volatile u16 *)&t->used.idx != (u16)(t->last_used + 1) && !expired(w, LONG_WAIT)) rx_drain();
    t->last_used = *(volatile u16 *)&t->used.idx;
    sent++;
    while (sent < 3000 && send_pkt(30000 + sent, CLOSED_PORT, OP_REQUEST, 0, 0, 0, 1)) sent++;
    w = rdtsc();
    while (op_count[OP_RST] < sent && !expired(w, LONG_WAIT)) rx_drain();
    say_num("closed-port requests sent", sent);
    say_num("closed-port resets received", op_count[OP_RST]);
    echo_check("closed-flood");
}

/* ---- credit lies ---- */
static void phase_credit_lies(void) {
    dev_init();
    struct msg m;
    static const u8 line[] = "credit lie\n";
    /* Huge buf_alloc and a fwd_cnt far ahead of anything sent: the host must stay within our buffers. */
    u32 port = 42000;
    send_buf_alloc = 0xffffffff; send_fwd_cnt = 0x80000000;
    send_pkt(port, ECHO_PORT, OP_REQUEST, 0, 0, 0, 1);
    int ok = wait_for(port, 1u << OP_RESPONSE | 1u << OP_RST, &m, LONG_WAIT) && m.h.op == OP_RESPONSE;
    say(ok ? "lying connection accepted" : "lying connection refused", "");
    for (u32 i = 0; ok && i < 50; i++) send_pkt(port, ECHO_PORT, OP_RW, 0, line, sizeof(line) - 1, 1);
    send_fwd_cnt = 0xfffffff0;
    send_pkt(port, ECHO_PORT, OP_CREDIT_UPDATE, 0, 0, 0, 1);
    for (u32 i = 0; i < 1000; i++) send_pkt(port, ECHO_PORT, OP_CREDIT_REQUEST, 0, 0, 0, 1);
    u64 t = rdtsc();
    while (!expired(t, QUIET_WAIT)) rx_drain();
    say_num("echo packets received on the lying connection", op_count[OP_RW]);
    send_pkt(port, ECHO_PORT, OP_RST, 0, 0, 0, 1);
    send_buf_alloc = 64 * 1024; send_fwd_cnt = 0;
    echo_check("credit-lie-peer");

    /* More data than the host's credit allows, to a listener that never reads. */
    port = 42001;
    send_pkt(port, SINK_PORT, OP_REQUEST, 0, 0, 0, 1);
    ok = wait_for(port, 1u << OP_RESPONSE | 1u << OP_RST, &m, LONG_WAIT) && m.h.op == OP_RESPONSE;
    say(ok ? "sink connection accepted" : "sink connection refused", "");
    u32 sent = 0;
    int reset = 0;
    for (u32 i = 0; ok && i < 256 && !reset; i++) {
        send_pkt(port, SINK_PORT, OP_RW, 0, tx_data, sizeof(tx_data), 1);
        sent += sizeof(tx_data);
        reset = take(port, 1u << OP_RST, &m);
    }
    if (!reset) reset = wait_for(port, 1u << OP_RST, &m, SERVE_WAIT);
    say_num("bytes sent past the credit before the host reset the connection", sent);
    say(reset ? "overrun connection reset" : "OVERRUN CONNECTION NOT RESET", "");
    echo_check("credit-overrun");
}

/* Sends on `port` (to the never-reading listener) as much as the host's credit allows, following
 * its credit updates, until no more credit comes. Returns the bytes sent, or -1 on RST. */
static long fill_connection(u32 port) {
    struct msg m;
    u32 sent = 0, fwd = 0, alloc = 128 * 1024;
    for (;;) {
        while (take(port, 1u << OP_CREDIT_UPDATE | 1u << OP_CREDIT_REQUEST, &m)) { fwd = m.h.fwd_cnt; alloc = m.h.buf_alloc; }
        if (take(port, 1u << OP_RST, &m)) return -1;
        u32 credit = alloc - (sent - fwd);
        if (credit <= alloc && credit >= sizeof(tx_data)) {
            send_pkt(port, SINK_PORT, OP_RW, 0, tx_data, sizeof(tx_data), 1);
            sent += sizeof(tx_data);
            continue;
        }
        if (!wait_for(port, 1u << OP_CREDIT_UPDATE | 1u << OP_RST, &m, SHORT_WAIT)) return sent;
        if (m.h.op == OP_RST) return -1;
        fwd = m.h.fwd_cnt; alloc = m.h.buf_alloc;
    }
}

/* Many connections to the never-reading listener, each filled to the host's credit: the VMM's
 * buffering is bounded by connections x credit. */
static void phase_buffer_fill(void) {
    dev_init();
    struct msg m;
    u32 conns = 0;
    u64 total = 0;
    for (u32 c = 0; c < 64; c++) {
        u32 port = 43000 + c;
        send_pkt(port, SINK_PORT, OP_REQUEST, 0, 0, 0, 1);
        if (!wait_for(port, 1u << OP_RESPONSE | 1u << OP_RST, &m, LONG_WAIT) || m.h.op != OP_RESPONSE) continue;
        long n = fill_connection(port);
        if (n > 0) { conns++; total += (u64)n; }
    }
    say_num("filled connections", conns);
    say_num("bytes sent within credit", total);
    settle("buffers-full");
    for (u32 c = 0; c < 64; c++) send_pkt(43000 + c, SINK_PORT, OP_RST, 0, 0, 0, 1);
    settle("buffers-freed");
    echo_check("buffer-fill");
}

/* ---- vsock headers that lie about who and what they are ---- */
static void raw_pkt(u64 src_cid, u64 dst_cid, u16 type, u16 op, u32 src, u32 dst, u32 flags, u32 len, u32 data_len) {
    struct hdr *h = (struct hdr *)scratch;
    struct desc *d = vqs[TXQ].desc;
    h->src_cid = src_cid; h->dst_cid = dst_cid; h->src_port = src; h->dst_port = dst; h->len = len;
    h->type = type; h->op = op; h->flags = flags; h->buf_alloc = 64 * 1024; h->fwd_cnt = 0;
    set_desc(&d[2], (u64)scratch, HDR_LEN, data_len ? F_NEXT : 0, 3);
    set_desc(&d[3], (u64)scratch + 256, data_len, 0, 0);
    if (!tx_chain(2, 1, SERVE_WAIT)) say("raw packet NOT USED", "");
}

/* Opens a connection from `port` to the echo listener; 1 when it was accepted. */
static int open_echo(u32 port) {
    struct msg m;
    send_pkt(port, ECHO_PORT, OP_REQUEST, 0, 0, 0, 1);
    return wait_for(port, 1u << OP_RESPONSE | 1u << OP_RST, &m, LONG_WAIT) && m.h.op == OP_RESPONSE;
}

/* Whether the host reset connection `port` (it must, after a protocol violation). */
static int was_reset(u32 port) {
    struct msg m;
    return wait_for(port, 1u << OP_RST, &m, SERVE_WAIT);
}

static void phase_vsock_protocol(void) {
    dev_init();
    clear_counts();
    u32 p = 44000;
    /* Spoofed source CIDs are dropped without an answer. */
    static const u64 spoofed[] = {0, 1, 2, 4, 0xffffffffULL, 0xffffffffffffffffULL};
    for (u32 i = 0; i < 6; i++) raw_pkt(spoofed[i], 2, 1, OP_REQUEST, p, ECHO_PORT, 0, 0, 0);
    u64 t = rdtsc();
    while (!expired(t, QUIET_WAIT)) rx_drain();
    say_num("answers to spoofed source CIDs", op_count[OP_RESPONSE] + op_count[OP_RST]);
    /* Wrong destination CID or socket type: refused with RST. */
    static const u64 dst[] = {0, 1, 3, 0xffffffffffffffffULL};
    for (u32 i = 0; i < 4; i++) raw_pkt(guest_cid, dst[i], 1, OP_REQUEST, p, ECHO_PORT, 0, 0, 0);
    raw_pkt(guest_cid, 2, 2, OP_REQUEST, p, ECHO_PORT, 0, 0, 0);
    raw_pkt(guest_cid, 2, 0xffff, OP_REQUEST, p, ECHO_PORT, 0, 0, 0);
    t = rdtsc();
    while (op_count[OP_RST] < 6 && !expired(t, SERVE_WAIT)) rx_drain();
    say_num("resets for wrong destination or type", op_count[OP_RST]);
    /* Protocol violations on established connections: each one resets its connection. */
    static const u16 bad_ops[] = {0, 8, 0xffff, OP_REQUEST, OP_RESPONSE};
    u32 resets = 0;
    for (u32 i = 0; i < 5; i++) {
        u32 port = 44100 + i;
        if (!open_echo(port)) continue;
        raw_pkt(guest_cid, 2, 1, bad_ops[i], port, ECHO_PORT, 0, 0, 0);
        resets += (u32)was_reset(port);
    }
    if (open_echo(44110)) {  /* data after SHUTDOWN(SEND), with every flag bit set */
        raw_pkt(guest_cid, 2, 1, OP_SHUTDOWN, 44110, ECHO_PORT, 0xfffffffe, 0, 0);
        raw_pkt(guest_cid, 2, 1, OP_RW, 44110, ECHO_PORT, 0, 8, 8);
        resets += (u32)was_reset(44110);
    }
    say_num("connections reset for protocol violations", resets);
    if (open_echo(44111)) {  /* RW whose header claims more than its buffers hold: dropped */
        raw_pkt(guest_cid, 2, 1, OP_RW, 44111, ECHO_PORT, 0, 64, 8);
        say_num("resets after a short RW", (u64)was_reset(44111));
        send_pkt(44111, ECHO_PORT, OP_RST, 0, 0, 0, 1);
    }
    /* Packets for connections that do not exist: RST (or nothing for an RST). */
    clear_counts();
    raw_pkt(guest_cid, 2, 1, OP_CREDIT_UPDATE, 44200, ECHO_PORT, 0, 0, 0);
    raw_pkt(guest_cid, 2, 1, OP_RW, 44201, ECHO_PORT, 0, 8, 8);
    raw_pkt(guest_cid, 2, 1, OP_RST, 44202, ECHO_PORT, 0, 0, 0);
    t = rdtsc();
    while (op_count[OP_RST] < 2 && !expired(t, SERVE_WAIT)) rx_drain();
    t = rdtsc();
    while (!expired(t, QUIET_WAIT)) rx_drain();
    say_num("resets for unknown connections", op_count[OP_RST]);
    echo_check("vsock-protocol");
}

/* The driver resets the device with connections open and data buffered: everything is dropped. */
static void phase_reset_while_busy(void) {
    dev_init();
    u32 open = 0, filled = 0;
    for (u32 c = 0; c < 32; c++) open += (u32)open_echo(45000 + c);
    for (u32 c = 0; c < 8; c++) {
        struct msg m;
        u32 port = 45100 + c;
        send_pkt(port, SINK_PORT, OP_REQUEST, 0, 0, 0, 1);
        if (wait_for(port, 1u << OP_RESPONSE | 1u << OP_RST, &m, LONG_WAIT) && m.h.op == OP_RESPONSE && fill_connection(port) > 0) filled++;
    }
    say_num("open echo connections at reset", open);
    say_num("filled sink connections at reset", filled);
    w32(base + R_STATUS, 0);
    settle("after-busy-reset");
    dev_init();
    echo_check("reset-while-busy");
}

#include "hostile_net_phase.h"

struct phase { const char *name; void (*run)(void); };
static const struct phase phases[] = {
    {"mmio-states", phase_mmio_states},
    {"mmio-flood", phase_mmio_flood},
    {"tx-chains", phase_tx_chains},
    {"rx-chains", phase_rx_chains},
    {"queue-resize", phase_queue_resize},
    {"avail-jump", phase_avail_jump},
    {"connect-flood", phase_connect_flood},
    {"closed-flood", phase_closed_flood},
    {"credit-lies", phase_credit_lies},
    {"buffer-fill", phase_buffer_fill},
    {"vsock-protocol", phase_vsock_protocol},
    {"reset-while-busy", phase_reset_while_busy},
    {"net", phase_net},
};
