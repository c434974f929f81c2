#!/usr/bin/env python3
"""qapi/qapi-gen.py refuses broken schemas at build time, each with a message
naming the problem (a mistake in the schema must fail the build, not a
user's command line)."""
import json
import os
import subprocess
import sys
import tempfile

GEN = sys.argv[1]

BASE = [
    {"enum": "E", "doc": "e", "data": [{"name": "a", "doc": "a"}], "aliases": {"x": "a"}},
    {"struct": "S", "doc": "s", "data": {"driver": {"type": "str", "doc": "d"},
                                          "*e": {"type": "E", "doc": "e"}}},
    {"union": "BlockdevOptions", "doc": "u", "discriminator": "driver", "data": {"s": "S"}},
]


def run(defs):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'schema.json')
        with open(path, 'w') as f:
            json.dump(defs, f)
        p = subprocess.run([sys.executable, GEN, path, os.path.join(d, 'o.h'),
                            os.path.join(d, 'o.cpp')], capture_output=True, text=True)
        return p.returncode, p.stderr


def with_change(i, key, value):
    defs = json.loads(json.dumps(BASE))
    defs[i][key] = value
    return defs


failures = 0


def expect(defs, fragment):
    global failures
    rc, err = run(defs)
    if rc == 0 or fragment not in err:
        print('FAIL: expected an error with %r, got rc=%d %r' % (fragment, rc, err))
        failures += 1


rc, err = run(BASE)
if rc != 0:
    print('FAIL: the base schema is refused: %s' % err)
    failures += 1

expect(with_change(1, 'data', {"driver": {"type": "str", "doc": "d"},
                               "x": {"type": "Nope", "doc": "x"}}), "unknown type 'Nope'")
expect(with_change(1, 'doc', ''), "'S' has no doc")
expect(with_change(1, 'data', {"driver": {"type": "str"}}), "'S.driver' has no doc")
expect(with_change(0, 'aliases', {"x": "b"}), "bad alias x -> b")
expect(with_change(0, 'data', [{"name": "a", "doc": "a"}, {"name": "a", "doc": "a"}]),
       "empty or duplicate members")
expect(with_change(1, 'data', {"e": {"type": "E", "doc": "e"}}), "branch 's' lacks 'driver'")
expect(with_change(1, 'data', {"driver": {"type": "str", "doc": "d"},
                               "l": {"type": ["str"], "doc": "l"}}), "lists are not supported")
expect(BASE + [{"struct": "T", "doc": "t", "data": {"t": {"type": "T", "doc": "t"}}}],
       'type cycle: T -> T')
expect(BASE + [{"struct": "S", "doc": "again", "data": {}}], "type 'S' defined twice")
expect(with_change(2, 'data', {"s": "E"}), "branch 's' is not a struct")
sys.exit(1 if failures else 0)
