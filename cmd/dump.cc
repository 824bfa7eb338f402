// snap dump: checkpoint a running process tree into an image directory.
// The steps are src/job/dump.h's; this file parses options and prints.
#include <cstdio>
#include <fmt/core.h>

#include "cmd/command.h"
#include "cmd/progress.h"
#include "image/image_writer.h"
#include "job/dump.h"
#include "tracer/task.h"

namespace snap::cmd {

namespace {

cxxopts::Options dump_options() {
  cxxopts::Options o("snap dump", "Checkpoint a running process and all its descendants.\n");
  o.custom_help("--pid PID -o DIR [--kill | --memory-budget SIZE] [--jobs N] [--compress auto|always] "
                "[--temp-files-max SIZE] [--shared-files-max SIZE] [--with-files DIR]... [--force] [--tcp-established | --tcp-close] [-v]");
  o.add_options()
      ("p,pid", "process to checkpoint (with its threads and descendants)", cxxopts::value<int>())
      ("o,output", "image directory to write (created 0700)", cxxopts::value<std::string>())
      ("leave-running", "let the job continue after the dump (the default)")
      ("kill", "kill the whole tree once the image is safely written (for requeue)")
      ("memory-budget", "most extra memory a leave-running dump may cost the job (SIZE: 64M, 1G, "
       "bytes); default: 5 % of its resident memory, at least 64M, at most half of what its "
       "memory cgroup has left; past it the job is stopped again until the rest is read",
       cxxopts::value<std::string>())
      ("j,jobs", "threads reading and compressing memory (default: the CPUs snap may run on, "
                 "at most 64)", cxxopts::value<unsigned>())
      ("compress", "which page blocks are lz4-compressed: 'auto' (the default): those the disk "
                   "leaves time for (all of them when the disk is the limit, at least an eighth "
                   "when the CPUs are); 'always': every one (the smallest image, slower where "
                   "CPUs are few)", cxxopts::value<std::string>())
      ("tcp-established", "also save TCP connections whose peer is outside the job (in TCP "
       "repair mode, as CRIU does; needs CAP_NET_ADMIN): with --kill the job's end of them "
       "closes silently, what the peer sends meanwhile is dropped (an nf_tables table the "
       "restore removes), and the peer carries on with the restored job if the restore is on "
       "this host")
      ("tcp-close", "save TCP connections whose peer is outside the job as closed (nothing of "
       "them is read; no privilege needed): the restored job finds each one closed (reads see "
       "end of file, writes EPIPE), as if the peer had gone away, so a program that reconnects "
       "(a license client, a Dask worker) goes on")
      ("temp-files-max", "most bytes of the job's larger files in temporary directories ($TMPDIR, "
       "/tmp, /dev/shm: scratch a restore on another node would not find) the image keeps, "
       "in all (SIZE: 512M, 20G; default 4G; 0: none): a file past it is reopened by its path "
       "at restore, and the dump says so", cxxopts::value<std::string>())
      ("shared-files-max", "most bytes of data files the job maps shared and may write (a "
       "numpy.memmap array) the image keeps, in all (SIZE; default 4G; 0: none): what they "
       "held at the dump is written back into them at restore; a file past it is left as the "
       "restore finds it, and the dump says so", cxxopts::value<std::string>())
      ("with-files", "a directory (or file) the job writes and reads again as it runs (an "
       "outdir of restart or history files; repeatable): saved as it is at the dump, read "
       "while the job is stopped, and put back by the restore over what is there then (files "
       "added since are left)", cxxopts::value<std::vector<std::string>>())
      ("f,force", "replace an existing image at DIR (atomically, only once the new one is complete)")
      ("v,verbose", "log each step")
      ("h,help", "show this help");
  return o;
}

int run_dump(const cxxopts::ParseResult& args) {
  if (!args.count("pid")) throw UsageError("missing --pid PID");
  if (!args.count("output")) throw UsageError("missing -o DIR");
  if (args.count("kill") && args.count("leave-running"))
    throw UsageError("--kill and --leave-running contradict each other");
  const pid_t pid = args["pid"].as<int>();
  const std::string dir = args["output"].as<std::string>();

  // Refuse a bad target or destination before stopping anything.
  check_dumpable(pid);
  auto writer = image::ImageWriter::create(dir, args.count("force") > 0);
  job::ImageSink sink(writer);
  Progress progress("dump");
  job::DumpOptions opts;
  opts.kill = args.count("kill") > 0;
  opts.tcp_established = args.count("tcp-established") > 0;
  opts.tcp_close = args.count("tcp-close") > 0;
  if (opts.tcp_established && opts.tcp_close)
    throw UsageError("--tcp-established and --tcp-close contradict each other");
  if (args.count("memory-budget")) {
    if (opts.kill) throw UsageError("--memory-budget is for leave-running dumps (--kill stops the job)");
    opts.memory_budget = parse_size("--memory-budget", args["memory-budget"].as<std::string>());
  }
  if (args.count("jobs")) {
    opts.jobs = args["jobs"].as<unsigned>();
    if (opts.jobs == 0) throw UsageError("--jobs must be at least 1");
  }
  if (args.count("compress")) opts.compression = parse_compression(args["compress"].as<std::string>());
  if (args.count("temp-files-max"))
    opts.temp_files_max = parse_size("--temp-files-max", args["temp-files-max"].as<std::string>());
  if (args.count("shared-files-max"))
    opts.shared_files_max = parse_size("--shared-files-max", args["shared-files-max"].as<std::string>());
  if (args.count("with-files"))
    opts.with_files = absolute_paths("--with-files", args["with-files"].as<std::vector<std::string>>());
  if (progress.enabled())
    opts.progress = [&](const image::ImageStats& st) { progress.update(st.raw_bytes, st.stored_bytes); };
  opts.hand_off_unprotect = true;  // snap exits next
  auto r = job::dump_tree(pid, sink, opts);
  progress.done();
  const uint64_t file_bytes = r.stats.file_pages * 4096;
  const std::string files =
      file_bytes ? fmt::format(" and {:.1f} MiB of files",
                               static_cast<double>(file_bytes) / (1 << 20))
                 : "";
  std::fprintf(stderr,
               "snap dump: pid %d: %zu process(es), %zu thread(s), %.1f MiB memory%s -> %.1f MiB "
               "image in %.2f s (frozen %.2f s)%s\n",
               pid, r.processes, r.threads,
               static_cast<double>(r.stats.raw_bytes - file_bytes) / (1 << 20), files.c_str(),
               static_cast<double>(r.stats.stored_bytes) / (1 << 20), r.seconds, r.frozen,
               opts.kill ? "; job killed" : "");
  if (!opts.kill)
    std::fprintf(stderr, "snap dump: extra memory: peak %.1f MiB of a %.1f MiB budget\n",
                 static_cast<double>(r.peak_extra) / (1 << 20),
                 static_cast<double>(r.memory_budget) / (1 << 20));
  return kExitOk;
}

}  // namespace

const Command kDump = {"dump", "checkpoint a running process tree into an image directory",
                       dump_options, run_dump};

}  // namespace snap::cmd
