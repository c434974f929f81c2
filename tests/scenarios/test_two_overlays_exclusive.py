"""two-overlays-exclusive.scn written with the Python binding: two qcow2
overlays over one raw base, both opened lock=exclusive.  The exclusive mode
is the overlay's own; the base gets a read lock that keeps writers out, so
both guests run (Anthony Liguori and Avi Kivity, qemu-devel, Dec. 5, 2009).

The two guests are two drives of this process (OFD locks make them as
separate as two processes); third users are real processes: miniblock-io
and qemu-io.  Run by the 'python' test of python/meson.build."""
import os
import subprocess

import pytest

import miniblock

MiB = 1 << 20


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True)


@pytest.fixture
def images(tmp_path):
    base = tmp_path / "base.img"
    with open(base, "wb") as f:
        f.truncate(10 * MiB)
    for cow in ("cow1.qcow2", "cow2.qcow2"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                        str(tmp_path / cow)], check=True)
    return tmp_path


def test_two_exclusive_overlays_over_one_base(images):
    base, cow1, cow2 = (str(images / n) for n in ("base.img", "cow1.qcow2", "cow2.qcow2"))
    mbio = os.environ["MINIBLOCK_IO"]
    with miniblock.open(cow1, lock="exclusive") as vm1, miniblock.open(cow2, lock="exclusive") as vm2:
        vm1.pwrite(b"\x01" * 65536, 0)
        vm2.pwrite(b"\x02" * 65536, 0)
        assert vm1.pread(65536, 0) == b"\x01" * 65536
        assert vm2.pread(65536, 0) == b"\x02" * 65536

        # The base: two readers that keep writers out.
        holders = miniblock.locks(base)
        assert len(holders) == 2
        for h in holders:
            assert h["uses"] == ["consistent read"]
            assert h["forbids"] == ["write", "write unchanged", "resize"]
        # Each overlay: one exclusive user.
        (h,) = miniblock.locks(cow1)
        assert h["uses"] == ["consistent read", "write", "resize"]
        assert h["forbids"] == ["consistent read", "write", "write unchanged", "resize"]

        # The overlays really are exclusive: a third user of cow1 is refused.
        r = run(mbio, "-r", "-U", "-c", "read 0 512", cow1)
        assert r.returncode != 0 and 'Failed to get "consistent read" lock' in r.stdout + r.stderr
        r = run("qemu-io", "-r", "-U", "-c", "read 0 512", cow1)
        assert r.returncode != 0 and 'Failed to get "consistent read" lock' in r.stdout + r.stderr
        with pytest.raises(miniblock.Error) as e:
            miniblock.open(cow1, read_only=True, lock="shared")
        assert e.value.message.startswith('Failed to get "consistent read" lock')
        assert {h["node"] for h in e.value.holders} and all(h["this_process"] for h in e.value.holders)

        # And the base is kept from writers, QEMU ones included.
        r = run(mbio, "-f", "raw", "-l", "shared", "-c", "write 0 512", base)
        assert r.returncode != 0 and 'Failed to get "write" lock' in r.stdout + r.stderr
        r = run("qemu-io", "-f", "raw", "-c", "write 0 512", base)
        assert r.returncode != 0 and 'Failed to get "write" lock' in r.stdout + r.stderr
    assert miniblock.locks(base) == []
