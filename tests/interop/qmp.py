#!/usr/bin/python3
# A minimal QMP client for the interop tests: connects to a QEMU's unix
# socket, negotiates capabilities, sends one command and prints its reply
# (events are skipped).  Exit status 0 for a "return", 1 for an "error"
# (its desc printed on stderr), 2 when the socket does not answer.
#
#   qmp.py SOCKET COMMAND [ARGUMENTS-JSON]
import json
import socket
import sys
import time


def main():
    path, cmd = sys.argv[1], sys.argv[2]
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.time() + 10
    while True:
        try:
            s.connect(path)
            break
        except OSError:
            if time.time() > deadline:
                print("qmp.py: %s does not answer" % path, file=sys.stderr)
                return 2
            time.sleep(0.05)
    s.settimeout(30)
    f = s.makefile("rw")

    def reply():
        while True:
            line = f.readline()
            if not line:
                raise EOFError("QEMU closed the QMP connection")
            msg = json.loads(line)
            if "return" in msg or "error" in msg:
                return msg

    f.readline()  # the greeting
    f.write(json.dumps({"execute": "qmp_capabilities"}) + "\n")
    f.flush()
    reply()
    req = {"execute": cmd}
    if args is not None:
        req["arguments"] = args
    f.write(json.dumps(req) + "\n")
    f.flush()
    msg = reply()
    if "error" in msg:
        print(msg["error"]["desc"], file=sys.stderr)
        return 1
    print(json.dumps(msg["return"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
