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
# VMM is "hull" (our hull-vmm) or "qemu" (the QEMU microvm peer). A run that
# times out is a hang and is tried again, up to ATTEMPTS times in all.
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
                --mem-mib "$mem" --vcpus "$vcpus" --cmdline "$cmdline")
            ;;
        qemu)
            summary=$($WATCH -t "$timeout" -o "$out" -e "$err" -m agent=HULL-AGENT -- $pin \
                $LAB/qroot/ld.so --library-path $LAB/qroot/lib $LAB/qroot/qemu-system-x86_64 \
                -L $LAB/qroot/firmware -M microvm,acpi=off -enable-kvm -cpu host -m "$mem" -smp "$vcpus" \
                -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
                -kernel $LAB/guest/vmlinux -initrd $LAB/guest/initramfs.cpio -append "$cmdline")
            ;;
        *)
            echo "LAB-RESULT name=$name attempt=$attempt vmm=$vmm status=fail rc=-1 agent=\"unknown vmm\""
            status=fail
            return
            ;;
    esac
    rc=-1 timedout=0 wall_ms=-1 maxrss_kib=-1 agent_ms=-1
    for kv in $summary; do
        case $kv in
            rc=* | timedout=* | wall_ms=* | maxrss_kib=* | agent_ms=*) eval "${kv%%=*}=\${kv#*=}" ;;
        esac
    done
    agent=$(grep -m1 HULL-AGENT "$out" 2>/dev/null | printable | sed 's/.*HULL-AGENT/HULL-AGENT/; s/"/'"'"'/g')
    boot_ms=$(sed "s/${ESC}\[[0-9;]*m//g" "$err" 2>/dev/null | sed -n 's/.*guest_boot_ms=\([0-9.]*\).*/\1/p' | head -n1)
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

echo "LAB-L1 event=plan uptime=$(uptime_s)"
. "$1"
echo "LAB-L1 event=plan-done uptime=$(uptime_s)"
