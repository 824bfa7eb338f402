// Unit tests of src/tracer/pid_view: the NS* lines of /proc/PID/status and
// the translation of a Checkpoint's host ids to the job's own pid namespace.
#include <gtest/gtest.h>
#include <unistd.h>

#include "base/error.h"
#include "tracer/pid_view.h"
#include "tracer/proc.h"

using namespace snap;
using namespace snap::pidview;

namespace {

const char* kStatusInNamespace =
    "Name:\tsleep\n"
    "Umask:\t0022\n"
    "State:\tS (sleeping)\n"
    "Tgid:\t81234\n"
    "Ngid:\t0\n"
    "Pid:\t81234\n"
    "PPid:\t81230\n"
    "TracerPid:\t0\n"
    "NStgid:\t81234\t7\n"
    "NSpid:\t81234\t7\n"
    "NSpgid:\t81230\t2\n"
    "NSsid:\t81200\t0\n"
    "Kthread:\t0\n";

ProcIds proc_ids(pid_t host, std::vector<pid_t> nspid, std::vector<pid_t> nspgid,
                 std::vector<pid_t> nssid, std::string ns = "pid:[4026532000]") {
  ProcIds p;
  p.host = host;
  p.ns = {std::move(nspid), std::move(nspgid), std::move(nssid)};
  p.pid_ns = std::move(ns);
  return p;
}

image::Process process(pid_t pid, pid_t ppid, pid_t pgid, pid_t sid, std::vector<pid_t> tids) {
  image::Process p;
  p.pid = pid;
  p.ppid = ppid;
  p.pgid = pgid;
  p.sid = sid;
  for (pid_t t : tids) {
    image::ThreadState ts;
    ts.tid = t;
    p.threads.push_back(ts);
  }
  return p;
}

}  // namespace

TEST(PidView, ParsesNsLinesOutermostFirst) {
  auto ids = parse_ns_ids(kStatusInNamespace);
  EXPECT_EQ(ids.pid, (std::vector<pid_t>{81234, 7}));
  EXPECT_EQ(ids.pgid, (std::vector<pid_t>{81230, 2}));
  EXPECT_EQ(ids.sid, (std::vector<pid_t>{81200, 0}));  // session leader outside: 0
}

TEST(PidView, ParsesHostProcessAndMissingLines) {
  auto ids = parse_ns_ids("Name:\tbash\nNSpid:\t42\nNSpgid:\t42\nNSsid:\t40\n");
  EXPECT_EQ(ids.pid, (std::vector<pid_t>{42}));
  EXPECT_EQ(ids.pgid, (std::vector<pid_t>{42}));
  EXPECT_EQ(ids.sid, (std::vector<pid_t>{40}));
  auto none = parse_ns_ids("Name:\tbash\nPid:\t42\n");  // kernel < 4.1
  EXPECT_TRUE(none.pid.empty() && none.pgid.empty() && none.sid.empty());
  // Three levels, spaces or tabs.
  EXPECT_EQ(parse_ns_ids("NSpid: 900 30 5\n").pid, (std::vector<pid_t>{900, 30, 5}));
  EXPECT_THROW(parse_ns_ids("NSpid:\t12\tx7\n"), Error);
}

TEST(PidView, ReadsItsOwnStatus) {
  auto ids = parse_ns_ids(proc::read_file("/proc/self/status"));
  ASSERT_FALSE(ids.pid.empty());
  EXPECT_EQ(ids.pid.front(), ::getpid());
}

TEST(PidView, TranslatesATreeInItsOwnNamespace) {
  // Host view: root 81234 (ns pid 7, parent 81230 = ns pid 2, outside the
  // tree), two threads; child 81240 (ns 9, thread 81241 = ns 10); zombie
  // 81250 (ns 11).
  image::Checkpoint c;
  c.processes.push_back(process(81234, 81230, 81230, 81200, {81234, 81235}));
  c.processes.push_back(process(81240, 81234, 81240, 81200, {81240, 81241}));
  image::PosixTimer timer;
  timer.notify = "thread/tid.81241";
  c.processes[1].posix_timers.push_back(timer);
  timer.notify = "signal/pid.81240";
  c.processes[1].posix_timers.push_back(timer);
  timer.notify = "none/pid.0";
  c.processes[1].posix_timers.push_back(timer);
  image::Process z = process(81250, 81240, 81240, 81200, {});
  z.zombie = true;
  c.processes.push_back(z);

  std::vector<ProcIds> ids;
  ids.push_back(proc_ids(81234, {81234, 7}, {81230, 2}, {81200, 0}));
  ids[0].threads = {{81234, 7}, {81235, 8}};
  ids.push_back(proc_ids(81240, {81240, 9}, {81240, 9}, {81200, 0}));
  ids[1].threads = {{81240, 9}, {81241, 10}};
  ids.push_back(proc_ids(81250, {81250, 11}, {81240, 9}, {81200, 0}, ""));  // zombie: no ns link

  PidView v = PidView::build(ids, 2);
  EXPECT_TRUE(v.own_namespace());
  EXPECT_EQ(v.pid(81235), 8);
  EXPECT_EQ(v.pid(999), 999);  // not of the tree: unchanged
  v.apply(c);
  EXPECT_EQ(c.pid_namespace, "own");
  const auto& r = c.processes[0];
  EXPECT_EQ(r.pid, 7);
  EXPECT_EQ(r.ppid, 2);
  EXPECT_EQ(r.pgid, 2);
  EXPECT_EQ(r.sid, 0);
  EXPECT_EQ(r.threads[0].tid, 7);
  EXPECT_EQ(r.threads[1].tid, 8);
  const auto& k = c.processes[1];
  EXPECT_EQ(k.pid, 9);
  EXPECT_EQ(k.ppid, 7);
  EXPECT_EQ(k.pgid, 9);
  EXPECT_EQ(k.threads[1].tid, 10);
  EXPECT_EQ(k.posix_timers[0].notify, "thread/tid.10");
  EXPECT_EQ(k.posix_timers[1].notify, "signal/pid.9");
  EXPECT_EQ(k.posix_timers[2].notify, "none/pid.0");
  EXPECT_EQ(c.processes[2].pid, 11);
  EXPECT_EQ(c.processes[2].ppid, 9);
  EXPECT_EQ(c.processes[2].pgid, 9);
}

TEST(PidView, RootParentOutsideTheNamespaceIsZero) {
  image::Checkpoint c;
  c.processes.push_back(process(500, 499, 500, 500, {500}));
  std::vector<ProcIds> ids{proc_ids(500, {500, 1}, {500, 1}, {500, 1})};
  ids[0].threads = {{500, 1}};
  PidView::build(ids, 0).apply(c);
  EXPECT_EQ(c.processes[0].pid, 1);
  EXPECT_EQ(c.processes[0].ppid, 0);
}

TEST(PidView, HostNamespaceIsTheIdentity) {
  image::Checkpoint c;
  c.processes.push_back(process(500, 499, 498, 497, {500, 501}));
  image::PosixTimer timer;
  timer.notify = "thread/tid.501";
  c.processes[0].posix_timers.push_back(timer);
  auto before = c;
  std::vector<ProcIds> ids{proc_ids(500, {500}, {498}, {497})};
  ids[0].threads = {{500, 500}, {501, 501}};
  PidView v = PidView::build(ids, 499);
  EXPECT_FALSE(v.own_namespace());
  v.apply(c);
  EXPECT_EQ(c.pid_namespace, "host");
  EXPECT_EQ(c.processes[0].pid, 500);
  EXPECT_EQ(c.processes[0].ppid, 499);
  EXPECT_EQ(c.processes[0].pgid, 498);
  EXPECT_EQ(c.processes[0].sid, 497);
  EXPECT_EQ(c.processes[0].threads[1].tid, 501);
  EXPECT_EQ(c.processes[0].posix_timers[0].notify, "thread/tid.501");
  PidView().apply(before);  // the default view is the identity too
  EXPECT_EQ(before.processes[0].pid, 500);
}

TEST(PidView, RefusesATreeAcrossPidNamespaces) {
  // A child in a deeper namespace than the root.
  std::vector<ProcIds> deeper{proc_ids(600, {600, 3}, {600, 3}, {600, 3}),
                              proc_ids(601, {601, 4, 1}, {601, 4, 1}, {601, 4, 1})};
  try {
    PidView::build(deeper, 0);
    FAIL() << "a deeper child was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pid 601"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("pid namespace"), std::string::npos) << e.what();
  }
  // Same depth, another namespace.
  std::vector<ProcIds> sibling{proc_ids(600, {600, 3}, {600, 3}, {600, 3}, "pid:[1]"),
                               proc_ids(602, {602, 3}, {602, 3}, {602, 3}, "pid:[2]")};
  try {
    PidView::build(sibling, 0);
    FAIL() << "a child in another namespace was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pid 602"), std::string::npos) << e.what();
  }
  // A root in a namespace, a child in the host's (impossible for a child,
  // but an NSpid that is shorter must be refused too).
  std::vector<ProcIds> shallower{proc_ids(600, {600, 3}, {600, 3}, {600, 3}),
                                 proc_ids(603, {603}, {603}, {603})};
  EXPECT_THROW(PidView::build(shallower, 0), Error);
}
