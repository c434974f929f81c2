// The live schema: the generated tables (qapi/block-core.json) plus the
// options of every driver registered at run time through the plugin ABI
// (include/miniblock/driver.h).  A plugin's options go through the same
// validator, help text and error messages as a built-in driver's: the
// registry appends one struct per driver (the common node options, then the
// driver's own) and one branch to the node union.
//
// Registration is rare (once per driver per process) and validation is
// frequent, so registration builds a whole new Schema and publishes it with
// one atomic pointer store; an old Schema is never freed (a reader may hold
// it, and there are at most a few per process).
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <deque>
#include <mutex>

#include "qapi/schema.h"

namespace mb::qapi {

namespace {

using namespace schema;

struct Registry {
    std::mutex lock;
    std::deque<std::string> strings;               // stable c_str()s
    std::deque<std::vector<Field>> field_lists;    // stable spans
    std::vector<TypeDef> types;                    // the current generation's
    std::vector<Branch> branches;                  // of the node union
    std::deque<Schema> schemas;                    // every generation
    std::deque<std::vector<TypeDef>> type_lists;
    std::deque<std::vector<Branch>> branch_lists;
    std::deque<std::vector<EnumMember>> member_lists;  // a plugin's enum options

    const char *keep(std::string s) { return strings.emplace_back(std::move(s)).c_str(); }
};

Registry &registry() {
    static Registry r;
    return r;
}

std::atomic<const Schema *> live{&schema_tables};

int type_index(const Schema &s, std::string_view name) {
    for (size_t i = 0; i < s.types.size(); i++)
        if (name == s.types[i].name) return int(i);
    return -1;
}

// One option's type: a builtin by name, or an enum of its own named after
// the driver and the option.
int option_type(Registry &r, std::vector<TypeDef> &types, const Schema &cur, const std::string &driver,
                const DriverSchema::Option &o) {
    if (o.type != "enum") return type_index(cur, o.type);
    std::vector<EnumMember> members;
    for (const std::string &v : o.values) members.push_back(EnumMember{r.keep(v), ""});
    TypeDef et{};
    et.kind = Kind::Enum;
    et.name = r.keep(driver + "." + o.name);
    et.doc = r.keep(o.doc);
    et.members = std::span<const EnumMember>(r.member_lists.emplace_back(std::move(members)));
    et.base = -1;
    et.discriminator_type = -1;
    types.push_back(et);
    return int(types.size()) - 1;
}

int add_struct(Registry &r, std::vector<TypeDef> &types, std::string name, std::vector<Field> fields) {
    TypeDef st{};
    st.kind = Kind::Struct;
    st.name = r.keep(std::move(name));
    st.doc = r.keep("");
    st.fields = std::span<const Field>(r.field_lists.emplace_back(std::move(fields)));
    st.base = -1;
    st.discriminator_type = -1;
    types.push_back(st);
    return int(types.size()) - 1;
}

// The nested options GROUP from its members (named GROUP.KEY): a struct,
// or, when members carry a condition DISC=VALUE, a union whose base holds
// the unconditional members (DISC among them, an enum) and whose branch
// for each VALUE holds the members of that value: the shape of QEMU's
// server union, validated and explained by the same code.
Result<int> group_type(Registry &r, std::vector<TypeDef> &types, const Schema &cur, const DriverSchema &d,
                       const std::string &group, const std::vector<const DriverSchema::Option *> &members) {
    auto bad = [&](const std::string &name, const std::string &why) {
        return Status::Error(EINVAL, "Option '" + name + "' of driver '" + d.name + "' " + why);
    };
    std::vector<Field> common;
    std::string disc;
    for (const DriverSchema::Option *m : members) {
        std::string key = m->name.substr(group.size() + 1);
        if (!m->when.empty()) {
            size_t eq = m->when.find('=');
            std::string k = m->when.substr(0, eq);
            if (eq == std::string::npos || k.empty()) return bad(m->name, "has the condition '" + m->when + "', not DISC=VALUE");
            if (!disc.empty() && k != disc) return bad(m->name, "has a condition on '" + k + "', another than '" + disc + "'");
            disc = k;
            continue;
        }
        int t = option_type(r, types, cur, d.name, *m);
        if (t < 0) return Status::Error(EINVAL, "Unknown option type '" + m->type + "'");
        for (const Field &f : common)
            if (key == f.name) return bad(m->name, "is declared twice");
        common.push_back(Field{r.keep(key), t, !m->required, r.keep(m->doc)});
    }
    const std::string tname = "BlockdevOptions(" + d.name + ")." + group;
    if (disc.empty()) return add_struct(r, types, tname, std::move(common));
    int disc_type = -1;
    for (const Field &f : common)
        if (disc == f.name) disc_type = f.type;
    if (disc_type < 0 || types[size_t(disc_type)].kind != Kind::Enum)
        return bad(group + "." + disc, "is named by conditions but is not an enum option of '" + group + "'");
    std::vector<std::string> values;
    for (const EnumMember &m : types[size_t(disc_type)].members) values.emplace_back(m.name);
    std::vector<std::vector<Field>> branch_fields(values.size());
    for (const DriverSchema::Option *m : members) {
        if (m->when.empty()) continue;
        std::string v = m->when.substr(disc.size() + 1);
        size_t i = size_t(std::find(values.begin(), values.end(), v) - values.begin());
        if (i == values.size())
            return bad(m->name, "has the condition '" + m->when + "', but '" + v + "' is not a value of '" +
                                    group + "." + disc + "'");
        std::string key = m->name.substr(group.size() + 1);
        int t = option_type(r, types, cur, d.name, *m);
        if (t < 0) return Status::Error(EINVAL, "Unknown option type '" + m->type + "'");
        for (const Field &f : common)
            if (key == f.name) return bad(m->name, "is declared twice");
        for (const Field &f : branch_fields[i])
            if (key == f.name) return bad(m->name, "is declared twice");
        branch_fields[i].push_back(Field{r.keep(key), t, !m->required, r.keep(m->doc)});
    }
    const int base_index = add_struct(r, types, tname + " base", std::move(common));
    std::vector<Branch> branches;
    for (size_t i = 0; i < values.size(); i++) {
        int bi = add_struct(r, types, tname + " " + values[i], std::move(branch_fields[i]));
        branches.push_back(Branch{r.keep(values[i]), bi});
    }
    TypeDef u{};
    u.kind = Kind::Union;
    u.name = r.keep(tname);
    u.doc = r.keep("");
    u.branches = std::span<const Branch>(r.branch_lists.emplace_back(std::move(branches)));
    u.base = base_index;
    u.discriminator = r.keep(disc);
    u.discriminator_type = disc_type;
    types.push_back(u);
    return int(types.size()) - 1;
}

}  // namespace

const Schema &live_schema() { return *live.load(std::memory_order_acquire); }

Status register_driver_schema(const DriverSchema &d) {
    Registry &r = registry();
    std::lock_guard<std::mutex> g(r.lock);
    const Schema &cur = live_schema();
    if (cur.driver_struct(d.name))
        return Status::Error(EEXIST, "Driver '" + d.name + "' already has options in the schema");
    int base = type_index(cur, "BlockdevOptionsBase");
    if (base < 0 || cur.node_union < 0)
        return Status::Error(EINVAL, "The schema has no node options to extend");

    std::vector<TypeDef> types(cur.types.begin(), cur.types.end());
    std::vector<Field> fields(cur.type(base).fields.begin(), cur.type(base).fields.end());
    // GROUP.KEY options become one field GROUP of nested options, where
    // its first member was declared.
    std::vector<std::string> groups;
    for (const DriverSchema::Option &o : d.options) {
        size_t dot = o.name.find('.');
        std::string name = o.name.substr(0, dot);
        int t;
        std::string doc = o.doc;
        bool required = o.required;
        if (dot != std::string::npos) {
            if (std::find(groups.begin(), groups.end(), name) != groups.end()) continue;
            groups.push_back(name);
            std::vector<const DriverSchema::Option *> members;
            for (const DriverSchema::Option &m : d.options)
                if (m.name.starts_with(name + ".")) members.push_back(&m);
            auto gt = group_type(r, types, cur, d, name, members);
            if (!gt.ok()) return gt.take_status();
            t = *gt;
            doc = "nested options: " + name + ".KEY=...";
            required = false;  // its members' REQUIRED apply when it is given
        } else {
            if (!o.when.empty())
                return Status::Error(EINVAL, "Option '" + o.name + "' of driver '" + d.name +
                                                 "' has a condition but is not nested options");
            t = option_type(r, types, cur, d.name, o);
        }
        if (t < 0) return Status::Error(EINVAL, "Unknown option type '" + o.type + "'");
        for (const Field &f : fields)
            if (name == f.name)
                return Status::Error(EINVAL, "Option '" + name + "' of driver '" + d.name +
                                                 "' is declared twice or shadows a common option");
        fields.push_back(Field{r.keep(name), t, !required, r.keep(doc)});
    }
    const std::vector<Field> &stored = r.field_lists.emplace_back(std::move(fields));

    TypeDef st{};
    st.kind = Kind::Struct;
    st.name = r.keep("BlockdevOptions(" + d.name + ")");
    st.doc = r.keep(d.doc);
    st.fields = std::span<const Field>(stored);
    st.base = -1;
    st.discriminator_type = -1;
    types.push_back(st);
    const int st_index = int(types.size()) - 1;

    std::vector<Branch> branches(cur.type(cur.node_union).branches.begin(),
                                 cur.type(cur.node_union).branches.end());
    branches.push_back(Branch{r.keep(d.name), st_index});
    const std::vector<Branch> &bstored = r.branch_lists.emplace_back(std::move(branches));
    types[size_t(cur.node_union)].branches = std::span<const Branch>(bstored);

    const std::vector<TypeDef> &tstored = r.type_lists.emplace_back(std::move(types));
    const Schema &next = r.schemas.emplace_back(Schema{std::span<const TypeDef>(tstored), cur.node_union});
    live.store(&next, std::memory_order_release);
    return Status::OK();
}

}  // namespace mb::qapi
