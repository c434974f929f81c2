// miniblock-scenario: runs lock scenarios with real processes.
//
// A scenario file names images to create, actors (each a separate process:
// a miniblock-io or qemu-io driven over a pipe, a long-running daemon such as
// qemu-nbd, or one-shot command lines) and steps, each with the outcome it
// expects.  docs/tools/miniblock-scenario.md describes the format.
//
// Every wait has a deadline and every spawned process lives in its own
// process group, killed at the end (also when we are killed by a signal):
// a scenario can fail, never hang or leave processes behind.
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "block/locking/holders.h"
#include "tools/tool-common.h"

namespace {

const char *const prog = "miniblock-scenario";

void usage(FILE *out) {
    fprintf(out,
            "Usage: miniblock-scenario [--tap] [--keep] [--wide] FILE...\n"
            "Run lock scenarios: images, actors (separate processes) and steps with their\n"
            "expected outcomes (docs/tools/miniblock-scenario.md describes the format).\n"
            "\n"
            "Options:\n"
            "  --tap       print TAP (one test point per image and step; the table as comments)\n"
            "  --keep      keep each scenario's working directory\n"
            "  --wide      never cut the table's cells (commands and replies of any length)\n"
            "  -h, --help  show this help\n"
            "  -V, --version  show the version\n"
            "\n"
            "The exit status is 0 when every step had its expected outcome, 1 when one did\n"
            "not, 2 when a scenario file is invalid.\n");
}

using Clock = std::chrono::steady_clock;

// ---- processes --------------------------------------------------------------

// Process groups to kill if we are killed (async-signal-safe access only).
constexpr int kMaxGroups = 256;
volatile pid_t g_groups[kMaxGroups];

void on_fatal_signal(int sig) {
    for (int i = 0; i < kMaxGroups; i++)
        if (g_groups[i] > 0) kill(-g_groups[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

void track_group(pid_t pid) {
    for (int i = 0; i < kMaxGroups; i++)
        if (g_groups[i] == 0) {
            g_groups[i] = pid;
            return;
        }
}

void untrack_group(pid_t pid) {
    for (int i = 0; i < kMaxGroups; i++)
        if (g_groups[i] == pid) g_groups[i] = 0;
}

std::string tool_dir;

// miniblock-img and miniblock-io are the ones built next to us (or named by
// $MINIBLOCK_IMG/$MINIBLOCK_IO); anything else comes from PATH.
std::string resolve_program(const std::string &name) {
    const char *env = name == "miniblock-img" ? getenv("MINIBLOCK_IMG")
                      : name == "miniblock-io" ? getenv("MINIBLOCK_IO")
                                               : nullptr;
    if (env && *env) return env;
    if (name.rfind("miniblock-", 0) == 0 && !tool_dir.empty()) {
        std::string p = tool_dir + "/" + name;
        if (access(p.c_str(), X_OK) == 0) return p;
    }
    return name;
}

// "$DIR" in a command is the scenario's working directory (for programs
// that want absolute paths, such as qemu-nbd's --socket).
std::string subst_dir(std::string s, const std::string &dir) {
    for (size_t at; (at = s.find("$DIR")) != std::string::npos;) s.replace(at, 4, dir);
    return s;
}

struct Proc {
    pid_t pid = -1;
    int in = -1;   // its stdin (-1 once closed)
    int out = -1;  // its stdout and stderr
    std::string buf;  // read but not yet consumed
    bool eof = false;
    int status = -1;  // wait status once reaped

    bool running() const { return pid > 0 && status < 0; }
};

// Starts argv in `dir` with stdout and stderr on one pipe; with `pipe_in`,
// stdin is a pipe too (else /dev/null).
std::optional<Proc> spawn(const std::vector<std::string> &argv, const std::string &dir,
                          bool pipe_in, std::string *err) {
    int inp[2] = {-1, -1}, outp[2];
    if (pipe_in && pipe2(inp, O_CLOEXEC) < 0) {
        *err = std::string("pipe: ") + strerror(errno);
        return std::nullopt;
    }
    if (pipe2(outp, O_CLOEXEC) < 0) {
        *err = std::string("pipe: ") + strerror(errno);
        if (pipe_in) close(inp[0]), close(inp[1]);
        return std::nullopt;
    }
    std::vector<std::string> args = argv;
    for (auto &a : args) a = subst_dir(a, dir);
    args[0] = resolve_program(args[0]);
    std::vector<char *> cargv;
    for (auto &a : args) cargv.push_back(a.data());
    cargv.push_back(nullptr);

    pid_t pid = fork();
    if (pid < 0) {
        *err = std::string("fork: ") + strerror(errno);
        return std::nullopt;
    }
    if (pid == 0) {
        setpgid(0, 0);
        int in = pipe_in ? inp[0] : open("/dev/null", O_RDONLY);
        dup2(in, 0);
        dup2(outp[1], 1);
        dup2(outp[1], 2);
        if (chdir(dir.c_str()) < 0) _exit(126);
        execvp(cargv[0], cargv.data());
        dprintf(2, "%s: cannot run %s: %s\n", prog, cargv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);  // both sides, so no kill can miss the group
    track_group(pid);
    Proc p;
    p.pid = pid;
    if (pipe_in) {
        close(inp[0]);
        p.in = inp[1];
    }
    close(outp[1]);
    p.out = outp[0];
    fcntl(p.out, F_SETFL, O_NONBLOCK);
    return p;
}

// Reads what is there, waiting at most until `deadline`; false on timeout.
bool read_some(Proc &p, Clock::time_point deadline) {
    if (p.eof) return true;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    struct pollfd pfd = {p.out, POLLIN, 0};
    int r = poll(&pfd, 1, (int)std::min<int64_t>(left.count(), 1000));
    if (r < 0 && errno != EINTR) return false;
    if (r <= 0) return Clock::now() < deadline;
    char tmp[4096];
    ssize_t n = read(p.out, tmp, sizeof(tmp));
    if (n > 0) p.buf.append(tmp, n);
    else if (n == 0 || (errno != EAGAIN && errno != EINTR)) p.eof = true;
    return true;
}

void reap(Proc &p, bool block) {
    if (p.pid <= 0 || p.status >= 0) return;
    int st;
    if (waitpid(p.pid, &st, block ? 0 : WNOHANG) == p.pid) {
        p.status = st;
        untrack_group(p.pid);
    }
}

// Waits until p exits (its output read to EOF); false on timeout.
bool wait_exit(Proc &p, Clock::time_point deadline) {
    while (!p.eof)
        if (!read_some(p, deadline)) return false;
    while (p.status < 0) {
        reap(p, false);
        if (p.status >= 0) break;
        if (Clock::now() >= deadline) return false;
        usleep(10000);
    }
    return true;
}

// Ends p and everything it started: closes its stdin, TERM, then KILL.
void stop(Proc &p, double grace_s = 2.0) {
    if (p.in >= 0) close(p.in), p.in = -1;
    if (p.pid > 0 && p.status < 0) {
        kill(-p.pid, SIGTERM);
        auto deadline = Clock::now() + std::chrono::milliseconds((int)(grace_s * 1000));
        while (p.status < 0 && Clock::now() < deadline) {
            reap(p, false);
            if (p.status < 0) usleep(10000);
        }
        if (p.status < 0) {
            kill(-p.pid, SIGKILL);
            reap(p, true);
        }
    }
    if (p.pid > 0) {
        kill(-p.pid, SIGKILL);  // stragglers in its group
        untrack_group(p.pid);
    }
    if (p.out >= 0) close(p.out), p.out = -1;
}

std::string exit_text(int status) {
    if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return "exited";
}

// ---- the scenario file --------------------------------------------------------

// Splits a command line into words: spaces separate, '...' and "..." quote,
// backslash escapes the next character outside single quotes.
std::optional<std::vector<std::string>> shell_words(const std::string &s, std::string *err) {
    std::vector<std::string> out;
    std::string cur;
    bool have = false;
    char quote = 0;
    for (size_t i = 0; i < s.size(); i++) {
        char c = s[i];
        if (quote) {
            if (c == quote) quote = 0;
            else if (c == '\\' && quote == '"' && i + 1 < s.size()) cur += s[++i];
            else cur += c;
        } else if (c == '\'' || c == '"') {
            quote = c;
            have = true;
        } else if (c == '\\' && i + 1 < s.size()) {
            cur += s[++i];
            have = true;
        } else if (isspace((unsigned char)c)) {
            if (have) out.push_back(cur), cur.clear(), have = false;
        } else {
            cur += c;
            have = true;
        }
    }
    if (quote) {
        *err = std::string("unterminated ") + quote + " quote";
        return std::nullopt;
    }
    if (have) out.push_back(cur);
    return out;
}

enum class ActorKind { MiniblockIo, QemuIo, Daemon, Run };

struct Actor {
    std::string name;
    ActorKind kind;
    std::vector<std::string> argv;  // pipe actors and daemons
    std::string watch;              // daemons: the image whose locks mean "ready"
    Proc proc;
    bool started = false;
};

struct Expect {
    bool ok = true;
    std::optional<std::regex> error_re, output_re;
    std::string error_src, output_src;
};

struct Step {
    int line = 0;
    std::string actor;
    std::string command;
    Expect expect;
};

struct ImageDef {
    int line = 0;
    std::vector<std::string> argv;  // the creating command
};

struct Scenario {
    std::string file;
    std::string title;
    std::vector<std::string> cites;
    int timeout_s = 10;
    std::vector<ImageDef> images;
    std::vector<std::unique_ptr<Actor>> actors;
    std::vector<std::string> actor_order;  // declaration order, started in it
    std::vector<Step> steps;

    Actor *actor(const std::string &n) {
        for (auto &a : actors)
            if (a->name == n) return a.get();
        return nullptr;
    }
};

std::string trim(const std::string &s) {
    size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Parses "/REGEX/" at s[*pos]; advances *pos past it.
bool parse_regex(const std::string &s, size_t *pos, std::string *src, std::regex *re,
                 std::string *err) {
    while (*pos < s.size() && isspace((unsigned char)s[*pos])) ++*pos;
    if (*pos >= s.size() || s[*pos] != '/') {
        *err = "expected /REGEX/";
        return false;
    }
    std::string r;
    size_t i = *pos + 1;
    for (; i < s.size() && s[i] != '/'; i++) {
        if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == '/') r += s[++i];
        else if (s[i] == '\\' && i + 1 < s.size()) r += s[i], r += s[++i];
        else r += s[i];
    }
    if (i >= s.size()) {
        *err = "unterminated /REGEX/";
        return false;
    }
    *pos = i + 1;
    try {
        *re = std::regex(r, std::regex::ECMAScript);
    } catch (const std::regex_error &e) {
        *err = "invalid regular expression /" + r + "/: " + e.what();
        return false;
    }
    *src = r;
    return true;
}

bool parse_expect(const std::string &s, Expect *e, std::string *err) {
    size_t pos = 0;
    auto word = [&]() {
        while (pos < s.size() && isspace((unsigned char)s[pos])) pos++;
        size_t b = pos;
        while (pos < s.size() && !isspace((unsigned char)s[pos]) && s[pos] != '/') pos++;
        return s.substr(b, pos - b);
    };
    std::string w = word();
    if (w == "ok") {
        e->ok = true;
    } else if (w == "error") {
        e->ok = false;
        size_t save = pos;
        while (pos < s.size() && isspace((unsigned char)s[pos])) pos++;
        if (pos < s.size() && s[pos] == '/') {
            std::regex re;
            if (!parse_regex(s, &pos, &e->error_src, &re, err)) return false;
            e->error_re = re;
        } else {
            pos = save;
        }
    } else {
        *err = "expected 'ok' or 'error' after '=>', not '" + w + "'";
        return false;
    }
    w = word();
    if (w == "output") {
        std::regex re;
        if (!parse_regex(s, &pos, &e->output_src, &re, err)) return false;
        e->output_re = re;
        w = word();
    }
    if (!w.empty()) {
        *err = "unexpected '" + w + "' after the expected outcome";
        return false;
    }
    return true;
}

bool valid_name(const std::string &n) {
    if (n.empty()) return false;
    for (char c : n)
        if (!isalnum((unsigned char)c) && c != '-' && c != '_') return false;
    return true;
}

std::optional<Scenario> parse_scenario(const std::string &file, std::string *err) {
    std::ifstream in(file);
    if (!in) {
        *err = file + ": cannot open: " + strerror(errno);
        return std::nullopt;
    }
    Scenario sc;
    sc.file = file;
    std::string raw;
    int lineno = 0;
    auto fail = [&](const std::string &m) {
        *err = file + ":" + std::to_string(lineno) + ": " + m;
        return std::nullopt;
    };
    while (std::getline(in, raw)) {
        lineno++;
        std::string line = trim(raw);
        if (line.empty() || line[0] == '#') continue;
        size_t sp = line.find_first_of(" \t");
        std::string kw = line.substr(0, sp);
        std::string rest = sp == std::string::npos ? "" : trim(line.substr(sp));
        if (kw == "title") {
            sc.title = rest;
        } else if (kw == "cite") {
            sc.cites.push_back(rest);
        } else if (kw == "timeout") {
            char *end;
            long v = strtol(rest.c_str(), &end, 10);
            if (rest.empty() || *end || v < 1 || v > 600)
                return fail("invalid timeout '" + rest + "': expected seconds from 1 to 600");
            sc.timeout_s = (int)v;
        } else if (kw == "image") {
            auto w = shell_words(rest, err);
            if (!w) return fail(*err);
            if (w->size() < 3) return fail("expected: image FILE FORMAT SIZE [backing=FILE] [with=TOOL]");
            const std::string &name = (*w)[0], &fmt = (*w)[1], &size = (*w)[2];
            std::string backing, backing_fmt = "raw", with;
            for (size_t i = 3; i < w->size(); i++) {
                const std::string &o = (*w)[i];
                if (o.rfind("backing=", 0) == 0) backing = o.substr(8);
                else if (o.rfind("backing-format=", 0) == 0) backing_fmt = o.substr(15);
                else if (o.rfind("with=", 0) == 0) with = o.substr(5);
                else return fail("unknown image option '" + o + "'");
            }
            if (with.empty()) with = fmt == "raw" && backing.empty() ? "miniblock-img" : "qemu-img";
            if (with != "miniblock-img" && with != "qemu-img")
                return fail("invalid with='" + with + "': expected miniblock-img or qemu-img");
            ImageDef d;
            d.line = lineno;
            d.argv = {with, "create", "-f", fmt};
            if (!backing.empty()) {
                d.argv.insert(d.argv.end(), {"-b", backing});
                if (with == "qemu-img") d.argv.insert(d.argv.end(), {"-F", backing_fmt});
            }
            d.argv.push_back(name);
            if (size != "-") d.argv.push_back(size);
            sc.images.push_back(d);
        } else if (kw == "actor") {
            auto w = shell_words(rest, err);
            if (!w) return fail(*err);
            if (w->size() < 2) return fail("expected: actor NAME KIND [ARGS...]");
            auto a = std::make_unique<Actor>();
            a->name = (*w)[0];
            if (!valid_name(a->name)) return fail("invalid actor name '" + a->name + "'");
            if (sc.actor(a->name)) return fail("actor '" + a->name + "' is declared twice");
            const std::string &kind = (*w)[1];
            std::vector<std::string> args(w->begin() + 2, w->end());
            if (kind == "miniblock-io") {
                a->kind = ActorKind::MiniblockIo;
                a->argv = {"miniblock-io"};
                a->argv.insert(a->argv.end(), args.begin(), args.end());
            } else if (kind == "qemu-io") {
                a->kind = ActorKind::QemuIo;
                a->argv = {"qemu-io"};
                a->argv.insert(a->argv.end(), args.begin(), args.end());
            } else if (kind == "daemon") {
                a->kind = ActorKind::Daemon;
                if (args.size() < 2) return fail("expected: actor NAME daemon IMAGE COMMAND...");
                a->watch = args[0];
                a->argv.assign(args.begin() + 1, args.end());
            } else if (kind == "run") {
                a->kind = ActorKind::Run;
                if (!args.empty()) return fail("a run actor takes no arguments");
            } else {
                return fail("unknown actor kind '" + kind +
                            "': expected miniblock-io, qemu-io, daemon or run");
            }
            sc.actor_order.push_back(a->name);
            sc.actors.push_back(std::move(a));
        } else if (kw.size() > 1 && kw.back() == ':') {
            Step st;
            st.line = lineno;
            st.actor = kw.substr(0, kw.size() - 1);
            Actor *a = sc.actor(st.actor);
            if (!a) return fail("unknown actor '" + st.actor + "'");
            size_t arrow = rest.rfind("=>");
            if (arrow == std::string::npos) return fail("expected '=> ok' or '=> error /REGEX/'");
            st.command = trim(rest.substr(0, arrow));
            if (st.command.empty()) return fail("empty command");
            if (!parse_expect(rest.substr(arrow + 2), &st.expect, err)) return fail(*err);
            if (a->kind == ActorKind::Daemon && st.command != "start" && st.command != "stop")
                return fail("a daemon actor's steps are 'start' and 'stop'");
            sc.steps.push_back(std::move(st));
        } else {
            return fail("unknown line '" + kw + "'");
        }
    }
    if (sc.steps.empty()) {
        *err = file + ": no steps";
        return std::nullopt;
    }
    return sc;
}

// ---- running ----------------------------------------------------------------

struct Outcome {
    bool ok = false;
    std::string output;
    std::string note;  // "timeout", "exit 1", ...
};

// The prompt qemu-io prints (without a newline) when it waits for a command.
const std::string kQemuPrompt = "qemu-io> ";

// Waits for a pipe actor's reply: up to "[ok]"/"[error]" for miniblock-io, up
// to the next prompt for qemu-io.
Outcome wait_reply(Actor &a, Clock::time_point deadline) {
    Outcome o;
    Proc &p = a.proc;
    for (;;) {
        if (a.kind == ActorKind::MiniblockIo) {
            for (const char *tag : {"[ok]\n", "[error]\n"}) {
                size_t at = p.buf.rfind(tag);
                if (at != std::string::npos && (at == 0 || p.buf[at - 1] == '\n')) {
                    o.ok = tag[1] == 'o';
                    o.output = p.buf.substr(0, at);
                    p.buf.erase(0, at + strlen(tag));
                    return o;
                }
            }
        } else {
            size_t at = p.buf.find(kQemuPrompt);
            if (at != std::string::npos) {
                o.output = p.buf.substr(0, at);
                p.buf.erase(0, at + kQemuPrompt.size());
                // qemu-io says nothing about success; its failures all print
                // one of these words.
                static const std::regex failed(
                    "fail|error|can't|cannot|not permitted|denied|not found|Invalid",
                    std::regex::icase);
                o.ok = !std::regex_search(o.output, failed);
                return o;
            }
        }
        if (p.eof) {
            reap(p, false);
            wait_exit(p, deadline);
            o.output = p.buf;
            p.buf.clear();
            o.note = p.status >= 0 ? exit_text(p.status) : "closed its output";
            o.ok = false;
            return o;
        }
        if (!read_some(p, deadline)) {
            o.output = p.buf;
            p.buf.clear();
            o.note = "timeout";
            return o;
        }
    }
}

Outcome run_oneshot(const std::vector<std::string> &argv, const std::string &dir,
                    Clock::time_point deadline) {
    Outcome o;
    std::string err;
    auto p = spawn(argv, dir, false, &err);
    if (!p) {
        o.note = err;
        return o;
    }
    bool done = wait_exit(*p, deadline);
    o.output = p->buf;
    if (!done) {
        o.note = "timeout";
        stop(*p, 0.5);
        return o;
    }
    o.ok = WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
    if (!o.ok) o.note = exit_text(p->status);
    stop(*p);
    return o;
}

bool holds_lock(pid_t pid, const std::string &path) {
    struct stat st;
    if (stat(path.c_str(), &st) < 0) return false;
    for (const auto &h : mb::find_lock_holders(st.st_dev, st.st_ino))
        if (h.pid == pid) return true;
    return false;
}

// A daemon is ready once it holds a lock on its image; if it exits first,
// that is its answer.
Outcome start_daemon(Actor &a, const std::string &dir, Clock::time_point deadline) {
    Outcome o;
    std::string err;
    auto p = spawn(a.argv, dir, false, &err);
    if (!p) {
        o.note = err;
        return o;
    }
    a.proc = std::move(*p);
    a.started = true;
    std::string watch = a.watch[0] == '/' ? a.watch : dir + "/" + a.watch;
    for (;;) {
        reap(a.proc, false);
        if (!a.proc.running()) {
            wait_exit(a.proc, deadline);
            o.output = a.proc.buf;
            o.note = exit_text(a.proc.status);
            return o;
        }
        if (holds_lock(a.proc.pid, watch)) {
            o.ok = true;
            return o;
        }
        if (Clock::now() >= deadline) {
            o.note = "timeout: no lock on " + a.watch;
            return o;
        }
        read_some(a.proc, std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
    }
}

// "A (pid 123)", "pid 77 (qemu-img)", "node 'd0' of A": who a refusal names.
std::string holders_of(const std::string &output, const Scenario &sc) {
    static const std::regex held("Held by (node '[^']*' of this process \\(pid (\\d+)\\)|"
                                 "pid (\\d+)( \\([^)]*\\))?|a process not visible[^;]*)");
    std::string out;
    for (auto it = std::sregex_iterator(output.begin(), output.end(), held);
         it != std::sregex_iterator(); ++it) {
        const auto &m = *it;
        std::string pidtxt = m[2].matched ? m[2].str() : m[3].str();
        std::string who = m[1].str();
        if (!pidtxt.empty()) {
            pid_t pid = atoi(pidtxt.c_str());
            for (auto &a : sc.actors) {
                if (a->proc.pid != pid) continue;
                if (m[2].matched) {
                    size_t q = who.find('\'', 6);
                    who = who.substr(0, q + 1) + " of " + a->name;
                } else {
                    who = a->name + " (pid " + pidtxt + ")";
                }
            }
        } else if (m[1].str().rfind("a process not visible", 0) == 0) {
            who = "not visible";
        }
        if (out.find(who) != std::string::npos) continue;
        if (!out.empty()) out += ", ";
        out += who;
    }
    if (out.empty() && output.find(mb::kNoVisibleHolder) != std::string::npos) out = "not visible";
    return out;
}

// --wide: the table's cells are never cut (a command or a reply of any
// length is shown whole; columns then no longer line up).
bool wide_table = false;

std::string one_line(std::string s, size_t max) {
    for (char &c : s)
        if (c == '\n' || c == '\t') c = ' ';
    s = trim(s);
    if (!wide_table && s.size() > max) s = s.substr(0, max - 3) + "...";
    return s;
}

struct Reporter {
    bool tap = false;
    int n = 0;        // TAP points: setup lines and steps
    int steps = 0;    // numbered steps only
    int failed = 0;   // steps that mismatched
    int setup_failed = 0;

    void comment(const std::string &s) {
        if (tap) printf("# %s\n", s.c_str());
        else printf("%s\n", s.c_str());
    }
    void header() {
        comment(fmt_row("step", "actor", "command", "expected", "got", "holders"));
    }
    static std::string fmt_row(const std::string &step, const std::string &actor,
                               const std::string &cmd, const std::string &exp,
                               const std::string &got, const std::string &holders) {
        auto pad = [](std::string v, size_t w) {
            if (v.size() < w) v.resize(w, ' ');
            return v;
        };
        std::string s = pad(step, 5) + " " + pad(one_line(actor, 8), 8) + " " + pad(one_line(cmd, 44), 44) + " " +
                        pad(one_line(exp, 24), 24) + " " + pad(one_line(got, 24), 24) + " " + one_line(holders, 80);
        return trim(s);
    }
    // numbered: a step of the scenario (else a setup line: an image, an actor).
    void point(bool pass, const std::string &desc, const std::string &row,
               const std::vector<std::string> &diag, bool numbered = true) {
        n++;
        if (numbered) steps++;
        if (!pass) (numbered ? failed : setup_failed)++;
        if (tap) {
            printf("# %s\n", row.c_str());
            printf("%s %d - %s\n", pass ? "ok" : "not ok", n, one_line(desc, 160).c_str());
        } else {
            printf("%s%s\n", row.c_str(), pass ? "" : "   <-- MISMATCH");
        }
        if (!pass)
            for (auto &d : diag) printf("#   %s\n", d.c_str());
        fflush(stdout);
    }
};

std::string indent_output(const std::string &out) {
    std::string s;
    size_t b = 0;
    int lines = 0;
    while (b < out.size() && lines < 12) {
        size_t e = out.find('\n', b);
        if (e == std::string::npos) e = out.size();
        if (!s.empty()) s += "\n#     ";
        s += out.substr(b, e - b);
        b = e + 1;
        lines++;
    }
    return s;
}

void run_scenario(Scenario &sc, Reporter &rep, bool keep) {
    char tmpl[] = "/tmp/mb-scenario.XXXXXX";
    if (!mkdtemp(tmpl)) {
        rep.point(false, sc.file + ": working directory", "", {std::string("mkdtemp: ") + strerror(errno)}, false);
        return;
    }
    const std::string dir = tmpl;
    const auto timeout = std::chrono::seconds(sc.timeout_s);

    rep.comment("== " + sc.file + (sc.title.empty() ? "" : ": " + sc.title));
    for (auto &c : sc.cites) rep.comment("   reproduces: " + c);
    rep.header();

    bool setup_ok = true;
    for (auto &img : sc.images) {
        std::string cmd;
        for (auto &w : img.argv) cmd += (cmd.empty() ? "" : " ") + w;
        Outcome o = run_oneshot(img.argv, dir, Clock::now() + timeout);
        std::string row = Reporter::fmt_row("img", "-", cmd, "ok", o.ok ? "ok" : "error " + o.note, "");
        rep.point(o.ok, "line " + std::to_string(img.line) + ": " + cmd, row,
                  {"output: " + indent_output(o.output)}, false);
        setup_ok &= o.ok;
    }
    // Pipe actors start now, in order of declaration, and wait for their
    // first prompt (qemu-io) so that every step starts from a quiet process.
    for (auto &name : sc.actor_order) {
        if (!setup_ok) break;
        Actor &a = *sc.actor(name);
        if (a.kind != ActorKind::MiniblockIo && a.kind != ActorKind::QemuIo) continue;
        std::string err;
        auto p = spawn(a.argv, dir, true, &err);
        if (!p) {
            rep.point(false, "start actor " + name, "", {err}, false);
            setup_ok = false;
            break;
        }
        a.proc = std::move(*p);
        a.started = true;
        if (a.kind == ActorKind::QemuIo) {
            Outcome o = wait_reply(a, Clock::now() + timeout);
            if (!o.note.empty()) {
                rep.point(false, "start actor " + name, "",
                          {"qemu-io did not prompt: " + o.note, "output: " + indent_output(o.output)}, false);
                setup_ok = false;
            }
        }
    }

    for (size_t i = 0; i < sc.steps.size() && setup_ok; i++) {
        Step &st = sc.steps[i];
        Actor &a = *sc.actor(st.actor);
        const auto deadline = Clock::now() + timeout;
        Outcome o;
        if (a.kind == ActorKind::Run) {
            std::string err;
            auto w = shell_words(st.command, &err);
            if (!w || w->empty()) o.note = w ? "empty command" : err;
            else o = run_oneshot(*w, dir, deadline);
        } else if (a.kind == ActorKind::Daemon) {
            if (st.command == "start") {
                if (a.started && a.proc.running()) o.note = "already running";
                else o = start_daemon(a, dir, deadline);
            } else {
                if (!a.started) {
                    o.note = "not started";
                } else {
                    stop(a.proc);
                    o.ok = true;
                    o.output = a.proc.buf;
                }
            }
        } else if (a.proc.running() && a.proc.in >= 0) {
            std::string line = subst_dir(st.command, dir) + "\n";
            // Dead readers must not kill us with SIGPIPE.
            if (write(a.proc.in, line.data(), line.size()) != (ssize_t)line.size()) {
                o.note = std::string("cannot send the command: ") + strerror(errno);
            } else if (st.command == "quit" || st.command == "q") {
                wait_exit(a.proc, deadline);
                o.output = a.proc.buf;
                a.proc.buf.clear();
                o.ok = a.proc.status >= 0 && WIFEXITED(a.proc.status) && WEXITSTATUS(a.proc.status) == 0;
                if (a.kind == ActorKind::QemuIo) o.ok = a.proc.status >= 0;
                if (!o.ok) o.note = a.proc.status >= 0 ? exit_text(a.proc.status) : "timeout";
            } else {
                o = wait_reply(a, deadline);
                // A late reply would be taken for the next step's: a
                // process that missed its deadline is done for.
                if (o.note == "timeout") stop(a.proc, 0.5);
            }
        } else {
            o.note = "the process is gone" +
                     (a.proc.status >= 0 ? " (" + exit_text(a.proc.status) + ")" : std::string());
        }

        const Expect &e = st.expect;
        bool pass = o.ok == e.ok;
        std::vector<std::string> diag;
        if (pass && !e.ok && e.error_re && !std::regex_search(o.output, *e.error_re)) {
            pass = false;
            diag.push_back("the error does not match /" + e.error_src + "/");
        }
        if (pass && e.output_re && !std::regex_search(o.output, *e.output_re)) {
            pass = false;
            diag.push_back("the output does not match /" + e.output_src + "/");
        }
        if (!o.note.empty()) diag.push_back("process: " + o.note);
        diag.push_back("output: " + indent_output(o.output));

        std::string expected = e.ok ? "ok" : "error";
        if (!e.ok && e.error_re) expected += " /" + e.error_src + "/";
        if (e.output_re) expected += " out /" + e.output_src + "/";
        std::string got = o.ok ? "ok" : "error";
        if (!o.ok) {
            // The line of the reply that says what went wrong.
            std::string why = o.output.substr(0, o.output.find('\n'));
            size_t f = o.output.find("Failed");
            if (f != std::string::npos) why = o.output.substr(f, o.output.find('\n', f) - f);
            got += ": " + (o.note.empty() ? why : o.note + (why.empty() ? "" : ", " + why));
        }
        std::string row = Reporter::fmt_row(std::to_string(i + 1), st.actor, st.command, expected,
                                            got, o.ok ? "" : holders_of(o.output, sc));
        rep.point(pass, sc.file + ":" + std::to_string(st.line) + " " + st.actor + ": " + st.command,
                  row, diag);
    }

    for (auto it = sc.actor_order.rbegin(); it != sc.actor_order.rend(); ++it) {
        Actor &a = *sc.actor(*it);
        if (a.started) stop(a.proc);
    }
    if (!keep) {
        std::string cmd = "rm -rf '" + dir + "'";
        if (system(cmd.c_str()) != 0) fprintf(stderr, "%s: cannot remove %s\n", prog, dir.c_str());
    } else {
        rep.comment("   kept " + dir);
    }
}

}  // namespace

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"tap", no_argument, nullptr, 'T'},
        {"keep", no_argument, nullptr, 'k'},
        {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, 'V'},
        {"wide", no_argument, nullptr, 'w'},
        {nullptr, 0, nullptr, 0},
    };
    Reporter rep;
    bool keep = false;
    int c;
    while ((c = getopt_long(argc, argv, "hV", longopts, nullptr)) != -1) {
        switch (c) {
        case 'T': rep.tap = true; break;
        case 'k': keep = true; break;
        case 'w': wide_table = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': mb::tools::print_version(prog); return 0;
        default: fprintf(stderr, "Try 'miniblock-scenario --help' for more information.\n"); return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "%s: no scenario file given\nTry 'miniblock-scenario --help' for more information.\n", prog);
        return 2;
    }
    setvbuf(stdout, nullptr, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    for (int s : {SIGTERM, SIGINT, SIGHUP}) signal(s, on_fatal_signal);
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = 0;
        tool_dir = self;
        tool_dir = tool_dir.substr(0, tool_dir.rfind('/'));
    }

    // Every file is checked before anything runs.
    std::vector<Scenario> scenarios;
    for (int i = optind; i < argc; i++) {
        std::string err;
        auto sc = parse_scenario(argv[i], &err);
        if (!sc) {
            fprintf(stderr, "%s: %s\n", prog, err.c_str());
            return 2;
        }
        scenarios.push_back(std::move(*sc));
    }
    for (auto &sc : scenarios) run_scenario(sc, rep, keep);
    if (rep.tap) printf("1..%d\n", rep.n);
    else if (rep.setup_failed) printf("%d steps, %d mismatched; %d setup lines failed\n", rep.steps, rep.failed, rep.setup_failed);
    else printf("%d steps, %d mismatched\n", rep.steps, rep.failed);
    return rep.failed || rep.setup_failed ? 1 : 0;
}
