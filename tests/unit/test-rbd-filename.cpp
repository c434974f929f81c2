// rbd: filenames, as QEMU spells them, parsed without a cluster: every part,
// the escapes, and each bad input with its own message.
#include <string>

#include "block/drivers/rbd-conn.h"

// cmocka last: its fail() macro would break the C++ headers.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

using namespace mb;

namespace {

void test_good_names(void **) {
    rbd::Spec s;
    assert_true(rbd::parse_filename("rbd:pool/img", &s).ok());
    assert_string_equal(s.pool.c_str(), "pool");
    assert_string_equal(s.image.c_str(), "img");
    assert_true(s.snapshot.empty() && s.conf.empty() && s.user.empty());
    assert_string_equal(s.describe().c_str(), "rbd:pool/img");

    rbd::Spec t;
    assert_true(rbd::parse_filename("rbd:p/i@snap1:conf=/etc/c.conf:id=bob", &t).ok());
    assert_string_equal(t.snapshot.c_str(), "snap1");
    assert_string_equal(t.conf.c_str(), "/etc/c.conf");
    assert_string_equal(t.user.c_str(), "bob");
    assert_string_equal(t.describe().c_str(), "rbd:p/i@snap1");

    // '\' escapes the separators inside names and values.
    rbd::Spec u;
    assert_true(rbd::parse_filename("rbd:p/a\\:b\\@c:conf=/x\\:y", &u).ok());
    assert_string_equal(u.image.c_str(), "a:b@c");
    assert_string_equal(u.conf.c_str(), "/x:y");
}

void expect_bad(const char *fn, const char *detail) {
    rbd::Spec s;
    Status st = rbd::parse_filename(fn, &s);
    assert_false(st.ok());
    assert_string_equal(st.message().c_str(), (std::string("Invalid rbd filename '") + fn + "'").c_str());
    assert_string_equal(
        st.detail().c_str(),
        (std::string(detail) + "; expected rbd:POOL/IMAGE[@SNAPSHOT][:conf=PATH][:id=USER]").c_str());
}

void test_bad_names(void **) {
    expect_bad("rbd:", "The pool name is missing");
    expect_bad("rbd:/img", "The pool name is missing");
    expect_bad("rbd:pool", "The image name is missing");
    expect_bad("rbd:pool/", "The image name is missing");
    expect_bad("rbd:pool/ns/img", "RBD namespaces (POOL/NAMESPACE/IMAGE) are not supported");
    expect_bad("rbd:pool/img@", "The snapshot name after '@' is missing");
    expect_bad("rbd:pool/img:conf", "'conf' is not KEY=VALUE");
    expect_bad("rbd:pool/img:=x", "'=x' is not KEY=VALUE");
    expect_bad("rbd:pool/img:conf=", "The value of 'conf' is empty");
    expect_bad("rbd:pool/img:id=a:id=b", "'id' is given twice");
    expect_bad("rbd:pool/img:mon_host=1.2.3.4", "Unknown key 'mon_host' (known: conf, id)");
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_names),
        cmocka_unit_test(test_bad_names),
    };
    return cmocka_run_group_tests_name("rbd-filename", tests, nullptr, nullptr);
}
