#!/usr/bin/env python3
"""Generate C++ from the QAPI-style schema (qapi/block-core.json).

Emits a header with one `enum class` per schema enum, with name tables and
parse functions (aliases included), and a source file embedding the schema
text plus the schema as constant tables (qapi/schema.h), which the run-time
option validator and the tools' help read.  The schema stays the single
source of truth: nothing here is written by hand elsewhere.

The schema is checked here, so that a mistake in it fails the build rather
than a user's command line: every referenced type exists, every definition
and member has a doc, enum aliases name real members, a union's branches are
structs that all carry its discriminator, no struct contains itself except
through a child node reference (which the validator does not descend into).

usage: qapi-gen.py SCHEMA OUT_HEADER OUT_SOURCE [--namespace NS]

--namespace puts everything in another namespace (default mb::qapi), so a
test can link a schema of its own next to the library's.
"""
import json
import re
import sys

BUILTINS = ['str', 'int', 'bool', 'size', 'null']
NODE_UNION = 'BlockdevOptions'


class SchemaError(Exception):
    pass


def camel(name):
    return ''.join(p[:1].upper() + p[1:] for p in re.split(r'[-_ ]', name) if p)


def cstr(s):
    if s is None:
        return 'nullptr'
    return json.dumps(s, ensure_ascii=True)


def ident(name):
    return re.sub(r'[^A-Za-z0-9_]', '_', name)


class Schema:
    """The schema's definitions, in order, with builtins first."""

    def __init__(self, defs):
        self.types = []          # list of dicts: kind, name, ...
        self.index = {}
        for b in BUILTINS:
            self.add({'kind': 'builtin', 'name': b, 'doc': 'builtin type %s' % b})
        for d in defs:
            if not isinstance(d, dict):
                raise SchemaError('definition is not an object: %r' % (d,))
            if list(d.keys()) == ['doc']:
                continue          # the schema's own documentation
            self.parse_def(d)
        self.check()

    def add(self, t):
        if t['name'] in self.index:
            raise SchemaError("type '%s' defined twice" % t['name'])
        self.index[t['name']] = len(self.types)
        self.types.append(t)

    @staticmethod
    def need_doc(what, d):
        doc = d.get('doc') if isinstance(d, dict) else None
        if not isinstance(doc, str) or not doc.strip():
            raise SchemaError('%s has no doc' % what)
        return doc

    def parse_fields(self, owner, data):
        if not isinstance(data, dict):
            raise SchemaError("'%s': data must be an object" % owner)
        fields = []
        for key, spec in data.items():
            optional = key.startswith('*')
            name = key[1:] if optional else key
            if not re.fullmatch(r'[a-z][a-z0-9-]*', name):
                raise SchemaError("'%s': bad member name '%s'" % (owner, key))
            if not isinstance(spec, dict) or not isinstance(spec.get('type'), str):
                raise SchemaError("'%s.%s': needs {\"type\": ..., \"doc\": ...}"
                                  " (lists are not supported)" % (owner, name))
            doc = self.need_doc("'%s.%s'" % (owner, name), spec)
            fields.append({'name': name, 'type': spec['type'], 'optional': optional,
                           'doc': doc})
        return fields

    def parse_def(self, d):
        kinds = [k for k in ('enum', 'struct', 'union', 'alternate') if k in d]
        if len(kinds) != 1:
            raise SchemaError('cannot tell what this defines: %r' % (sorted(d.keys()),))
        kind = kinds[0]
        name = d[kind]
        doc = self.need_doc("'%s'" % name, d)
        t = {'kind': kind, 'name': name, 'doc': doc}
        if kind == 'enum':
            members = []
            for m in d['data']:
                if isinstance(m, str):
                    raise SchemaError("'%s': member '%s' has no doc" % (name, m))
                members.append({'name': m['name'],
                                'doc': self.need_doc("'%s.%s'" % (name, m['name']), m)})
            t['members'] = members
            t['aliases'] = list(d.get('aliases', {}).items())
        elif kind == 'struct':
            t['base'] = d.get('base')
            t['fields'] = self.parse_fields(name, d['data'])
        elif kind == 'union':
            base = d.get('base')
            if isinstance(base, dict):
                # An inline base becomes an implicit struct.
                implicit = {'kind': 'struct', 'name': name + '-base',
                            'doc': 'common members of %s' % name, 'base': None,
                            'fields': self.parse_fields(name, base)}
                self.add(implicit)
                base = implicit['name']
            t['base'] = base
            t['discriminator'] = d.get('discriminator')
            if not isinstance(t['discriminator'], str):
                raise SchemaError("union '%s' needs a discriminator" % name)
            t['branches'] = list(d['data'].items())
        else:
            t['branches'] = list(d['data'].items())
        self.add(t)

    def get(self, name, where):
        if name not in self.index:
            raise SchemaError("%s: unknown type '%s'" % (where, name))
        return self.types[self.index[name]]

    def all_fields(self, t, seen=()):
        """A struct's fields, its base's first."""
        if t['name'] in seen:
            raise SchemaError("'%s' is its own base" % t['name'])
        out = []
        if t.get('base'):
            base = self.get(t['base'], "base of '%s'" % t['name'])
            if base['kind'] != 'struct':
                raise SchemaError("base of '%s' is not a struct" % t['name'])
            out = self.all_fields(base, seen + (t['name'],))
        names = {f['name'] for f in out}
        for f in t['fields']:
            if f['name'] in names:
                raise SchemaError("'%s': member '%s' also in its base" % (t['name'], f['name']))
            out.append(f)
        return out

    def is_node(self, t):
        if t['name'] == NODE_UNION:
            return True
        return t['kind'] == 'alternate' and any(v == NODE_UNION for _, v in t['branches'])

    def check(self):
        for t in self.types:
            k, n = t['kind'], t['name']
            if k == 'enum':
                names = [m['name'] for m in t['members']]
                if len(set(names)) != len(names) or not names:
                    raise SchemaError("enum '%s': empty or duplicate members" % n)
                for a, target in t['aliases']:
                    if target not in names or a in names:
                        raise SchemaError("enum '%s': bad alias %s -> %s" % (n, a, target))
            elif k == 'struct':
                for f in self.all_fields(t):
                    self.get(f['type'], "'%s.%s'" % (n, f['name']))
            elif k == 'union':
                disc = t['discriminator']
                base_fields = self.all_fields(self.get(t['base'], n)) if t['base'] else []
                disc_type = None
                for f in base_fields:
                    if f['name'] == disc:
                        disc_type = f['type']
                if not t['branches']:
                    raise SchemaError("union '%s' has no branches" % n)
                for value, bname in t['branches']:
                    b = self.get(bname, "union '%s' branch '%s'" % (n, value))
                    if b['kind'] != 'struct':
                        raise SchemaError("union '%s': branch '%s' is not a struct" % (n, value))
                    bf = self.all_fields(b)
                    mine = [f for f in bf if f['name'] == disc]
                    if mine:
                        if disc_type is not None and t['base'] and \
                                any(f['name'] == disc for f in base_fields):
                            raise SchemaError("union '%s': '%s' both in base and branch"
                                              % (n, disc))
                        if disc_type is None:
                            disc_type = mine[0]['type']
                        elif disc_type != mine[0]['type']:
                            raise SchemaError("union '%s': discriminator types differ" % n)
                    elif not any(f['name'] == disc for f in base_fields):
                        raise SchemaError("union '%s': branch '%s' lacks '%s'" % (n, value, disc))
                    names = {f['name'] for f in base_fields}
                    for f in bf:
                        if f['name'] in names:
                            raise SchemaError("union '%s': '%s' in base and branch '%s'"
                                              % (n, f['name'], value))
                dt = self.get(disc_type, "discriminator of '%s'" % n)
                if dt['name'] == 'str':
                    pass
                elif dt['kind'] == 'enum':
                    members = {m['name'] for m in dt['members']}
                    if members != {v for v, _ in t['branches']}:
                        raise SchemaError("union '%s': branches differ from enum '%s'"
                                          % (n, dt['name']))
                else:
                    raise SchemaError("union '%s': discriminator must be str or an enum" % n)
                t['disc_type'] = disc_type
            elif k == 'alternate':
                for _, v in t['branches']:
                    bt = self.get(v, "alternate '%s'" % n)
                    if bt['kind'] == 'alternate':
                        raise SchemaError("alternate '%s' contains an alternate" % n)
        # No struct may contain itself (the validator descends into structs),
        # except through a child node, which it does not descend into.
        for t in self.types:
            if t['kind'] in ('struct', 'union', 'alternate'):
                self.check_cycle(t, [])

    def children(self, t):
        if self.is_node(t):
            return []
        if t['kind'] == 'struct':
            return [self.get(f['type'], '') for f in self.all_fields(t)]
        if t['kind'] == 'union':
            out = [self.get(b, '') for _, b in t['branches']]
            if t['base']:
                out.append(self.get(t['base'], ''))
            return out
        if t['kind'] == 'alternate':
            return [self.get(b, '') for _, b in t['branches']]
        return []

    def check_cycle(self, t, stack):
        if t['name'] in stack:
            raise SchemaError('type cycle: %s' % ' -> '.join(stack + [t['name']]))
        for c in self.children(t):
            self.check_cycle(c, stack + [t['name']])


KIND = {'builtin': 'Builtin', 'enum': 'Enum', 'struct': 'Struct', 'union': 'Union',
        'alternate': 'Alternate'}


def emit_tables(s, ns):
    """The schema as constant tables (types in qapi/schema.h)."""
    out = ['', 'namespace %s {' % ns, 'namespace {', 'using namespace ::mb::qapi::schema;', '']
    for t in s.types:
        i = ident(t['name'])
        if t['kind'] == 'enum':
            out.append('const EnumMember members_%s[] = {%s};' % (i, ', '.join(
                '{%s, %s}' % (cstr(m['name']), cstr(m['doc'])) for m in t['members'])))
            if t['aliases']:
                out.append('const EnumAlias aliases_%s[] = {%s};' % (i, ', '.join(
                    '{%s, %s}' % (cstr(a), cstr(b)) for a, b in t['aliases'])))
        elif t['kind'] == 'struct':
            fields = s.all_fields(t)
            out.append('const Field fields_%s[] = {%s};' % (i, ', '.join(
                '{%s, %d, %s, %s}' % (cstr(f['name']), s.index[f['type']],
                                      'true' if f['optional'] else 'false', cstr(f['doc']))
                for f in fields)))
        elif t['kind'] in ('union', 'alternate'):
            out.append('const Branch branches_%s[] = {%s};' % (i, ', '.join(
                '{%s, %d}' % (cstr(v), s.index[b]) for v, b in t['branches'])))
    out.append('')
    out.append('const TypeDef types[] = {')
    for t in s.types:
        i = ident(t['name'])
        k = t['kind']
        members = 'members_%s' % i if k == 'enum' else '{}'
        aliases = 'aliases_%s' % i if k == 'enum' and t['aliases'] else '{}'
        fields = 'fields_%s' % i if k == 'struct' else '{}'
        branches = 'branches_%s' % i if k in ('union', 'alternate') else '{}'
        base = s.index[t['base']] if k == 'union' and t['base'] else -1
        disc = cstr(t['discriminator']) if k == 'union' else 'nullptr'
        disc_type = s.index[t['disc_type']] if k == 'union' else -1
        out.append('    {Kind::%s, %s, %s, %s, %s, %s, %s, %d, %s, %d, %s},' % (
            KIND[k], cstr(t['name']), cstr(t['doc']), members, aliases, fields, branches,
            base, disc, disc_type, 'true' if s.is_node(t) else 'false'))
    out.append('};')
    out.append('}  // namespace')
    out.append('')
    out.append('extern const ::mb::qapi::schema::Schema schema_tables;')
    out.append('const ::mb::qapi::schema::Schema schema_tables = {types, %d};' % (
        s.index[NODE_UNION] if NODE_UNION in s.index else -1))
    out.append('}  // namespace %s' % ns)
    return out


def main():
    args = sys.argv[1:]
    ns = 'mb::qapi'
    if '--namespace' in args:
        i = args.index('--namespace')
        ns = args[i + 1]
        del args[i:i + 2]
    schema_path, out_h, out_c = args[0:3]
    with open(schema_path, encoding='utf-8') as f:
        text = f.read()
    try:
        schema = Schema(json.loads(text))
    except (SchemaError, KeyError, TypeError, ValueError) as e:
        sys.exit('%s: %s' % (schema_path, e))
    h = ['// Generated by qapi/qapi-gen.py from %s: do not edit.' % schema_path.split('/')[-1],
         '#pragma once', '', '#include <optional>', '#include <string_view>', '',
         'namespace %s {' % ns, '',
         '// The schema text, embedded (qapi/block-core.json).',
         'extern const char schema_json[];', '']
    for d in schema.types:
        if d['kind'] != 'enum':
            continue
        name = d['name']
        members = [m['name'] for m in d['members']]
        h.append('// %s' % d['doc'])
        h.append('enum class %s { %s };' % (name, ', '.join(camel(m) for m in members)))
        h.append('inline constexpr std::string_view %s_names[] = { %s };' % (
            name, ', '.join('"%s"' % m for m in members)))
        h.append('inline const char *to_string(%s v) { return %s_names[static_cast<int>(v)].data(); }' % (name, name))
        h.append('inline std::optional<%s> parse_%s(std::string_view s) {' % (name, name))
        for m in members:
            h.append('    if (s == "%s") return %s::%s;' % (m, name, camel(m)))
        for a, target in d['aliases']:
            h.append('    if (s == "%s") return %s::%s;  // alias' % (a, name, camel(target)))
        h.append('    return std::nullopt;')
        h.append('}')
        h.append('')
    h.append('}  // namespace %s' % ns)
    with open(out_h, 'w', encoding='utf-8') as f:
        f.write('\n'.join(h) + '\n')
    # A raw string literal cannot hold its own delimiter; the schema never does.
    assert ')qapi"' not in text
    with open(out_c, 'w', encoding='utf-8') as f:
        f.write('// Generated by qapi/qapi-gen.py: do not edit.\n')
        f.write('#include "qapi/schema.h"\n')
        f.write('namespace %s {\nextern const char schema_json[];\n' % ns)
        f.write('const char schema_json[] = R"qapi(%s)qapi";\n}\n' % text)
        f.write('\n'.join(emit_tables(schema, ns)) + '\n')


if __name__ == '__main__':
    main()
