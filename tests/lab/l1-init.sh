#!/bin/sh
# /init of the lab's L1 VM (busybox sh, runs under QEMU TCG).
#
# Loads the modules the L1 kernel needs to see its disks, finds the two
# virtio disks by their serial numbers (labdata: read-only ext4 with our
# binaries, the guest image and run.sh; labplan: the plan written by the host
# driver, raw text), starts the heartbeat the host's stall watchdog listens
# to, runs the plan and powers off. Everything the host parses is a line
# starting with "LAB-".
export PATH=/bin

# Move from the initramfs (rootfs) to a tmpfs root first: pivot_root(2), which
# virtiofsd's namespace sandbox uses, refuses to work when / is rootfs.
if [ "$$" = 1 ] && [ -z "$LAB_ROOT_SWITCHED" ]; then
    mkdir -p /newroot
    mount -t tmpfs -o mode=0755 root /newroot
    cp -a /bin /lib /init /newroot/
    mkdir -p /newroot/dev /newroot/proc /newroot/sys /newroot/tmp /newroot/lab /newroot/run
    cp -a /dev/console /dev/null /newroot/dev/
    export LAB_ROOT_SWITCHED=1
    exec switch_root /newroot /init
fi

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /tmp /lab
mount -t tmpfs tmp /tmp
# lab.shmem_thp=advise|always on L1's command line (lab.py --l1-append): transparent huge pages
# for shared memory, which hull-vmm's memfd-backed guest RAM needs for 2 MiB pages (issue 15).
# lab.anon_thp=madvise|never: the same for private anonymous memory (L1's kernel default is
# always), which backs Firecracker's guest RAM (it does not advise it); QEMU advises its RAM.
for arg in $(cat /proc/cmdline); do
    case $arg in
        lab.shmem_thp=*)
            echo "${arg#lab.shmem_thp=}" > /sys/kernel/mm/transparent_hugepage/shmem_enabled &&
                echo "LAB-L1 event=shmem-thp value=$(cat /sys/kernel/mm/transparent_hugepage/shmem_enabled)"
            ;;
        lab.anon_thp=*)
            echo "${arg#lab.anon_thp=}" > /sys/kernel/mm/transparent_hugepage/enabled &&
                echo "LAB-L1 event=anon-thp value=$(cat /sys/kernel/mm/transparent_hugepage/enabled)"
            ;;
    esac
done

# A tmpfs mounted huge=always for the direct hull-vmm boots' guest RAM (run.sh passes
# --mem-dir $LAB_RAM_DIR), as the shim's jail gives its VMM.
mkdir -p /tmp/hull-ram && mount -t tmpfs -o mode=0700,size=1g,huge=always hull-ram /tmp/hull-ram &&
    export LAB_RAM_DIR=/tmp/hull-ram

uptime_s() { read -r up _ < /proc/uptime; echo "$up"; }

echo "LAB-L1 event=init uptime=$(uptime_s) kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"

for m in $(cat /lib/modules/boot.order); do
    insmod "/lib/modules/$m" || echo "LAB-L1 event=insmod-failed module=$m"
done

# The heartbeat: the host kills L1 as frozen when it stops.
( while :; do sleep 3; echo "LAB-HB uptime=$(uptime_s)"; done ) &
heartbeat=$!

data_dev=""
plan_dev=""
for b in /sys/block/vd*; do
    [ -e "$b/serial" ] || continue
    case "$(cat "$b/serial")" in
        labdata) data_dev=/dev/${b##*/} ;;
        labplan) plan_dev=/dev/${b##*/} ;;
    esac
done

if [ -z "$data_dev" ] || [ -z "$plan_dev" ]; then
    echo "LAB-L1 event=error reason=\"disks not found (data=$data_dev plan=$plan_dev)\""
elif ! mount -t ext4 -o ro "$data_dev" /lab; then
    echo "LAB-L1 event=error reason=\"cannot mount $data_dev\""
else
    # The plan disk is zero-padded raw text.
    tr -d '\000' < "$plan_dev" > /tmp/plan.sh
    echo "LAB-L1 event=ready uptime=$(uptime_s)"
    sh /lab/run.sh /tmp/plan.sh
fi

kill "$heartbeat" 2>/dev/null
echo "LAB-DONE uptime=$(uptime_s)"
sync
poweroff -f
