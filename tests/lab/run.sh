#!/bin/sh
# Runs inside the lab's L1 VM (busybox sh), from the read-only data disk at /lab.
#
# usage: sh /lab/run.sh PLAN_FILE
# The plan is a shell script written by the host driver (tests/lab/lab.py); it
# calls the functions below. Results go to the serial console as single lines:
#   LAB-KVM status=ok|fail ...
#   LAB-RESULT name=.. attempt=.. vmm=.. status=ok|fail|hang rc=.. wall_ms=..
#              agent_ms=.. boot_ms=.. kmsg_s=.. rss_kib=.. agent="..."
#   LAB-TAIL name=.. attempt=.. stream=console|stderr | <line>   (on fail/hang)
# The VMM's own output never goes to the console directly: printing through
# the emulated UART is slow, so it is captured and only its tail is shown.
LAB=${LAB:-/lab}
TMP=${TMP:-/tmp}
WATCH=$LAB/bin/labwatch
ESC=$(printf '\033')
export NO_COLOR=1

uptime_s() { read -r up _ < /proc/uptime; echo "$up"; }

# Keep only printable ASCII: the guest console is untrusted.
printable() { tr -cd ' -~\n' | cut -c1-240; }

# parse_summary TEXT: rc, timedout, wall_ms, maxrss_kib and agent_ms from labwatch's summary
# (-1, or 0 for timedout, when absent).
parse_summary() {
    rc=-1 timedout=0 wall_ms=-1 maxrss_kib=-1 agent_ms=-1
    for kv in $1; do
        case $kv in
            rc=* | timedout=* | wall_ms=* | maxrss_kib=* | agent_ms=*) eval "${kv%%=*}=\${kv#*=}" ;;
        esac
    done
}

# The direct hull-vmm boots' --mem-dir: L1's init mounts a huge=always tmpfs for guest RAM
# ($LAB_RAM_DIR), as the shim's jail gives its VMM; none elsewhere (a memfd then).
RAM_ARGS=${LAB_RAM_DIR:+--mem-dir $LAB_RAM_DIR}

# agent_line CONSOLE_FILE: the guest agent's first HULL-AGENT line, printable, no double quotes.
agent_line() {
    grep -m1 HULL-AGENT "$1" 2>/dev/null | printable | sed 's/.*HULL-AGENT/HULL-AGENT/; s/"/'"'"'/g'
}

# boot_ms_of VMM_STDERR_FILE: hull-vmm's guest_boot_ms (empty when it logged none).
boot_ms_of() {
    sed "s/${ESC}\[[0-9;]*m//g" "$1" 2>/dev/null | sed -n 's/.*guest_boot_ms=\([0-9.]*\).*/\1/p' | head -n1
}

# lab_kvm "KVM_AMD_OPTIONS": load irqbypass, kvm, kvm-amd (the order file lists
# them dependencies first); the options go to kvm-amd.
lab_kvm() {
    t0=$(uptime_s)
    status=ok
    for m in $(cat /lib/modules/kvm.order); do
        case $m in
            kvm-amd.ko) insmod "/lib/modules/$m" $1 || status=fail ;;
            *) insmod "/lib/modules/$m" || status=fail ;;
        esac
    done
    [ -c /dev/kvm ] || status=fail
    p=/sys/module/kvm_amd/parameters
    echo "LAB-KVM status=$status load_s=$t0..$(uptime_s) npt=$(cat $p/npt 2>/dev/null) nested=$(cat $p/nested 2>/dev/null) svm_flag=$(grep -c -m1 -w svm /proc/cpuinfo)"
}

# lab_run NAME VMM TIMEOUT_S ATTEMPTS MEM_MIB VCPUS CMDLINE
# VMM is "hull" (our hull-vmm), "hull-pmem" (hull-vmm booting the pmem root image: the
# command line then carries its root= parameters), "qemu" (the QEMU microvm peer) or
# "firecracker" (the Firecracker peer, when the lab carries one: same kernel and initramfs). A run
# that times out is a hang and is tried again, up to ATTEMPTS times in all.
lab_run() {
    name=$1 vmm=$2 timeout=$3 attempts=$4 mem=$5 vcpus=$6 cmdline=$7
    attempt=1
    while :; do
        run_once
        [ "$status" = hang ] && [ "$attempt" -lt "$attempts" ] || break
        attempt=$((attempt + 1))
    done
}

run_once() {
    # LAB_PIN_CPU (set by the plan): pin the VMM and its threads to one L1 CPU.
    pin=${LAB_PIN_CPU:+taskset -c $LAB_PIN_CPU}
    out=$TMP/$name.$attempt.out
    err=$TMP/$name.$attempt.err
    case $vmm in
        hull)
            summary=$($WATCH -t "$timeout" -o "$out" -e "$err" -m agent=HULL-AGENT -- $pin \
                $LAB/bin/hull-vmm --kernel $LAB/guest/vmlinux --initrd $LAB/guest/initramfs.cpio \
                $RAM_ARGS --mem-mib "$mem" --vcpus "$vcpus" --cmdline "$cmdline")
            ;;
        hull-pmem)
            summary=$($WATCH -t "$timeout" -o "$out" -e "$err" -m agent=HULL-AGENT -- $pin \
                $LAB/bin/hull-vmm --kernel $LAB/guest/vmlinux --pmem $LAB/guest/rootfs.img \
                $RAM_ARGS --mem-mib "$mem" --vcpus "$vcpus" --cmdline "$cmdline")
            ;;
        qemu)
            summary=$($WATCH -t "$timeout" -o "$out" -e "$err" -m agent=HULL-AGENT -- $pin \
                $LAB/qroot/ld.so --library-path $LAB/qroot/lib $LAB/qroot/qemu-system-x86_64 \
                -L $LAB/qroot/firmware -M microvm,acpi=off -enable-kvm -cpu host -m "$mem" -smp "$vcpus" \
                -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
                -kernel $LAB/guest/vmlinux -initrd $LAB/guest/initramfs.cpio -append "$cmdline")
            ;;
        firecracker)
            # No API socket: the whole VM from one config file; the guest's serial is its stdout
            # and its reboot (reboot=k, the i8042 reset) ends it with status 0.
            fc_config=$TMP/$name.$attempt.fc.json
            fc_config_json "$mem" "$vcpus" "$cmdline" > "$fc_config"
            summary=$($WATCH -t "$timeout" -o "$out" -e "$err" -m agent=HULL-AGENT -- $pin \
                $LAB/bin/firecracker --no-api --config-file "$fc_config")
            rm -f "$fc_config"
            ;;
        *)
            echo "LAB-RESULT name=$name attempt=$attempt vmm=$vmm status=fail rc=-1 agent=\"unknown vmm\""
            status=fail
            return
            ;;
    esac
    parse_summary "$summary"
    agent=$(agent_line "$out")
    boot_ms=$(boot_ms_of "$err")
    # The guest kernel's own clock at its last console message (printk time stamp).
    kmsg_s=$(sed -n 's/^\[ *\([0-9]*\.[0-9]*\)\].*/\1/p' "$out" 2>/dev/null | tail -n1)
    if [ "$timedout" = 1 ]; then
        status=hang
    elif [ "$rc" = 0 ] && [ -n "$agent" ]; then
        status=ok
    else
        status=fail
    fi
    echo "LAB-RESULT name=$name attempt=$attempt vmm=$vmm status=$status rc=$rc wall_ms=$wall_ms agent_ms=$agent_ms boot_ms=${boot_ms:--1} kmsg_s=${kmsg_s:--1} rss_kib=$maxrss_kib agent=\"$agent\""
    if [ "$status" = ok ] && [ -n "$LAB_SHOW_LINES" ]; then
        # LAB_SHOW_LINES (set by the plan, for the demo): show the guest console of good runs too.
        tail -n "$LAB_SHOW_LINES" "$out" | printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=console | /"
    fi
    if [ "$status" != ok ]; then
        [ -n "$summary" ] || echo "LAB-TAIL name=$name attempt=$attempt stream=labwatch | no summary from labwatch"
        [ -s "$out" ] || [ -s "$err" ] || echo "LAB-TAIL name=$name attempt=$attempt stream=none | the VMM printed nothing"
        tail -n 25 "$out" 2>/dev/null | printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=console | /"
        sed "s/${ESC}\[[0-9;]*m//g" "$err" 2>/dev/null | tail -n 25 | printable |
            sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=stderr | /"
    fi
    rm -f "$out" "$err"
}

# fc_config_json MEM_MIB VCPUS CMDLINE: Firecracker's VM config, the lab's guest kernel and
# initramfs (the same QEMU boots), no drives, no network.
fc_config_json() {
    args=$(printf '%s' "$3" | sed 's/[\\"]/\\&/g')
    printf '{"boot-source": {"kernel_image_path": "%s", "initrd_path": "%s", "boot_args": "%s"},\n' \
        "$LAB/guest/vmlinux" "$LAB/guest/initramfs.cpio" "$args"
    printf ' "drives": [], "machine-config": {"vcpu_count": %s, "mem_size_mib": %s}}\n' "$2" "$1"
}

# Milliseconds between two /proc/uptime readings (10 ms resolution).
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }

# lab_health NAME TIMEOUT_S ATTEMPTS MEM_MIB VCPUS CMDLINE
# The issue-4 check: hull-vmm with a hybrid vsock device (CID 3, a Unix socket in
# L1) and no hull.poweroff, so the agent serves its API on vsock port 1024; then
# `hull agent health` from L1 through that socket (it retries while the guest
# boots), LAB_HEALTH_CALLS more calls for a per-call figure, then SIGTERM to the
# VMM, which must exit 0. A run whose guest never printed the agent line within
# the timeout is a hang (retried); anything else that goes wrong is a failure.
lab_health() {
    name=$1 vmm=hull timeout=$2 attempts=$3 mem=$4 vcpus=$5 cmdline=$6
    attempt=1
    while :; do
        health_once
        [ "$status" = hang ] && [ "$attempt" -lt "$attempts" ] || break
        attempt=$((attempt + 1))
    done
}

# health_calls SOCKET: milliseconds per `hull agent health` run (process start, connect,
# Health + Version) over LAB_HEALTH_CALLS runs, -1 if one failed.
health_calls() {
    n=${LAB_HEALTH_CALLS:-10} i=0 c0=$(uptime_s)
    while [ "$i" -lt "$n" ]; do
        $LAB/bin/hull agent health --uds "$1" --timeout 2 > /dev/null 2>&1 || break
        i=$((i + 1))
    done
    c1=$(uptime_s)
    if [ "$i" = "$n" ]; then
        awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN { printf "%.1f", (b - a) * 1000 / n }'
    else
        echo -1
    fi
}

peer_health_calls() {
    psock=$TMP/peer-agent.sock
    mkdir -p "$TMP/peer-shared"
    rm -f "$psock"
    $LAB/bin/hull-agent --listen "hybrid://$psock" --shared-dir "$TMP/peer-shared" > /dev/null 2>&1 &
    ppid_agent=$!
    health_calls "$psock"
    kill -TERM "$ppid_agent" 2>/dev/null
    wait "$ppid_agent" 2>/dev/null
    rm -f "$psock"
}

health_once() {
    out=$TMP/$name.$attempt.out
    err=$TMP/$name.$attempt.err
    sum=$TMP/$name.$attempt.sum
    sock=$TMP/$name.$attempt.vsock
    pidf=$TMP/$name.$attempt.pid
    rm -f "$sock" "$pidf"
    # sh writes its PID and execs the VMM, so the pidfile names hull-vmm itself.
    $WATCH -t "$timeout" -o "$out" -e "$err" -m agent=HULL-AGENT -- \
        sh -c 'echo $$ > "$0"; exec "$@"' "$pidf" \
        $LAB/bin/hull-vmm --kernel $LAB/guest/vmlinux --initrd $LAB/guest/initramfs.cpio \
        --mem-mib "$mem" --vcpus "$vcpus" --cmdline "$cmdline" \
        --vsock-cid 3 --vsock-uds "$sock" > "$sum" &
    watch_pid=$!
    t0=$(uptime_s)
    health=$($LAB/bin/hull agent health --uds "$sock" --timeout $((timeout - 8)) 2>&1)
    health_rc=$?
    t1=$(uptime_s)
    health_ms=$(ms_between "$t0" "$t1")
    call_ms=-1 peer_call_ms=-1
    if [ "$health_rc" = 0 ]; then
        call_ms=$(health_calls "$sock")
        # LAB_HEALTH_PEER (set by the bench plan): the same calls to hull-agent running in L1
        # itself behind a plain Unix socket (same hybrid CONNECT protocol, no VM, no device).
        [ -n "$LAB_HEALTH_PEER" ] && peer_call_ms=$(peer_health_calls)
    fi
    vmm_pid=$(cat "$pidf" 2>/dev/null)
    [ -n "$vmm_pid" ] && kill -TERM "$vmm_pid" 2>/dev/null
    wait "$watch_pid"
    summary=$(cat "$sum" 2>/dev/null)
    parse_summary "$summary"
    agent=$(agent_line "$out")
    boot_ms=$(boot_ms_of "$err")
    answer=$(printf '%s\n' "$health" | printable | tr '\n' ';' | sed 's/"/'"'"'/g; s/;$//')
    if [ "$health_rc" = 0 ] && [ "$rc" = 0 ]; then
        status=ok
    elif [ -z "$agent" ] && { [ "$timedout" = 1 ] || [ "$rc" = 0 ] || [ "$rc" = 143 ]; }; then
        status=hang  # the guest never reached its agent: the lab's known L2 hang
    else
        status=fail
    fi
    echo "LAB-RESULT name=$name attempt=$attempt vmm=hull kind=health status=$status rc=$rc wall_ms=$wall_ms agent_ms=$agent_ms boot_ms=${boot_ms:--1} rss_kib=$maxrss_kib health_rc=$health_rc health_ms=$health_ms call_ms=$call_ms peer_call_ms=$peer_call_ms agent=\"$agent\" detail=\"$answer\""
    if [ "$status" = ok ] && [ -n "$LAB_SHOW_LINES" ]; then
        tail -n "$LAB_SHOW_LINES" "$out" | printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=console | /"
    fi
    if [ "$status" != ok ]; then
        printf '%s\n' "$health" | tail -n 10 | printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=hull | /"
        tail -n 25 "$out" 2>/dev/null | printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=console | /"
        sed "s/${ESC}\[[0-9;]*m//g" "$err" 2>/dev/null | tail -n 25 | printable |
            sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=stderr | /"
    fi
    rm -f "$out" "$err" "$sum" "$sock" "$pidf"
}

# lab_ctr NAME TIMEOUT_S ATTEMPTS MEM_MIB VCPUS KERNEL_PARAMS
# The issue-7 check: containerd (its own config and dirs under $TMP/ctr) with our
# shim, [sandbox] mode = "vm": `ctr run --rm --runtime io.containerd.hull.v2 IMG ID
# uname -r` must print the guest's kernel release (the host judges it against
# L1's). The shim starts virtiofsd and hull-vmm itself. A `ctr run` that outlives
# the timeout is a hang (the lab's L2 hang, retried; the sandbox is killed by the
# shim's pids file); anything else that goes wrong is a failure.
CTR_IMAGE=lab.local/busybox:lab
lab_ctr() {
    name=$1 vmm=hull timeout=$2 attempts=$3 mem=$4 vcpus=$5 params=$6
    attempt=1
    if ! ctr_setup; then
        echo "LAB-RESULT name=$name attempt=1 vmm=hull kind=ctr status=fail rc=-1 detail=\"setup: $setup_error\""
        ctr_tails
        ctr_teardown
        return
    fi
    while :; do
        ctr_once
        [ "$status" = hang ] && [ "$attempt" -lt "$attempts" ] || break
        attempt=$((attempt + 1))
    done
    # LAB_CTR_BENCH=N (set by the bench plan): N x `ctr run --rm IMG ID true`, hull vs runc.
    [ -n "$LAB_CTR_BENCH" ] && [ "$status" = ok ] && ctr_bench "$LAB_CTR_BENCH"
    # LAB_HULL_BENCH=N (lab.py ctr --hull-bench): `hull bench` (issue 15) in VM mode, N repetitions;
    # LAB_HULL_BENCH_GROUPS (--hull-bench-groups) picks its groups, LAB_HULL_BENCH_PODS
    # (--hull-bench-pods) the idle pod counts of its memory group.
    [ -n "$LAB_HULL_BENCH" ] && [ "$status" = ok ] &&
        hull_bench "$LAB_HULL_BENCH" lab "$CTR_IMAGE" start,stages,exec,work,memory --snapshotter native
    # LAB_SOAK=N (lab.py ctr --soak N, issue 14): N create/delete cycles and four SIGKILL faults.
    [ -n "$LAB_SOAK" ] && [ "$status" = ok ] && ctr_soak "$LAB_SOAK"
    ctr_teardown
}

# hull_bench N NAMESPACE IMAGE GROUPS [ARGS...]: `hull bench` against this step's containerd
# (hull in VM mode vs runc; $LAB_HULL_BENCH_GROUPS overrides GROUPS), its tables as LAB-HULLBENCH
# lines (the JSON and plots stay in L1: its disks are thrown away).
hull_bench() {
    n=$1 ns=$2 image=$3 groups=${LAB_HULL_BENCH_GROUPS:-$4}
    shift 4
    PATH=$LAB/bin:$PATH HULL_BENCH_WHERE=lab $WATCH -t 2400 -o "$TMP/hb.out" -e "$TMP/hb.err" -- $LAB/bin/hull bench --where lab \
        --address "$D/run/containerd.sock" --namespace "$ns" --image "$image" "$@" \
        --hull-config "$D/hull.toml" --containerd-log "$D/logs/containerd.log" --out "$TMP/hull-bench" \
        --n "$n" --pods "${LAB_HULL_BENCH_PODS:-1,5}" --budget-mib 2048 --timeout 300 --quiet --groups "$groups" > /dev/null
    printable < "$TMP/hb.out" | sed 's/^/LAB-HULLBENCH | /'
    tail -n 5 "$TMP/hb.err" | printable | sed 's/^/LAB-HULLBENCH-ERR | /'
    ctr_kill_sandboxes
    rm -f "$TMP/hb.out" "$TMP/hb.err"
}

# ctr_soak N (issue 14, the lab variant of runtime-shim/tests/soak.rs): counts what sandboxes
# leave behind, runs N `ctr run --rm ... true` cycles, then four faults, each a SIGKILL while a
# detached container runs: its hull-vmm, its virtiofsd, its shim (each: the task must show
# STOPPED or be gone within 60 s, then task delete and container delete must succeed), and
# containerd (restarted on the same config: the task must be listed again, then killed and
# deleted). The counts must then be back at the start; containerd's fds are compared exactly
# before its restart and must not exceed the start after it (a new process). One line:
#   LAB-SOAK cycles=N ok=.. failed=.. min_ms=.. median_ms=.. max_ms=.. faults="vmm:ok(exit=..) ..."
#            before="..." mid="..." after="..." status=ok|fail detail=".."
ctr_soak() {
    n=$1 soak_ok=0 soak_failed=0 soak_ms="" soak_detail=""
    soak_before=$(soak_counts)
    i=1
    while [ "$i" -le "$n" ]; do
        t0=$(uptime_s)
        if soak_ctr "$timeout" run --rm --snapshotter native --runtime io.containerd.hull.v2 "$CTR_IMAGE" \
            "soak-$i" true > /dev/null 2> "$TMP/soak.err"; then
            soak_ok=$((soak_ok + 1))
            soak_ms="$soak_ms $(ms_between "$t0" "$(uptime_s)")"
        else
            soak_failed=$((soak_failed + 1))
            tail -n 5 "$TMP/soak.err" | printable | sed "s/^/LAB-TAIL name=ctr-soak attempt=$i stream=ctr | /"
            ctr_kill_sandboxes
            soak_ctr 30 task delete -f "soak-$i" > /dev/null 2>&1
            soak_ctr 30 container delete "soak-$i" > /dev/null 2>&1
        fi
        i=$((i + 1))
    done
    stats=$(printf '%s\n' $soak_ms | sort -n | awk 'NF { v[++k] = $1 }
        END { if (k) printf "min_ms=%d median_ms=%d max_ms=%d", v[1], v[int((k + 1) / 2)], v[k];
              else printf "min_ms=-1 median_ms=-1 max_ms=-1" }')
    faults=""
    for what in vmm virtiofsd shim; do faults="$faults $(soak_fault "$what")"; done
    soak_mid=$(soak_settle "$soak_before")
    soak_containerd_fault  # not in a subshell: it starts containerd again (ctrd_pid)
    faults="$faults $fault_ctrd"
    faults=${faults# }
    soak_after=$(soak_settle "$(soak_without_fds "$soak_before")" soak_without_fds)
    soak_status=ok
    [ "$soak_failed" = 0 ] && [ "$soak_ok" = "$n" ] || soak_detail="$soak_detail $soak_failed of $n cycles failed;"
    case " $faults " in *:fail*) soak_detail="$soak_detail a fault was not handled;" ;; esac
    [ "$soak_mid" = "$soak_before" ] || soak_detail="$soak_detail counts after the cycles and 3 faults differ;"
    [ "$(soak_without_fds "$soak_after")" = "$(soak_without_fds "$soak_before")" ] &&
        [ "$(soak_fds "$soak_after")" -le "$(soak_fds "$soak_before")" ] ||
        soak_detail="$soak_detail counts after the containerd restart differ;"
    [ -z "$soak_detail" ] || soak_status=fail
    echo "LAB-SOAK cycles=$n ok=$soak_ok failed=$soak_failed $stats faults=\"$faults\" before=\"$soak_before\" mid=\"$soak_mid\" after=\"$soak_after\" status=$soak_status detail=\"${soak_detail# }\""
    [ "$soak_status" = ok ] || ctr_tails
    ctr_kill_sandboxes
    rm -f "$TMP/soak.err" "$TMP/soak.del"
}

# soak_ctr SECONDS ARGS...: ctr against this step's containerd, SIGKILLed after SECONDS.
soak_ctr() {
    s=$1
    shift
    timeout -s KILL "$s" $LAB/bin/ctr --address "$D/run/containerd.sock" --namespace lab "$@"
}

# What sandboxes may leave behind: hull processes, L1's mounts, containerd's fds, taps,
# pod cgroups, run-dir entries.
soak_counts() {
    procs=0
    for c in /proc/[0-9]*/comm; do
        case $(cat "$c" 2>/dev/null) in hull-vmm | virtiofsd | containerd-shim*) procs=$((procs + 1)) ;; esac
    done
    echo "procs=$procs mounts=$(wc -l < /proc/1/mountinfo) fds=$(ls "/proc/$ctrd_pid/fd" 2>/dev/null | wc -l)" \
        "taps=$(ls /sys/class/net/*/tun_flags 2>/dev/null | wc -l)" \
        "cgroups=$(ls -d /sys/fs/cgroup/hull-pods/*/ /sys/fs/cgroup/*/hull-pods/*/ 2>/dev/null | wc -l)" \
        "rundir=$(ls -A "$D/hull" 2>/dev/null | wc -l)"
}
soak_without_fds() { printf '%s\n' "$1" | sed 's/ fds=[0-9]*//'; }
soak_fds() { printf '%s\n' "$1" | sed -n 's/.* fds=\([0-9]*\).*/\1/p'; }

# soak_settle WANTED [FILTER]: the counts once they equal WANTED (after FILTER), or after 30 s.
soak_settle() {
    j=0
    while :; do
        got=$(soak_counts)
        seen=$got
        [ -n "$2" ] && seen=$($2 "$got")
        [ "$seen" = "$1" ] || [ "$j" -ge 30 ] && break
        j=$((j + 1))
        sleep 1
    done
    echo "$got"
}

# soak_pid CID NAME: NAME's pid from the sandbox's pids file, else from /proc by name.
soak_pid() {
    for f in "$D/hull/$1/pids" "$D"/hull/*/pids; do
        [ -f "$f" ] || continue
        pid=$(awk -v n="$2" '$1 == n && $2 ~ /^[0-9]+$/ { print $2; exit }' "$f")
        [ -n "$pid" ] && { echo "$pid"; return; }
    done
    for c in /proc/[0-9]*/comm; do
        [ "$(cat "$c" 2>/dev/null)" = "$2" ] && { pid=${c#/proc/}; echo "${pid%/comm}"; return; }
    done
}

soak_shim_pid() {
    for c in /proc/[0-9]*/cmdline; do
        if tr '\0' ' ' < "$c" 2>/dev/null | grep -q "containerd-shim-hull-v2 .*-id $1 "; then
            pid=${c#/proc/}
            echo "${pid%/cmdline}"
            return
        fi
    done
}

# soak_task_state CID: RUNNING, STOPPED, ... or gone (not listed), from `ctr task ls`.
soak_task_state() {
    st=$(soak_ctr 30 task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $3 }')
    echo "${st:-gone}"
}

# soak_wait_stopped CID: STOPPED or gone within 60 s (prints which, or "stuck:STATE").
soak_wait_stopped() {
    j=0
    while :; do
        st=$(soak_task_state "$1")
        case $st in STOPPED | gone) echo "$st"; return ;; esac
        [ "$j" -ge 60 ] && { echo "stuck:$st"; return; }
        j=$((j + 1))
        sleep 1
    done
}

# soak_delete CID: task delete (its exit status from ctr's warning, 0 when none) and container
# delete; prints "exit=N" or "fail(...)".
soak_delete() {
    soak_ctr 60 task delete "$1" > /dev/null 2> "$TMP/soak.del"
    del_rc=$?
    code=$(sed -n 's/.*exit code \([0-9]*\).*/\1/p' "$TMP/soak.del" | head -n1)
    # ctr may exit non-zero to pass on the task's own non-zero exit code: that is not a failure.
    if [ "$del_rc" != 0 ] && [ "$2" != gone ] && [ -z "$code" ]; then
        echo "fail(task delete: $(tail -n 1 "$TMP/soak.del" | printable | tr -d '"' | cut -c1-80))"
    elif ! soak_ctr 60 container delete "$1" > /dev/null 2> "$TMP/soak.del"; then
        echo "fail(container delete: $(tail -n 1 "$TMP/soak.del" | printable | tr -d '"' | cut -c1-80))"
    elif [ "$2" = gone ]; then
        echo "exit=gone"
    else
        echo "exit=${code:-0}"
    fi
}

# soak_fault vmm|virtiofsd|shim: prints "WHAT:ok(exit=N)" or "WHAT:fail(...)".
soak_fault() {
    cid=soak-kill-$1
    if ! soak_ctr 120 run -d --snapshotter native --runtime io.containerd.hull.v2 "$CTR_IMAGE" "$cid" \
        sleep 600 > /dev/null 2> "$TMP/soak.err"; then
        echo "$1:fail(run-d:$(tail -n 1 "$TMP/soak.err" | printable | tr -d '" ' | cut -c1-60))"
        ctr_kill_sandboxes
        soak_ctr 30 task delete -f "$cid" > /dev/null 2>&1
        soak_ctr 30 container delete "$cid" > /dev/null 2>&1
        return
    fi
    sleep 2
    case $1 in
        vmm) pid=$(soak_pid "$cid" hull-vmm) ;;
        virtiofsd) pid=$(soak_pid "$cid" virtiofsd) ;;
        shim) pid=$(soak_shim_pid "$cid") ;;
    esac
    if [ -z "$pid" ]; then
        echo "$1:fail(no-pid)"
    else
        kill -KILL "$pid"
        st=$(soak_wait_stopped "$cid")
        case $st in
            stuck:*) echo "$1:fail($st)" ;;
            *) echo "$1:$(soak_delete "$cid" "$st" | sed 's/^exit=/ok(exit=/; s/^ok(exit=.*/&)/')" ;;
        esac
    fi
    # Nothing of this container may stay, whatever happened.
    ctr_kill_sandboxes
    soak_ctr 30 task delete -f "$cid" > /dev/null 2>&1
    soak_ctr 30 container delete "$cid" > /dev/null 2>&1
}

# soak_containerd_fault: SIGKILL containerd under a detached container, start it again; the task
# must be listed again, then SIGKILL it, STOPPED or gone, deleted. Sets fault_ctrd="containerd:ok(...)".
soak_containerd_fault() {
    cid=soak-kill-containerd
    if ! soak_ctr 120 run -d --snapshotter native --runtime io.containerd.hull.v2 "$CTR_IMAGE" "$cid" \
        sleep 600 > /dev/null 2> "$TMP/soak.err"; then
        fault_ctrd="containerd:fail(run-d)"
        return
    fi
    sleep 2
    kill -KILL "$ctrd_pid"
    wait "$ctrd_pid" 2>/dev/null
    if ! ctrd_start; then
        fault_ctrd="containerd:fail(restart)"
        return
    fi
    j=0
    until [ "$(soak_task_state "$cid")" = RUNNING ] || [ "$j" -ge 30 ]; do
        j=$((j + 1))
        sleep 1
    done
    before_kill=$(soak_task_state "$cid")
    soak_ctr 30 task kill -s SIGKILL "$cid" > /dev/null 2>&1
    st=$(soak_wait_stopped "$cid")
    case $before_kill:$st in
        RUNNING:STOPPED | RUNNING:gone)
            fault_ctrd="containerd:$(soak_delete "$cid" "$st" | sed 's/^exit=/ok(exit=/; s/^ok(exit=.*/&)/')" ;;
        *) fault_ctrd="containerd:fail(after-restart=$before_kill,then=$st)" ;;
    esac
    ctr_kill_sandboxes
    soak_ctr 30 task delete -f "$cid" > /dev/null 2>&1
    soak_ctr 30 container delete "$cid" > /dev/null 2>&1
}

# ctr_bench N: prints LAB-CTR-BENCH runtime=hull|runc wall_ms="..." (one figure per run, "fail" for a failed one).
ctr_bench() {
    for runtime in hull runc; do
        list="" i=1
        while [ "$i" -le "$1" ]; do
            s=$($WATCH -t "$timeout" -o "$TMP/bench.out" -e "$TMP/bench.err" -- $LAB/bin/ctr \
                --address "$D/run/containerd.sock" --namespace lab run --rm --snapshotter native \
                --runtime "io.containerd.$runtime.v2" "$CTR_IMAGE" "bench-$runtime-$i" true)
            parse_summary "$s"
            if [ "$rc" = 0 ]; then
                list="$list $wall_ms"
            else
                list="$list fail"
                tail -n 5 "$TMP/bench.err" | printable | sed "s/^/LAB-TAIL name=ctr-bench attempt=$i stream=$runtime | /"
                ctr_kill_sandboxes
            fi
            i=$((i + 1))
        done
        echo "LAB-CTR-BENCH runtime=$runtime wall_ms=\"${list# }\""
    done
    rm -f "$TMP/bench.out" "$TMP/bench.err"
    for runtime in hull runc; do ctr_pss "$runtime"; done
}

# pss_tree PID: the summed Pss (KiB) of PID and all its descendants, from smaps_rollup.
pss_tree() {
    # "pid ppid" of every process (comm may hold spaces: the ppid follows the last ") S").
    pids=$(cat /proc/[0-9]*/stat 2>/dev/null | sed -n 's/^\([0-9]*\) .*) . \([0-9]*\) .*/\1 \2/p' |
        awk -v root="$1" '{ parent[$1] = $2 }
            END { print root; for (p in parent) { q = p; while ((q in parent) && q != root && q > 1) q = parent[q]; if (q == root && p != root) print p } }')
    total=0
    for p in $pids; do
        kib=$(awk '/^Pss:/ { print $2; exit }' "/proc/$p/smaps_rollup" 2>/dev/null)
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

# ctr_pss RUNTIME: one idle container (`sleep 1000`, detached); prints
# LAB-CTR-PSS runtime=.. pss_kib=<shim and all its descendants: for hull the VMM (guest memory
# it touched) and virtiofsd, for runc the container's processes>.
ctr_pss() {
    id=pss-$1
    if ! ctr_cmd run -d --snapshotter native --runtime "io.containerd.$1.v2" "$CTR_IMAGE" "$id" sleep 1000 \
        > /dev/null 2>"$TMP/pss.err"; then
        tail -n 5 "$TMP/pss.err" | printable | sed "s/^/LAB-TAIL name=ctr-pss attempt=1 stream=$1 | /"
        echo "LAB-CTR-PSS runtime=$1 pss_kib=-1"
        return
    fi
    sleep 3  # let the guest and the shim settle
    shim=
    for c in /proc/[0-9]*/cmdline; do
        if tr '\0' ' ' < "$c" 2>/dev/null | grep -q "containerd-shim-$1-v2 .*-id $id "; then
            shim=${c#/proc/}
            shim=${shim%/cmdline}
            break
        fi
    done
    pss=-1
    [ -n "$shim" ] && pss=$(pss_tree "$shim")
    echo "LAB-CTR-PSS runtime=$1 pss_kib=$pss shim_pid=${shim:--1}"
    ctr_cmd task kill -s KILL "$id" > /dev/null 2>&1
    sleep 1
    ctr_cmd task delete -f "$id" > /dev/null 2>&1
    ctr_cmd container delete "$id" > /dev/null 2>&1
    rm -f "$TMP/pss.err"
}

# hull_debug: hull.toml's `debug` for the steps: true (the shim's debug log and the guest
# kernel's console, for telling what went wrong), but false when `hull bench` runs after the
# step: its figures are meant as users get them, and under nesting every byte on the serial
# console is a slow exit (a guest with its full console took seconds longer to boot).
hull_debug() {
    if [ -n "$LAB_HULL_BENCH" ]; then echo false; else echo true; fi
}

# hull.toml's guest root: the pmem image when the lab carries one (the product's default),
# unless --hull-config names `image` itself (image = "" boots the initramfs).
hull_image_line() {
    case "$LAB_HULL_CONFIG" in
        "image ="* | *"
image ="*) ;;
        *) if [ -f "$LAB/guest/rootfs.img" ]; then echo "image = \"$LAB/guest/rootfs.img\""; else echo 'image = ""'; fi ;;
    esac
}

ctr_setup() {
    D=$TMP/ctr
    rm -rf "$D"
    mkdir -p "$D/root" "$D/state" "$D/run" "$D/hull" "$D/opt" "$D/logs"
    # containerd, ctr and virtiofsd are dynamic builds: put their libraries in place.
    cp -a "$LAB/sysroot/." / 2>/dev/null
    grep -q ' /sys/fs/cgroup ' /proc/mounts 2>/dev/null || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    printf '%s\n' \
        "kernel = \"$LAB/guest/vmlinux\"" \
        "initramfs = \"$LAB/guest/initramfs.cpio\"" \
        "$(hull_image_line)" \
        "vmm = \"$LAB/bin/hull-vmm\"" \
        "virtiofsd = \"$LAB/bin/virtiofsd\"" \
        "vcpus = $vcpus" \
        "mem_mib = $mem" \
        "kernel_params = \"$params\"" \
        "debug = $(hull_debug)" \
        ${LAB_HULL_CONFIG:+"$LAB_HULL_CONFIG"} \
        "[sandbox]" \
        "mode = \"vm\"" \
        "run_dir = \"$D/hull\"" \
        "boot_timeout_secs = $timeout" > "$D/hull.toml"
    printf '%s\n' \
        "version = 2" \
        "root = \"$D/root\"" \
        "state = \"$D/state\"" \
        "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]" \
        "[grpc]" \
        "  address = \"$D/run/containerd.sock\"" \
        "[debug]" \
        "  level = \"debug\"" \
        "[plugins.\"io.containerd.internal.v1.opt\"]" \
        "  path = \"$D/opt\"" > "$D/config.toml"
    t0=$(uptime_s)
    ctrd_start || return 1
    t1=$(uptime_s)
    if ! out=$(ctr_cmd image import --snapshotter native "$LAB/images/busybox.tar" 2>&1); then
        setup_error="ctr image import: $(printf '%s' "$out" | printable | tail -n 3 | tr '\n' ';')"
        return 1
    fi
    echo "LAB-CTR event=ready containerd_start_ms=$(ms_between "$t0" "$t1") import_ms=$(ms_between "$t1" "$(uptime_s)")"
}

# ctrd_start: containerd on this step's config (its log appended to), ctrd_pid set; waits for its socket.
ctrd_start() {
    rm -f "$D/run/containerd.sock"
    HULL_CONFIG=$D/hull.toml PATH=$LAB/bin:/bin \
        $LAB/bin/containerd --config "$D/config.toml" >> "$D/logs/containerd.log" 2>&1 &
    ctrd_pid=$!
    i=0
    while [ ! -S "$D/run/containerd.sock" ]; do
        i=$((i + 1))
        if [ "$i" -gt 200 ] || ! kill -0 "$ctrd_pid" 2>/dev/null; then
            setup_error="containerd did not start"
            return 1
        fi
        sleep 0.1
    done
}

ctr_cmd() { $LAB/bin/ctr --address "$D/run/containerd.sock" --namespace lab "$@"; }

ctr_once() {
    out=$TMP/$name.$attempt.out
    err=$TMP/$name.$attempt.err
    id=$name-$attempt
    summary=$($WATCH -t "$timeout" -o "$out" -e "$err" -- $LAB/bin/ctr --address "$D/run/containerd.sock" \
        --namespace lab run --rm --snapshotter native --runtime io.containerd.hull.v2 "$CTR_IMAGE" "$id" uname -r)
    parse_summary "$summary"
    output=$(printable < "$out" | tr -d '\r' | tr '\n' ';' | sed 's/"/'"'"'/g; s/;$//')
    if [ "$timedout" = 1 ]; then
        status=hang
    elif [ "$rc" = 0 ] && [ -n "$output" ]; then
        status=ok
    else
        status=fail
    fi
    rootfs= console=
    if [ "$status" = ok ]; then
        # A second container: how its root file system reached the guest (virtio-fs, issue 6).
        $WATCH -t "$timeout" -o "$out.fs" -e "$err.fs" -- $LAB/bin/ctr --address "$D/run/containerd.sock" \
            --namespace lab run --rm --snapshotter native --runtime io.containerd.hull.v2 "$CTR_IMAGE" "$id-fs" \
            sh -c 'grep -m1 " / " /proc/mounts' > /dev/null
        rootfs=$(printable < "$out.fs" | head -n1 | sed 's/"/'"'"'/g')
        rm -f "$out.fs" "$err.fs"
        ctr_console
    fi
    echo "LAB-RESULT name=$name attempt=$attempt vmm=hull kind=ctr status=$status rc=$rc wall_ms=$wall_ms l1_kernel=$(uname -r) detail=\"$output\" rootfs=\"$rootfs\" console=\"$console\""
    if [ "$status" != ok ]; then
        sed "s/${ESC}\[[0-9;]*m//g" "$err" 2>/dev/null | tail -n 15 | printable |
            sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=ctr | /"
        ctr_tails
        ctr_kill_sandboxes
        ctr_cmd task delete -f "$id" > /dev/null 2>&1
        ctr_cmd container delete "$id" > /dev/null 2>&1
    fi
    rm -f "$out" "$err"
}

# ctr_console (issue 16): with `debug_console = true` in the shim's config, `hull console ID`
# into a detached container's sandbox gets the guest's shell (a debug image) or, with the default
# image (no shell), the agent's one-line answer saying so. Sets console="ok: ..." or "fail: ...".
ctr_console() {
    cid=$id-con
    sed -i '1i debug_console = true' "$D/hull.toml"
    if ctr_cmd run -d --snapshotter native --runtime io.containerd.hull.v2 "$CTR_IMAGE" "$cid" sleep 600 \
        > /dev/null 2> "$TMP/con.err"; then
        got=$(printf 'echo console-$((40+2)); cat /proc/1/comm; exit\n' |
            timeout -s KILL 60 $LAB/bin/hull console "$cid" --config "$D/hull.toml" 2>&1 |
            printable | tr -d '\r' | tr '\n' ';' | sed 's/"/'"'"'/g' | cut -c1-300)
        case $got in
            *console-42*) console="ok: a shell in the guest: $got" ;;
            *"no /bin/sh in this guest image"*) console="ok: default image, the agent says it has no shell: $got" ;;
            *) console="fail: hull console printed: $got" ;;
        esac
    else
        console="fail: ctr run -d: $(tail -n 3 "$TMP/con.err" | printable | tr '\n' ';' | sed 's/"/'"'"'/g')"
    fi
    ctr_cmd task kill -s SIGKILL "$cid" > /dev/null 2>&1
    i=0
    until ctr_cmd task delete "$cid" > /dev/null 2>&1 || [ "$i" -ge 50 ]; do
        i=$((i + 1))
        sleep 0.2
    done
    ctr_cmd container delete "$cid" > /dev/null 2>&1
    sed -i '/^debug_console = true$/d' "$D/hull.toml"
    rm -f "$TMP/con.err"
}

# The shim's per-sandbox logs (while the sandbox still exists) and containerd's log.
ctr_tails() {
    for f in "$D"/hull/*/console.log "$D"/hull/*/vmm.log "$D"/hull/*/virtiofsd.log; do
        [ -s "$f" ] || continue
        sed "s/${ESC}\[[0-9;]*m//g" "$f" | tail -n 15 | printable |
            sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=${f##*/} | /"
    done
    sed "s/${ESC}\[[0-9;]*m//g" "$D/logs/containerd.log" 2>/dev/null | grep -v 'level=debug' | tail -n 20 |
        printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=containerd | /"
}

# SIGKILL the processes a shim recorded in its sandbox's pids file (virtiofsd, hull-vmm).
ctr_kill_sandboxes() {
    for f in "$D"/hull/*/pids; do
        [ -f "$f" ] || continue
        while read -r _ pid; do
            case $pid in '' | *[!0-9]*) continue ;; esac
            [ "$pid" -gt 1 ] && kill -KILL "$pid" 2>/dev/null
        done < "$f"
    done
}

ctr_teardown() {
    ctr_kill_sandboxes
    [ -n "$ctrd_pid" ] && kill -TERM "$ctrd_pid" 2>/dev/null && wait "$ctrd_pid" 2>/dev/null
    ctrd_pid=
}

# lab_suite NAME TIMEOUT_S ATTEMPTS MEM_MIB VCPUS CMDLINE
# Issues 5 and 6: the agent's own integration tests (static test executables in
# $LAB/bin/agent-suite, in the order of its ORDER file) against hull-agent as PID 1 of a
# microVM. hull-vmm gets a hybrid vsock device and a virtio-fs device served by virtiofsd
# (sandboxed, as the shim runs it) from $S/share, which holds the busybox rootfs at c/rootfs;
# `hull agent create-sandbox` mounts the share in the guest first. fsbench runs in a container
# on the share (the shared_fs executable's ignored bench test) and in L1 on the same directory.
# The last executable (oom) ends with PowerOff, after which hull-vmm must exit 0. TIMEOUT_S
# bounds each executable; the guest must serve its API within LAB_SUITE_BOOT_S (default 60).
#   LAB-SUITE name=.. test=<executable> status=ok|fail passed=N failed=N ms=N
#   LAB-FSBENCH name=.. where=guest|l1 <fsbench's fields>
#   LAB-RESULT name=.. kind=suite status=ok|fail|hang rc=<hull-vmm exit> ...
lab_suite() {
    name=$1 vmm=hull timeout=$2 attempts=$3 mem=$4 vcpus=$5 cmdline=$6
    attempt=1
    while :; do
        suite_once
        [ "$status" = hang ] && [ "$attempt" -lt "$attempts" ] || break
        attempt=$((attempt + 1))
    done
}

suite_once() {
    S=$TMP/suite
    rm -rf "$S"
    mkdir -p "$S/share/c/rootfs/bin" "$S/logs"
    for d in proc dev tmp etc mnt; do mkdir -p "$S/share/c/rootfs/$d"; done
    cp /bin/busybox "$S/share/c/rootfs/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || ln -s busybox "$S/share/c/rootfs/bin/$a"
    done
    cp "$LAB/bin/fsbench" "$S/share/c/rootfs/fsbench"
    cp -a "$LAB/sysroot/." / 2>/dev/null  # virtiofsd is a dynamic build
    out=$S/logs/console.out err=$S/logs/vmm.err sum=$S/logs/vmm.sum pidf=$S/vmm.pid
    $LAB/bin/virtiofsd --socket-path "$S/vfs.sock" --shared-dir "$S/share" --sandbox namespace \
        --seccomp kill --announce-submounts --cache auto --inode-file-handles=prefer --log-level warn \
        > "$S/logs/virtiofsd.log" 2>&1 &
    vfs_pid=$!
    i=0
    while [ ! -S "$S/vfs.sock" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    $WATCH -t $((timeout * 5)) -o "$out" -e "$err" -m agent=HULL-AGENT -- \
        sh -c 'echo $$ > "$0"; exec "$@"' "$pidf" \
        $LAB/bin/hull-vmm --kernel $LAB/guest/vmlinux --initrd $LAB/guest/initramfs.cpio \
        --mem-mib "$mem" --vcpus "$vcpus" --cmdline "$cmdline" \
        --vsock-cid 3 --vsock-uds "$S/vsock.sock" --fs "tag=hullfs,socket=$S/vfs.sock" > "$sum" &
    watch_pid=$!
    t0=$(uptime_s)
    setup=$($LAB/bin/hull agent create-sandbox --uds "$S/vsock.sock" --id suite --shared-fs-tag hullfs \
        --timeout "${LAB_SUITE_BOOT_S:-60}" 2>&1)
    setup_rc=$?
    ready_ms=$(ms_between "$t0" "$(uptime_s)")
    passed_all=0 failed_all=0 suite_status=ok
    if [ "$setup_rc" = 0 ]; then
        for t in $(cat "$LAB/bin/agent-suite/ORDER"); do
            extra=
            [ "$t" = shared_fs ] && extra=--include-ignored
            log=$S/logs/$t.log
            t1=$(uptime_s)
            HULL_TEST_AGENT_SOCKET=$S/vsock.sock HULL_TEST_AGENT_SHARED_DIR=$S/share \
                HULL_FSBENCH_ARGS="${LAB_FSBENCH_ARGS:---mib 64 --files 10000}" \
                $WATCH -t "$timeout" -o "$log" -e "$log.err" -- \
                "$LAB/bin/agent-suite/$t" --test-threads=1 --nocapture $extra > "$S/logs/$t.sum"
            ms=$(ms_between "$t1" "$(uptime_s)")
            result=$(grep -a '^test result:' "$log" | tail -n 1)
            passed=$(printf '%s' "$result" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
            failed=$(printf '%s' "$result" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
            case $result in "test result: ok."*) st=ok ;; *) st=fail suite_status=fail ;; esac
            echo "LAB-SUITE name=$name test=$t status=$st passed=${passed:-0} failed=${failed:-0} ms=$ms"
            passed_all=$((passed_all + ${passed:-0}))
            failed_all=$((failed_all + ${failed:-0}))
            grep -a 'FSBENCH ' "$log" | head -n 1 | printable | sed "s/.*FSBENCH /LAB-FSBENCH name=$name where=guest /"
            if [ "$st" != ok ]; then
                cat "$log" "$log.err" 2>/dev/null | grep -av '^ *[0-9]*: \|^ *at ' | tail -n 40 | printable |
                    sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=$t | /"
            fi
            if [ "$t" = shared_fs ]; then
                # The same program in L1 on the directory behind the share.
                "$LAB/bin/fsbench" "$S/share/c/rootfs" ${LAB_FSBENCH_ARGS:---mib 64 --files 10000} 2>&1 |
                    head -n 1 | printable | sed "s/^FSBENCH /LAB-FSBENCH name=$name where=l1 /"
            fi
        done
    else
        suite_status=setup
    fi
    # The oom executable powered the guest off; make sure the VMM goes either way.
    i=0
    while kill -0 "$watch_pid" 2>/dev/null && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    vmm_pid=$(cat "$pidf" 2>/dev/null)
    [ -n "$vmm_pid" ] && kill -TERM "$vmm_pid" 2>/dev/null
    wait "$watch_pid"
    kill -TERM "$vfs_pid" 2>/dev/null
    wait "$vfs_pid" 2>/dev/null
    parse_summary "$(cat "$sum" 2>/dev/null)"
    agent=$(agent_line "$out")
    detail=$(printf '%s\n' "$setup" | printable | tr '\n' ';' | sed 's/"/'"'"'/g; s/;$//')
    if [ "$suite_status" = ok ] && [ "$rc" = 0 ]; then
        status=ok
    elif [ "$suite_status" = setup ] && [ -z "$agent" ]; then
        status=hang  # the guest never reached its agent: the lab's known L2 hang
    else
        status=fail
    fi
    echo "LAB-RESULT name=$name attempt=$attempt vmm=hull kind=suite status=$status rc=$rc wall_ms=$wall_ms agent_ms=$agent_ms ready_ms=$ready_ms rss_kib=$maxrss_kib passed=$passed_all failed=$failed_all agent=\"$agent\" detail=\"$detail\""
    if [ "$status" != ok ]; then
        tail -n 25 "$out" 2>/dev/null | printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=console | /"
        sed "s/${ESC}\[[0-9;]*m//g" "$err" 2>/dev/null | tail -n 15 | printable |
            sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=stderr | /"
        grep -a ' WARN \| ERROR ' "$out" 2>/dev/null | tail -n 15 | printable |
            sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=agent-warnings | /"
        tail -n 10 "$S/logs/virtiofsd.log" 2>/dev/null | printable |
            sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=virtiofsd | /"
    fi
}

# lab_net: loads the pod step's modules (bridge, veth, tun, ingress qdisc, u32, mirred; the
# net.order file lists them dependencies first), brings lo up. Fails with $net_error.
lab_net() {
    net_error=
    [ "$LAB_POD_NET" = skip ] && return 0  # lab-selftest only: no modules, no interfaces touched
    for m in $(cat /lib/modules/net.order); do
        mod=$(echo "${m%.ko}" | tr - _)
        [ -d "/sys/module/$mod" ] && continue
        insmod "/lib/modules/$m" || net_error="${net_error}insmod $m failed; "
    done
    [ -c /dev/net/tun ] || net_error="${net_error}no /dev/net/tun; "
    ip link set lo up
    [ -z "$net_error" ]
}

# lab_pod NAME TIMEOUT_S ATTEMPTS MEM_MIB VCPUS KERNEL_PARAMS OPTIONS
# Issues 12 and 13: containerd with its CRI plugin (runtime handlers `hull`, VM mode, and
# `runc`), the bridge CNI network labnet (bridge lab0, $POD_SUBNET and $POD_SUBNET6, L1 is its gateway), the
# busybox and pause images in namespace k8s.io (native snapshotter); then $LAB/bin/lab-pod (the
# CRI client of runtime-shim/examples/lab_pod.rs) runs the pod scenario with OPTIONS (--full,
# --bench N) and its LAB- lines are passed on. A run that outlives TIMEOUT_S, or whose pod guest
# never reached its agent (lab-pod says hang), is a hang: retried with a fresh containerd. Any
# other failure is a failure.
#   LAB-POD name=.. attempt=.. check=<what> status=ok|fail detail=".."   (one per check)
#   LAB-POD-TIME / LAB-POD-BENCH name=.. runtime=.. ...                  (figures)
#   LAB-RESULT name=.. kind=pod status=ok|fail|hang rc=<lab-pod> wall_ms=.. failed="<checks>"
POD_SUBNET=10.88.0.0/24
POD_SUBNET6=fd88::/64  # dual stack: every pod also gets an IPv6 address (issue 13)
lab_pod() {
    name=$1 vmm=hull timeout=$2 attempts=$3 mem=$4 vcpus=$5 params=$6 options=$7
    attempt=1
    while :; do
        pod_once
        [ "$status" = hang ] && [ "$attempt" -lt "$attempts" ] || break
        attempt=$((attempt + 1))
    done
}

pod_setup() {
    D=$TMP/pod.$attempt  # a fresh one per attempt: a hung attempt may leave mounts behind
    mkdir -p "$D/root" "$D/state" "$D/run" "$D/hull" "$D/opt" "$D/logs" "$D/cni/net.d" "$D/cni/ipam" "$D/pods"
    cp -a "$LAB/sysroot/." / 2>/dev/null  # containerd, ctr, virtiofsd, runc, CNI plugins are dynamic
    grep -q ' /sys/fs/cgroup ' /proc/mounts 2>/dev/null || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    if ! lab_net; then
        setup_error="kernel modules: $net_error"
        return 1
    fi
    # CRI copies L1's /etc/hosts into every pod, and its /etc/resolv.conf into a pod without
    # a DNS config (hull bench's pods, like kubelet's dnsPolicy Default).
    mkdir -p /etc /var/lib/cni
    [ -f /etc/hosts ] || printf '127.0.0.1 localhost\n' > /etc/hosts
    [ -f /etc/resolv.conf ] || printf '# lab L1: no name server\n' > /etc/resolv.conf
    printf '%s\n' \
        "kernel = \"$LAB/guest/vmlinux\"" \
        "initramfs = \"$LAB/guest/initramfs.cpio\"" \
        "$(hull_image_line)" \
        "vmm = \"$LAB/bin/hull-vmm\"" \
        "virtiofsd = \"$LAB/bin/virtiofsd\"" \
        "vcpus = $vcpus" \
        "mem_mib = $mem" \
        "kernel_params = \"quiet $params\"" \
        "debug = $(hull_debug)" \
        ${LAB_HULL_CONFIG:+"$LAB_HULL_CONFIG"} \
        "[sandbox]" \
        "mode = \"vm\"" \
        "run_dir = \"$D/hull\"" \
        "boot_timeout_secs = ${LAB_POD_BOOT_S:-45}" > "$D/hull.toml"
    printf '%s\n' \
        '{' \
        '  "cniVersion": "0.4.0",' \
        '  "name": "labnet",' \
        '  "plugins": [' \
        '    {' \
        '      "type": "bridge",' \
        '      "bridge": "lab0",' \
        '      "isGateway": true,' \
        '      "ipMasq": false,' \
        '      "ipam": {' \
        '        "type": "host-local",' \
        "        \"ranges\": [[{ \"subnet\": \"$POD_SUBNET\" }], [{ \"subnet\": \"$POD_SUBNET6\" }]]," \
        "        \"dataDir\": \"$D/cni/ipam\"" \
        '      }' \
        '    }' \
        '  ]' \
        '}' > "$D/cni/net.d/10-labnet.conflist"
    printf '%s\n' \
        "version = 2" \
        "root = \"$D/root\"" \
        "state = \"$D/state\"" \
        "[grpc]" \
        "  address = \"$D/run/containerd.sock\"" \
        "[debug]" \
        "  level = \"debug\"" \
        "[plugins.\"io.containerd.internal.v1.opt\"]" \
        "  path = \"$D/opt\"" \
        "[plugins.\"io.containerd.grpc.v1.cri\"]" \
        "  restrict_oom_score_adj = true" \
        "  disable_tcp_service = true" \
        "  sandbox_image = \"lab.local/pause:lab\"" \
        "  netns_mounts_under_state_dir = true" \
        "  [plugins.\"io.containerd.grpc.v1.cri\".cni]" \
        "    bin_dir = \"$LAB/cni\"" \
        "    conf_dir = \"$D/cni/net.d\"" \
        "    max_conf_num = 1" \
        "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]" \
        "    default_runtime_name = \"runc\"" \
        "    snapshotter = \"native\"" \
        "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]" \
        "      runtime_type = \"io.containerd.runc.v2\"" \
        "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.hull]" \
        "      runtime_type = \"io.containerd.hull.v2\"" \
        "      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.hull.options]" \
        "        ConfigPath = \"$D/hull.toml\"" > "$D/config.toml"
    t0=$(uptime_s)
    ctrd_start || return 1
    t1=$(uptime_s)
    for img in busybox pause; do
        if ! imported=$($LAB/bin/ctr --address "$D/run/containerd.sock" --namespace k8s.io image import \
            --snapshotter native "$LAB/images/$img.tar" 2>&1); then
            setup_error="ctr image import $img: $(printf '%s' "$imported" | printable | tail -n 3 | tr '\n' ';')"
            return 1
        fi
    done
    echo "LAB-POD-SETUP name=$name attempt=$attempt containerd_start_ms=$(ms_between "$t0" "$t1") import_ms=$(ms_between "$t1" "$(uptime_s)")"
}

pod_once() {
    out=$TMP/$name.$attempt.out
    err=$TMP/$name.$attempt.err
    failed= detail= rc=-1 wall_ms=-1 timedout=0
    if ! pod_setup; then
        status=fail
        detail="setup: $setup_error"
    else
        # lab-pod runs wget (busybox, L1's /bin) for the page from L1.
        summary=$(PATH=/bin $WATCH -t "$timeout" -o "$out" -e "$err" -- $LAB/bin/lab-pod \
            --socket "$D/run/containerd.sock" --run-dir "$D/hull" --pod-dir "$D/pods" \
            --hull-config "$D/hull.toml" --hull-bin "$LAB/bin/hull" \
            --netns-dir "$D/state/io.containerd.grpc.v1.cri/netns" --ipam-dir "$D/cni/ipam/labnet" \
            --name "$name" --attempt "$attempt" $options)
        parse_summary "$summary"
        [ -n "$summary" ] || echo "LAB-TAIL name=$name attempt=$attempt stream=labwatch | no summary from labwatch"
        # The client's own lines (checks, figures, tails), longer than other tails.
        grep -a '^LAB-' "$out" 2>/dev/null | tr -cd ' -~\n' | cut -c1-600
        end=$(grep -a '^LAB-POD-END ' "$out" 2>/dev/null | tail -n 1)
        failed=$(printf '%s' "$end" | sed -n 's/.*failed="\([^"]*\)".*/\1/p')
        case $end in
            *status=ok*) client=ok ;;
            *status=hang*) client=hang ;;
            *) client=fail ;;
        esac
        if [ "$timedout" = 1 ] || [ "$client" = hang ]; then
            status=hang
        elif [ "$rc" = 0 ] && [ "$client" = ok ]; then
            status=ok
        else
            status=fail
        fi
        [ -z "$end" ] && detail="lab-pod ended without a verdict: $(tail -n 3 "$err" 2>/dev/null | printable | tr '\n' ';' | sed 's/"/'"'"'/g')"
    fi
    echo "LAB-RESULT name=$name attempt=$attempt vmm=hull kind=pod status=$status rc=$rc wall_ms=$wall_ms l1_kernel=$(uname -r) failed=\"$failed\" detail=\"$detail\""
    if [ "$status" != ok ]; then
        tail -n 15 "$err" 2>/dev/null | printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=lab-pod | /"
        ctr_tails
    fi
    # LAB_HULL_BENCH=N (lab.py pod --hull-bench): `hull bench`'s CRI groups against this
    # containerd: pod start, start from a pool of pre-booted VMs, and the pod network from L1,
    # hull's handler vs runc's.
    [ -n "$LAB_HULL_BENCH" ] && [ "$status" = ok ] &&
        hull_bench "$LAB_HULL_BENCH" k8s.io lab.local/busybox:lab pod,pool,network --cgroup-parent /labpods \
            --snapshotter native
    ctr_teardown
    rm -f "$out" "$err"
}

# lab_quickstart NAME TIMEOUT_S ATTEMPTS MEM_MIB VCPUS KERNEL_PARAMS
# Issue 16: README.md's "Quick start -> Kubernetes (RuntimeClass)" followed as written, with L1 as
# the node. L1's / is a throwaway tmpfs (l1-init.sh), so nothing needs --prefix: the node gets
# containerd and ctr in /usr/bin and virtiofsd in /usr/libexec (where Debian's packages put
# them), the CNI plugins in /opt/cni/bin and a bridge conflist in /etc/cni/net.d; then, as the
# README says: `hull install` (the lab's `build/bin` is $LAB/bin, its guest image $LAB/guest:
# `--from`; --bin-dir defaults to this hull's own directory), containerd (re)started with its
# default config /etc/containerd/config.toml (which hull install wrote: none existed), the images
# imported into k8s.io (no registry in the lab: busybox under the name `busybox:latest` resolves
# to, the pause image under containerd's default sandbox_image), `hull check` (exit 0, and its
# runtime line must say `hull in <file>, ConfigPath /etc/hull/config.toml`). L1 has no kubelet:
# `lab-pod --quickstart` stands in for it and runs the README's pod hello-hull through CRI with
# the handler and overhead of the RuntimeClass hull install printed (checks pod-start, logs,
# vm-size, pod-remove, nothing-left). Last, `hull uninstall`: everything in the install manifest
# must be gone (a file the lab changed must be kept and named). MEM_MIB and VCPUS are unused
# (the installed config's defaults are what the README describes); KERNEL_PARAMS (lab.py's
# --extra) is the only edit to the installed config, and only when given.
#   LAB-POD name=.. attempt=.. check=install|hull-check|uninstall|<the client's> status=ok|fail detail=".."
#   LAB-QS-CHECK name=.. attempt=.. | <a line of hull check's screen>
#   LAB-RESULT name=.. kind=quickstart status=ok|fail|hang rc=<lab-pod> wall_ms=.. failed="<checks>" runtime=".."
# A client run that outlives TIMEOUT_S or whose pod guest never reached its agent is a hang:
# containerd's state is cleared, hull uninstalled, and the whole quick start tried again.
QS_SUBNET=10.89.0.0/24    # not the pod step's 10.88.0.0/24: its bridge lab0 stays up in L1
QS_SUBNET6=fd89::/64
QS_NET=containerd-net
QS_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
lab_quickstart() {
    name=$1 vmm=hull timeout=$2 attempts=$3 mem=$4 vcpus=$5 params=$6
    R=${LAB_QS_ROOT:-}  # lab-selftest only: a scratch root instead of L1's /
    attempt=1
    while :; do
        quickstart_once
        [ "$status" = hang ] && [ "$attempt" -lt "$attempts" ] || break
        attempt=$((attempt + 1))
    done
}

# qs_line CHECK ok|fail DETAIL: one check's line (the client's format); failures are collected.
qs_line() {
    [ "$2" = ok ] || qs_failed="${qs_failed:+$qs_failed }$1"
    echo "LAB-POD name=$name attempt=$attempt check=$1 status=$2 detail=\"$(printf '%s' "$3" | printable |
        tr '\n' ';' | sed 's/"/'"'"'/g; s/;$//' | cut -c1-500)\""
}

# What a node has before Hull: cgroup2, the network modules and overlayfs (containerd's default
# snapshotter), containerd, virtiofsd, the CNI plugins and a conflist.
quickstart_node() {
    qs_error=
    cp -a "$LAB/sysroot/." "$R/" 2>/dev/null  # containerd, ctr, virtiofsd, CNI plugins are dynamic
    grep -q ' /sys/fs/cgroup ' /proc/mounts 2>/dev/null || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    if ! lab_net; then
        qs_error="kernel modules: $net_error"
        return 1
    fi
    if [ "$LAB_POD_NET" != skip ]; then
        for m in $(cat /lib/modules/fs.order 2>/dev/null); do
            mod=$(echo "${m%.ko}" | tr - _)
            [ -d "/sys/module/$mod" ] || insmod "/lib/modules/$m" || qs_error="insmod $m failed; "
        done
        grep -qw overlay /proc/filesystems || qs_error="${qs_error}no overlay file system (fs.order)"
        [ -z "$qs_error" ] || return 1
    fi
    mkdir -p "$R/usr/bin" "$R/usr/libexec" "$R/opt/cni/bin" "$R/etc/cni/net.d" "$R/var/lib/cni" "$R/var/log/pods"
    for b in containerd ctr containerd-shim-runc-v2 runc; do
        [ -f "$LAB/bin/$b" ] && cp "$LAB/bin/$b" "$R/usr/bin/$b"
    done
    cp "$LAB/bin/virtiofsd" "$R/usr/libexec/virtiofsd" && cp "$LAB/cni/"* "$R/opt/cni/bin/" || {
        qs_error="copying containerd, virtiofsd or the CNI plugins failed"
        return 1
    }
    [ -f "$R/etc/hosts" ] || printf '127.0.0.1 localhost\n' > "$R/etc/hosts"  # CRI copies it into pods
    printf '%s\n' \
        '{' \
        '  "cniVersion": "0.4.0",' \
        "  \"name\": \"$QS_NET\"," \
        '  "plugins": [' \
        '    {' \
        '      "type": "bridge",' \
        '      "bridge": "cni0",' \
        '      "isGateway": true,' \
        '      "ipMasq": false,' \
        '      "ipam": {' \
        '        "type": "host-local",' \
        "        \"ranges\": [[{ \"subnet\": \"$QS_SUBNET\" }], [{ \"subnet\": \"$QS_SUBNET6\" }]]" \
        '      }' \
        '    }' \
        '  ]' \
        '}' > "$R/etc/cni/net.d/10-$QS_NET.conflist"
}

# README step 1: `hull install`; keeps a copy of the manifest and the RuntimeClass it printed.
qs_install() {
    PATH=$QS_PATH "$LAB/bin/hull" install --from "$LAB/guest" ${R:+--prefix "$R"} > "$Q/install.out" 2>&1
    irc=$?
    manifest=$R/usr/share/hull/install-manifest
    if [ "$irc" != 0 ] || [ ! -f "$manifest" ]; then
        qs_line install fail "hull install exit $irc: $(tail -n 5 "$Q/install.out")"
        return 1
    fi
    cp "$manifest" "$Q/manifest"
    sed -n '/^apiVersion: node.k8s.io/,$p' "$Q/install.out" | sed '/^$/,$d' > "$Q/runtimeclass.yaml"
    bad=
    while read -r kind a b; do
        case $kind in
            file) [ "$(sha256sum "$b" 2>/dev/null | cut -d' ' -f1)" = "$a" ] || bad="$bad $b" ;;
            dir) [ -d "$a" ] || bad="$bad $a" ;;
        esac
    done < "$Q/manifest"
    files=$(grep -c '^file ' "$Q/manifest") dirs=$(grep -c '^dir ' "$Q/manifest")
    if grep -q "^installed $R/etc/containerd/conf.d/hull.toml\$" "$Q/install.out"; then
        how="drop-in $R/etc/containerd/conf.d/hull.toml"
        grep -q "^installed $R/etc/containerd/config.toml\$" "$Q/install.out" && how="$how + a minimal main config"
    else
        how=""
    fi
    if [ -n "$bad" ]; then
        qs_line install fail "manifest entries missing or not as written:$bad"
    elif [ -z "$how" ]; then
        qs_line install fail "containerd not configured on a node without a containerd config: $(grep '^note:' "$Q/install.out")"
    elif ! grep -q '^handler: hull$' "$Q/runtimeclass.yaml"; then
        qs_line install fail "no RuntimeClass with handler hull printed: $(tail -n 12 "$Q/install.out")"
    else
        qs_line install ok "exit 0; manifest: $files files and $dirs directories, all present; containerd: $how; RuntimeClass printed: $(grep -E '^(handler|    (cpu|memory)):' "$Q/runtimeclass.yaml" | tr '\n' ' ' | tr -s ' ')"
    fi
    [ -n "$how" ] && [ -z "$bad" ] || return 1
    qs_edited=
    if [ -n "$params" ]; then
        # lab.py --extra (experiments only): the guest kernel parameters go into the installed
        # config as a user would put them there; hull uninstall then keeps that file (changed).
        sed -i "s|^kernel_params = .*|kernel_params = \"$params\"|" "$R/etc/hull/config.toml"
        qs_edited="$R/etc/hull/config.toml"
    fi
}

# README step 2: containerd (re)started with its default config; the images it needs.
qs_containerd() {
    sock=$R/run/containerd/containerd.sock
    t0=$(uptime_s)
    PATH=$QS_PATH "$R/usr/bin/containerd" ${R:+--config "$R/etc/containerd/config.toml"} > "$Q/containerd.log" 2>&1 &
    qs_ctrd=$!
    i=0
    while [ ! -S "$sock" ]; do
        i=$((i + 1))
        if [ "$i" -gt 300 ] || ! kill -0 "$qs_ctrd" 2>/dev/null; then
            qs_line containerd fail "containerd did not start: $(grep -v 'level=debug' "$Q/containerd.log" | tail -n 3)"
            return 1
        fi
        sleep 0.1
    done
    t1=$(uptime_s)
    pause=$("$R/usr/bin/containerd" ${R:+--config "$R/etc/containerd/config.toml"} config dump 2>/dev/null |
        sed -n 's/^ *sandbox_image = "\(.*\)"$/\1/p' | head -n 1)
    out=
    # busybox's name last: the client waits until CRI lists it, so CRI has seen the pause tag too.
    for step in "image import $LAB/images/busybox.tar" "image import $LAB/images/pause.tar" \
        "image tag lab.local/pause:lab $pause" "image tag lab.local/busybox:lab docker.io/library/busybox:latest"; do
        # shellcheck disable=SC2086 # the step's words
        out=$("$R/usr/bin/ctr" --address "$sock" --namespace k8s.io $step 2>&1) && continue
        qs_line containerd fail "ctr $step: $(printf '%s' "$out" | tail -n 3)"
        return 1
    done
    qs_line containerd ok "started with its default config in $(ms_between "$t0" "$t1") ms; busybox imported as docker.io/library/busybox:latest, the pause image as $pause (sandbox_image)"
}

# README step 2: `hull check`, its exit status and its runtime line.
qs_check() {
    PATH=$QS_PATH "$R/usr/local/bin/hull" check ${R:+--prefix "$R"} > "$Q/check.out" 2>&1
    crc=$?
    printable < "$Q/check.out" | sed "s/^/LAB-QS-CHECK name=$name attempt=$attempt | /"
    runtime=$(grep -m1 '^runtime ' "$Q/check.out" | printable | tr -s ' ' | sed 's/"/'"'"'/g')
    fails=$(grep -E '^[a-z-]+ +FAIL ' "$Q/check.out" | tr -s ' ' | tr '\n' ';')
    case $runtime in
        "runtime ok hull in "*", ConfigPath $R/etc/hull/config.toml"*) rt_ok=1 ;;
        *) rt_ok=0 ;;
    esac
    if [ "$crc" = 0 ] && [ "$rt_ok" = 1 ]; then
        qs_line hull-check ok "exit 0; $runtime"
    else
        qs_line hull-check fail "exit $crc; runtime line '$runtime' (must say hull in <file>, ConfigPath $R/etc/hull/config.toml); FAIL lines: ${fails:-none}"
    fi
}

# The pod: lab-pod --quickstart in kubelet's place.
qs_client() {
    out=$Q/lab-pod.out err=$Q/lab-pod.err
    summary=$(PATH=$QS_PATH $WATCH -t "$timeout" -o "$out" -e "$err" -- $LAB/bin/lab-pod --quickstart \
        --socket "$sock" --run-dir "$R/run/hull" --pod-dir "$R/var/log/pods" --netns-dir "$R/var/run/netns" \
        --ipam-dir "$R/var/lib/cni/networks/$QS_NET" --runtime-class "$Q/runtimeclass.yaml" \
        --hull-config "$R/etc/hull/config.toml" --kubelet-dir "$R/var/lib/kubelet" --name "$name" --attempt "$attempt")
    parse_summary "$summary"
    [ -n "$summary" ] || echo "LAB-TAIL name=$name attempt=$attempt stream=labwatch | no summary from labwatch"
    grep -a '^LAB-' "$out" 2>/dev/null | tr -cd ' -~\n' | cut -c1-600
    end=$(grep -a '^LAB-POD-END ' "$out" 2>/dev/null | tail -n 1)
    client_failed=$(printf '%s' "$end" | sed -n 's/.*failed="\([^"]*\)".*/\1/p')
    case $end in
        *status=ok*) client=ok ;;
        *status=hang*) client=hang ;;
        *) client=fail ;;
    esac
    [ -z "$end" ] && detail="lab-pod ended without a verdict: $(tail -n 3 "$err" 2>/dev/null | printable | tr '\n' ';' | sed 's/"/'"'"'/g')"
}

# Stops containerd and what a failed pod left, and clears containerd's state (mounts first), so
# a retry starts from a node as before; the CNI leases go too.
qs_teardown() {
    for f in "$R"/run/hull/*/pids; do
        [ -f "$f" ] || continue
        while read -r _ pid; do
            case $pid in '' | *[!0-9]*) continue ;; esac
            [ "$pid" -gt 1 ] && kill -KILL "$pid" 2>/dev/null
        done < "$f"
    done
    [ -n "$qs_ctrd" ] && kill -TERM "$qs_ctrd" 2>/dev/null && wait "$qs_ctrd" 2>/dev/null
    qs_ctrd=
    for d in run/containerd var/lib/containerd run/hull var/run/netns; do
        awk '{ print $2 }' /proc/mounts | grep "^$R/$d/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
        rm -rf "$R/$d"
    done
    rm -rf "$R/var/lib/cni/networks" "$R/var/lib/kubelet"
}

# README's `hull uninstall`: every manifest entry gone, except files the lab changed (kept, and
# uninstall must say so) and the directories holding them; then those go too.
qs_uninstall() {
    [ -f "$Q/manifest" ] || return 0
    PATH=$QS_PATH "$R/usr/local/bin/hull" uninstall ${R:+--prefix "$R"} > "$Q/uninstall.out" 2>&1
    urc=$?
    left= n=0
    while read -r kind a b; do
        case $kind in
            file) p=$b ;;
            dir) p=$a ;;
            *) continue ;;
        esac
        n=$((n + 1))
        [ -e "$p" ] || continue
        kept=0
        for e in $qs_edited; do
            case $e in "$p" | "$p"/*) kept=1 ;; esac
        done
        [ "$kept" = 1 ] || left="$left $p"
    done < "$Q/manifest"
    [ -e "$R/usr/share/hull/install-manifest" ] && left="$left $R/usr/share/hull/install-manifest"
    unnamed=
    for e in $qs_edited; do
        grep -q "^kept $e (changed since install" "$Q/uninstall.out" || unnamed="$unnamed $e"
        rm -f "$e"
        rmdir "${e%/*}" 2>/dev/null
    done
    if [ "$urc" != 0 ]; then
        qs_line uninstall fail "hull uninstall exit $urc: $(tail -n 5 "$Q/uninstall.out")"
    elif [ -n "$left$unnamed" ]; then
        qs_line uninstall fail "left behind:${left:- none}; changed by the lab but not named as kept:${unnamed:- none}"
    else
        qs_line uninstall ok "exit 0; the manifest's $n entries and the manifest itself removed$([ -n "$qs_edited" ] &&
            echo " (but what the lab changed, which uninstall kept and named: $qs_edited)")"
    fi
}

quickstart_once() {
    Q=$TMP/qs.$attempt
    rm -rf "$Q"
    mkdir -p "$Q"
    qs_failed= client= client_failed= detail= runtime= rc=-1 wall_ms=-1 timedout=0 qs_ctrd= qs_edited=
    if ! quickstart_node; then
        detail="node set-up: $qs_error"
    elif qs_install && qs_containerd; then
        qs_check
        qs_client
    fi
    if [ "$timedout" = 1 ] || [ "$client" = hang ]; then
        status=hang
    elif [ "$rc" = 0 ] && [ "$client" = ok ] && [ -z "$qs_failed" ]; then
        status=ok
    else
        status=fail
    fi
    if [ "$status" != ok ]; then
        for f in "$Q/install.out" "$Q/uninstall.out" "$Q/lab-pod.err"; do
            [ -s "$f" ] && tail -n 15 "$f" | printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=${f##*/} | /"
        done
        for f in "$R"/run/hull/*/console.log "$R"/run/hull/*/vmm.log "$R"/run/hull/*/virtiofsd.log; do
            [ -s "$f" ] && sed "s/${ESC}\[[0-9;]*m//g" "$f" | tail -n 15 | printable |
                sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=${f##*/} | /"
        done
        sed "s/${ESC}\[[0-9;]*m//g" "$Q/containerd.log" 2>/dev/null | grep -v 'level=debug' | tail -n 20 |
            printable | sed "s/^/LAB-TAIL name=$name attempt=$attempt stream=containerd | /"
    fi
    qs_teardown
    qs_uninstall
    # A failed uninstall fails the run, even after a good pod (a hang stays a hang: retried).
    [ "$status" = ok ] && [ -n "$qs_failed" ] && status=fail
    failed="$qs_failed${client_failed:+ $client_failed}"
    failed=${failed# }
    echo "LAB-RESULT name=$name attempt=$attempt vmm=hull kind=quickstart status=$status rc=$rc wall_ms=$wall_ms l1_kernel=$(uname -r) failed=\"$failed\" detail=\"$detail\" runtime=\"$runtime\""
}

echo "LAB-L1 event=plan uptime=$(uptime_s)"
. "$1"
echo "LAB-L1 event=plan-done uptime=$(uptime_s)"
