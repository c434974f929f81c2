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
    for (const DriverSchema::Option &o : d.options) {
        int t;
        if (o.type == "enum") {
            // An enum of its own, named after the driver and the option.
            std::vector<EnumMember> members;
            for (const std::string &v : o.values) members.push_back(EnumMember{r.keep(v), ""});
            TypeDef et{};
            et.kind = Kind::Enum;
            et.name = r.keep(d.name + "." + o.name);
            et.doc = r.keep(o.doc);
            et.members = std::span<const EnumMember>(r.member_lists.emplace_back(std::move(members)));
            et.base = -1;
            et.discriminator_type = -1;
            types.push_back(et);
            t = int(types.size()) - 1;
        } else {
            t = type_index(cur, o.type);
        }
        if (t < 0) return Status::Error(EINVAL, "Unknown option type '" + o.type + "'");
        for (const Field &f : fields)
            if (o.name == f.name)
                return Status::Error(EINVAL, "Option '" + o.name + "' of driver '" + d.name +
                                                 "' is declared twice or shadows a common option");
        fields.push_back(Field{r.keep(o.name), t, !o.required, r.keep(o.doc)});
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
