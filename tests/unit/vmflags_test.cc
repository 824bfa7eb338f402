// Mapping flags taken from smaps read before the stop (tracer/vmflags.h).
#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include "base/error.h"
#include "tracer/proc.h"
#include "tracer/vmflags.h"

using namespace snap;

namespace {

constexpr char kSmaps[] =
    "00400000-00401000 r-xp 00000000 fe:00 42   /bin/x\n"
    "Rss:                   4 kB\n"
    "VmFlags: rd ex mr mw me\n"
    "7f0000000000-7f0000100000 rw-p 00000000 00:00 0\n"
    "Rss:                1024 kB\n"
    "VmFlags: rd wr mr mw me ac lo\n"
    "7f0000200000-7f0000300000 rw-p 00000000 00:00 0\n"
    "VmFlags: rd wr mr mw me ac dc\n";

// The same mappings as /proc/PID/maps shows them while the job is stopped.
std::vector<image::Mapping> stopped_maps(const char* maps) {
  std::vector<image::Mapping> out;
  for (auto& e : proc::parse_maps(maps)) {
    image::Mapping m;
    m.start = e.start, m.end = e.end, m.pgoff = e.offset, m.inode = e.inode, m.path = e.path;
    m.prot = (e.r ? 1 : 0) | (e.w ? 2 : 0) | (e.x ? 4 : 0);
    m.shared = e.shared;
    m.dev = makedev(e.dev_major, e.dev_minor);
    out.push_back(m);
  }
  return out;
}

constexpr char kMaps[] =
    "00400000-00401000 r-xp 00000000 fe:00 42   /bin/x\n"
    "7f0000000000-7f0000100000 rw-p 00000000 00:00 0\n"
    "7f0000200000-7f0000300000 rw-p 00000000 00:00 0\n";

}  // namespace

TEST(VmFlags, FlagListLookupIsByWholeWord) {
  EXPECT_TRUE(image::has_vmflag("rd wr dc", "dc"));
  EXPECT_TRUE(image::has_vmflag("rd", "rd"));
  EXPECT_FALSE(image::has_vmflag("rd wr mw", "w"));
  EXPECT_FALSE(image::has_vmflag("", "rd"));
  EXPECT_FALSE(image::has_vmflag("rd mww", "mw"));
  EXPECT_FALSE(image::has_vmflag("xdc rd", "dc"));
  EXPECT_TRUE(image::has_vmflag("dcx xdc dc", "dc"));  // found past parts of words
  EXPECT_TRUE(image::has_vmflag("dc rd", "dc"));
  EXPECT_FALSE(image::has_vmflag("rd wr", ""));
}

TEST(VmFlags, HintsGiveIdenticalMappingsTheirFlags) {
  proc::VmFlagsHints hints;
  hints.add(7, proc::parse_smaps(kSmaps));
  auto maps = stopped_maps(kMaps);
  ASSERT_TRUE(hints.apply(7, maps, 1 << 20));  // VmLck: the one locked MiB
  EXPECT_TRUE(hints.applied(7));
  EXPECT_EQ(maps[0].vmflags, "rd ex mr mw me");
  EXPECT_EQ(maps[1].vmflags, "rd wr mr mw me ac lo");
  EXPECT_EQ(maps[2].vmflags, "rd wr mr mw me ac dc");
}

TEST(VmFlags, SmapsGivesTheMapsTextOfItsMappingLines) {
  std::string text;
  proc::parse_smaps(kSmaps, &text);
  EXPECT_EQ(text, kMaps);
}

TEST(VmFlags, HintEntriesAreTakenWhenMapsIsTheSameText) {
  std::string text;
  proc::VmFlagsHints hints;
  auto smaps = proc::parse_smaps(kSmaps, &text);
  hints.add(7, smaps, text);
  EXPECT_EQ(hints.maps_text_size(7), text.size());
  EXPECT_EQ(hints.maps_text_size(8), 0u);
  // Other text (one protection changed): nothing taken.
  std::string changed = kMaps;
  changed[changed.find("rw-p")] = '-';
  EXPECT_FALSE(hints.take_if_same(7, changed, 1 << 20));
  // The same text, but VmLck says the locked MiB is not locked any more.
  EXPECT_FALSE(hints.take_if_same(7, kMaps, 0));
  EXPECT_FALSE(hints.take_if_same(8, kMaps, 1 << 20));  // no hints for that pid
  EXPECT_FALSE(hints.applied(7));
  auto taken = hints.take_if_same(7, kMaps, 1 << 20);
  ASSERT_TRUE(taken);
  EXPECT_TRUE(hints.applied(7));
  ASSERT_EQ(taken->size(), 3u);
  EXPECT_EQ((*taken)[1].start, 0x7f0000000000u);
  EXPECT_EQ((*taken)[1].vmflags, "rd wr mr mw me ac lo");
  EXPECT_EQ((*taken)[2].vmflags, "rd wr mr mw me ac dc");
  // Taken once: a second look finds none.
  EXPECT_FALSE(hints.take_if_same(7, kMaps, 1 << 20));
  // Hints without the text (added without it) are never taken.
  proc::VmFlagsHints bare;
  bare.add(7, smaps);
  EXPECT_FALSE(bare.take_if_same(7, kMaps, 1 << 20));
}

TEST(VmFlags, HintsThatDoNotFitAreRefused) {
  proc::VmFlagsHints hints;
  hints.add(7, proc::parse_smaps(kSmaps));
  // The locks changed since (VmLck disagrees): smaps must be read.
  auto maps = stopped_maps(kMaps);
  EXPECT_FALSE(hints.apply(7, maps, 0));
  EXPECT_TRUE(maps[1].vmflags.empty());
  // A mapping grew, or was made read-only, since the hints were read.
  auto grown = stopped_maps(
      "00400000-00401000 r-xp 00000000 fe:00 42   /bin/x\n"
      "7f0000000000-7f0000180000 rw-p 00000000 00:00 0\n");
  EXPECT_FALSE(hints.apply(7, grown, 1 << 20));
  auto protected_now = stopped_maps("7f0000200000-7f0000300000 r--p 00000000 00:00 0\n");
  EXPECT_FALSE(hints.apply(7, protected_now, 0));
  // A process with no hints at all.
  auto other = stopped_maps(kMaps);
  EXPECT_FALSE(hints.apply(8, other, 1 << 20));
  EXPECT_FALSE(hints.applied(7));
}

TEST(VmFlags, SnapshotCorrectsFlagsAndKeepsWhatForkDrops) {
  proc::VmFlagsHints hints;
  hints.add(7, proc::parse_smaps(kSmaps));
  auto maps = stopped_maps(kMaps);
  ASSERT_TRUE(hints.apply(7, maps, 1 << 20));
  // The fork: no lo (fork does not pass mlock on), no dc mapping at all, and
  // MADV_HUGEPAGE given to the first mapping after the hints were read.
  auto snapshot = proc::parse_smaps(
      "00400000-00401000 r-xp 00000000 fe:00 42   /bin/x\n"
      "VmFlags: rd ex mr mw me hg\n"
      "7f0000000000-7f0000100000 rw-p 00000000 00:00 0\n"
      "VmFlags: rd wr mr mw me ac\n");
  proc::confirm_vmflags(7, maps, snapshot, [](const image::Mapping& m) {
    return image::has_vmflag(m.vmflags, "dc");
  });
  EXPECT_EQ(maps[0].vmflags, "rd ex mr mw me hg");
  EXPECT_EQ(maps[1].vmflags, "rd wr mr mw me ac lo");
  EXPECT_EQ(maps[2].vmflags, "rd wr mr mw me ac dc");
}

TEST(VmFlags, MemoryReadFromASnapshotThatLacksItIsAnError) {
  auto maps = stopped_maps(kMaps);
  for (auto& m : maps) m.vmflags = "rd wr mr mw me ac";  // hints: nothing special
  auto from_snapshot = [](const image::Mapping&) { return false; };
  // Became MADV_DONTFORK before the stop: not in the fork.
  auto without_last = proc::parse_smaps(
      "00400000-00401000 r-xp 00000000 fe:00 42   /bin/x\n"
      "VmFlags: rd ex mr mw me\n"
      "7f0000000000-7f0000100000 rw-p 00000000 00:00 0\n"
      "VmFlags: rd wr mr mw me ac\n");
  EXPECT_THROW(proc::confirm_vmflags(7, maps, without_last, from_snapshot), Error);
  // Became MADV_WIPEONFORK: in the fork, but empty there.
  auto wiped = proc::parse_smaps(
      "00400000-00401000 r-xp 00000000 fe:00 42   /bin/x\n"
      "VmFlags: rd ex mr mw me\n"
      "7f0000000000-7f0000100000 rw-p 00000000 00:00 0\n"
      "VmFlags: rd wr mr mw me ac\n"
      "7f0000200000-7f0000300000 rw-p 00000000 00:00 0\n"
      "VmFlags: rd wr mr mw me ac wf\n");
  EXPECT_THROW(proc::confirm_vmflags(7, maps, wiped, from_snapshot), Error);
  // Read from the job itself while it was stopped: nothing lost either way.
  EXPECT_NO_THROW(proc::confirm_vmflags(7, maps, wiped, [](const image::Mapping&) { return true; }));
  EXPECT_EQ(maps[2].vmflags, "rd wr mr mw me ac wf");
}

// The write tracker registers a neighbour that grew since the last
// checkpoint while the job is stopped, after its mappings were read: the
// kernel merges the two, so the snapshot shows one mapping where the job's
// list has two. Their memory is in the snapshot: no error (before, the
// checkpoint failed, "became MADV_DONTFORK (or was remapped)"), each keeps
// the snapshot's flags; a part the snapshot lacks is still an error.
TEST(VmFlags, MappingsMergedInTheSnapshotAreThere) {
  auto maps = stopped_maps(
      "7f0000000000-7f0000100000 rw-p 00000000 00:00 0\n"
      "7f0000100000-7f0000180000 rw-p 00000000 00:00 0\n");
  for (auto& m : maps) m.vmflags = "rd wr mr mw me ac";
  auto from_snapshot = [](const image::Mapping&) { return false; };
  auto merged = proc::parse_smaps(
      "7f0000000000-7f0000180000 rw-p 00000000 00:00 0\n"
      "VmFlags: rd wr mr mw me ac hg\n");
  auto copy = maps;
  EXPECT_NO_THROW(proc::confirm_vmflags(7, copy, merged, from_snapshot));
  EXPECT_EQ(copy[0].vmflags, "rd wr mr mw me ac hg");
  EXPECT_EQ(copy[1].vmflags, "rd wr mr mw me ac hg");
  auto shorter = proc::parse_smaps(
      "7f0000000000-7f0000140000 rw-p 00000000 00:00 0\n"
      "VmFlags: rd wr mr mw me ac\n");
  EXPECT_THROW(proc::confirm_vmflags(7, maps, shorter, from_snapshot), Error);
}
