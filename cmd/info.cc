// snap info: what an image holds, for people (default) and scripts (--json).
//
// The steps, in order:
//   1. open the image: manifest, file sizes, checksums of the index files
//      (a directory that is not an image, or a damaged one, stops here);
//   2. for each thread, find where it stopped: the mapping that holds its
//      saved instruction pointer, the instruction there, and the nearest
//      ELF symbol (job/stop_site.h);
//   3. gather every fact into one JSON document (keys: FORMAT.md,
//      "snap info --json"; job/describe.h);
//   4. print that document, or render it as text.
// The text is rendered from the document, so both say the same things.
#include <cstdio>
#include <filesystem>
#include <string>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "cmd/command.h"
#include "cmd/info_tree.h"
#include "image/image_reader.h"
#include "image/manifest.h"
#include "image/manifest_file.h"
#include "image/series.h"
#include "job/describe.h"

namespace snap::cmd {

namespace {

using job::ojson;

cxxopts::Options info_options() {
  cxxopts::Options o("snap info", "Describe a checkpoint image: processes, threads and where "
                                  "they stopped, memory, files, storage.\n");
  o.custom_help("DIR [--json | --manifest]");
  o.positional_help("DIR");
  o.add_options()
      ("dir", "image directory written by snap dump, or a checkpoint series directory "
              "(lists the series, then describes its latest good checkpoint)",
       cxxopts::value<std::string>())
      ("json", "print the facts as one JSON document (keys: FORMAT.md)")
      ("manifest", "print the image's whole manifest as it is stored (manifest.json with "
                   "the checkpoint of checkpoint.json.lz4 in it; FORMAT.md), for debugging")
      ("h,help", "show this help");
  o.parse_positional({"dir"});
  return o;
}

// ---- step 4: text ----

std::string size_text(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) v /= 1024, u++;
  return fmt::format("{:.1f} {} ({} bytes)", v, units[u], bytes);
}

std::string str_or(const ojson& v, const std::string& dflt) {
  return v.is_string() ? v.get<std::string>() : dflt;
}

// Unread pipe data as a short printable preview.
std::string preview(const std::string& hexdata) {
  std::string s;
  for (size_t i = 0; i + 1 < hexdata.size() && s.size() < 40; i += 2) {
    int c = std::stoi(hexdata.substr(i, 2), nullptr, 16);
    if (c == '\n') s += "\\n";
    else if (c >= 0x20 && c < 0x7f) s += static_cast<char>(c);
    else s += fmt::format("\\x{:02x}", c);
  }
  return s;
}

void print_thread(const ojson& t) {
  std::printf("    tid %d  ip %s  %s  %s\n", t["tid"].get<int>(), t["ip"].get<std::string>().c_str(),
              str_or(t["symbol"], "?").c_str(), str_or(t["instruction"], "(no code)").c_str());
  if (t["symbol"].is_null() || !t["symbol_note"].is_null())
    std::printf("      (%s)\n", str_or(t["symbol_note"], "").c_str());
  if (t["in_syscall"].get<bool>())
    std::printf("      in system call %s (%lld); restore re-issues it\n",
                str_or(t["syscall"]["name"], "?").c_str(),
                static_cast<long long>(t["syscall"]["nr"].get<int64_t>()));
  std::printf("      sp %s  sigmask %s  pending signals %zu (+%zu process-wide)\n",
              t["sp"].get<std::string>().c_str(), t["sigmask"].get<std::string>().c_str(),
              t["pending_signals"].get<size_t>(), t["pending_shared_signals"].get<size_t>());
  if (!t["sigaltstack"].is_null())
    std::printf("      sigaltstack sp %s size %llu flags %llu\n",
                t["sigaltstack"]["sp"].get<std::string>().c_str(),
                static_cast<unsigned long long>(t["sigaltstack"]["size"].get<uint64_t>()),
                static_cast<unsigned long long>(t["sigaltstack"]["flags"].get<uint64_t>()));
  if (!t["rseq"].is_null())
    std::printf("      rseq at %s\n", t["rseq"]["addr"].get<std::string>().c_str());
  if (!t["scheduling"].is_null())
    std::printf("      scheduling %s\n", t["scheduling"].get<std::string>().c_str());
  if (t.contains("cpus") && !t["cpus"].is_null())
    std::printf("      bound to CPUs %s\n", t["cpus"].get<std::string>().c_str());
  if (t.contains("mempolicy") && !t["mempolicy"].is_null())
    std::printf("      memory policy %s (its own)\n", t["mempolicy"].get<std::string>().c_str());
  if (t.contains("seccomp") && !t["seccomp"].is_null())
    std::printf("      seccomp %s (its own)\n", t["seccomp"].get<std::string>().c_str());
}

void print_process(const ojson& p) {
  std::printf("\nprocess %d (%s)  ppid %d  pgid %d  sid %d\n", p["pid"].get<int>(),
              p["comm"].get<std::string>().c_str(), p["ppid"].get<int>(), p["pgid"].get<int>(),
              p["sid"].get<int>());
  if (p["zombie"].get<bool>()) {
    std::printf("  zombie (%s): exited, not yet reaped by its parent\n",
                p["exit_text"].get<std::string>().c_str());
    return;
  }
  std::printf("  exe  %s\n  cwd  %s\n", p["exe"].get<std::string>().c_str(),
              p["cwd"].get<std::string>().c_str());
  if (const std::string root = str_or(p["root"], "/"); root != "/")
    std::printf("  root %s (chrooted)\n", root.c_str());
  if (p.contains("mempolicy") && !p["mempolicy"].is_null())
    std::printf("  memory policy %s\n", p["mempolicy"].get<std::string>().c_str());
  if (p.contains("caps")) {
    const auto& c = p["caps"];
    auto set = [&](const char* k) { return c[k].get<std::string>(); };
    if (set("permitted") != "0x0" || set("ambient") != "0x0" || set("inheritable") != "0x0")
      std::printf("  capabilities: permitted %s, effective %s, inheritable %s, ambient %s, "
                  "bounding %s\n",
                  set("permitted").c_str(), set("effective").c_str(), set("inheritable").c_str(),
                  set("ambient").c_str(), set("bounding").c_str());
  }
  std::printf("  threads: %zu, where each stopped:\n", p["threads"].size());
  for (const auto& t : p["threads"]) print_thread(t);

  size_t nondefault = 0;
  for (const auto& a : p["sigactions"]) nondefault += a["disposition"] != "default";
  if (nondefault) {
    std::printf("  signal dispositions (other than default):\n");
    for (const auto& a : p["sigactions"]) {
      if (a["disposition"] == "default") continue;
      std::string what = a["disposition"] == "ignore"
                             ? "ignored"
                             : str_or(a["handler_symbol"], "?") + " (" +
                                   a["handler"].get<std::string>() + ")";
      std::printf("    %-10s %s  flags %s  mask %s\n", a["name"].get<std::string>().c_str(),
                  what.c_str(), a["flags_text"].get<std::string>().c_str(),
                  a["mask"].get<std::string>().c_str());
    }
  } else if (p["sigactions"].empty()) {
    std::printf("  signal dispositions: not collected\n");
  }

  auto ms = [](const ojson& v) { return static_cast<double>(v.get<int64_t>()) / 1e6; };
  if (!p["itimers"].is_null())
    for (const auto& [name, v] : p["itimers"].items())
      if (v["interval_ns"].get<int64_t>() || v["value_ns"].get<int64_t>())
        std::printf("  itimer %-8s next in %.3f ms, every %.3f ms\n", name.c_str(), ms(v["value_ns"]),
                    ms(v["interval_ns"]));
  for (const auto& t : p["posix_timers"])
    std::printf("  POSIX timer %d  clock %d  %s  %s  next in %.3f ms, every %.3f ms, overrun %d\n",
                t["id"].get<int>(), t["clock_id"].get<int>(), t["signal"].get<std::string>().c_str(),
                t["notify"].get<std::string>().c_str(), ms(t["value"]["value_ns"]),
                ms(t["value"]["interval_ns"]), t["overrun"].get<int>());
  if (!p["pdeathsig"].is_null() && p["pdeathsig"].get<int>())
    std::printf("  parent-death signal %s\n", job::signal_name(p["pdeathsig"].get<int>()).c_str());

  std::printf("  mappings: %zu\n", p["mappings"].size());
  std::printf("    %-37s %-5s %-11s %7s %7s  %s\n", "address", "perms", "kind", "pages", "dumped",
              "path");
  for (const auto& m : p["mappings"])
    std::printf("    %18s-%-18s %-5s %-11s %7llu %7llu  %s\n",
                m["start"].get<std::string>().c_str(), m["end"].get<std::string>().c_str(),
                m["perms"].get<std::string>().c_str(), m["kind"].get<std::string>().c_str(),
                static_cast<unsigned long long>(m["pages"].get<uint64_t>()),
                static_cast<unsigned long long>(m["pages_dumped"].get<uint64_t>()),
                m["path"].get<std::string>().c_str());
  for (const auto& m : p["mappings"]) {
    if (m.contains("mempolicy") && !m["mempolicy"].is_null())
      std::printf("    %s: memory policy %s\n", m["start"].get<std::string>().c_str(),
                  m["mempolicy"].get<std::string>().c_str());
    if (m.value("saved_file", false))
      std::printf("    %s: a data file mapped shared: what it maps is in the image, written back "
                  "into it at restore\n", m["start"].get<std::string>().c_str());
    if (m.value("hugetlb_page", uint64_t{0}))
      std::printf("    %s: hugetlb memory in pages of %llu KiB\n", m["start"].get<std::string>().c_str(),
                  static_cast<unsigned long long>(m["hugetlb_page"].get<uint64_t>() >> 10));
  }

  std::printf("  fds: %zu\n", p["fds"].size());
  std::printf("    %4s %-9s %-28s %10s  %s\n", "fd", "type", "flags", "pos", "path");
  for (const auto& f : p["fds"]) {
    std::printf("    %4d %-9s %-28s %10llu  %s\n", f["fd"].get<int>(),
                f["type"].get<std::string>().c_str(), f["flags_text"].get<std::string>().c_str(),
                static_cast<unsigned long long>(f["pos"].get<uint64_t>()),
                f["path"].get<std::string>().c_str());
    if (f["pipe_data_bytes"].get<size_t>() > 0)
      std::printf("         unread pipe data: %zu bytes \"%s\"\n", f["pipe_data_bytes"].get<size_t>(),
                  preview(f["pipe_data"].get<std::string>()).c_str());
    if (const auto& u = f["unix_socket"]; !u.is_null()) {
      std::string peer = u["peer_inode"].is_null() ? "none" : std::to_string(u["peer_inode"].get<uint64_t>());
      std::string name = u["name"].get<std::string>();
      std::printf("         unix %s, %s, peer inode %s%s, %zu message(s) / %llu bytes queued\n",
                  u["type"].get<std::string>().c_str(), u["state"].get<std::string>().c_str(),
                  peer.c_str(), name.empty() ? "" : (", bound to " + name).c_str(),
                  u["queued_messages"].get<size_t>(),
                  static_cast<unsigned long long>(u["queued_bytes"].get<uint64_t>()));
    }
  }
}

std::string ratio_text(const ojson& r) {
  return r.is_null() ? "n/a" : fmt::format("{:.2f}", r.get<double>());
}

std::string short_size(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < (1 << 20)) return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / 1024);
  if (bytes < (1ull << 30)) return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
  return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1ull << 30));
}

// One file of the temporary directories or one deleted file or memfd.
void print_file(const ojson& t, const char* more) {
  const bool regular = t["kind"] == "file" || t["kind"] == "memfd";
  std::printf("  %-9s  %s  %12s  %s%s%s\n", t["kind"].get<std::string>().c_str(),
              t["mode"].get<std::string>().c_str(),
              regular ? (std::to_string(t["size"].get<uint64_t>()) + " B").c_str() : "",
              t["path"].get<std::string>().c_str(),
              t["data_in_pages"].get<bool>() ? "  (its contents in the page store)" : "", more);
}

void print_series(const ojson& series) {
  std::printf("checkpoint series: %zu checkpoint(s)\n", series.size());
  std::printf("  %6s %-20s %10s %10s %10s %8s  %-12s %s\n", "number", "created", "memory",
              "new", "referenced", "shared", "changes by", "state");
  for (const auto& e : series) {
    std::string state = e["complete"].get<bool>() ? "complete" : "DAMAGED";
    if (e["latest"].get<bool>()) state += ", latest";
    std::printf("  %6llu %-20s %10s %10s %10s %8llu  %-12s %s\n",
                static_cast<unsigned long long>(e["number"].get<uint64_t>()),
                e["created"].get<std::string>().c_str(),
                short_size(e["pages"].get<uint64_t>() * image::kPageSize).c_str(),
                short_size(e["new_bytes"].get<uint64_t>()).c_str(),
                short_size(e["referenced_bytes"].get<uint64_t>()).c_str(),
                static_cast<unsigned long long>(e["earlier_pages"].get<uint64_t>()),
                e["changed_pages_by"].is_null() ? "-"
                                                : e["changed_pages_by"].get<std::string>().c_str(),
                state.c_str());
    if (!e["problem"].is_null())
      std::printf("         %s\n", e["problem"].get<std::string>().c_str());
  }
  std::printf("  (shared: pages of the checkpoint stored by earlier ones)\n\n");
}

void print_text(const ojson& j) {
  if (!j["series"].is_null()) print_series(j["series"]);
  std::printf("snap image %s\n", j["dir"].get<std::string>().c_str());
  if (!j["series_number"].is_null())
    std::printf("  checkpoint %llu of a series, changed pages found by %s\n",
                static_cast<unsigned long long>(j["series_number"].get<uint64_t>()),
                j["changed_pages_by"].is_null()
                    ? "(not said)"
                    : j["changed_pages_by"].get<std::string>().c_str());
  std::printf("  format version %u, written by snap %s at %s\n",
              j["format_version"].get<unsigned>(), j["snap_version"].get<std::string>().c_str(),
              j["created"].get<std::string>().c_str());
  std::printf("  host %s, kernel %s\n", j["hostname"].get<std::string>().c_str(),
              j["kernel_release"].get<std::string>().c_str());
  if (j.contains("cpu") && !j["cpu"].is_null())
    std::printf("  CPU %s, %zu features a restore needs\n",
                j["cpu"]["model"].get<std::string>().c_str(), j["cpu"]["features"].size());
  if (!j["pid_namespace"].is_null())
    std::printf("  pids as the job saw them, %s\n",
                j["pid_namespace"] == "own" ? "in its own pid namespace"
                                            : "in the dumper's pid namespace");
  if (j.contains("job_cpus") && !j["job_cpus"].is_null())
    std::printf("  the job was given CPUs %s\n", j["job_cpus"].get<std::string>().c_str());
  for (const auto& p : j["processes"]) print_process(p);
  print_tree_and_sharing(j);
  if (!j["temp_files"].empty()) {
    std::printf("\nin temporary directories (made again at restore where missing) and named by "
                "--with-files (put back as they were): %zu\n",
                j["temp_files"].size());
    for (const auto& t : j["temp_files"])
      print_file(t, t.value("put_back", false) ? "  (--with-files)" : "");
  }
  if (!j["ghost_files"].empty()) {
    std::printf("\ndeleted files and memfds (made again at restore): %zu\n",
                j["ghost_files"].size());
    for (const auto& g : j["ghost_files"])
      print_file(g, g["links"].get<uint64_t>() > 0 && g["kind"] != "memfd"
                        ? "  (another name still led to it: reopened by its handle)"
                        : "");
  }

  const auto& needed = j["needed_files"];
  std::printf("\nfiles the restore opens at their paths, their contents not in the image: %zu "
              "(and %llu files mapped: programs, libraries, read-only data)\n",
              needed["files"].size(),
              static_cast<unsigned long long>(needed["mapped_files"].get<uint64_t>()));
  for (const auto& f : needed["files"]) {
    std::string by;
    for (const auto& b : f["used_by"]) by += (by.empty() ? "" : ", ") + b.get<std::string>();
    std::printf("  %s  %s  (%s)%s\n", f["path"].get<std::string>().c_str(),
                f["size"].get<uint64_t>() ? size_text(f["size"].get<uint64_t>()).c_str() : "",
                by.c_str(),
                f["temp"].get<bool>() ? "  in a temporary directory: another node needs it copied"
                                      : "");
  }

  const auto& s = j["stats"];
  auto u = [&](const char* k) { return s[k].get<uint64_t>(); };
  std::printf("\nmemory and storage\n");
  std::printf("  memory covered  %s: %llu pages (%llu zero, %llu unique, %llu duplicate)\n",
              size_text(u("raw_bytes")).c_str(), static_cast<unsigned long long>(u("pages")),
              static_cast<unsigned long long>(u("zero_pages")),
              static_cast<unsigned long long>(u("unique_pages")),
              static_cast<unsigned long long>(u("duplicate_pages")));
  if (u("file_pages"))
    std::printf("                  of them %s of files (in temporary directories, deleted, "
                "memfds)\n",
                size_text(u("file_pages") * 4096).c_str());
  std::printf("  pages stored    %s in %llu blocks (%llu stored uncompressed)\n",
              size_text(u("stored_bytes")).c_str(), static_cast<unsigned long long>(u("blocks")),
              static_cast<unsigned long long>(u("raw_blocks")));
  std::printf("  dedup ratio       %s (non-zero pages per unique page)\n",
              ratio_text(s["dedup_ratio"]).c_str());
  std::printf("  compression ratio %s (unique page bytes per byte stored)\n",
              ratio_text(s["compression_ratio"]).c_str());
  std::printf("  image size      %s on disk\n", size_text(u("image_bytes")).c_str());
  if (!j["series_number"].is_null())
    std::printf("  series          %llu pages from earlier checkpoints (%llu reported unchanged), "
                "%s stored new\n",
                static_cast<unsigned long long>(u("earlier_pages")),
                static_cast<unsigned long long>(u("unchanged_pages")),
                size_text(u("new_stored_bytes")).c_str());
}

int run_info(const cxxopts::ParseResult& args) {
  if (!args.count("dir")) throw UsageError("missing image directory");
  const std::string path = args["dir"].as<std::string>();
  auto img = image::ImageReader::open(path);  // 1 (a series: its latest good checkpoint)
  if (args.count("manifest")) {
    std::fputs(image::to_json(image::read_manifest(img.dir())).c_str(), stdout);
    return kExitOk;
  }
  ojson doc = job::describe_image(img);      // 2, 3
  if (img.in_series() && image::is_series_dir(path) &&
      !std::filesystem::exists(std::filesystem::path(path) / "manifest.json"))
    doc["series"] = job::describe_series(path);
  if (args.count("json"))                                               // 4
    std::printf("%s\n", doc.dump(1, ' ', false, ojson::error_handler_t::replace).c_str());
  else
    print_text(doc);
  return kExitOk;
}

}  // namespace

const Command kInfo = {"info", "describe a checkpoint image (--json for scripts)", info_options,
                       run_info};

}  // namespace snap::cmd
