// Who a restored process is: its user and group ids, supplementary groups,
// and resource limits. Checked before anything is created (a restore that
// would give the job other ids refuses; one that only lowers a hard limit
// warns), and put back in each thread as the last step of its rebuild.
#pragma once

#include <string>
#include <vector>

#include "image/checkpoint.h"
#include "restore/remote_page.h"
#include "tracer/batch.h"

namespace snap::restore {

// Throws Error naming the pid and the ids when the restoring user cannot
// give the job its ids: in a fresh user namespace (an ordinary user, or
// --isolate) only the caller's own uid and gid exist; elsewhere only root
// can set other ids, and give only capabilities it has itself. Returns
// warnings for what comes back weaker without changing what the job does:
// supplementary groups in a user namespace, hard resource limits above
// what this user may set.
std::vector<std::string> check_credentials(const image::Checkpoint& ckpt, bool fresh_namespace);

// Queued for the thread itself, after everything that needs privilege: its saved
// supplementary groups, gids and uids (real, effective, saved, fs), nothing
// when they are already the caller's, then its capability sets where the
// image has them (bounding set, permitted, effective, inheritable, ambient;
// nothing more when they are what its uid gets anyway). In a fresh user
// namespace (`fresh_namespace`) the ids are already the job's: only the
// capabilities, which the skeleton had all of there and the job had not
// (or those the image holds).
void restore_credentials(SyscallBatch& batch, const image::Process& p, bool fresh_namespace);

// The audit login uid of a job that set its own where snap restore's is
// still unset (anyone may set an unset one, once, but only from the initial
// user namespace, where a restore for an ordinary user no longer is by the
// time its processes run): snap restore takes it itself first, so every
// process it starts inherits it. Nothing where the processes differ in it
// or snap restore's is set (each skeleton then sets its own, or refuses).
void adopt_login_uid(const image::Checkpoint& ckpt);

}  // namespace snap::restore
