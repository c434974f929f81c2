#!/usr/bin/env python3
"""A deliberately broken NBD server for tests/interop/nbd-hostile.sh.

usage: nbd-fake-server.py SOCKET MODE

Listens on the Unix socket SOCKET and serves connections one after the
other (so a probing open followed by the real open both work), with a
64 KiB export of the byte 0x5a.  MODE chooses the misbehaviour: in the
handshake (mute, bad-nbdmagic, oldstyle, no-fixed, unknown-export, no-go,
readonly, bad-block-size) or in the reply to the first read of a
connection (bad-magic, bad-cookie, oversized-chunk, out-of-range,
overlap, error-bogus-len, drop-header, drop-data, silent, error-chunk,
short-cover, hole, no-structured).  Requests after the first are served
correctly unless the mode has broken the stream.

Test-only code: it implements just enough of the protocol to misbehave.
"""
import os
import socket
import struct
import sys

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3e889045565a9
SIMPLE = 0x67446698
STRUCT = 0x668e33ef
SIZE = 65536
DATA = bytearray(b'\x5a' * SIZE)

path, mode = sys.argv[1], sys.argv[2]


def recv_exact(c, n):
    b = b''
    while len(b) < n:
        k = c.recv(n - len(b))
        if not k:
            raise EOFError
        b += k
    return b


def opt_reply(c, opt, typ, data=b''):
    c.sendall(struct.pack('>QIII', REP_MAGIC, opt, typ, len(data)) + data)


def chunk(c, flags, typ, cookie, payload):
    c.sendall(struct.pack('>IHHQI', STRUCT, flags, typ, cookie, len(payload)) + payload)


def handshake(c):
    """Returns whether structured replies were negotiated, or None."""
    if mode == 'mute':  # never says hello
        recv_exact(c, 1)
        return None
    if mode == 'bad-nbdmagic':
        c.sendall(b'HTTP/1.1 200 OK\r\n\r\n')
        return None
    if mode == 'oldstyle':
        c.sendall(struct.pack('>QQ', NBDMAGIC, 0x00420281861253) + b'\0' * 136)
        return None
    c.sendall(struct.pack('>QQH', NBDMAGIC, IHAVEOPT, 0 if mode == 'no-fixed' else 3))
    if mode == 'no-fixed':
        return None
    recv_exact(c, 4)
    structured = False
    flags = 1 | 4 | 8 | 32 | 64  # has flags, flush, fua, trim, write zeroes
    if mode == 'readonly':
        flags |= 2
    while True:
        magic, opt, ln = struct.unpack('>QII', recv_exact(c, 16))
        data = recv_exact(c, ln)
        if opt == 8:  # structured reply
            if mode == 'no-structured':
                opt_reply(c, opt, 0x80000001)
            else:
                structured = True
                opt_reply(c, opt, 1)
        elif opt == 7:  # go
            if mode == 'unknown-export':
                opt_reply(c, opt, 0x80000006, b'no such export, sorry')
                return None
            if mode == 'no-go':
                opt_reply(c, opt, 0x80000001)
                continue
            if mode == 'bad-block-size':
                opt_reply(c, opt, 3, struct.pack('>HIII', 3, 3, 4096, 1 << 20))
            opt_reply(c, opt, 3, struct.pack('>HQH', 0, SIZE, flags))
            opt_reply(c, opt, 1)
            return structured
        elif opt == 1:  # export name (the fallback)
            c.sendall(struct.pack('>QH', SIZE, flags))  # NO_ZEROES was offered
            return structured
        else:
            opt_reply(c, opt, 0x80000001)


def serve(c):
    structured = handshake(c)
    if structured is None:
        return
    first = True
    while True:
        magic, flags, typ, cookie, off, ln = struct.unpack('>IHHQQI', recv_exact(c, 28))
        if typ == 2:  # disconnect
            return
        if typ == 1:
            DATA[off:off + ln] = recv_exact(c, ln)
        if typ != 0 or not first:
            if typ == 0:
                if structured:
                    chunk(c, 1, 1, cookie, struct.pack('>Q', off) + DATA[off:off + ln])
                else:
                    c.sendall(struct.pack('>IIQ', SIMPLE, 0, cookie) + DATA[off:off + ln])
            else:
                c.sendall(struct.pack('>IIQ', SIMPLE, 0, cookie))
            continue
        first = False
        body = bytes(DATA[off:off + ln])
        if mode == 'bad-magic':
            c.sendall(struct.pack('>IIQ', 0x12345678, 0, cookie) + body)
        elif mode == 'bad-cookie':
            c.sendall(struct.pack('>IIQ', SIMPLE, 0, cookie + 1000) + body)
        elif mode == 'oversized-chunk':
            c.sendall(struct.pack('>IHHQIQ', STRUCT, 1, 1, cookie, 0x7ffffff0, off))
            c.sendall(b'\0' * 4096)
        elif mode == 'out-of-range':
            chunk(c, 1, 1, cookie, struct.pack('>Q', off + ln) + body)
        elif mode == 'overlap':
            chunk(c, 0, 1, cookie, struct.pack('>Q', off) + body)
            chunk(c, 1, 2, cookie, struct.pack('>QI', off, ln))
        elif mode == 'error-bogus-len':
            chunk(c, 1, 0x8001, cookie, struct.pack('>IH', 5, 500) + b'short')
        elif mode == 'drop-header':
            c.sendall(struct.pack('>IHH', STRUCT, 1, 1))
            return
        elif mode == 'drop-data':
            c.sendall(struct.pack('>IHHQIQ', STRUCT, 1, 1, cookie, ln + 8, off) + body[:ln // 2])
            return
        elif mode == 'silent':
            recv_exact(c, 1)  # until the client gives up
        elif mode == 'error-chunk':
            msg = b'injected failure'
            chunk(c, 1, 0x8001, cookie, struct.pack('>IH', 5, len(msg)) + msg)
        elif mode == 'short-cover':
            chunk(c, 1, 1, cookie, struct.pack('>Q', off) + body[:ln // 2])
        elif mode == 'hole':
            half = ln // 2
            chunk(c, 0, 2, cookie, struct.pack('>QI', off + half, ln - half))
            chunk(c, 1, 1, cookie, struct.pack('>Q', off) + body[:half])
        else:
            if structured:
                chunk(c, 1, 1, cookie, struct.pack('>Q', off) + body)
            else:
                c.sendall(struct.pack('>IIQ', SIMPLE, 0, cookie) + body)


def main():
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    # The socket appears under its name only once it listens: the tests
    # wait for the name, and a client that connected between bind() and
    # listen() would be refused.
    tmp = path + '.tmp'
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(tmp)
    s.listen(4)
    os.rename(tmp, path)
    while True:
        c, _ = s.accept()
        try:
            serve(c)
        except (EOFError, ConnectionError):
            pass
        finally:
            c.close()


main()
