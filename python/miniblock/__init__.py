"""miniblock: disk images with QEMU-compatible locking, from Python.

    import miniblock
    with miniblock.open("file=disk.img,format=raw") as d:
        d.pwrite(b"hello", 0)
        assert d.pread(5, 0) == b"hello"

    try:
        miniblock.open("file=disk.img,format=raw,lock=exclusive")
    except miniblock.Error as e:
        print(e.errno, e.message, e.holders)  # holders: [{"pid": ..., ...}]

A thin layer over the C API (include/miniblock/miniblock.h, loaded with
cffi in ABI mode).  Asynchronous I/O goes through a drive's queues, whose
completion fd fits asyncio's loop.add_reader (see Queue).
"""
import errno as _errno
import mmap as _mmap
import os as _os

from ._capi import ffi as _ffi, lib as _lib

__all__ = ["Error", "Drive", "Queue", "open", "locks", "version", "PERMISSIONS"]

# The permission bits of the lock protocol, in bit order (MB_PERM_*).
PERMISSIONS = ("consistent read", "write", "write unchanged", "resize", "graph-mod")


def version():
    """The library's version, e.g. "0.1.0"."""
    return _ffi.string(_lib.mb_version()).decode()


def _names(mask):
    return [name for bit, name in enumerate(PERMISSIONS) if mask & (1 << bit)]


def _holder_dict(h):
    return {
        "pid": h.pid,
        "program": _ffi.string(h.program).decode(errors="replace") if h.program else "",
        "node": _ffi.string(h.node).decode(errors="replace") if h.node else "",
        "this_process": bool(h.this_process),
        "uses": _names(h.uses),
        "forbids": _names(h.forbids),
    }


class Error(Exception):
    """A failed miniblock call: errno, message and, for a lock conflict
    (errno EAGAIN), the holders in the way as dicts like locks() returns."""

    def __init__(self, errno, message, holders=()):
        super().__init__(message)
        self.errno = errno
        self.message = message
        self.holders = list(holders)

    def __str__(self):
        return self.message


def _last_error():
    e = _lib.mb_get_error()
    holders = [_holder_dict(e.holders[i]) for i in range(e.n_holders)]
    return Error(e.errnum, _ffi.string(e.message).decode(errors="replace"), holders)


def _check_control(ret):
    """Control calls: a negative errno means mb_get_error() has the rest."""
    if ret < 0:
        raise _last_error()
    return ret


def _data_error(ret, what):
    return Error(-ret, "%s failed: %s" % (what, _os.strerror(-ret)))


def locks(path):
    """Everyone holding QEMU's lock bytes of `path` (this process
    included), as a list of dicts: pid, program, node, this_process,
    uses, forbids (lists of permission names)."""
    out = _ffi.new("struct mb_lock_holder **")
    n = _check_control(_lib.mb_lock_holders(_os.fsencode(path), out))
    try:
        return [_holder_dict(out[0][i]) for i in range(n)]
    finally:
        _lib.mb_free_lock_holders(out[0], n)


def _aligned(n):
    # Page-aligned memory (cache=none needs aligned buffers); at least one
    # page, as mmap cannot map nothing.
    return _mmap.mmap(-1, max(n, 1))


def open(spec, **options):
    """Opens a drive from a "key=value,..." spec, a json:{...} spec or a
    file name; keyword options are appended (read_only=True becomes
    "read-only=on").  Raises Error naming who holds a lock in the way."""
    if options and spec and "=" not in spec and not spec.startswith("json:"):
        spec = "file=" + spec  # a bare file name followed by options
    parts = [spec] if spec else []
    for key, value in options.items():
        if isinstance(value, bool):
            value = "on" if value else "off"
        parts.append("%s=%s" % (key.replace("_", "-"), value))
    d = _lib.mb_open(",".join(parts).encode(), _ffi.NULL)
    if d == _ffi.NULL:
        raise _last_error()
    return Drive(d)


class Drive:
    """An open drive; a context manager that closes it (flush, locks
    released).  Data calls raise Error; lengths and offsets are bytes."""

    def __init__(self, handle):
        self._d = handle
        self._queues = {}

    def _handle(self):
        if self._d is None:
            raise Error(_errno.EBADF, "The drive is closed")
        return self._d

    def close(self):
        if self._d is not None:
            for q in self._queues.values():
                q._detach()
            _lib.mb_close(self._d)
            self._d = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        # At interpreter exit the module's globals may already be gone.
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self):
        return self._d is None

    def pread(self, length, offset):
        buf = _aligned(length)
        ret = _lib.mb_pread(self._handle(), _ffi.from_buffer(buf), length, offset)
        if ret < 0:
            raise _data_error(ret, "Read of %d bytes at offset %d" % (length, offset))
        return bytes(buf[:length])

    def pwrite(self, data, offset):
        data = bytes(data)
        buf = _aligned(len(data))
        buf[: len(data)] = data
        ret = _lib.mb_pwrite(self._handle(), _ffi.from_buffer(buf), len(data), offset)
        if ret < 0:
            raise _data_error(ret, "Write of %d bytes at offset %d" % (len(data), offset))

    def pwrite_zeroes(self, length, offset):
        ret = _lib.mb_pwrite_zeroes(self._handle(), length, offset)
        if ret < 0:
            raise _data_error(ret, "Write of %d zero bytes at offset %d" % (length, offset))

    def flush(self):
        ret = _lib.mb_flush(self._handle())
        if ret < 0:
            raise _data_error(ret, "Flush")

    def length(self):
        ret = _lib.mb_length(self._handle())
        if ret < 0:
            raise _data_error(ret, "Length")
        return ret

    def truncate(self, size):
        _check_control(_lib.mb_truncate(self._handle(), size))

    def discard(self, length, offset):
        _check_control(_lib.mb_discard(self._handle(), length, offset))

    def reopen(self, read_only=None, lock=None):
        """Changes read-only and/or the lock mode in one transaction:
        on Error nothing changed."""
        opts = []
        if read_only is not None:
            opts.append("read-only=" + ("on" if read_only else "off"))
        if lock is not None:
            opts.append("lock=" + lock)
        _check_control(_lib.mb_reopen(self._handle(), ",".join(opts).encode()))

    def commit(self, base=None, progress=None):
        """Commits the overlay into its backing file (or `base`);
        progress(done, total) is called as it goes."""
        cb = _ffi.NULL
        if progress is not None:
            cb = _ffi.callback("void(int64_t, int64_t, void *)",
                               lambda done, total, _opaque: progress(done, total))
        base_arg = _os.fsencode(base) if base is not None else _ffi.NULL
        _check_control(_lib.mb_commit(self._handle(), base_arg, cb, _ffi.NULL))

    def activate(self):
        if _lib.mb_activate(self._handle(), _ffi.NULL) < 0:
            raise _last_error()

    def inactivate(self):
        if _lib.mb_inactivate(self._handle(), _ffi.NULL) < 0:
            raise _last_error()

    @property
    def inactive(self):
        return _lib.mb_is_inactive(self._handle()) == 1

    def queue(self, index=0):
        """Queue `index` (open with queues=N for more than one)."""
        if index not in self._queues:
            q = _lib.mb_get_queue(self._handle(), index)
            if q == _ffi.NULL:
                raise _last_error()
            self._queues[index] = Queue(self, q)
        return self._queues[index]


class Queue:
    """A drive's queue for asyncio: requests are coroutines, completions
    arrive through the queue's completion fd watched with loop.add_reader.
    One event loop (one thread) per queue.

        q = drive.queue(0)
        data = await q.read(0, 4096)
        await q.write(4096, data)
    """

    _BATCH = 64

    def __init__(self, drive, handle):
        self._drive = drive
        self._q = handle
        self._loop = None
        self._next = 1
        self._pending = {}  # token -> (future, buffer, length)
        self._submit_scheduled = False
        self._out = _ffi.new("struct mb_completion[]", self._BATCH)

    def _attach(self):
        import asyncio
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            fd = _lib.mbq_get_completion_fd(self._q)
            if fd < 0:
                raise _last_error()
            loop.add_reader(fd, self._reap)
        elif self._loop is not loop:
            raise Error(_errno.EINVAL, "A queue belongs to one event loop")
        return loop

    def _detach(self):
        if self._loop is not None and not self._loop.is_closed():
            fd = _lib.mbq_get_completion_fd(self._q)
            if fd >= 0:
                self._loop.remove_reader(fd)
        self._loop = None
        for fut, _buf, _n in self._pending.values():
            if not fut.done():
                fut.set_exception(Error(_errno.EBADF, "The drive was closed"))
        self._pending.clear()

    def _enqueue(self, call, buf=None, length=0):
        loop = self._attach()
        token = self._next
        self._next += 1
        ret = call(_ffi.cast("void *", token))
        if ret < 0:
            raise Error(-ret, _ffi.string(_lib.mb_last_error()).decode())
        fut = loop.create_future()
        self._pending[token] = (fut, buf, length)
        # One submission per loop iteration: requests made in the same
        # iteration go to the kernel together.
        if not self._submit_scheduled:
            self._submit_scheduled = True
            loop.call_soon(self._submit)
        return fut

    def _submit(self):
        self._submit_scheduled = False
        if self._drive.closed:
            return
        self._reap()

    def _reap(self):
        while True:
            n = _lib.mbq_do_io(self._q, self._out, 0, self._BATCH, _ffi.NULL)
            if n < 0:
                raise _last_error()
            for i in range(n):
                c = self._out[i]
                token = int(_ffi.cast("uintptr_t", c.user_data))
                fut, buf, length = self._pending.pop(token)
                if fut.done():
                    continue
                if c.ret < 0:
                    fut.set_exception(Error(-c.ret, _ffi.string(c.error_msg).decode()))
                elif buf is not None and length:
                    fut.set_result(bytes(buf[:length]))
                else:
                    fut.set_result(None)
            if n < self._BATCH:
                return

    async def read(self, offset, length):
        buf = _aligned(length)
        ptr = _ffi.from_buffer(buf)
        return await self._enqueue(
            lambda ud: _lib.mbq_read(self._q, offset, ptr, length, ud, 0), buf, length)

    async def write(self, offset, data, fua=False):
        data = bytes(data)
        buf = _aligned(len(data))
        buf[: len(data)] = data
        ptr = _ffi.from_buffer(buf)
        await self._enqueue(
            lambda ud: _lib.mbq_write(self._q, offset, ptr, len(data), ud, 1 if fua else 0), buf)

    async def write_zeroes(self, offset, length):
        await self._enqueue(lambda ud: _lib.mbq_write_zeroes(self._q, offset, length, ud, 0))

    async def discard(self, offset, length):
        await self._enqueue(lambda ud: _lib.mbq_discard(self._q, offset, length, ud, 0))

    async def flush(self):
        await self._enqueue(lambda ud: _lib.mbq_flush(self._q, ud, 0))
