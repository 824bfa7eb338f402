"""The rows of scripts/bench/bench: which job each starts, at which size, in
which groups (for --only), and the targets of issue #13 a side-by-side run
is held to."""
import dataclasses
from dataclasses import dataclass, field

# Issue #13's "done when", as snap / other-tool ratios of medians: on every
# row dump <= 1.0x, restore <= 1.0x, freeze <= 0.1x, image <= 1.0x.
RATIO_TARGETS = {"dump": 1.0, "restore": 1.0, "freeze": 0.1, "image": 1.0}


@dataclass(frozen=True)
class Workload:
    """One row. `mib` is the job's data region; `shape` the KEY=VALUE
    arguments of bench-workload (threads=, maps=, fds=, reserve=, sparse=;
    see workload.c); small_* are the sizes of `--sizes small`. `title` is
    formatted with size= (the data region) and the shape's keys."""
    name: str
    title: str
    mib: int
    small_mib: int
    kind: str = "c"  # c: bench-workload; python: PYTHON_JOB; incremental: snap run series
    mix: str = "random:100"
    procs: int = 1
    shape: tuple = ()
    small_shape: tuple = ()
    groups: tuple = ()
    targets: dict = field(default_factory=lambda: dict(RATIO_TARGETS))
    tool_mib_max: float = None  # snap's own memory for the dump, an absolute target

    def at_size(self, small):
        """This row at the chosen size: mib and shape are the ones to run."""
        if not small:
            return self
        return dataclasses.replace(self, mib=self.small_mib, shape=self.small_shape)

    @property
    def label(self):
        keys = {k: f"{int(v):,}" if v.isdigit() else v
                for k, v in (kv.split("=", 1) for kv in self.shape)}
        if "reserve" in keys:
            keys["reserve"] = size_text(keys["reserve"])
        return self.title.format(size=size_text(f"{self.mib}M"), **keys)

    def argv(self, workload, rundir):
        """bench-workload's command line for this row."""
        return [workload, rundir, str(self.mib), self.mix, str(self.procs), *self.shape]


def size_text(size):
    """"4T" -> "4 TiB", "1024M" -> "1 GiB"."""
    units = ["K", "M", "G", "T"]
    n, unit = int(size[:-1]), units.index(size[-1])
    while n >= 1024 and n % 1024 == 0 and unit + 1 < len(units):
        n, unit = n // 1024, unit + 1
    return f"{n} {units[unit]}iB"


SHAPE = ("shapes",)
WORKLOADS = [
    Workload("random", "random (incompressible), {size}", 1024, 16, groups=("memory", "sizes")),
    Workload("random4g", "random (incompressible), {size}", 4096, 32, groups=("sizes",)),
    Workload("random8g", "random (incompressible), {size}", 8192, 64, groups=("sizes",)),
    Workload("zero90", "touched, 90 % zero-filled", 1024, 16, mix="random:10,zero:90",
             groups=("memory",)),
    Workload("touch10", "10 % ever touched", 1024, 16, mix="random:10,untouched:90",
             groups=("memory",)),
    Workload("text", "numbers as text", 1024, 16, mix="text:100", groups=("memory",)),
    Workload("mixed", "mixed: ¼ random, text, zero, untouched", 4096, 32,
             mix="random:25,text:25,zero:25,untouched:25", groups=("memory",)),
    Workload("python", "python3 objects", 200, 24, kind="python", mix=None, groups=("memory",)),
    Workload("tree4", "4-process tree, one MAP_SHARED region", 512, 16, mix="random:50,text:50",
             procs=4, groups=("memory",)),
    Workload("incremental", "incremental: 2nd dump, 1 % changed", 2048, 16, kind="incremental",
             groups=("incremental",), targets={}),
    # The job's shape: many threads, mappings or fds around 16 MiB of data.
    Workload("threads256", "{threads} threads", 16, 4, shape=("threads=256",),
             small_shape=("threads=16",), groups=SHAPE),
    Workload("maps20000", "{maps} one-page mappings", 16, 4, shape=("maps=20000",),
             small_shape=("maps=500",), groups=SHAPE),
    Workload("fds10000", "{fds} open fds", 16, 4, shape=("fds=10000",),
             small_shape=("fds=200",), groups=SHAPE),
    # Sparse address spaces (AddressSanitizer, Go, V8, CUDA unified memory).
    # Issue #13: the 4 TiB one dumps within 2x the other tool's time; the
    # 16 TiB one dumps with snap using <= 256 MiB and restores (CRIU 4.2
    # aborts on it).
    Workload("sparse4t", "{reserve} MAP_NORESERVE, {sparse} pages touched", 16, 4,
             shape=("reserve=4T", "sparse=2048"), small_shape=("reserve=1G", "sparse=64"),
             groups=("sparse",), targets={"dump": 2.0}),
    Workload("sparse16t", "{reserve} MAP_NORESERVE, {sparse} pages touched", 16, 4,
             shape=("reserve=16T", "sparse=4096"), small_shape=("reserve=2G", "sparse=128"),
             groups=("sparse",), targets={}, tool_mib_max=256),
]

GROUPS = {}
for _w in WORKLOADS:
    for _g in _w.groups:
        GROUPS.setdefault(_g, []).append(_w.name)
GROUPS["all"] = [w.name for w in WORKLOADS]


def select(names):
    """The workloads named (row names or GROUPS, comma-separated or not), in
    table order; all of them when names is empty. Raises ValueError on an
    unknown name."""
    if not names:
        return list(WORKLOADS)
    wanted = set()
    for name in (n for arg in names for n in arg.split(",") if n):
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif any(w.name == name for w in WORKLOADS):
            wanted.add(name)
        else:
            raise ValueError(name)
    return [w for w in WORKLOADS if w.name in wanted]


def known_names():
    return ", ".join(w.name for w in WORKLOADS) + "; groups: " + ", ".join(GROUPS)


# The python job: the same protocol as workload.c (see there), in Python.
PYTHON_JOB = r'''
import gc, os, sys, time
gc.disable()
d, mib = sys.argv[1], int(sys.argv[2])
def say(line):
    try:
        fd = os.open(d + "/reports", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
    os.close(fd)
def request():
    try:
        with open(d + "/request") as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return 0
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
objs = []
while resident() < mib << 20:
    for i in range(len(objs), len(objs) + 20000):
        objs.append((i, "item-%d" % i, float(i), [i, 0]))
def checksum():
    return sum(o[0] + len(o[1]) + int(o[2]) + o[3][0] + o[3][1] for o in objs)
total = checksum()
seq = maxgap = 0
handled = request()
say("ready pid=%d\n" % os.getpid())
last = time.monotonic()
while True:
    time.sleep(0.001)
    t = time.monotonic()
    gap, last = t - last, t
    maxgap = max(maxgap, gap)
    seq += 1
    if gap > 0.02:
        say("gap us=%d seq=%d\n" % (gap * 1e6, seq))
    objs[seq * 7919 % len(objs)][3][1] += 1
    total += 1
    req = request() if seq % 10 == 0 else 0
    if req > handled:
        handled = req
        ok = checksum() == total
        say("report req=%d seq=%d maxgap_us=%d verify=%s\n"
            % (req, seq, maxgap * 1e6, "OK" if ok else "FAIL"))
        maxgap = 0
        last = time.monotonic()
'''
