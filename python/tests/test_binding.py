"""The Python binding over the C API: drives, errors with lock holders as
data, the control calls, asyncio queues.  Real peers: qemu-img makes the
overlays, qemu-io holds images from another process."""
import asyncio
import errno
import os
import re
import subprocess
import time

import pytest

import miniblock
from miniblock import _capi

MiB = 1 << 20


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(4 * MiB)
    return str(path)


@pytest.fixture
def qemu_io():
    """Starts qemu-io on an image (it stays until its stdin closes)."""
    procs = []

    def start(*args):
        p = subprocess.Popen(["qemu-io", *args], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        path = args[-1]
        for _ in range(500):
            if any(h["pid"] == p.pid for h in miniblock.locks(path)):
                return p
            time.sleep(0.01)
        raise AssertionError("qemu-io never locked " + path)

    yield start
    for p in procs:
        p.stdin.close()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_every_declared_function_is_exported():
    # The cdef matches the library: cffi resolves every name or fails.
    names = re.findall(r"\b(mbq?_\w+)\(", _capi.CDEF)
    assert len(names) > 30
    for name in names:
        getattr(_capi.lib, name)
    assert miniblock.version() == os.environ["MB_PROJECT_VERSION"]


def test_drive_io(raw):
    with miniblock.open("file=%s,format=raw" % raw) as d:
        assert d.length() == 4 * MiB
        d.pwrite(b"\x5a" * 4096, 8192)
        d.flush()
        assert d.pread(4096, 8192) == b"\x5a" * 4096
        assert d.pread(3, 8191) == b"\x00\x5a\x5a"
        d.truncate(8 * MiB)
        assert d.length() == 8 * MiB
        d.discard(4096, 0)
    assert d.closed
    with pytest.raises(miniblock.Error) as e:
        d.pread(1, 0)
    assert e.value.errno == errno.EBADF
    assert e.value.message == "The drive is closed"
    with open(raw, "rb") as f:
        f.seek(8192)
        assert f.read(4096) == b"\x5a" * 4096


def test_cache_none_unaligned_sync_calls(raw):
    with miniblock.open("file=%s,format=raw,cache=none" % raw) as d:
        d.pwrite(b"abc", 10)
        assert d.pread(5, 9) == b"\x00abc\x00"


def test_open_error_names_the_holder(raw, qemu_io):
    p = qemu_io("-f", "raw", raw)  # read-write: uses write, forbids nothing
    with pytest.raises(miniblock.Error) as e:
        miniblock.open("file=%s,format=raw" % raw)
    err = e.value
    assert err.errno == errno.EAGAIN
    assert err.message.startswith('Failed to get shared "write" lock\n'
                                  "Is another process using the image [%s]?" % raw)
    assert err.holders == [{"pid": p.pid, "program": "qemu-io", "node": "", "this_process": False,
                            "uses": ["consistent read", "write"], "forbids": []}]
    assert str(err) == err.message


def test_bad_option():
    with pytest.raises(miniblock.Error) as e:
        miniblock.open("file=/nonexistent.img,format=raw,queues=100")
    assert e.value.errno == errno.EINVAL
    assert e.value.message == "Invalid value '100' for parameter 'queues'\nValid values: 1 to 64"
    assert e.value.holders == []


def test_locks_and_reopen(raw, qemu_io):
    with miniblock.open(raw, format="raw", read_only=True, lock="shared") as d:
        (ours,) = miniblock.locks(raw)
        assert ours["pid"] == os.getpid() and ours["this_process"]
        assert ours["uses"] == ["consistent read"] and ours["forbids"] == []
        p = qemu_io("-f", "raw", raw)
        before = miniblock.locks(raw)
        # Keeping writers out while qemu-io writes: refused, nothing changed.
        with pytest.raises(miniblock.Error) as e:
            d.reopen(lock="auto")
        assert e.value.errno == errno.EAGAIN
        assert [h["pid"] for h in e.value.holders] == [p.pid]
        assert miniblock.locks(raw) == before
        # Read-write beside qemu-io: shared allows it.
        d.reopen(read_only=False)
        d.pwrite(b"x", 0)
        assert [h["uses"] for h in miniblock.locks(raw) if h["this_process"]] == [["consistent read", "write"]]
        d.reopen(read_only=True)
        with pytest.raises(miniblock.Error) as e:
            d.pwrite(b"x", 0)
        assert e.value.errno == errno.EPERM


def test_migration_handover(raw):
    src = miniblock.open(raw, format="raw")
    dst = miniblock.open(raw, format="raw", inactive=True)
    assert dst.inactive
    with pytest.raises(miniblock.Error) as e:
        dst.activate()
    assert e.value.errno == errno.EAGAIN
    assert e.value.holders and e.value.holders[0]["this_process"]
    src.inactivate()
    dst.activate()
    assert not dst.inactive
    dst.pwrite(b"moved", 0)
    src.close()
    dst.close()


def test_commit_with_progress(tmp_path, raw):
    top = str(tmp_path / "top.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", top], check=True)
    seen = []
    with miniblock.open(top) as d:
        d.pwrite(b"\xc3" * 65536, MiB)
        d.commit(progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (4 * MiB, 4 * MiB)
    with open(raw, "rb") as f:
        f.seek(MiB)
        assert f.read(65536) == b"\xc3" * 65536


def test_asyncio_queue(raw):
    async def main():
        with miniblock.open("file=%s,format=raw,cache=none,aio=native" % raw) as d:
            q = d.queue(0)
            blocks = [bytes([i + 1]) * 4096 for i in range(32)]
            # 32 writes then 32 reads in flight at once, on a 36 KiB stride.
            await asyncio.gather(*(q.write(i * 9 * 4096, b) for i, b in enumerate(blocks)))
            await q.flush()
            got = await asyncio.gather(*(q.read(i * 9 * 4096, 4096) for i in range(32)))
            assert got == blocks
            with pytest.raises(miniblock.Error) as e:
                await q.read(4 * MiB, 4096)
            assert e.value.errno == errno.EINVAL
            assert e.value.message == ("mbq_read: 4096 bytes at offset 4194304 go past the end "
                                       "of the drive (4194304 bytes)")
            with pytest.raises(miniblock.Error) as e:
                d.queue(1)
            assert e.value.message == "mb_get_queue: queue 1 does not exist (the drive has 1, set with queues=N)"
    asyncio.run(main())


def test_asyncio_read_error_completes_with_message(raw):
    async def main():
        with miniblock.open(raw, format="raw", inactive=True) as d:
            q = d.queue(0)
            with pytest.raises(miniblock.Error) as e:
                await q.write(0, b"\0" * 512)
            assert e.value.errno == errno.EPERM
            assert e.value.message == "Write of 512 bytes at offset 0 failed: Operation not permitted"
    asyncio.run(main())
