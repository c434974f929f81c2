#include <algorithm>
// Options: the tree, both spellings, the -drive sugar, validation against the
// schema, and every error text, verbatim.
#include <json-glib/json-glib.h>

#include <string>

#include "block/block_int.h"
#include "block/plugin/plugin.h"
#include "miniblock/options.h"
#include "qapi-types.h"
#include "qapi/schema.h"

// cmocka last: its fail() macro breaks the C++ library headers.  Its
// header has no extern "C" of its own.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

namespace mb::qapi::test {
// tests/unit/test-options-schema.json: a nested union, a nested struct,
// BlockdevRefOrNull and a scalar alternate.
extern const schema::Schema schema_tables;
}  // namespace mb::qapi::test

using mb::Result;
using mb::Status;
using namespace mb::qapi;

namespace {

OptionDict parse_ok(const std::string &spec) {
    Result<OptionDict> r = parse_drive_options(spec);
    if (!r.ok()) fail_msg("parse_drive_options(%s): %s", spec.c_str(), r.status().to_string().c_str());
    return r.value();
}

void expect_error(const Status &s, const std::string &message, const std::string &detail = {}) {
    if (s.ok()) fail_msg("expected error '%s', got success", message.c_str());
    assert_string_equal(s.message().c_str(), message.c_str());
    assert_string_equal(s.detail().c_str(), detail.c_str());
    assert_int_equal(s.err(), EINVAL);
}

void parse_error(const std::string &spec, const std::string &message,
                 const std::string &detail = {}) {
    Result<OptionDict> r = parse_drive_options(spec);
    if (r.ok()) fail_msg("parse_drive_options(%s) succeeded: %s", spec.c_str(), r->to_json().c_str());
    expect_error(r.status(), message, detail);
}

// Parses and validates the top node (driver from its options) and, if it has
// a file child with a driver, that child too.
OptionDict parse_valid(const std::string &spec) {
    OptionDict d = parse_ok(spec);
    Status s = validate_node_options(d, d.get_str("driver").value_or(""));
    if (!s.ok()) fail_msg("validate(%s): %s", spec.c_str(), s.to_string().c_str());
    if (OptionDict *f = d.dict("file")) {
        if (auto drv = f->get_str("driver")) {
            Status fs = validate_node_options(*f, *drv, "file");
            if (!fs.ok()) fail_msg("validate file (%s): %s", spec.c_str(), fs.to_string().c_str());
        }
    }
    return d;
}

Status validate(const std::string &spec, const std::string &driver, const std::string &path = "") {
    OptionDict d = parse_ok(spec);
    return validate_node_options(d, driver, path);
}

Status validate_test(OptionDict &d) {
    return validate_node_options(d, d.get_str("driver").value_or(""), "", test::schema_tables);
}

Status validate_test(const std::string &spec) {
    OptionDict d = parse_ok(spec);
    return validate_test(d);
}

const char kRawParams[] =
    "Valid parameters for driver 'raw': auto-read-only, cache, detect-zeroes, discard, driver, file, "
    "force-share, inactive, lock, lock-wait, node-name, offset, read-only, size";
const char kFileParams[] =
    "Valid parameters for driver 'file': aio, auto-read-only, cache, detect-zeroes, discard, driver, "
    "filename, force-share, inactive, lock, lock-protocol, lock-wait, locking, locking-api, node-name, "
    "read-only";
const char kLockValues[] =
    "Valid values: off, shared, auto, exclusive (aliases: none -> off, on -> auto)";
const char kSizeDetail[] = "Expected a size: bytes with an optional k, M, G, T, P or E suffix";
const char kBoolDetail[] = "Expected a boolean: on, off, true or false";
const char kDepthDetail[] = "At most 32 levels of nested options are accepted";
const char kNameDetail[] =
    "A parameter name is made of letters, digits, '-' and '_', in non-empty parts separated "
    "by '.'";
const char kConflictDetail[] = "A parameter with a value cannot also have nested parameters";

// --- the tree ---------------------------------------------------------------

void test_dict_api(void **) {
    OptionDict d;
    assert_true(d.empty());
    d.set_str("b", "x");
    d.set_int("a", -5);
    d.set_bool("c", true);
    d.set_null("d");
    OptionDict &sub = d.set_dict("e", OptionDict());
    sub.set_str("f", "y");
    assert_int_equal(d.size(), 5);
    assert_true(d.has("a") && !d.has("z"));
    assert_true(*d.type("a") == OptionType::Int);
    assert_true(*d.type("b") == OptionType::String);
    assert_true(*d.type("c") == OptionType::Bool);
    assert_true(*d.type("d") == OptionType::Null);
    assert_true(*d.type("e") == OptionType::Dict);
    assert_false(d.type("z").has_value());
    assert_int_equal(*d.get_int("a"), -5);
    assert_false(d.get_int("b").has_value());  // typed getters do not convert
    assert_false(d.get_str("a").has_value());
    assert_true(*d.get_bool("c"));
    assert_true(d.is_null("d"));
    assert_string_equal(d.get_text("a")->c_str(), "-5");
    assert_string_equal(d.get_text("c")->c_str(), "true");
    assert_string_equal(d.get_text("d")->c_str(), "null");
    assert_false(d.get_text("e").has_value());
    assert_null(d.dict("a"));
    assert_null(d.dict("z"));

    // dict() pointers survive setting other keys.
    OptionDict *e = d.dict("e");
    for (int i = 0; i < 100; i++) d.set_int("k" + std::to_string(i), i);
    assert_ptr_equal(d.dict("e"), e);
    assert_string_equal(e->get_str("f")->c_str(), "y");
    for (int i = 0; i < 100; i++) assert_true(d.erase("k" + std::to_string(i)));
    assert_false(d.erase("k0"));

    // Sorted keys, canonical JSON.
    std::vector<std::string> keys = d.keys();
    assert_int_equal(keys.size(), 5);
    assert_string_equal(keys[0].c_str(), "a");
    assert_string_equal(keys[4].c_str(), "e");
    assert_string_equal(d.to_json().c_str(),
                        "{\"a\": -5, \"b\": \"x\", \"c\": true, \"d\": null, \"e\": {\"f\": \"y\"}}");

    // Copies are independent (deep).
    OptionDict copy = d;
    assert_true(copy == d);
    copy.dict("e")->set_str("f", "changed");
    assert_string_equal(d.dict("e")->get_str("f")->c_str(), "y");
    assert_false(copy == d);

    // Replacing a key changes its type; set_dict from a copy of itself is safe.
    d.set_str("a", "now a string");
    assert_false(d.get_int("a").has_value());
    d.set_dict("e", *d.dict("e"));
    assert_string_equal(d.dict("e")->get_str("f")->c_str(), "y");

    OptionDict esc;
    esc.set_str("s", std::string("q\"b\\n\n\x01\xc3\xa9", 9));
    assert_string_equal(esc.to_json().c_str(), "{\"s\": \"q\\\"b\\\\n\\n\\u0001\xc3\xa9\"}");
    assert_string_equal(OptionDict().to_json().c_str(), "{}");
}

void test_generated_enums(void **) {
    assert_true(parse_LockMode("none") == LockMode::Off);
    assert_true(parse_LockMode("on") == LockMode::Auto);
    assert_true(parse_LockMode("exclusive") == LockMode::Exclusive);
    assert_false(parse_LockMode("exclusiv").has_value());
    assert_string_equal(to_string(LockMode::Shared), "shared");
    assert_string_equal(to_string(AioMode::Native), "native");
    assert_non_null(schema_json);
}

// --- key=value and json: ----------------------------------------------------

void test_keyval(void **) {
    OptionDict d = parse_ok(
        "file=a.img,format=raw,lock=exclusive,file.aio=native,backing.lock=exclusive");
    assert_string_equal(d.to_json().c_str(),
                        "{\"backing\": {\"lock\": \"exclusive\"}, \"driver\": \"raw\", "
                        "\"file\": {\"aio\": \"native\", \"filename\": \"a.img\"}, "
                        "\"lock\": \"exclusive\"}");
    // Values are strings until validated.
    d = parse_ok("driver=raw,offset=512");
    assert_string_equal(d.get_str("offset")->c_str(), "512");
    assert_false(d.get_int("offset").has_value());
    // Deep dotted keys, '=' inside values, empty values, a trailing comma.
    d = parse_ok("a.b.c.d=1,a.b.e=x=y,f=,");
    assert_string_equal(d.to_json().c_str(),
                        "{\"a\": {\"b\": {\"c\": {\"d\": \"1\"}, \"e\": \"x=y\"}}, \"f\": \"\"}");
}

void test_comma_escaping(void **) {
    OptionDict d = parse_ok("file=a,,b.img,lock=off");
    assert_string_equal(d.dict("file")->get_str("filename")->c_str(), "a,b.img");
    assert_string_equal(d.get_str("lock")->c_str(), "off");
    d = parse_ok("file=x,,,,y");
    assert_string_equal(d.dict("file")->get_str("filename")->c_str(), "x,,y");
    d = parse_ok("node-name=n,file=a,,");
    assert_string_equal(d.dict("file")->get_str("filename")->c_str(), "a,");
    // ",,," is an escaped comma, then the separator.
    d = parse_ok("file=a,,,lock=off");
    assert_string_equal(d.dict("file")->get_str("filename")->c_str(), "a,");
    assert_string_equal(d.get_str("lock")->c_str(), "off");
}

void test_bare_filename(void **) {
    OptionDict d = parse_ok("a.img");
    assert_string_equal(d.to_json().c_str(), "{\"file\": {\"filename\": \"a.img\"}}");
    // No '=' anywhere: the whole string, commas and all.
    d = parse_ok("/images/a,b,,c.img");
    assert_string_equal(d.dict("file")->get_str("filename")->c_str(), "/images/a,b,,c.img");
    d = parse_ok("lock");
    assert_string_equal(d.dict("file")->get_str("filename")->c_str(), "lock");
    // Protocol detection is the block layer's: a URI is just a filename here.
    d = parse_ok("nbd://localhost:10809/exp");
    assert_string_equal(d.to_json().c_str(),
                        "{\"file\": {\"filename\": \"nbd://localhost:10809/exp\"}}");
    assert_true(parse_ok("").empty());
}

void test_keyval_equals_json(void **) {
    // All-string options: equal trees straight from the parser.
    const char *pairs[][2] = {
        {"file=a.img,format=raw,lock=exclusive,file.aio=native,backing.lock=exclusive",
         "json:{\"driver\": \"raw\", \"lock\": \"exclusive\", \"backing\": {\"lock\": \"exclusive\"},"
         " \"file\": {\"filename\": \"a.img\", \"aio\": \"native\"}}"},
        // json: takes the same sugar and dotted keys.
        {"file=a.img,format=raw,aio=native",
         "json:{\"format\": \"raw\", \"file\": \"a.img\", \"aio\": \"native\"}"},
        {"driver=raw,file.driver=file,file.filename=a.img",
         "json:{\"driver\": \"raw\", \"file.driver\": \"file\", \"file\": {\"filename\": \"a.img\"}}"},
        {"a.img", "json:{\"file\": {\"filename\": \"a.img\"}}"},
    };
    for (auto &p : pairs) {
        OptionDict k = parse_ok(p[0]);
        OptionDict j = parse_ok(p[1]);
        assert_string_equal(k.to_json().c_str(), j.to_json().c_str());
        assert_true(k == j);
    }
    // Typed options: equal once validated (strings coerced, aliases canonical).
    OptionDict k = parse_valid("driver=raw,file.driver=file,file.filename=a.img,offset=64k,"
                               "size=1M,read-only=on,lock=none,cache=none,file.aio=native,"
                               "lock-wait=3");
    OptionDict j = parse_valid(
        "json:{\"driver\": \"raw\", \"offset\": 65536, \"size\": 1048576, \"read-only\": true, "
        "\"lock\": \"off\", \"cache\": \"none\", \"lock-wait\": 3, "
        "\"file\": {\"driver\": \"file\", \"filename\": \"a.img\", \"aio\": \"native\"}}");
    assert_string_equal(k.to_json().c_str(), j.to_json().c_str());
    assert_string_equal(k.to_json().c_str(),
                        "{\"cache\": \"none\", \"driver\": \"raw\", \"file\": {\"aio\": \"native\", "
                        "\"driver\": \"file\", \"filename\": \"a.img\"}, \"lock\": \"off\", "
                        "\"lock-wait\": 3, \"offset\": 65536, \"read-only\": true, \"size\": 1048576}");
    // The canonical JSON reads back as the same tree.
    OptionDict again = parse_ok("json:" + k.to_json());
    assert_true(again == k);
}

void test_drive_sugar(void **) {
    // aio goes to the file child when there is one, format or not.
    OptionDict d = parse_ok("file=a.img,aio=native");
    assert_string_equal(d.to_json().c_str(),
                        "{\"file\": {\"aio\": \"native\", \"filename\": \"a.img\"}}");
    d = parse_ok("aio=native,format=raw,file=a.img");
    assert_string_equal(d.to_json().c_str(),
                        "{\"driver\": \"raw\", \"file\": {\"aio\": \"native\", \"filename\": \"a.img\"}}");
    // No file child: this is the file node itself.
    d = parse_ok("driver=file,filename=a.img,aio=native");
    assert_string_equal(d.get_str("aio")->c_str(), "native");
    // file=NAME merges with file.* options, in either order.
    d = parse_ok("file.aio=native,file=a.img,file.lock=off");
    assert_string_equal(d.to_json().c_str(),
                        "{\"file\": {\"aio\": \"native\", \"filename\": \"a.img\", \"lock\": \"off\"}}");
    // Only at the top: a nested file= is a reference for the block layer.
    d = parse_ok("driver=qcow2,file=a.qcow2,backing.file=base-node,backing.format=raw");
    assert_string_equal(d.dict("backing")->get_str("file")->c_str(), "base-node");
    assert_string_equal(d.dict("backing")->get_str("format")->c_str(), "raw");
    // file=json:{...} holds the top node's own options (commas doubled).
    d = parse_ok("file=json:{\"driver\": \"raw\",, \"file\": {\"driver\": \"file\",, "
                 "\"filename\": \"a.img\"}},lock=off");
    assert_string_equal(d.to_json().c_str(),
                        "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", \"filename\": \"a.img\"}, "
                        "\"lock\": \"off\"}");
    // parse_keyval_options has no sugar and no bare filename.
    Result<OptionDict> r = parse_keyval_options("format=raw,file=a.img,aio=native");
    assert_true(r.ok());
    assert_string_equal(r->to_json().c_str(),
                        "{\"aio\": \"native\", \"file\": \"a.img\", \"format\": \"raw\"}");
    r = parse_keyval_options("size");
    expect_error(r.status(), "Expected '=' after parameter 'size'");

    parse_error("file=a.img,aio=native,file.aio=threads", "Duplicate parameter 'file.aio'");
    parse_error("file=a.img,file.filename=b.img", "Duplicate parameter 'file.filename'",
                "'file=NAME' is short for 'file.filename=NAME'");
    parse_error("file=a.img,file=b.img", "Duplicate parameter 'file.filename'",
                "'file=NAME' is short for 'file.filename=NAME'");
    parse_error("file.filename=a.img,file.filename=b.img", "Duplicate parameter 'file.filename'");
    parse_error("format=raw,driver=raw", "Duplicate parameter 'driver'",
                "'format' is another name for 'driver'");
    parse_error("driver=raw,format=raw", "Duplicate parameter 'driver'",
                "'format' is another name for 'driver'");
}

void test_syntax_errors(void **) {
    parse_error("lock=off,lock=on", "Duplicate parameter 'lock'");
    parse_error("file.aio=native,file.aio=threads", "Duplicate parameter 'file.aio'");
    parse_error("=x", "Missing parameter name before '=x'");
    parse_error("lock=off,=x", "Missing parameter name before '=x'");
    parse_error(",lock=off", "Missing parameter name before ',lock=off'");
    parse_error("a..b=1", "Invalid parameter name 'a..b'", kNameDetail);
    parse_error("a.=1", "Invalid parameter name 'a.'", kNameDetail);
    parse_error(".a=1", "Invalid parameter name '.a'", kNameDetail);
    parse_error("a b=1", "Invalid parameter name 'a b'", kNameDetail);
    parse_error("file=a.img,lock", "Expected '=' after parameter 'lock'");
    parse_error("lock,file=a.img", "Expected '=' after parameter 'lock'");
    parse_error("lock=x,lock.y=1", "Conflicting parameters 'lock' and 'lock.y'", kConflictDetail);
    parse_error("lock.y=1,lock=x", "Conflicting parameters 'lock' and 'lock.y'", kConflictDetail);
    parse_error("a.b=1,a.b.c.d=2", "Conflicting parameters 'a.b' and 'a.b.c.d'", kConflictDetail);
    parse_error("a.b.c.d=2,a.b=1", "Conflicting parameters 'a.b' and 'a.b.c.d'", kConflictDetail);
    parse_error(std::string("file=a\0b", 8), "Options contain a NUL byte at offset 6");
    // Control characters in a named value are shown escaped.
    parse_error("a\tb=1", "Invalid parameter name 'a\\x09b'", kNameDetail);
}

void test_depth_and_size(void **) {
    std::string key = "a";
    for (int i = 1; i < kMaxOptionDepth; i++) key += ".a";
    OptionDict d = parse_ok(key + "=1");  // 32 levels: fine
    const OptionDict *cur = &d;
    for (int i = 1; i < kMaxOptionDepth; i++) cur = cur->dict("a");
    assert_string_equal(cur->get_str("a")->c_str(), "1");

    std::string deep = key + ".a";  // 33 levels, 65 characters: cut to 60 + "..."
    parse_error(deep + "=1", "Parameter '" + deep.substr(0, 60) + "...' is nested too deeply",
                kDepthDetail);

    // JSON: 32 nested objects are fine, 33 are not, and a pathological
    // nesting that would crash json-glib is refused before it gets there.
    std::string json = "{\"a\": 1}";
    for (int i = 1; i < kMaxOptionDepth; i++) json = "{\"a\": " + json + "}";
    d = parse_ok("json:" + json);
    parse_error("json:{\"a\": " + json + "}", "JSON options are nested too deeply", kDepthDetail);
    parse_error("json:" + std::string(200000, '['), "JSON options are nested too deeply",
                kDepthDetail);
    // Dotted keys inside JSON count too.
    parse_error("json:{\"" + deep + "\": 1}",
                "Parameter '" + deep.substr(0, 60) + "...' is nested too deeply", kDepthDetail);

    std::string big = "file=" + std::string(kMaxOptionsLength, 'x');
    parse_error(big, "Options too long (" + std::to_string(big.size()) + " bytes)",
                "At most 1048576 bytes are accepted");
}

// json-glib's own message for text, for the verbatim check.
std::string json_glib_message(const std::string &text) {
    JsonParser *p = json_parser_new();
    GError *err = nullptr;
    gboolean ok = json_parser_load_from_data(p, text.data(), static_cast<gssize>(text.size()), &err);
    assert_false(ok);
    std::string msg = err->message;
    g_error_free(err);
    g_object_unref(p);
    return msg;
}

void test_json_errors(void **) {
    const char *bad[] = {"{\"driver\": ", "{\"a\": 1,}", "{\"a\": 1} x", "{\"a\" 1}"};
    for (const char *b : bad)
        parse_error(std::string("json:") + b,
                    "Could not parse JSON options: " + json_glib_message(b));
    parse_error("json:{\"driver\": ",
                "Could not parse JSON options: <data>:1:11: Parse error: unexpected end of file, "
                "expected character `}'");
    const char *not_object = "Expected an object: json:{\"driver\": ..., ...}";
    parse_error("json:[1, 2]", "Invalid JSON options '[1, 2]'", not_object);
    parse_error("json:\"a.img\"", "Invalid JSON options '\"a.img\"'", not_object);
    parse_error("json:", "Invalid JSON options ''", not_object);
    parse_error("json:{\"lock\": \"off\", \"lock\": \"on\"}", "Duplicate parameter 'lock'");
    parse_error("json:{\"file\": {\"filename\": \"a\", \"filename\": \"b\"}}",
                "Duplicate parameter 'file.filename'");
    parse_error("json:{\"file\": {\"filename\": \"a\"}, \"file.filename\": \"b\"}",
                "Duplicate parameter 'file.filename'");
    parse_error("json:{\"file\": \"a\", \"file\": {\"x\": 1}, \"b\": {\"c\": 1}}",
                "Duplicate parameter 'file'");
    parse_error("json:{\"lock\": \"x\", \"lock.y\": 1}",
                "Conflicting parameters 'lock' and 'lock.y'", kConflictDetail);
    parse_error("json:{\"offset\": 1.5}", "Invalid value '1.5' for parameter 'offset'",
                "Numbers must be integers");
    parse_error("json:{\"a\": {\"b\": [1, 2]}}", "Invalid value '[1,2]' for parameter 'a.b'",
                "Lists are not supported");
    parse_error("json:{\"offset\": 99999999999999999999}",
                "Invalid number '99999999999999999999' in JSON options",
                "Numbers must be integers from -9223372036854775808 to 9223372036854775807");
    parse_error("json:{\"offset\": -9223372036854775809}",
                "Invalid number '-9223372036854775809' in JSON options",
                "Numbers must be integers from -9223372036854775808 to 9223372036854775807");
    parse_error("json:{\"file\": \"a.img\\u0000.evil\"}",
                "JSON options contain a NUL character (\\u0000)");
    parse_error("json:{\"a..b\": 1}", "Invalid parameter name 'a..b'", kNameDetail);
    parse_error("json:{\"\": 1}", "Invalid parameter name ''", kNameDetail);
    parse_error("json:{\"x\": {\"\": 1}}", "Invalid parameter name 'x.'", kNameDetail);

    // Edge values pass: extreme integers, null, booleans, empty objects, and
    // a "\u0000" lookalike that is really an escaped backslash.
    OptionDict d = parse_ok("json:{\"a\": -9223372036854775808, \"b\": 9223372036854775807, "
                            "\"c\": null, \"d\": false, \"e\": {}, \"f\": \"\\\\u0000\"}");
    assert_string_equal(d.to_json().c_str(),
                        "{\"a\": -9223372036854775808, \"b\": 9223372036854775807, \"c\": null, "
                        "\"d\": false, \"e\": {}, \"f\": \"\\\\u0000\"}");
    // The wrong JSON type for a field is a bad value, named.
    Status s = validate("json:{\"driver\": \"raw\", \"file\": \"a\", \"lock\": 3}", "raw");
    expect_error(s, "Invalid value '3' for parameter 'lock'", kLockValues);
    s = validate("json:{\"driver\": \"raw\", \"file\": \"a\", \"read-only\": \"maybe\"}", "raw");
    expect_error(s, "Invalid value 'maybe' for parameter 'read-only'", kBoolDetail);
    s = validate("json:{\"driver\": \"raw\", \"file\": \"a\", \"read-only\": 1}", "raw");
    expect_error(s, "Invalid value '1' for parameter 'read-only'", kBoolDetail);
    s = validate("json:{\"driver\": \"raw\", \"file\": \"a\", \"offset\": -1}", "raw");
    expect_error(s, "Invalid value '-1' for parameter 'offset'", kSizeDetail);
    s = validate("json:{\"driver\": \"raw\", \"file\": \"a\", \"node-name\": true}", "raw");
    expect_error(s, "Invalid value 'true' for parameter 'node-name'", "Expected a string");
    s = validate("json:{\"driver\": \"raw\", \"file\": \"a\", \"lock\": {\"x\": 1}}", "raw");
    expect_error(s, "Invalid value '{\"x\": 1}' for parameter 'lock'", kLockValues);
    s = validate("json:{\"driver\": \"raw\", \"file\": 7}", "raw");
    expect_error(s, "Invalid value '7' for parameter 'file'",
                 "Expected a filename, a node name or nested options");
}

// --- validation against block-core.json ---------------------------------------

void test_validate_errors(void **) {
    expect_error(validate("driver=raw,file=a,lokc=on", "raw"), "Invalid parameter 'lokc'",
                 kRawParams);
    expect_error(validate("driver=file,filename=a,lokc=on", "file", "file"),
                 "Invalid parameter 'file.lokc'", kFileParams);
    // The path may be given as a prefix, with its trailing dot.
    expect_error(validate("driver=file,filename=a,lokc=on", "file", "backing.file."),
                 "Invalid parameter 'backing.file.lokc'", kFileParams);
    expect_error(validate("driver=file,lock=off", "file", "file."),
                 "Parameter 'file.filename' is missing");
    expect_error(validate("lock=off", "", "backing."), "Parameter 'backing.driver' is missing");
    // An unknown key is reported before the missing key it probably is.
    expect_error(validate("driver=file,filname=a", "file"), "Invalid parameter 'filname'",
                 kFileParams);
    expect_error(validate("driver=raw,file=a,lock=exclusiv", "raw"),
                 "Invalid value 'exclusiv' for parameter 'lock'", kLockValues);
    expect_error(validate("driver=file,filename=a,lock=", "file", "backing.file"),
                 "Invalid value '' for parameter 'backing.file.lock'", kLockValues);
    expect_error(validate("driver=raw,file=a,cache=fast", "raw"),
                 "Invalid value 'fast' for parameter 'cache'",
                 "Valid values: writeback, none, writethrough, directsync, unsafe; or nested options");
    expect_error(validate("driver=raw,file=a,offset=12Q", "raw"),
                 "Invalid value '12Q' for parameter 'offset'", kSizeDetail);
    expect_error(validate("driver=raw,file=a,read-only=yes", "raw"),
                 "Invalid value 'yes' for parameter 'read-only'", kBoolDetail);
    expect_error(validate("driver=raw,file=a,lock-wait=soon", "raw"),
                 "Invalid value 'soon' for parameter 'lock-wait'", "Expected an integer");
    expect_error(validate("driver=raw,file=a,lock-wait=9223372036854775808", "raw"),
                 "Invalid value '9223372036854775808' for parameter 'lock-wait'",
                 "Expected an integer from -9223372036854775808 to 9223372036854775807");
    expect_error(validate("driver=file", "file"), "Parameter 'filename' is missing");
    expect_error(validate("driver=file,lock=off", "file", "backing.file"),
                 "Parameter 'backing.file.filename' is missing");
    expect_error(validate("driver=raw", "raw"), "Parameter 'file' is missing");
    expect_error(validate("lock=off", ""), "Parameter 'driver' is missing");
    expect_error(validate("lock=off", "", "backing"), "Parameter 'backing.driver' is missing");
    // The list grows with every driver: the exact text is pinned with the
    // test schema below; here, the library's list in the same shape.
    std::string valid = "Valid drivers: ";
    std::vector<std::string> sorted = schema_drivers();
    std::sort(sorted.begin(), sorted.end());
    for (auto &d : sorted) valid += (valid.size() > 15 ? ", " : "") + d;
    expect_error(validate("driver=qcow3,file=a", "qcow3"), "Unknown driver 'qcow3'", valid);
    expect_error(validate("driver=qcow3,file=a", "qcow3", "backing"),
                 "Unknown driver 'qcow3' for parameter 'backing.driver'", valid);
    expect_error(validate("driver=raw,file=a", "file"),
                 "Invalid value 'raw' for parameter 'driver'",
                 "This node is opened with driver 'file'");
    // The driver may come from probing: opts without "driver" are fine.
    OptionDict d = parse_ok("file=a.img,offset=1k");
    assert_true(validate_node_options(d, "raw").ok());
    assert_false(d.has("driver"));
    assert_int_equal(*d.get_int("offset"), 1024);
    // The file child is not descended into: its typos are its own driver's.
    d = parse_ok("driver=raw,file.driver=file,file.bogus=1");
    assert_true(validate_node_options(d, "raw").ok());
    expect_error(validate_node_options(*d.dict("file"), "file", "file"),
                 "Invalid parameter 'file.bogus'", kFileParams);
    // A string is a reference (filename or node name) left to the block layer.
    d = parse_ok("json:{\"driver\": \"raw\", \"file\": {\"filename\": \"x\"}}");
    d.dict("file")->erase("filename");
    d.set_str("file", "node0");
    assert_true(validate_node_options(d, "raw").ok());
}

void test_alias_canonicalization(void **) {
    OptionDict d = parse_valid("driver=raw,file=a,lock=none");
    assert_string_equal(d.get_str("lock")->c_str(), "off");
    d = parse_valid("driver=raw,file=a,lock=on");
    assert_string_equal(d.get_str("lock")->c_str(), "auto");
    d = parse_valid("driver=raw,file=a,lock=exclusive,cache=none");
    assert_string_equal(d.get_str("lock")->c_str(), "exclusive");
    assert_string_equal(d.get_str("cache")->c_str(), "none");  // a member, not an alias
    // The canonical name parses with the generated enum API.
    d = parse_valid("driver=file,filename=a,lock=none,aio=native,locking-api=posix,"
                    "lock-protocol=whole-file");
    assert_true(parse_LockMode(*d.get_str("lock")) == LockMode::Off);
    assert_true(parse_AioMode(*d.get_str("aio")) == AioMode::Native);
    assert_true(parse_LockingApi(*d.get_str("locking-api")) == LockingApi::Posix);
    assert_true(parse_LockProtocol(*d.get_str("lock-protocol")) == LockProtocol::WholeFile);
}

void test_sizes(void **) {
    struct {
        const char *text;
        int64_t bytes;
    } good[] = {
        {"0", 0}, {"512", 512}, {"64k", 65536}, {"64K", 65536}, {"1M", 1 << 20},
        {"1m", 1 << 20}, {"2G", int64_t(2) << 30}, {"1T", int64_t(1) << 40},
        {"1P", int64_t(1) << 50}, {"7E", int64_t(7) << 60},
        {"9223372036854775807", INT64_MAX}, {"8191P", int64_t(8191) << 50},
    };
    for (auto &g : good) {
        OptionDict d = parse_ok(std::string("driver=raw,file=a,offset=") + g.text);
        Status s = validate_node_options(d, "raw");
        if (!s.ok()) fail_msg("%s: %s", g.text, s.to_string().c_str());
        assert_int_equal(*d.get_int("offset"), g.bytes);
    }
    const char *bad[] = {"", "-1", "+1", "1.5G", "0x10", "1KB", "k", "1 M", " 1", "1Z"};
    for (const char *b : bad)
        expect_error(validate(std::string("driver=raw,file=a,size=") + b, "raw"),
                     std::string("Invalid value '") + b + "' for parameter 'size'", kSizeDetail);
    // The public parser the tools use for their size arguments.
    assert_int_equal(*parse_size("64k"), 65536);
    assert_true(*parse_size("7E") == int64_t(7) << 60);
    assert_false(parse_size("8E").has_value());
    assert_false(parse_size("-1").has_value());
    assert_false(parse_size("").has_value());
    const char *overflow[] = {"8E", "9223372036854775808", "8192P", "18446744073709551616",
                              "99999999999999999999999k"};
    for (const char *b : overflow)
        expect_error(validate(std::string("driver=raw,file=a,size=") + b, "raw"),
                     std::string("Invalid value '") + b + "' for parameter 'size'",
                     "Expected a size of at most 9223372036854775807 bytes");
}

void test_ints_and_bools(void **) {
    OptionDict d = parse_valid("driver=raw,file=a,lock-wait=-5");
    assert_int_equal(*d.get_int("lock-wait"), -5);
    d = parse_valid("driver=raw,file=a,lock-wait=0x10");
    assert_int_equal(*d.get_int("lock-wait"), 16);
    d = parse_valid("driver=raw,file=a,lock-wait=-9223372036854775808");
    assert_true(*d.get_int("lock-wait") == INT64_MIN);
    const char *bad[] = {"", "1.0", "1k", "0x", "--1", "12abc"};
    for (const char *b : bad)
        expect_error(validate(std::string("driver=raw,file=a,lock-wait=") + b, "raw"),
                     std::string("Invalid value '") + b + "' for parameter 'lock-wait'",
                     "Expected an integer");
    const char *yes[] = {"on", "true"}, *no[] = {"off", "false"};
    for (const char *y : yes)
        assert_true(*parse_valid(std::string("driver=raw,file=a,read-only=") + y).get_bool("read-only"));
    for (const char *n : no)
        assert_false(*parse_valid(std::string("driver=raw,file=a,read-only=") + n).get_bool("read-only"));
    // Validation is idempotent: typed values pass again unchanged.
    d = parse_valid("driver=raw,file=a,read-only=on,offset=1k,lock=none");
    OptionDict before = d;
    assert_true(validate_node_options(d, "raw").ok());
    assert_true(d == before);
}

// --- nested structs and unions (the test schema) ----------------------------------

void test_nested_union(void **) {
    OptionDict d = parse_ok("driver=nbd,server.type=unix,server.path=/tmp/s,export=e");
    assert_true(validate_test(d).ok());
    d = parse_ok("driver=nbd,server.type=tcp,server.host=h,server.port=10809");
    assert_true(validate_test(d).ok());
    assert_string_equal(d.dict("server")->get_str("type")->c_str(), "inet");  // alias
    d = parse_ok("json:{\"driver\": \"nbd\", \"server\": {\"type\": \"inet\", \"host\": \"h\", "
                 "\"port\": \"1\"}}");
    assert_true(validate_test(d).ok());

    expect_error(validate_test("driver=nbd,server.path=/tmp/s"),
                 "Parameter 'server.type' is missing");
    expect_error(validate_test("driver=nbd,server.type=vsock"),
                 "Invalid value 'vsock' for parameter 'server.type'",
                 "Valid values: inet, unix (aliases: tcp -> inet)");
    expect_error(validate_test("driver=nbd,server.type=unix,server.path=/s,server.host=h"),
                 "Invalid parameter 'server.host'",
                 "Valid parameters for 'server' with type=unix: path, type");
    expect_error(validate_test("driver=nbd,server.type=inet,server.host=h"),
                 "Parameter 'server.port' is missing");
    expect_error(validate_test("driver=nbd,server=/tmp/s"),
                 "Invalid value '/tmp/s' for parameter 'server'", "Expected nested options");
    expect_error(validate_test("driver=nbd"), "Parameter 'server' is missing");
    parse_error("driver=nbd,server.type=unix,server.path=/s,server.type=inet",
                "Duplicate parameter 'server.type'");
}

void test_nested_struct_and_alternates(void **) {
    OptionDict d = parse_ok("driver=nbd,server.type=unix,server.path=/s,tls.verify=off,"
                            "tls.handshake-max=4k,timeout=30");
    assert_true(validate_test(d).ok());
    assert_false(*d.dict("tls")->get_bool("verify"));
    assert_int_equal(*d.dict("tls")->get_int("handshake-max"), 4096);
    assert_int_equal(*d.get_int("timeout"), 30);
    d = parse_ok("driver=nbd,server.type=unix,server.path=/s,timeout=never");
    assert_true(validate_test(d).ok());
    assert_string_equal(d.get_str("timeout")->c_str(), "never");
    expect_error(validate_test("driver=nbd,server.type=unix,server.path=/s,timeout=soon"),
                 "Invalid value 'soon' for parameter 'timeout'",
                 "Expected one of: int, TimeoutMode");
    expect_error(validate_test("driver=nbd,server.type=unix,server.path=/s,tls.verify=maybe"),
                 "Invalid value 'maybe' for parameter 'tls.verify'", kBoolDetail);
    expect_error(validate_test("driver=nbd,server.type=unix,server.path=/s,tls.bogus=1"),
                 "Invalid parameter 'tls.bogus'", "Valid parameters for 'tls': creds, handshake-max, verify");
    // With a path, nested errors name the full key.
    d = parse_ok("driver=nbd,server.type=unix,server.path=/s,tls.handshake-max=1Q");
    expect_error(validate_node_options(d, "nbd", "backing.file", test::schema_tables),
                 "Invalid value '1Q' for parameter 'backing.file.tls.handshake-max'", kSizeDetail);

    // BlockdevRefOrNull: null, "null", a reference or options; never descended.
    d = parse_ok("driver=qcow2,file=a.qcow2,backing=null");
    assert_true(validate_test(d).ok());
    assert_true(d.is_null("backing"));
    d = parse_ok("json:{\"driver\": \"qcow2\", \"file\": \"a\", \"backing\": null}");
    assert_true(validate_test(d).ok());
    assert_true(d.is_null("backing"));
    d = parse_ok("driver=qcow2,file=a.qcow2,backing=base-node");
    assert_true(validate_test(d).ok());
    assert_string_equal(d.get_str("backing")->c_str(), "base-node");
    d = parse_ok("driver=qcow2,file=a.qcow2,backing.driver=qcow3,backing.nonsense=1");
    assert_true(validate_test(d).ok());
    expect_error(validate_test("json:{\"driver\": \"qcow2\", \"file\": \"a\", \"backing\": 1}"),
                 "Invalid value '1' for parameter 'backing'",
                 "Expected a filename, a node name, nested options or null");
    // BlockdevRef does not take null.
    expect_error(validate_test("json:{\"driver\": \"qcow2\", \"file\": null}"),
                 "Invalid value 'null' for parameter 'file'",
                 "Expected a filename, a node name or nested options");
    expect_error(validate_node_options(d, "vmdk", "", test::schema_tables),
                 "Unknown driver 'vmdk'", "Valid drivers: file, nbd, qcow2");
}

// --- drivers and help ---------------------------------------------------------

void test_drivers_and_help(void **) {
    // The schema and the driver list name the same drivers (one source of
    // truth for options, one explicit list for code): sorted, no gaps.
    // Plugin-ABI drivers linked in bring their options with them.
    mb::plugin_register_builtins();
    std::vector<std::string> drivers = schema_drivers();
    std::sort(drivers.begin(), drivers.end());
    std::vector<std::string> listed;
    for (const mb::BlockDriver *const *d = mb::block_drivers; *d; d++) listed.push_back((*d)->format_name);
    for (const mb::PluginDriver *pd : mb::plugin_drivers()) listed.push_back(pd->name);
    std::sort(listed.begin(), listed.end());
    listed.erase(std::unique(listed.begin(), listed.end()), listed.end());
    assert_int_equal(drivers.size(), listed.size());
    for (size_t i = 0; i < drivers.size(); i++) assert_string_equal(drivers[i].c_str(), listed[i].c_str());
    assert_string_equal(driver_options_help("qcow3").c_str(), "");

    std::string h = driver_options_help("raw");
    const char *want[] = {
        "Options for driver 'raw': The raw format: a pass-through window on its file\n",
        "  cache=<writeback|none|writethrough|directsync|unsafe or nested options>\n"
        "      host cache mode (inherited by children); or QEMU's cache.direct and cache.no-flush\n",
        "        writeback     use the host page cache (the default)\n",
        "  cache.direct=<bool>\n      bypass the host page cache (O_DIRECT) (default off)\n",
        "  cache.no-flush=<bool>\n",
        "  force-share=<bool>\n",
        "  discard=<ignore|unmap>\n",
        "  driver=<str> (required)\n",
        "  file=<filename, node name or nested options> (required)\n"
        "      the protocol node below\n"
        "      (file.<option>=... sets the child node's own options, as its driver documents them)\n",
        "  lock=<off|shared|auto|exclusive>\n",
        "        none       same as off\n        on         same as auto\n",
        "  offset=<size>\n      start of the window in the file (default 0)\n",
        "  read-only=<bool>\n",
        "  lock-wait=<int>\n",
    };
    for (const char *w : want)
        if (h.find(w) == std::string::npos) fail_msg("help lacks [%s] in:\n%s", w, h.c_str());
    // Sorted by name.
    assert_true(h.find("  cache=") < h.find("  driver=") && h.find("  offset=") < h.find("  size="));

    std::string n = driver_options_help("nbd", test::schema_tables);
    const char *nwant[] = {
        "  server=<nested options> (required)\n",
        "  server.type=<inet|unix> (required)\n",
        "  server.host=<str> (required, when server.type=inet)\n",
        "  server.path=<str> (required, when server.type=unix)\n",
        "  tls.verify=<bool>\n",
        "  timeout=<int or never>\n",
    };
    for (const char *w : nwant)
        if (n.find(w) == std::string::npos) fail_msg("help lacks [%s] in:\n%s", w, n.c_str());
    std::string q = driver_options_help("qcow2", test::schema_tables);
    assert_true(q.find("  backing=<filename, node name, nested options or null>\n") != std::string::npos);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dict_api),
        cmocka_unit_test(test_generated_enums),
        cmocka_unit_test(test_keyval),
        cmocka_unit_test(test_comma_escaping),
        cmocka_unit_test(test_bare_filename),
        cmocka_unit_test(test_keyval_equals_json),
        cmocka_unit_test(test_drive_sugar),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_depth_and_size),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_validate_errors),
        cmocka_unit_test(test_alias_canonicalization),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_ints_and_bools),
        cmocka_unit_test(test_nested_union),
        cmocka_unit_test(test_nested_struct_and_alternates),
        cmocka_unit_test(test_drivers_and_help),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
