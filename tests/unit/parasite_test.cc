// Tests for src/parasite: the blob loader, the protocol, the sigreturn frame
// builder, and the blob itself, run *locally* in a forked child (no ptrace):
// the child maps the blob with the loader, calls its command loop with one
// end of a socketpair, and the test drives it through ParasiteClient.
#include <capstone/capstone.h>
#include <elf.h>
#include <gelf.h>
#include <libelf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/ucontext.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "parasite/blob_loader.h"
#include "parasite/client.h"
#include "parasite/embedded_blob.h"
#include "parasite/protocol.h"
#include "parasite/sigframe.h"
#include "parasite/thread_guard.h"
#include "tracer/proc.h"
#include "tracer/task.h"

namespace snap::parasite {
namespace {

// ---- helpers -----------------------------------------------------------------

// A forked child running `body`; its exit status is body's return value.
// Killed and reaped if the test leaves early.
class Child {
 public:
  explicit Child(const std::function<int()>& body) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int rc = 99;
      try {
        rc = body();
      } catch (...) {
        rc = 98;
      }
      ::_exit(rc);
    }
    if (pid_ < 0) throw SysError("fork", errno);
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  // Exit code, or 1000 + signal number.
  int wait() {
    int st = 0;
    if (::waitpid(pid_, &st, 0) != pid_) return -1;
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
  }

 private:
  pid_t pid_ = -1;
};

std::pair<ScopedFd, ScopedFd> socket_pair() {
  int sv[2];
  check_sys(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair");
  return {ScopedFd(sv[0]), ScopedFd(sv[1])};
}

// The blob mapped into this process the way the host maps it into a target:
// the loader image up to its zero tail copied into fresh memory, then the
// protection of each segment that wants other than read-write applied.
struct LocalBlob {
  uint8_t* mem = nullptr;
  size_t size = 0;
  LoadedBlob blob;

  LocalBlob() {
    auto elf = embedded_blob();
    size = prepare_blob(elf, remote_addr(0)).size();
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw SysError("mmap", errno);
    mem = static_cast<uint8_t*>(m);
    blob = prepare_blob(elf, remote_addr(reinterpret_cast<uint64_t>(mem)));
    std::memcpy(mem, blob.image().data(), blob.written_size());
    for (const auto& s : blob.segments())
      if (s.prot != (PROT_READ | PROT_WRITE))
        check_sys(::mprotect(mem + s.offset, s.size, s.prot), "mprotect");
  }
  template <typename T>
  T* at(const char* sym) {
    return reinterpret_cast<T*>(mem + blob.symbol_offset(sym));
  }
  long service(snap_parasite_args* a) {
    auto fn = reinterpret_cast<long (*)(snap_parasite_args*)>(mem + blob.symbol_offset(SNAP_PARASITE_SYM_SERVICE));
    return fn(a);
  }
  snap_parasite_args* args(int sock, uint64_t sigreturn_sp = 0) {
    auto* a = at<snap_parasite_args>(SNAP_PARASITE_SYM_ARGS);
    a->magic = SNAP_PARASITE_MAGIC;
    a->version = SNAP_PARASITE_VERSION;
    a->sock_fd = sock;
    a->sigreturn_sp = sigreturn_sp;
    return a;
  }
};

// ---- loader -----------------------------------------------------------------

// The blob's code leaves the x87, SSE and AVX state alone (it is built with
// -mgeneral-regs-only): a thread it runs in keeps its XSAVE area as it was,
// which is why snap does not write that area back (ThreadGuard::release).
TEST(BlobLoader, CodeTouchesNoFloatingPointOrVectorRegister) {
  auto bytes = embedded_blob();
  ASSERT_NE(elf_version(EV_CURRENT), EV_NONE);
  Elf* elf = elf_memory(reinterpret_cast<char*>(const_cast<uint8_t*>(bytes.data())), bytes.size());
  ASSERT_NE(elf, nullptr);
  size_t shstrndx = 0;
  ASSERT_EQ(elf_getshdrstrndx(elf, &shstrndx), 0);
  csh cs;
  ASSERT_EQ(cs_open(CS_ARCH_X86, CS_MODE_64, &cs), CS_ERR_OK);
  cs_option(cs, CS_OPT_DETAIL, CS_OPT_ON);
  cs_insn* insn = cs_malloc(cs);
  size_t checked = 0;
  std::vector<std::string> found;
  auto state_reg = [&](uint16_t r) {
    std::string n = cs_reg_name(cs, r) ? cs_reg_name(cs, r) : "";
    return n.starts_with("xmm") || n.starts_with("ymm") || n.starts_with("zmm") ||
           n.starts_with("st(") || n.starts_with("mm") || n.starts_with("fp") || n == "mxcsr" ||
           (n.size() == 2 && n[0] == 'k' && n[1] >= '0' && n[1] <= '7');
  };
  for (Elf_Scn* scn = nullptr; (scn = elf_nextscn(elf, scn));) {
    GElf_Shdr sh;
    ASSERT_NE(gelf_getshdr(scn, &sh), nullptr);
    if (sh.sh_type != SHT_PROGBITS || !(sh.sh_flags & SHF_EXECINSTR)) continue;
    const uint8_t* code = bytes.data() + sh.sh_offset;
    size_t left = sh.sh_size;
    uint64_t addr = sh.sh_addr;
    while (left) {
      if (!cs_disasm_iter(cs, &code, &left, &addr, insn)) {  // padding: on by a byte
        code++, left--, addr++;
        continue;
      }
      checked++;
      cs_regs rd, wr;
      uint8_t nrd = 0, nwr = 0;
      bool uses = false;
      if (cs_regs_access(cs, insn, rd, &nrd, wr, &nwr) == CS_ERR_OK) {
        for (uint8_t i = 0; i < nrd; i++) uses |= state_reg(rd[i]);
        for (uint8_t i = 0; i < nwr; i++) uses |= state_reg(wr[i]);
      }
      for (uint8_t i = 0; i < insn->detail->groups_count; i++) {
        uint8_t g = insn->detail->groups[i];
        uses |= g == X86_GRP_SSE1 || g == X86_GRP_SSE2 || g == X86_GRP_SSE3 || g == X86_GRP_SSSE3 ||
                g == X86_GRP_SSE41 || g == X86_GRP_SSE42 || g == X86_GRP_AVX || g == X86_GRP_AVX2 ||
                g == X86_GRP_AVX512 || g == X86_GRP_FPU || g == X86_GRP_MMX;
      }
      if (uses) found.push_back(fmt::format("{:#x}: {} {}", insn->address, insn->mnemonic, insn->op_str));
    }
  }
  cs_free(insn, 1);
  cs_close(&cs);
  elf_end(elf);
  EXPECT_GT(checked, 100u) << "the blob's code was not found";
  EXPECT_TRUE(found.empty()) << found.size() << " instruction(s), the first: " << found.front();
}

// The host writes only what precedes the image's zero tail (.bss: the
// service's stack and buffers, ~50 KiB) into the fresh mapping.
TEST(BlobLoader, ZeroTailIsLeftToTheFreshMapping) {
  auto b = prepare_blob(embedded_blob(), remote_addr(0x10000000));
  EXPECT_EQ(b.written_size() % 4096, 0u);
  EXPECT_GT(b.written_size(), 0u);
  EXPECT_LT(b.written_size(), b.size()) << "the blob has a .bss; none is written";
  for (uint64_t i = b.written_size(); i < b.size(); i++)
    ASSERT_EQ(b.image()[i], 0) << "non-zero byte at " << i << " past written_size()";
  for (uint64_t off : b.relocated_offsets()) EXPECT_LE(off + 8, b.written_size());
}

TEST(BlobLoader, FindsEntryPointsAndData) {
  auto b = prepare_blob(embedded_blob(), remote_addr(0x10000000));
  for (const char* s : {SNAP_PARASITE_SYM_SERVICE, SNAP_PARASITE_SYM_TRAP_ENTRY, SNAP_PARASITE_SYM_THREAD_ENTRY,
                        SNAP_PARASITE_SYM_ARGS,
                        SNAP_PARASITE_SYM_RELOC_CHECK}) {
    auto a = b.find_symbol(s);
    ASSERT_TRUE(a.has_value()) << s;
    EXPECT_GE(*a, b.base()) << s;
    EXPECT_LT(*a, b.base() + static_cast<int64_t>(b.size())) << s;
  }
  EXPECT_FALSE(b.find_symbol("no_such_symbol").has_value());
  try {
    b.symbol("no_such_symbol");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_symbol"), std::string::npos);
  }
  // Code is R+X, data R+W, nothing both writable and executable.
  ASSERT_GE(b.segments().size(), 2u);
  for (const auto& s : b.segments()) {
    EXPECT_EQ(s.offset % 4096, 0u);
    EXPECT_EQ(s.size % 4096, 0u);
    EXPECT_FALSE((s.prot & PROT_WRITE) && (s.prot & PROT_EXEC));
  }
  EXPECT_EQ(b.size() % 4096, 0u);
}

TEST(BlobLoader, RelocationsFollowTheBase) {
  const uint64_t b1 = 0x100000, b2 = 0x7f1234560000;
  auto x = prepare_blob(embedded_blob(), remote_addr(b1));
  auto y = prepare_blob(embedded_blob(), remote_addr(b2));
  ASSERT_EQ(x.relocated_offsets(), y.relocated_offsets());
  ASSERT_FALSE(x.relocated_offsets().empty());
  ASSERT_EQ(x.size(), y.size());
  std::vector<bool> relocated(x.size(), false);
  for (uint64_t off : x.relocated_offsets()) {
    uint64_t vx, vy;
    std::memcpy(&vx, x.image().data() + off, 8);
    std::memcpy(&vy, y.image().data() + off, 8);
    EXPECT_EQ(vy - vx, b2 - b1) << "at offset " << off;
    for (int i = 0; i < 8; i++) relocated[off + i] = true;
  }
  for (size_t i = 0; i < x.size(); i++)
    if (!relocated[i]) {
      ASSERT_EQ(x.image()[i], y.image()[i]) << "at offset " << i;
    }
  // The self-pointer the blob checks before trusting its dispatch table.
  uint64_t self;
  std::memcpy(&self, y.image().data() + y.symbol_offset(SNAP_PARASITE_SYM_RELOC_CHECK), 8);
  EXPECT_EQ(remote_addr(self), y.symbol(SNAP_PARASITE_SYM_RELOC_CHECK));
  EXPECT_EQ(y.symbol(SNAP_PARASITE_SYM_SERVICE).as_int() - x.symbol(SNAP_PARASITE_SYM_SERVICE).as_int(), b2 - b1);
}

void expect_rejected(const std::vector<uint8_t>& elf, const std::string& words) {
  try {
    prepare_blob(elf, remote_addr(0x100000));
    ADD_FAILURE() << "corrupted ELF accepted; expected: " << words;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    EXPECT_FALSE(e.hint().empty());
  }
}

TEST(BlobLoader, RejectsCorruptedElf) {
  auto src = embedded_blob();
  const std::vector<uint8_t> good(src.begin(), src.end());
  Elf64_Ehdr eh;
  std::memcpy(&eh, good.data(), sizeof(eh));

  expect_rejected({good.begin(), good.begin() + 10}, "parasite blob");
  auto bad = good;
  bad[0] = 'X';
  expect_rejected(bad, "not an ELF");
  bad = good;
  reinterpret_cast<Elf64_Ehdr*>(bad.data())->e_machine = EM_AARCH64;
  expect_rejected(bad, "not x86_64");
  bad = good;
  reinterpret_cast<Elf64_Ehdr*>(bad.data())->e_type = ET_EXEC;
  expect_rejected(bad, "not ET_DYN");

  // A PT_LOAD whose file range runs past the end of the file.
  bad = good;
  for (int i = 0; i < eh.e_phnum; i++) {
    auto* ph = reinterpret_cast<Elf64_Phdr*>(bad.data() + eh.e_phoff + i * eh.e_phentsize);
    if (ph->p_type == PT_LOAD) {
      ph->p_offset = bad.size() - 16;
      break;
    }
  }
  expect_rejected(bad, "outside the");

  // A relocation type the loader does not implement.
  bad = good;
  bool patched = false;
  for (int i = 0; i < eh.e_shnum && !patched; i++) {
    auto* sh = reinterpret_cast<Elf64_Shdr*>(bad.data() + eh.e_shoff + i * eh.e_shentsize);
    if (sh->sh_type != SHT_RELA || sh->sh_size == 0) continue;
    auto* r = reinterpret_cast<Elf64_Rela*>(bad.data() + sh->sh_offset);
    r->r_info = ELF64_R_INFO(0, R_X86_64_64);
    patched = true;
  }
  ASSERT_TRUE(patched);
  expect_rejected(bad, "unsupported relocation type 1 (R_X86_64_64)");

  try {
    prepare_blob(good, remote_addr(0x100123));
    ADD_FAILURE() << "misaligned base accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("page aligned"), std::string::npos);
  }
}

// ---- protocol ---------------------------------------------------------------

static_assert(offsetof(snap_parasite_cmd, arg) == 16);
static_assert(offsetof(snap_parasite_reply, status) == 12);
static_assert(offsetof(snap_parasite_reply, payload_len) == 16);
static_assert(offsetof(snap_parasite_args, addr) == 16);
static_assert(offsetof(snap_parasite_args, sigreturn_sp) == 128);
static_assert(offsetof(snap_parasite_thread_state, clear_child_tid) == 24);
static_assert(offsetof(snap_parasite_itimers, n_posix) == 108);
static_assert(sizeof(snap_parasite_sigactions) <= 4096);

TEST(Protocol, EncodeDecode) {
  auto c = make_command(SNAP_PARASITE_CMD_PEEK_PIPE, 7, 5, 4096, 0);
  EXPECT_EQ(c.magic, SNAP_PARASITE_MAGIC);
  EXPECT_EQ(c.version, SNAP_PARASITE_VERSION);
  EXPECT_EQ(c.cmd, SNAP_PARASITE_CMD_PEEK_PIPE);
  EXPECT_EQ(c.seq, 7u);
  EXPECT_EQ(c.arg[0], 5u);
  EXPECT_EQ(c.arg[1], 4096u);

  snap_parasite_reply r{SNAP_PARASITE_MAGIC, SNAP_PARASITE_VERSION, SNAP_PARASITE_CMD_PEEK_PIPE, 7, 0, 16};
  EXPECT_NO_THROW(check_reply(r, c));
  auto bad = r;
  bad.seq = 8;
  EXPECT_THROW(check_reply(bad, c), Error);
  bad = r;
  bad.magic = 0;
  EXPECT_THROW(check_reply(bad, c), Error);
  bad = r;
  bad.version = 99;
  EXPECT_THROW(check_reply(bad, c), Error);
  bad = r;
  bad.status = -EBADF;
  try {
    check_reply(bad, c);
    FAIL();
  } catch (const SysError& e) {
    EXPECT_EQ(e.err(), EBADF);
    EXPECT_NE(std::string(e.what()).find("PEEK_PIPE"), std::string::npos);
  }
}

// ---- sigreturn frame ----------------------------------------------------------

namespace L = sigframe_layout;
// The kernel's struct ucontext starts like glibc's ucontext_t.
static_assert(L::kSigcontext - L::kUcontext == offsetof(ucontext_t, uc_mcontext));
static_assert(L::kSigmask - L::kUcontext == offsetof(ucontext_t, uc_sigmask));
static_assert(L::kUcStack - L::kUcontext == offsetof(ucontext_t, uc_stack));
static_assert(L::kScRip == REG_RIP * 8 && L::kScRsp == REG_RSP * 8 && L::kScRax == REG_RAX * 8);
static_assert(L::kScFpstate == offsetof(mcontext_t, fpregs));

uint64_t word(const SigreturnFrame& f, size_t off) {
  uint64_t v;
  std::memcpy(&v, f.bytes.data() + off, 8);
  return v;
}

TEST(SigreturnFrame, LayoutAndRestart) {
  user_regs_struct regs{};
  regs.rip = 0x401002;
  regs.rsp = 0x7ffc0000;
  regs.rax = static_cast<uint64_t>(-512);  // -ERESTARTSYS
  regs.orig_rax = 7;                        // poll
  regs.rdi = 0x1234;
  regs.cs = 0x33;
  regs.ss = 0x2b;
  regs.eflags = 0x246;
  auto f = build_sigreturn_frame(regs, {}, 0x5555, remote_addr(0x10000));
  EXPECT_EQ(f.sigreturn_sp(), remote_addr(0x10008));
  EXPECT_EQ(f.bytes.size(), L::kFixedSize);
  EXPECT_EQ(word(f, L::kSigcontext + L::kScRip), 0x401000u);
  EXPECT_EQ(word(f, L::kSigcontext + L::kScRax), 7u);
  EXPECT_EQ(word(f, L::kSigcontext + L::kScRsp), 0x7ffc0000u);
  EXPECT_EQ(word(f, L::kSigcontext + REG_RDI * 8), 0x1234u);
  EXPECT_EQ(word(f, L::kSigmask), 0x5555u);
  EXPECT_EQ(word(f, L::kSigcontext + L::kScFpstate), 0u);

  regs.rax = static_cast<uint64_t>(-EINTR);  // not restartable: as is
  f = build_sigreturn_frame(regs, {}, 0, remote_addr(0x10000));
  EXPECT_EQ(word(f, L::kSigcontext + L::kScRip), 0x401002u);
  EXPECT_EQ(word(f, L::kSigcontext + L::kScRax), static_cast<uint64_t>(-EINTR));
  regs.rax = static_cast<uint64_t>(-516);  // RESTART_RESTARTBLOCK, but not in a syscall
  regs.orig_rax = static_cast<uint64_t>(-1);
  f = build_sigreturn_frame(regs, {}, 0, remote_addr(0x10000));
  EXPECT_EQ(word(f, L::kSigcontext + L::kScRip), 0x401002u);

  std::vector<uint8_t> xs(832, 0);
  xs[512] = 0x7;  // XSTATE_BV
  f = build_sigreturn_frame(regs, xs, 0, remote_addr(0x10008));
  uint64_t fp = word(f, L::kSigcontext + L::kScFpstate);
  EXPECT_EQ(fp % 64, 0u);
  size_t fo = fp - 0x10008;
  uint32_t m1, m2;
  std::memcpy(&m1, f.bytes.data() + fo + 464, 4);
  std::memcpy(&m2, f.bytes.data() + fo + xs.size(), 4);
  EXPECT_EQ(m1, 0x46505853u);
  EXPECT_EQ(m2, 0x46505845u);
  EXPECT_EQ(f.bytes.size(), fo + xs.size() + 4);

  EXPECT_THROW(build_sigreturn_frame(regs, std::vector<uint8_t>(100), 0, remote_addr(0x10000)), Error);
  EXPECT_THROW(build_sigreturn_frame(regs, {}, 0, remote_addr(0x10003)), Error);
}

// ---- the blob, run locally in a child ------------------------------------------

void usr1_handler(int) {}

TEST(ParasiteLocal, CommandLoop) {
  auto [host, para] = socket_pair();
  int info_pipe[2];
  ASSERT_EQ(::pipe(info_pipe), 0);
  ScopedFd info_r(info_pipe[0]), info_w(info_pipe[1]);
  struct Expect {
    int data_pipe_fd, timer_id;
    uint64_t altstack, tid_addr;
  };
  static const char kData[] = "unread pipe data, not for the parasite to eat";

  Child child([&, para = para.get(), info = info_w.get(), host_copy = host.get()]() -> int {
    ::close(host_copy);  // only the test process holds the controller end
    // State for the parasite to find.
    struct sigaction sa {};
    sa.sa_handler = usr1_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    if (sigaction(SIGUSR1, &sa, nullptr)) return 10;
    signal(SIGTERM, SIG_IGN);
    umask(027);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1)) return 18;
    prctl(PR_SET_PDEATHSIG, SIGHUP);
    static uint8_t altstack[65536];
    stack_t ss{altstack, 0, sizeof(altstack)};
    if (sigaltstack(&ss, nullptr)) return 11;
    static int tid_word;
    syscall(SYS_set_tid_address, &tid_word);
    itimerval it{{1, 0}, {100, 0}};
    setitimer(ITIMER_REAL, &it, nullptr);
    sigevent sev{};
    sev.sigev_notify = SIGEV_NONE;
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &sev, &timer)) return 12;
    itimerspec its{{2, 0}, {50, 0}};
    timer_settime(timer, 0, &its, nullptr);
    int data[2];
    if (pipe(data)) return 13;
    if (write(data[1], kData, sizeof(kData)) != sizeof(kData)) return 14;

    LocalBlob lb;
    Expect e{data[0], static_cast<int>(reinterpret_cast<intptr_t>(timer)),
             reinterpret_cast<uint64_t>(altstack), reinterpret_cast<uint64_t>(&tid_word)};
    if (write(info, &e, sizeof(e)) != sizeof(e)) return 15;
    long r = lb.service(lb.args(para));
    if (r != 0) return 16;
    // FINI returned; the pipe data is still there.
    char buf[sizeof(kData)] = {};
    if (read(data[0], buf, sizeof(buf)) != sizeof(kData) || memcmp(buf, kData, sizeof(kData))) return 17;
    if (fcntl(para, F_GETFD) != -1) return 18;  // the blob closed its socket
    return 0;
  });
  para.reset();
  info_w.reset();
  Expect e{};
  ASSERT_EQ(::read(info_r.get(), &e, sizeof(e)), static_cast<ssize_t>(sizeof(e)));

  std::optional<ParasiteClient> connection(std::in_place, std::move(host));
  ParasiteClient& client = *connection;
  auto acts = client.get_sigactions();
  EXPECT_EQ(acts.size(), 62u);
  bool saw_usr1 = false, saw_term = false;
  for (const auto& a : acts) {
    if (a.signo == SIGUSR1) {
      saw_usr1 = true;
      EXPECT_EQ(a.handler, reinterpret_cast<uint64_t>(&usr1_handler));
      EXPECT_TRUE(a.flags & SA_RESTART);
      EXPECT_EQ(a.mask, uint64_t{1} << (SIGUSR2 - 1));
    }
    if (a.signo == SIGTERM) {
      saw_term = true;
      EXPECT_EQ(a.handler, reinterpret_cast<uint64_t>(SIG_IGN));
    }
  }
  EXPECT_TRUE(saw_usr1 && saw_term);

  auto misc = client.get_misc();
  EXPECT_EQ(misc.umask, 027u);
  EXPECT_EQ(misc.pdeathsig_status, 0);
  EXPECT_EQ(misc.pdeathsig, SIGHUP);
  EXPECT_EQ(misc.dumpable, 1);
  EXPECT_EQ(misc.child_subreaper_status, 0);
  EXPECT_EQ(misc.child_subreaper, 1);

  auto ts = client.get_thread_state();
  EXPECT_EQ(ts.tid, child.pid());
  EXPECT_EQ(ts.sigaltstack_status, 0);
  EXPECT_EQ(ts.ss_sp, e.altstack);
  EXPECT_EQ(ts.ss_size, 65536u);
  if (ts.tid_address_status == 0) {
    EXPECT_EQ(ts.clear_child_tid, e.tid_addr);
  } else {
    EXPECT_EQ(ts.tid_address_status, -EINVAL);  // kernel without CONFIG_CHECKPOINT_RESTORE
  }
  image::ThreadState th;
  apply_thread_state(ts, th);
  ASSERT_TRUE(th.sigaltstack.has_value());
  EXPECT_EQ((*th.sigaltstack)[0], e.altstack);

  int32_t ids[] = {e.timer_id, 4242};
  auto tm = client.get_itimers(ids);
  EXPECT_EQ(tm.itimers.itimer_status[0], 0);
  EXPECT_EQ(tm.itimers.itimer[0].interval_sec, 1);
  EXPECT_GT(tm.itimers.itimer[0].value_sec, 90);
  EXPECT_EQ(tm.itimers.itimer[1].value_sec, 0);
  ASSERT_EQ(tm.posix.size(), 2u);
  EXPECT_EQ(tm.posix[0].status, 0);
  EXPECT_EQ(tm.posix[0].interval_sec, 2);
  EXPECT_GT(tm.posix[0].value_sec, 40);
  EXPECT_EQ(tm.posix[1].status, -EINVAL);  // no such timer: reported, not fatal

  auto data = client.peek_pipe(e.data_pipe_fd);
  EXPECT_EQ(std::string(data.begin(), data.end()), std::string(kData, sizeof(kData)));
  auto again = client.peek_pipe(e.data_pipe_fd);  // still there
  EXPECT_EQ(again, data);
  auto partial = [&] { client.peek_pipe(e.data_pipe_fd, 4); };
  EXPECT_THROW(partial(), Error);

  // Bad input is answered, not fatal.
  try {
    client.peek_pipe(9999);
    ADD_FAILURE();
  } catch (const SysError& err) {
    EXPECT_EQ(err.err(), EBADF);
  }
  try {
    client.peek_pipe(1000000000);  // plausible int, surely not open
    ADD_FAILURE();
  } catch (const SysError& err) {
    EXPECT_EQ(err.err(), EBADF);
  }
  {
    auto c = make_command(77, 1000);
    ASSERT_EQ(::send(client.fd(), &c, sizeof(c), 0), static_cast<ssize_t>(sizeof(c)));
    snap_parasite_reply r{};
    ASSERT_EQ(::recv(client.fd(), &r, sizeof(r), MSG_WAITALL), static_cast<ssize_t>(sizeof(r)));
    EXPECT_EQ(r.status, -EINVAL);
    EXPECT_EQ(r.seq, 1000u);
    c = make_command(SNAP_PARASITE_CMD_GET_MISC, 1001);
    c.version = 99;
    ASSERT_EQ(::send(client.fd(), &c, sizeof(c), 0), static_cast<ssize_t>(sizeof(c)));
    ASSERT_EQ(::recv(client.fd(), &r, sizeof(r), MSG_WAITALL), static_cast<ssize_t>(sizeof(r)));
    EXPECT_EQ(r.status, -EPROTONOSUPPORT);
    c = make_command(SNAP_PARASITE_CMD_GET_ITIMERS, 1002, 0, 0, 100000);  // oversized payload
    ASSERT_EQ(::send(client.fd(), &c, sizeof(c), 0), static_cast<ssize_t>(sizeof(c)));
    std::vector<uint8_t> junk(100000, 0xAB);
    ASSERT_EQ(::send(client.fd(), junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
    ASSERT_EQ(::recv(client.fd(), &r, sizeof(r), MSG_WAITALL), static_cast<ssize_t>(sizeof(r)));
    EXPECT_EQ(r.status, -E2BIG);
  }
  EXPECT_EQ(client.get_misc().umask, 027u);  // still in step

  client.fini();
  // After FINI the blob waits for snap to hang up (a snap that runs it
  // without system-call stops stops it there); then it returns.
  ::usleep(50000);
  EXPECT_EQ(::waitpid(child.pid(), nullptr, WNOHANG), 0) << "the blob returned before the hang-up";
  connection.reset();
  EXPECT_EQ(child.wait(), 0);
}

// ---- the threads' frames, written with one system call ------------------------

// A thread whose stack pointer is 256 bytes above an unmapped page: no
// room for a sigreturn frame below its red zone. It waits in pause() with
// no stack use.
void* low_stack_thread(void* page) {
  const uint64_t sp = reinterpret_cast<uint64_t>(page) + 4096 + 256;
  __asm__ volatile("mov %0, %%rsp\n1: mov $34, %%eax\nsyscall\njmp 1b" : : "r"(sp) : "memory");
  return nullptr;
}

TEST(ThreadGuardFrames, OneCallForAllAndEachThatFailsAlone) {
  Child child([] {
    void* two = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    // The lower page unmapped (a PROT_NONE one root could still write
    // through /proc/PID/mem).
    if (two == MAP_FAILED || ::munmap(two, 4096) != 0) return 10;
    pthread_t t;
    if (pthread_create(&t, nullptr, low_stack_thread, two) != 0) return 11;
    for (;;) ::pause();
  });
  std::vector<pid_t> tids;
  for (int i = 0; i < 200 && tids.size() < 2; i++) {
    ::usleep(10000);
    tids = proc::list_threads(child.pid());
  }
  ASSERT_EQ(tids.size(), 2u);
  ::usleep(50000);  // the second thread in its pause()
  Task::Stopped stopped = Task::seize_and_stop_all(tids);
  ASSERT_TRUE(stopped.failed.empty());
  ASSERT_EQ(stopped.tasks.size(), 2u);
  const remote_addr gadget(0x123456789a0ull);
  // Both orders: the unwritable frame first (the call fails at once) and
  // last (it writes part); the other is written either way.
  for (bool low_first : {true, false}) {
    SCOPED_TRACE(low_first ? "unwritable frame first" : "unwritable frame last");
    std::vector<std::unique_ptr<ThreadGuard>> guards;
    Task& main_task = *stopped.tasks[0];
    Task& low_task = *stopped.tasks[1];
    for (Task* t : low_first ? std::vector<Task*>{&low_task, &main_task}
                             : std::vector<Task*>{&main_task, &low_task})
      guards.push_back(std::make_unique<ThreadGuard>(*t, gadget, ThreadGuard::DeferFrame{}));
    ThreadGuard& low = *guards[low_first ? 0 : 1];
    ThreadGuard& main = *guards[low_first ? 1 : 0];
    ThreadGuard::write_frames(child.pid(), guards);
    EXPECT_FALSE(low.protected_by_frame());
    ASSERT_TRUE(main.protected_by_frame());
    // The main thread's frame is in its memory: its first word (pretcode)
    // is the gadget, and its saved rip the thread's own.
    uint64_t words[2 + sigframe_layout::kScRip / 8 + sigframe_layout::kSigcontext / 8] = {};
    iovec local{words, sizeof words}, remote{reinterpret_cast<void*>(main.frame().as_int()), sizeof words};
    ASSERT_EQ(::process_vm_readv(child.pid(), &local, 1, &remote, 1, 0),
              static_cast<ssize_t>(sizeof words));
    EXPECT_EQ(words[0], gadget.as_int());
    EXPECT_EQ(words[(sigframe_layout::kSigcontext + sigframe_layout::kScRip) / 8],
              main.original_regs().ip().as_int());
  }
}

// ---- self-healing: the blob returns to a known context on its own ------------

constexpr uint64_t kArgA = 0x1111222233334444, kArgB = 0x5555666677778888;
constexpr uint64_t kYmmLo = 0x0123456789abcdef, kYmmHi = 0xfedcba9876543210;
constexpr int kResumedOk = 42;
alignas(64) uint8_t g_fp[32768];
size_t g_fp_len = 0;
bool g_check_ymm = false;
const snap_parasite_thread_state* g_thread_result = nullptr;
const snap_parasite_thread_slot* g_thread_slot = nullptr;
alignas(16) uint8_t g_resume_stack[65536];

// Where the frame sends the thread. Checks that GP registers (the two
// argument registers), the FPU/AVX state, and the signal mask came from the
// frame, then exits with kResumedOk.
extern "C" [[noreturn]] __attribute__((used, noinline)) void snap_test_resume_target(uint64_t a, uint64_t b) {
  alignas(16) uint64_t hi[2] = {0, 0};
  if (g_check_ymm) __asm__ volatile("vextractf128 $1, %%ymm8, %0" : "=m"(hi));
  uint32_t mxcsr = 0;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  int code = kResumedOk;
  sigset_t blocked;
  sigprocmask(SIG_BLOCK, nullptr, &blocked);
  if (a != kArgA || b != kArgB) code = 50;
  else if ((mxcsr & 0x6000) != 0x6000) code = 51;
  else if (g_check_ymm && (hi[0] != kYmmLo || hi[1] != kYmmHi)) code = 52;
  else if (!sigismember(&blocked, SIGUSR2) || sigismember(&blocked, SIGUSR1)) code = 53;
  else if (g_thread_result && g_thread_result->tid != getpid()) code = 54;
  else if (g_thread_slot && g_thread_slot->left != 1) code = 55;  // snap would not know
  _exit(code);
}

// Keeps a copy of the FPU state exactly as the kernel lays it out in a
// signal frame (so its size is one this kernel accepts back).
void capture_fp(int, siginfo_t*, void* ctx) {
  auto* uc = static_cast<ucontext_t*>(ctx);
  auto* fp = reinterpret_cast<const uint8_t*>(uc->uc_mcontext.fpregs);
  uint32_t magic1 = 0, size = 512;
  std::memcpy(&magic1, fp + 464, 4);
  if (magic1 == 0x46505853) std::memcpy(&size, fp + 464 + 16, 4);
  if (size > sizeof(g_fp)) size = 512;
  std::memcpy(g_fp, fp, size);
  g_fp_len = size;
}

// ThreadEntry: a thread entry that returns at once; ThreadEntryWaits: one
// that waits on the service's socket, as in a dump, until snap hangs up.
enum class HealMode { ControllerGone, Fini, ThreadEntry, ThreadEntryWaits };

// Runs in the child: maps the blob, builds a frame for the known context and
// enters the blob. Returns only on failure.
int heal_child(HealMode mode, int para, int host_copy) {
  ::close(host_copy);  // only the test process holds the controller end
  struct sigaction sa {};
  sa.sa_sigaction = capture_fp;
  sa.sa_flags = SA_SIGINFO;
  if (sigaction(SIGUSR1, &sa, nullptr)) return 10;
  raise(SIGUSR1);
  if (g_fp_len < 512) return 11;
  // A distinctive FPU state: MXCSR rounding toward zero, and (with AVX) a
  // pattern in the upper half of ymm8. Clear the software-reserved bytes so
  // the frame builder has to fill them in itself.
  std::vector<uint8_t> xs(g_fp, g_fp + g_fp_len);
  uint32_t mxcsr = 0x1f80 | 0x6000;
  std::memcpy(xs.data() + 24, &mxcsr, 4);
  std::memset(xs.data() + 464, 0, 48);
  if (xs.size() >= 576 + 256 && __builtin_cpu_supports("avx")) {
    std::memcpy(xs.data() + 576 + 8 * 16, &kYmmLo, 8);
    std::memcpy(xs.data() + 576 + 8 * 16 + 8, &kYmmHi, 8);
    xs[512] |= 0x4;  // XSTATE_BV: YMM
    g_check_ymm = true;
  }

  user_regs_struct regs{};
  uint16_t cs, ss;
  __asm__("mov %%cs, %0" : "=r"(cs));
  __asm__("mov %%ss, %0" : "=r"(ss));
  regs.cs = cs;
  regs.ss = ss;
  regs.eflags = 0x202;
  regs.rip = reinterpret_cast<uint64_t>(&snap_test_resume_target);
  regs.rsp = reinterpret_cast<uint64_t>(g_resume_stack + sizeof(g_resume_stack)) - 8;  // as after a call
  regs.rdi = kArgA;
  regs.rsi = kArgB;
  regs.orig_rax = static_cast<uint64_t>(-1);

  void* fm = ::mmap(nullptr, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fm == MAP_FAILED) return 12;
  const remote_addr where(reinterpret_cast<uint64_t>(fm) + 8);  // not 64-aligned on purpose
  auto frame = build_sigreturn_frame(regs, xs, uint64_t{1} << (SIGUSR2 - 1), where);
  if (frame.bytes.size() + 8 > 65536) return 13;
  std::memcpy(reinterpret_cast<void*>(where.as_int()), frame.bytes.data(), frame.bytes.size());

  LocalBlob lb;
  if (mode == HealMode::ThreadEntry || mode == HealMode::ThreadEntryWaits) {
    // The slot the host would give the thread; the entry runs on this
    // test's stack, as called here.
    static snap_parasite_thread_slot slot;
    slot.args.magic = SNAP_PARASITE_MAGIC;
    slot.args.wait_fd = mode == HealMode::ThreadEntryWaits ? para : -1;
    slot.args.sigreturn_sp = frame.sigreturn_sp().as_int();
    g_thread_result = &slot.result;
    g_thread_slot = &slot;
    reinterpret_cast<void (*)(snap_parasite_thread_slot*)>(
        lb.mem + lb.blob.symbol_offset(SNAP_PARASITE_SYM_THREAD_ENTRY))(&slot);
    return 14;
  }
  lb.service(lb.args(para, frame.sigreturn_sp().as_int()));
  return 15;  // the service must not return when it has a frame
}

class ParasiteHeal : public ::testing::TestWithParam<HealMode> {};

TEST_P(ParasiteHeal, ResumesOriginalContext) {
  auto [host, para] = socket_pair();
  const HealMode mode = GetParam();
  Child child([&, p = para.get(), h = host.get()] { return heal_child(mode, p, h); });
  para.reset();
  if (mode == HealMode::ThreadEntry) {
    EXPECT_EQ(child.wait(), kResumedOk);
    return;
  }
  if (mode == HealMode::ThreadEntryWaits) {
    // It waits while snap is there, even when snap talks to the service
    // (the socket turns readable)...
    ASSERT_EQ(::write(host.get(), "x", 1), 1);
    ::usleep(100 * 1000);
    int status;
    EXPECT_EQ(::waitpid(child.pid(), &status, WNOHANG), 0) << "the thread entry did not wait";
    // ...and goes back to its own context once snap's end closes.
    host.reset();
    EXPECT_EQ(child.wait(), kResumedOk);
    return;
  }
  {
    ParasiteClient client(std::move(host));
    EXPECT_EQ(client.get_misc().dumpable, 1);  // the loop is live
    if (mode == HealMode::Fini) client.fini();
    // ControllerGone: the client closes its socket here, as a SIGKILLed
    // snap's would be closed; the blob reads EOF.
  }
  EXPECT_EQ(child.wait(), kResumedOk);
}

INSTANTIATE_TEST_SUITE_P(Modes, ParasiteHeal,
                         ::testing::Values(HealMode::ControllerGone, HealMode::Fini, HealMode::ThreadEntry,
                                           HealMode::ThreadEntryWaits));

}  // namespace
}  // namespace snap::parasite
