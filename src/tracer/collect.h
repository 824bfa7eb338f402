// Collecting a stopped process's state (everything but memory contents).
#pragma once

#include "image/checkpoint.h"
#include "tracer/task.h"

namespace snap {

// One thread's registers, extended state, signal mask and queued signals.
image::ThreadState collect_thread(const Task& t, bool leader);

// /proc facts plus every thread's state, for a process of a SeizedTree.
image::Process collect_process(const SeizedTree::Proc& p);

}  // namespace snap
