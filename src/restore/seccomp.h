// A job's own seccomp, installed again (tracer/seccomp.h): each thread's
// filters, oldest first, or strict mode, queued in the thread itself (those
// all its process's threads share in the leader, before the threads are
// made) before its credentials, while snap's calls there still go through
// (the restored processes are traced with PTRACE_O_SUSPEND_SECCOMP); the
// filters act from the moment snap lets the job go.
#pragma once

#include "image/checkpoint.h"
#include "tracer/batch.h"

namespace snap::restore {

// Whether any thread of `p` has seccomp of its own to install.
bool has_own_seccomp(const image::Process& p);

// Refuses, before anything is created, an image with seccomp to install
// where this snap cannot (without CAP_SYS_ADMIN, or under seccomp itself),
// or with more filter code than a thread's batch holds.
void check_seccomp(const image::Checkpoint& ckpt);

// The filters every thread of `p` has first, in the same order: installed
// in its leader before its threads are created, so that they share them as
// the job's threads did (SECCOMP_FILTER_FLAG_TSYNC, which the job may use
// again, needs every thread's filters to be the caller's or older ones of
// them). The kernel shows no filter's identity: the same code at the same
// place in every thread is taken as one filter.
size_t shared_seccomp_filters(const image::Process& p);

// Queues for `p`'s leader the first `shared` filters of its threads.
void add_shared_seccomp(SyscallBatch& batch, const image::Process& p, size_t shared);

// Queues for thread `t` its seccomp, but for its first `shared` filters
// (those its process's leader installed before creating it), if it has its own.
void add_seccomp(SyscallBatch& batch, pid_t pid, const image::ThreadState& t, size_t shared);

}  // namespace snap::restore
