// The restore plan of a process tree (src/restore/tree.h): who forks whom,
// sessions, process groups and their helpers, zombies; and the layouts it
// must refuse before anything is created.
#include <gtest/gtest.h>
#include <sys/user.h>

#include <cstddef>
#include <cstring>

#include <algorithm>

#include "base/error.h"
#include "image/checkpoint.h"
#include "restore/restore.h"
#include "restore/seccomp.h"
#include "restore/tree.h"
#include "restore/vdso.h"
#include "tracer/vdso.h"

namespace snap::restore {
namespace {

image::ThreadState thread(pid_t tid) {
  image::ThreadState t;
  t.tid = tid;
  return t;
}

image::Process proc(pid_t pid, pid_t ppid, pid_t pgid, pid_t sid, bool zombie = false) {
  image::Process p;
  p.pid = pid;
  p.ppid = ppid;
  p.pgid = pgid;
  p.sid = sid;
  p.comm = "p" + std::to_string(pid);
  p.zombie = zombie;
  if (!zombie) p.threads.push_back(thread(pid));
  return p;
}

image::Checkpoint ckpt(std::vector<image::Process> ps) {
  image::Checkpoint c;
  c.processes = std::move(ps);
  return c;
}

std::vector<pid_t> pids(const std::vector<const image::Process*>& v) {
  std::vector<pid_t> out;
  for (auto* p : v) out.push_back(p->pid);
  return out;
}

// The filters a process's threads have first, alike, go to its leader
// before the threads are made (they share them, as TSYNC needs); a thread
// without filters of its own, or in strict mode, shares none.
TEST(Seccomp, ThreadsShareTheFiltersTheyAllHaveFirst) {
  const image::SeccompFilter a{{6, 0, 0, 0, 0, 0, 0xff, 0x7f}, 0};
  const image::SeccompFilter b{{6, 0, 0, 0, 1, 0, 5, 0}, 0};
  const image::SeccompFilter b_logged{b.program, 2};
  image::Process p;
  p.threads.resize(3);
  p.threads[0].seccomp = image::Seccomp{false, {a, b}};
  p.threads[1].seccomp = image::Seccomp{false, {a, b, a}};
  p.threads[2].seccomp = image::Seccomp{false, {a, b}};
  EXPECT_EQ(shared_seccomp_filters(p), 2u);
  p.threads[2].seccomp = image::Seccomp{false, {a, b_logged}};  // other flags: another filter
  EXPECT_EQ(shared_seccomp_filters(p), 1u);
  p.threads[2].seccomp = image::Seccomp{false, {b, a}};
  EXPECT_EQ(shared_seccomp_filters(p), 0u);
  p.threads[2].seccomp.reset();
  EXPECT_EQ(shared_seccomp_filters(p), 0u);
  p.threads[2].seccomp = image::Seccomp{true, {}};
  EXPECT_EQ(shared_seccomp_filters(p), 0u);
  EXPECT_TRUE(has_own_seccomp(p));
  for (auto& t : p.threads) t.seccomp.reset();
  EXPECT_FALSE(has_own_seccomp(p));
}

TEST(TreePlan, PipelineFromABatchScriptKeepsTheOutsideSessionAndGroup) {
  // bash -c 'a | b' started by a script: everything in the script's group
  // (50) and session (40), which are outside the image.
  auto c = ckpt({proc(100, 50, 50, 40), proc(101, 100, 50, 40), proc(102, 100, 50, 40)});
  TreePlan plan = plan_tree(c);
  EXPECT_EQ(plan.root, 100);
  EXPECT_EQ(plan.external_sid, 40);
  EXPECT_EQ(plan.external_pgid, 50);
  EXPECT_EQ(pids(plan.node(100).children), (std::vector<pid_t>{101, 102}));
  for (pid_t p : {100, 101, 102}) {
    EXPECT_FALSE(plan.node(p).setsid);
    EXPECT_FALSE(plan.node(p).group_leader);
    EXPECT_EQ(plan.node(p).join_group, 0);
  }
  // Children already inherit snap restore's group; only they are told so.
  EXPECT_FALSE(plan.node(100).join_external_group);
  EXPECT_TRUE(plan.node(101).join_external_group);
  EXPECT_TRUE(plan.helpers.empty());
}

TEST(TreePlan, ShellJobLayoutGetsAHelperForTheExitedGroupLeader) {
  // A session leader (subreaper) whose job group 201's leader has exited;
  // its two workers were reparented to the root. Another worker is in the
  // root's own group.
  auto c = ckpt({proc(200, 1, 200, 200), proc(202, 200, 201, 200), proc(203, 200, 201, 200),
                 proc(204, 200, 200, 200)});
  TreePlan plan = plan_tree(c);
  EXPECT_TRUE(plan.node(200).setsid);
  ASSERT_EQ(plan.helpers.size(), 1u);
  EXPECT_EQ(plan.helpers[0].pid, 201);
  EXPECT_EQ(plan.helpers[0].creator, 200);
  EXPECT_EQ(plan.node(200).helpers.size(), 1u);
  EXPECT_EQ(plan.node(202).join_group, 201);
  EXPECT_EQ(plan.node(203).join_group, 201);
  EXPECT_EQ(plan.node(204).join_group, 200);
  auto ids = plan.all_ids();
  EXPECT_NE(std::find(ids.begin(), ids.end(), 201), ids.end()) << "the helper's pid must be free too";
}

TEST(TreePlan, GroupLedByAnotherLiveProcessIsJoined) {
  // An interactive shell's job: 301 leads group 301, 302 joined it.
  auto c = ckpt({proc(300, 1, 300, 300), proc(301, 300, 301, 300), proc(302, 300, 301, 300)});
  TreePlan plan = plan_tree(c);
  EXPECT_TRUE(plan.node(301).group_leader);
  EXPECT_EQ(plan.node(302).join_group, 301);
  EXPECT_TRUE(plan.helpers.empty());
}

TEST(TreePlan, ZombiesComeAfterLiveSiblingsAndCountTheirPids) {
  auto c = ckpt({proc(400, 1, 400, 400), proc(401, 400, 400, 400, true), proc(402, 400, 400, 400)});
  c.processes[1].exit_status = 42 << 8;
  TreePlan plan = plan_tree(c);
  EXPECT_EQ(pids(plan.node(400).children), (std::vector<pid_t>{402, 401}));
  auto ids = plan.all_ids();
  EXPECT_NE(std::find(ids.begin(), ids.end(), 401), ids.end());
}

TEST(TreePlan, ThreadIdsAreAmongTheIdsToTake) {
  auto c = ckpt({proc(500, 1, 500, 500)});
  c.processes[0].threads.push_back(thread(501));
  auto ids = plan_tree(c).all_ids();
  EXPECT_NE(std::find(ids.begin(), ids.end(), 501), ids.end());
}

TEST(TreePlan, SessionWhoseLeaderExitedGetsAHelperThatForksItsMembers) {
  // A daemon that forked twice under subreaper 600: its first child 610
  // made session 610 and exited; 612 (reparented to 600) is in group 610,
  // its child 613 too, and 614 made a group of its own; 615 is in group 614.
  auto c = ckpt({proc(600, 1, 600, 600), proc(612, 600, 610, 610), proc(613, 612, 610, 610),
                 proc(614, 600, 614, 610), proc(615, 614, 614, 610), proc(601, 600, 600, 600)});
  TreePlan plan = plan_tree(c);
  ASSERT_EQ(plan.session_helpers.size(), 1u);
  const SessionHelper& h = plan.session_helpers[0];
  EXPECT_EQ(h.pid, 610);
  EXPECT_EQ(h.creator, 600);
  EXPECT_EQ(pids(h.members), (std::vector<pid_t>{612, 614}));
  EXPECT_EQ(plan.node(600).session_helpers.size(), 1u);
  // The helper forks them, not 600; 600 forks its other child.
  EXPECT_EQ(pids(plan.node(600).children), (std::vector<pid_t>{601}));
  EXPECT_EQ(pids(plan.node(612).children), (std::vector<pid_t>{613}));
  // Born in the session's group (the helper's): nothing to join, and no
  // group helper; 614 leads its own, 615 joins it (as any live leader's).
  for (pid_t p : {612, 613}) EXPECT_EQ(plan.node(p).join_group, 0) << p;
  EXPECT_TRUE(plan.node(614).group_leader);
  EXPECT_EQ(plan.node(615).join_group, 614);
  EXPECT_FALSE(plan.node(612).setsid);
  EXPECT_TRUE(plan.helpers.empty());
  auto ids = plan.all_ids();
  EXPECT_NE(std::find(ids.begin(), ids.end(), 610), ids.end()) << "the helper's pid must be free too";
}

TEST(TreePlan, SessionWhoseLeaderExitedIsJoinedWhileOneBornInItStays) {
  // 622 (forked by the helper) leads its own group; its child 623 is born
  // there and joins group 620, which 624 (born in it) still holds.
  auto c = ckpt({proc(600, 1, 600, 600), proc(622, 600, 622, 620), proc(623, 622, 620, 620),
                 proc(624, 600, 620, 620)});
  TreePlan plan = plan_tree(c);
  EXPECT_EQ(plan.node(623).join_group, 620);
  EXPECT_EQ(plan.node(624).join_group, 0);
  // Without 624 nothing would hold group 620 once the helper ended.
  EXPECT_THROW(plan_tree(ckpt({proc(600, 1, 600, 600), proc(622, 600, 622, 620),
                               proc(623, 622, 620, 620)})),
               Error);
}

TEST(TreePlan, RefusesSessionsWhoseLeaderExitedThatAHelperCannotMake) {
  auto refused = [](image::Checkpoint c, const char* why) {
    try {
      plan_tree(c);
      ADD_FAILURE() << "expected a refusal: " << why;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("session 610"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  // Members outside it with two parents: one helper cannot fork both.
  refused(ckpt({proc(600, 1, 600, 600), proc(601, 600, 601, 601), proc(612, 600, 610, 610),
                proc(613, 601, 610, 610)}),
          "another parent");
  // The session's id is another process's pid now.
  refused(ckpt({proc(600, 1, 600, 600), proc(610, 600, 600, 600), proc(612, 600, 612, 610)}),
          "pid 610 is another process");
  // Its group's leader gone too (group 611 of session 610): a group helper
  // would make it in 600's session.
  refused(ckpt({proc(600, 1, 600, 600), proc(612, 600, 611, 610), proc(613, 612, 610, 610)}),
          "process group 611");
  // A zombie as its member.
  refused(ckpt({proc(600, 1, 600, 600), proc(612, 600, 610, 610, true)}), "zombie");
  // The leader lives but is not the parent's child: it cannot fork 613 as
  // 600's child.
  refused(ckpt({proc(600, 1, 600, 600), proc(601, 600, 601, 601), proc(610, 601, 610, 610),
                proc(613, 600, 610, 610)}),
          "which pid 610 leads");
}

TEST(TreePlan, SessionWhoseLeaderLivesForksItsParentsOtherChildren) {
  // Under subreaper 600: 610 made session 610; its child 611 forked 612
  // and ended, so 612 (group 610) and 614 (a group of its own, forked by
  // 611 too) were given to 600. 610 forks them as 600's children.
  auto c = ckpt({proc(600, 1, 600, 600), proc(610, 600, 610, 610), proc(612, 600, 610, 610),
                 proc(614, 600, 614, 610), proc(615, 614, 614, 610)});
  TreePlan plan = plan_tree(c);
  EXPECT_EQ(pids(plan.node(610).siblings), (std::vector<pid_t>{612, 614}));
  EXPECT_EQ(pids(plan.node(600).children), (std::vector<pid_t>{610}));
  EXPECT_EQ(pids(plan.node(614).children), (std::vector<pid_t>{615}));
  EXPECT_TRUE(plan.node(614).group_leader);
  EXPECT_TRUE(plan.session_helpers.empty());
  EXPECT_TRUE(plan.helpers.empty());
}

TEST(TreePlan, RefusesInconsistentTrees) {
  EXPECT_THROW(plan_tree(ckpt({})), Error);
  // A parent missing from the image, or listed after its child.
  EXPECT_THROW(plan_tree(ckpt({proc(700, 1, 700, 700), proc(702, 701, 700, 700)})), Error);
  EXPECT_THROW(plan_tree(ckpt({proc(700, 1, 700, 700), proc(702, 701, 700, 700),
                               proc(701, 700, 700, 700)})),
               Error);
  // The root a zombie; a zombie with a child; a pid twice.
  EXPECT_THROW(plan_tree(ckpt({proc(700, 1, 700, 700, true)})), Error);
  EXPECT_THROW(plan_tree(ckpt({proc(700, 1, 700, 700), proc(701, 700, 700, 700, true),
                               proc(702, 701, 700, 700)})),
               Error);
  EXPECT_THROW(plan_tree(ckpt({proc(700, 1, 700, 700), proc(700, 700, 700, 700)})), Error);
  // A session leader outside its own group cannot exist.
  EXPECT_THROW(plan_tree(ckpt({proc(700, 1, 701, 700)})), Error);
}

// The pool's pages a restore takes: a private hugetlb mapping's each (a
// MAP_NORESERVE one none), a shared object's whole size once, however many
// processes map it, and whatever part of it each maps.
TEST(HugetlbPool, PagesNeededCountSharedObjectsOnce) {
  constexpr uint64_t k2M = 2 << 20, k1G = 1 << 30;
  auto mapping = [](uint64_t start, uint64_t size, uint64_t page, bool shared, uint64_t inode,
                    uint64_t pgoff = 0) {
    image::Mapping m;
    m.start = start;
    m.end = start + size;
    m.hugetlb_page = page;
    m.shared = shared;
    m.kind = shared ? image::MappingKind::SharedAnon : image::MappingKind::Anonymous;
    m.dev = 15;
    m.inode = inode;
    m.pgoff = pgoff;
    m.vmflags = "rd wr mr mw me ht";
    return m;
  };
  image::Checkpoint c;
  image::Process a, b;
  a.pid = 10;
  b.pid = 11;
  a.mappings = {mapping(0x40000000, 4 * k2M, k2M, false, 1),       // private: 4
                mapping(0x50000000, 3 * k2M, k2M, true, 2),        // shared object 2: 3 ...
                mapping(0x60000000, 2 * k1G, k1G, false, 3),       // private 1 GiB pages: 2
                mapping(0x80000000, 8 * k2M, 0, false, 0)};        // not hugetlb
  a.mappings.back().vmflags = "rd wr mr mw me";
  b.mappings = {mapping(0x50000000, 3 * k2M, k2M, true, 2),        // ... the same object again
                mapping(0x58000000, 2 * k2M, k2M, true, 2, 4 * k2M),  // ... to 6 pages in all
                mapping(0x70000000, 5 * k2M, k2M, true, 4),        // shared object 4: 5
                mapping(0x90000000, 64 * k2M, k2M, false, 5)};     // MAP_NORESERVE: none
  b.mappings.back().vmflags += " nr";
  c.processes = {a, b};
  EXPECT_EQ(hugetlb_pages_needed(c), (std::map<uint64_t, uint64_t>{{k2M, 4 + 6 + 5}, {k1G, 2}}));
  EXPECT_TRUE(hugetlb_pages_needed(image::Checkpoint{}).empty());
}


image::Checkpoint job_with_vdso(std::vector<uint8_t> vdso, uint64_t ip = 0x401000) {
  image::Checkpoint c;
  c.kernel_release = "6.1.0-test";
  c.vdso = std::move(vdso);
  image::Process p;
  p.pid = 100;
  image::Mapping m;
  m.start = 0x7ffff7fc1000;
  m.end = m.start + 0x2000;
  m.kind = image::MappingKind::Vdso;
  p.mappings.push_back(m);
  image::ThreadState t;
  t.tid = 100;
  t.gpregs.assign(sizeof(user_regs_struct), 0);
  std::memcpy(t.gpregs.data() + offsetof(user_regs_struct, rip), &ip, sizeof ip);
  p.threads.push_back(t);
  c.processes.push_back(p);
  return c;
}

TEST(VdsoPlan, SameKernelMovesAnotherIsRedirectedOrRefused) {
  const auto own = own_vdso().image();
  std::vector<uint8_t> same(own.begin(), own.end());
  EXPECT_FALSE(plan_vdso(job_with_vdso(same)).proxied());
  EXPECT_FALSE(plan_vdso(job_with_vdso({})).proxied());  // an older image: moved, as before

  auto other = same;
  other[15] ^= 0x5a;  // ELF header padding: another kernel's image, same functions
  const VdsoPlan plan = plan_vdso(job_with_vdso(other));
  ASSERT_TRUE(plan.proxied());
  const auto fns = vdso_functions(own);
  const auto gettime = std::find_if(fns.begin(), fns.end(),
                                    [](const auto& f) { return f.name == "__vdso_clock_gettime"; });
  ASSERT_NE(gettime, fns.end());
  EXPECT_TRUE(std::any_of(plan.jumps.begin(), plan.jumps.end(), [&](const auto& j) {
    return j.from == gettime->offset && j.to == gettime->offset;
  }));

  // A thread stopped inside the old vDSO: refused, named.
  try {
    plan_vdso(job_with_vdso(other, 0x7ffff7fc1000 + gettime->offset + 3));
    ADD_FAILURE() << "a thread inside the dump's vDSO was not refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("thread 100"), std::string::npos) << e.what();
  }
  // A function this kernel's vDSO lacks (its name changed in the old image): refused, named.
  const std::string name = "__vdso_time";
  auto at = std::search(other.begin(), other.end(), name.begin(), name.end());
  ASSERT_NE(at, other.end());
  at[8] = 'X';
  try {
    plan_vdso(job_with_vdso(other));
    ADD_FAILURE() << "a function this kernel lacks was not refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("__vdso_tXme"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("6.1.0-test"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace snap::restore
