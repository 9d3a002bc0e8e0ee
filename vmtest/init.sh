#!/bin/busybox sh
# The guest's /init (initramfs built by vmtest.kernels): load the 9p modules, mount the
# host root read-only (9p tag "hostroot") with fresh proc/sys/dev/tmpfs/tracefs/bpffs on
# top, mount the shared directories read-write, chroot and run the command.
#   ttyS0: kernel console and these messages; ttyS1: the command's stdout; ttyS2: its stderr.
# The run directory (9p tag "vmrun", read-write) holds env.sh, cmd.sh, shares; rc goes back there.
/bin/busybox mkdir -p /proc /sys /dev /newroot /vmrun /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "vmtest-init[$(cut -d' ' -f1 /proc/uptime)]: $*" > /dev/ttyS0; }
fail() { say "FATAL: $*"; sync; poweroff -f; sleep 5; reboot -f; }
say "kernel $(uname -r)"
while read -r m; do
    [ -n "$m" ] && { insmod "/lib/modules/$m.ko" 2>/dev/ttyS0 || say "insmod $m failed"; }
done < /lib/modules/load-order
ip link set lo up 2>/dev/null
hostname vmtest 2>/dev/null
P9="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o "$P9" vmrun /vmrun || fail "cannot mount the run directory (9p vmrun)"
mount -t 9p -o "$P9,ro,cache=loose" hostroot /newroot || fail "cannot mount the host root (9p hostroot)"
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null || say "no tracefs"
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null || say "no debugfs"
mount -t bpf bpf $R/sys/fs/bpf 2>/dev/null || say "no bpffs"
mkdir -p $R/run/vmtest
mount -o bind /vmrun $R/run/vmtest
i=0
if [ -s /vmrun/shares ]; then
    while IFS= read -r dir; do
        [ -n "$dir" ] || continue
        mkdir -p "$R$dir" 2>/dev/null
        mount -t 9p -o "$P9" "share$i" "$R$dir" || fail "cannot mount shared $dir"
        i=$((i + 1))
    done < /vmrun/shares
fi
stty -F /dev/ttyS1 raw -echo 2>/dev/null
stty -F /dev/ttyS2 raw -echo 2>/dev/null
say "exec command"
chroot $R /bin/bash -c '. /run/vmtest/env.sh && exec /bin/bash /run/vmtest/cmd.sh' \
    </dev/null >/dev/ttyS1 2>/dev/ttyS2
rc=$?
say "command exited rc=$rc"
echo "$rc" > /vmrun/rc
sync
poweroff -f
sleep 5
reboot -f
