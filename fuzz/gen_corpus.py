#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/seed-*: a few small valid inputs per
target (hand-encoded protobuf for the agent API messages; the device targets' own input
format, see fuzz/common/guest.rs). Run from anywhere: python3 fuzz/gen_corpus.py"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- protobuf encoding
def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(field, n):
    return varint(field << 3) + varint(n)


def f_bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def f_packed(field, values):
    return f_bytes(field, b"".join(varint(v) for v in values))


# ---------------------------------------------------------------- payloads
SPEC = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh", "-c", "echo hi"],
        "env": ["PATH=/bin:/usr/bin"],
        "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    },
    "root": {"path": "rootfs", "readonly": False},
    "hostname": "box",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/data", "type": "bind", "source": "vol", "options": ["rbind", "ro"]},
    ],
    "linux": {
        "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}],
        "sysctl": {"kernel.shmmax": "1000000", "net.ipv4.ip_forward": "1"},
        "resources": {
            "memory": {"limit": 67108864},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "devices": [
                {"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            ],
        },
    },
}
PROCESS = {"args": ["ls", "-l"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["A=b"]}
RESOURCES = {"memory": {"limit": 134217728}, "pids": {"limit": 100},
             "devices": [{"allow": True, "type": "b", "major": 8, "minor": 0, "access": "r"}]}


def js(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def stdio(stdin=False, stdout=True, stderr=True, terminal=False):
    return (f_varint(1, stdin) + f_varint(2, stdout) + f_varint(3, stderr)
            + f_varint(4, terminal))


def interface():
    addr4 = f_varint(1, 1) + f_bytes(2, "10.88.0.5") + f_varint(3, 16)
    addr6 = f_varint(1, 2) + f_bytes(2, "fd00::5") + f_varint(3, 64)
    return (f_bytes(1, "eth0") + f_bytes(2, "02:42:0a:58:00:05") + f_varint(3, 1500)
            + f_bytes(4, addr4) + f_bytes(4, addr6))


def route(dest, gw, family):
    return (f_bytes(1, dest) + f_bytes(2, gw) + f_bytes(3, "eth0") + f_varint(5, 0)
            + f_varint(6, family))


AGENT_REQUESTS = {
    "create-sandbox": bytes([3]) + f_bytes(1, "pod1") + f_bytes(2, "pod-1")
    + f_bytes(3, f_bytes(1, "hullfs") + f_bytes(2, "/run/hull/shared"))
    + f_bytes(4, f_bytes(1, "10.0.0.2") + f_bytes(2, "svc.cluster.local") + f_bytes(3, "ndots:5"))
    + f_bytes(5, f_bytes(1, "net.ipv4.ip_forward") + f_bytes(2, "1"))
    + f_varint(6, 64 << 20),
    "create-container": bytes([5]) + f_bytes(1, "c1") + f_bytes(2, js(SPEC))
    + f_bytes(3, "c1/rootfs") + f_bytes(4, stdio()),
    "exec-process": bytes([8]) + f_bytes(1, "c1") + f_bytes(2, "exec-1")
    + f_bytes(3, js(PROCESS)) + f_bytes(4, stdio(stdin=True, terminal=True, stderr=False)),
    "signal-process": bytes([11]) + f_bytes(1, "c1") + f_bytes(2, "exec-1") + f_varint(3, 9),
    "update-container": bytes([17]) + f_bytes(1, "c1") + f_bytes(2, js(RESOURCES)),
    "update-interface": bytes([21]) + f_bytes(1, interface()),
    "update-routes": bytes([22]) + f_bytes(1, route("default", "10.88.0.1", 1))
    + f_bytes(1, route("10.88.0.0/16", "", 1)) + f_bytes(1, route("::/0", "fd00::1", 2)),
    "set-time": bytes([25]) + f_bytes(1, f_varint(1, 1_700_000_000) + f_varint(2, 5)),
    "spec-json": bytes([27]) + js(SPEC),
    "process-json": bytes([29]) + js(PROCESS),
    "resources-json": bytes([30]) + js(RESOURCES),
}

STATS = (f_bytes(1, b"".join(f_varint(i, 1000 * i) for i in range(1, 7)))
         + f_bytes(2, b"".join(f_varint(i, 4096 * i) for i in range(1, 7)))
         + f_bytes(3, f_varint(1, 3) + f_varint(2, 100))
         + f_bytes(4, b"".join(f_varint(i, 10 * i) for i in range(1, 5))))

SHIM_REPLIES = {
    "start-container": bytes([0]) + f_varint(1, 42),
    "start-exec": bytes([1]) + f_varint(1, 4_194_304),
    "wait-process": bytes([2]) + f_varint(1, 137) + f_bytes(2, f_varint(1, 1_700_000_000) + f_varint(2, 7)),
    "list-processes": bytes([3]) + f_bytes(1, f_varint(1, 1)) + f_bytes(1, f_varint(1, 7) + f_bytes(2, "e1")),
    "list-tcp-listeners": bytes([4]) + f_packed(1, [8080, 22, 8080, 65535]),
    "oom-event": bytes([5]) + f_bytes(1, "c1"),
    "version": bytes([6]) + f_bytes(1, "0.1.0") + f_varint(2, 1),
    "stats": bytes([7]) + f_bytes(1, STATS),
    "stdio-ports": bytes([8]) + f_bytes(1, f_varint(1, 2000) + f_varint(2, 2001) + f_varint(3, 2002)),
    "runtime-options": bytes([9]) + f_bytes(1, "x") + f_bytes(2, "/etc/hull/config.toml"),
}

HANDSHAKE = {
    "connect": b"CONNECT 1024\n",
    "connect-max": b"CONNECT 4294967295\n",
    "connect-zeros": b"CONNECT 0000000000001\n",
    "ok": b"OK 1073741824\n",
    "tcp": b"TCP 8080\n",
    "garbage": b"CONNECT 12 \nOK\n",
}


# ---------------------------------------------------------------- device inputs
def desc(off, length, flags=0):
    """A descriptor in the buffer area: addr selector 3 (area offset), length selector 2 (u16)."""
    return bytes([3]) + struct.pack("<H", off) + bytes([2]) + struct.pack("<H", length) + bytes([flags])


def queue(size_log2, descs, heads, event_idx=False):
    out = bytes([size_log2]) + b"".join(descs)
    out += bytes([len(heads), 0]) + bytes(heads) + bytes((1 << size_log2) - len(heads))
    return out + b"\x00\x00" + bytes([event_idx])


def chunks(items):
    out = bytes([len(items)])
    for off, data in items:
        out += struct.pack("<H", off) + bytes([len(data)]) + data
    return out


NEXT, FLIP = 1, 4


def vsock_header(op, length=0, flags=0, src_port=5000, dst_port=1024, fwd_cnt=0, buf_alloc=65536):
    return struct.pack("<QQIIIHHIII", 3, 2, src_port, dst_port, length, 1, op, flags, buf_alloc, fwd_cnt)


def vsock_seed():
    rx = queue(2, [desc(0x1000 + i * 0x800, 0x400) for i in range(4)], [0, 1, 2, 3])
    tx = queue(3, [desc(0x0, 44), desc(0x100, 44, NEXT), desc(0x200, 5), desc(0x300, 44),
                   desc(0x400, 44), desc(0x500, 44), desc(0x600, 44), desc(0x700, 44)],
               [0, 1, 3, 4, 5])
    data = chunks([(0x0, vsock_header(1)), (0x100, vsock_header(5, 5)), (0x200, b"hello"),
                   (0x300, vsock_header(7)), (0x400, vsock_header(4, flags=3)),
                   (0x500, vsock_header(6, fwd_cnt=5))])
    ops = (bytes([0, 1]) + struct.pack("<H", 0x1000)   # tx REQUEST, host connects
           + bytes([2])                                 # rx: RESPONSE
           + bytes([0])                                 # tx RW "hello"
           + bytes([3, 1, 0, 1])                        # host readable
           + bytes([2]) + struct.pack("<H", 100)        # rx: data
           + bytes([0, 2, 2])                           # tx CREDIT_REQUEST, rx x2
           + bytes([3, 0]) + struct.pack("<I", 80) + struct.pack("<H", 10)  # host connect
           + bytes([2, 0, 2]))                          # rx REQUEST, tx SHUTDOWN, rx
    return rx + tx + data + ops


def net_seed(mergeable):
    acked = struct.pack("<Q", (1 << 32) | 1 | (1 << 11))
    tx = queue(2, [desc(0x0, 12, NEXT), desc(0x100, 60), desc(0x200, 74), desc(0x300, 8)],
               [0, 2, 3])
    rx = queue(2, [desc(0x1000 + i * 0x1000, 0x800) for i in range(4)], [0, 1, 2, 3])
    data = chunks([(0x0, bytes(12)), (0x100, bytes(range(60))), (0x200, b"\x01" + bytes(73))])
    frames = bytes([1, 0xAB, 2]) + struct.pack("<H", 1500) + bytes([0xCD, 0, 0xEF])
    return acked + bytes([mergeable]) + tx + rx + data + frames


def balloon_seed(reporting, page_ok=True):
    """Inflate and deflate chains, then a free page report of two 4 KiB pages (or a bad one)."""
    inflate = queue(0, [desc(0x100, 64)], [0])
    deflate = queue(0, [desc(0x200, 64)], [0])
    second = desc(0x2000, 0x1000) if page_ok else desc(0x2010, 0x1000)
    report = queue(1, [desc(0x0, 0x1000, NEXT), second], [0])
    ops = bytes([2, 0, 1, 2])
    return bytes([reporting]) + inflate + deflate + report + chunks([]) + ops


def mmio_write(reg, value):
    return bytes([0x01, 3, reg // 4]) + struct.pack("<Q", value)


def mmio_read(reg):
    return bytes([0x00, 3, reg // 4])


def mmio_init(queues, features_hi=1):
    out = mmio_write(0x70, 1) + mmio_write(0x70, 3) + mmio_read(0x10)
    out += mmio_write(0x24, 1) + mmio_write(0x20, features_hi) + mmio_write(0x70, 11)
    for i in range(queues):
        base = i * 0x1000
        out += (mmio_write(0x30, i) + mmio_read(0x34) + mmio_write(0x38, 16)
                + mmio_write(0x80, base) + mmio_write(0x90, base + 0x400)
                + mmio_write(0xA0, base + 0x800) + mmio_write(0x44, 1))
    out += mmio_write(0x70, 15) + mmio_read(0x70) + mmio_write(0x50, 0) + mmio_read(0x60)
    out += mmio_write(0x64, 1) + bytes([0xA0, 2, 0])   # 8-byte config read
    return out


MMIO = {
    "net-init": bytes([1, 1, 5, 0]) + mmio_init(2),
    "device-init": bytes([0, 2, 4, 8, 4, 8, 3, 0, 0, 0, 0, 1, 1]) + mmio_init(2),
    "net-reset": bytes([1, 0, 0]) + mmio_init(2) + mmio_write(0x70, 0) + mmio_init(1),
}


def main():
    targets = {
        "handshake": HANDSHAKE,
        "agent_requests": AGENT_REQUESTS,
        "shim_replies": SHIM_REPLIES,
        "vsock_packets": {"conversation": vsock_seed()},
        "net_frames": {"tx-rx": net_seed(0), "tx-rx-mergeable": net_seed(1)},
        "mmio": MMIO,
        "balloon_reports": {"report": balloon_seed(1), "report-unaligned": balloon_seed(1, False),
                            "no-reporting": balloon_seed(0)},
    }
    for target, seeds in targets.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
