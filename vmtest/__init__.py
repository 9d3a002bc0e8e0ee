"""Boot stock Debian kernels under QEMU and run a command inside, as root.

The guest sees this machine's root file system read-only over 9p (so the project's ``.venv``
and sources are there as they are on the host), fresh ``/proc``, ``/sys``, tracefs, bpffs and a
tmpfs ``/tmp``; directories named with ``shares`` are mounted read-write at the same path.
It works without KVM (QEMU TCG): the kernel is booted from its uncompressed ``vmlinux``
through the PVH entry point, which skips the bzImage decompressor (slow under TCG).

- :mod:`vmtest.kernels`: which Debian packages, download (``apt-get download``) and the
  per-kernel cache (``vmlinux``, config, initramfs with the 9p modules of that kernel).
- :mod:`vmtest.vm`: one boot, one command: output and exit status.
- :mod:`vmtest.matrix`: the kernel-facing tests in each kernel, and ``docs/kernels.md``.

``python -m vmtest --help`` is the command line.

Why not virtme-ng (the kernel community's tool): with a Debian package's kernel and modules
(``vng --run boot/vmlinuz-* --disable-kvm --force-9p``) it boots under TCG, but took about 20 s
a boot (the bzImage decompressor, then ``systemd-tmpfiles`` in the guest), and the command's
exit status came back as 255 whatever it was (its virtio-serial script ports were not found,
so it fell back to the console).  A CI matrix needs the status; this harness boots in 3-5 s.
"""
