#!/usr/bin/env python3
"""A program on a pseudo-terminal: the parent writes numbered lines into the
master (always a few lines and half of the next one ahead), the child, whose
controlling terminal the slave is (no echo, a window size), reads them one
at a time (canonical mode: one line per read, a line ended by ^D without a
newline) and answers each; the parent
reads the answers late, so some wait in the master too. Both queues are
full at any moment a dump may come.
Usage: pty_lines.py LINES INTERVAL_MS
Prints one line per answer, then what the child saw of its terminal."""
import fcntl
import os
import pty
import struct
import sys
import termios
import time

lines, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000

pid, master = pty.fork()
if pid == 0:
    attrs = termios.tcgetattr(0)
    attrs[3] &= ~termios.ECHO  # lflag: -echo
    attrs[6][termios.VEOL] = b";"  # ';' ends a line too
    termios.tcsetattr(0, termios.TCSANOW, attrs)
    os.write(1, b"ready\n")
    while True:
        data = os.read(0, 1024)
        if data == b"quit\n":
            break
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        os.write(1, f"got {data!r} {rows}x{cols}\n".encode())
        time.sleep(interval)
    tty = os.open("/dev/tty", os.O_RDWR)
    echo = bool(termios.tcgetattr(tty)[3] & termios.ECHO)
    fg = os.tcgetpgrp(tty) == os.getpgrp()
    dev = struct.unpack("I", fcntl.ioctl(tty, 0x80045432, b"\0" * 4))[0]  # TIOCGDEV
    ctty = os.major(dev) == os.major(os.fstat(0).st_rdev) and os.minor(dev) == os.minor(os.fstat(0).st_rdev)
    os.write(1, f"child: ctty {ctty} echo {echo} foreground {fg} "
                f"session leader {os.getsid(0) == os.getpid()}\n".encode())
    os._exit(0)

fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))

def read_line():
    # A byte at a time: the answers after this one stay in the master.
    line = b""
    while not line.endswith(b"\n"):
        line += os.read(master, 1)
    return line.rstrip(b"\r\n").decode()


# Every third line ends with an end of file (^D: the read returns it
# without a newline), every sixth is only that (the read returns nothing);
# every fourth of the others with ';', the terminal's VEOL.
def line(i):
    if i % 6 == 0:
        return "\x04"
    return f"line {i}\x04" if i % 3 == 0 else f"line {i};" if i % 4 == 0 else f"line {i}\n"


stream = "".join(line(i) for i in range(1, lines + 1)) + "quit\n"
ahead = stream.index("line 5") + 3  # four lines and a half
assert read_line() == "ready"
os.write(master, stream[:ahead].encode())
for i in range(1, lines + 1):
    time.sleep(interval * 1.3)  # slower than the child: its answers wait
    answer = read_line()
    ends = [e for e in (stream.find(c, ahead) for c in "\n\x04;") if e >= 0]
    nxt = min(ends) if ends else -1
    if nxt >= 0:  # the rest of the unfinished line, and half of the next
        end = min(nxt + 4, len(stream))
        os.write(master, stream[ahead:end].encode())
        ahead = end
    print(answer, flush=True)
print(read_line(), flush=True)
_, status = os.waitpid(pid, 0)
print(f"child exit {os.waitstatus_to_exitcode(status)}", flush=True)
