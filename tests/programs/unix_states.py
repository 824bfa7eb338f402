#!/usr/bin/env python3
"""Unix sockets in the states a checkpoint must keep, checked at the end of
the run (after a restore, if one happened in between).
Usage: unix_states.py ROUNDS INTERVAL_MS DIR
Prints one line per round, then one line per check.
unix_states.py --pending-data DIR: a connection that sent data waits to be
accepted; prints "pending fd N", then sleeps."""
import os
import socket
import stat
import sys
import time

if sys.argv[1] == "--pending-data":
    path = os.path.join(sys.argv[2], "busy.sock")
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(path)
    busy.listen(2)
    talker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    talker.connect(path)
    talker.sendall(b"unread")
    print("pending fd", talker.fileno(), flush=True)
    while True:
        time.sleep(60)

rounds, interval, where = int(sys.argv[1]), int(sys.argv[2]) / 1000, sys.argv[3]

# A bound datagram socket with two messages waiting, sent by an unbound one.
dg_path = os.path.join(where, "dg.sock")
dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
dg.bind(dg_path)
os.chmod(dg_path, 0o640)  # its file's mode is the job's, not what a bind makes
sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sender.sendto(b"first", dg_path)
sender.sendto(b"second", dg_path)
sender.close()
# A stream socket whose peer wrote, then closed.
left, gone = socket.socketpair()
gone.sendall(b"last words")
gone.close()
# A seqpacket pair, one side shut down for writing.
sa, sb = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sa.shutdown(socket.SHUT_WR)
# A listening socket whose file was deleted, and one with an abstract name.
gone_path = os.path.join(where, "gone.sock")
hidden = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
hidden.bind(gone_path)
hidden.listen(4)
os.unlink(gone_path)
# A listening socket and a bound datagram socket with a peer connected to
# it, in a directory the job then removed with their names (a temporary
# directory cleaned up once its peers had connected).
gone_dir = os.path.join(where, "gone.d")
os.mkdir(gone_dir)
gone_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
gone_listener.bind(os.path.join(gone_dir, "listen.sock"))
gone_listener.listen(1)
gone_dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
gone_dg.bind(os.path.join(gone_dir, "dg.sock"))
gone_peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
gone_peer.connect(os.path.join(gone_dir, "dg.sock"))
for name in ("listen.sock", "dg.sock"):
    os.unlink(os.path.join(gone_dir, name))
os.rmdir(gone_dir)
abstract = f"\0snap-unix-states-{os.getpid()}"
ab = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ab.bind(abstract)
ab.listen(4)
# Options: a receive buffer size and non-blocking mode.
dg.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 50000)
rcvbuf = dg.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
left.setblocking(False)
# A pipe's read end in flight (SCM_RIGHTS); the job keeps only the write end.
pipe_r, pipe_w = os.pipe()
pa, pb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
socket.send_fds(pa, [b"fd"], [pipe_r])
os.close(pipe_r)
# Connections not accepted yet: two on a stream listener (from a bound
# socket and an unbound one), one on a seqpacket listener.
wait_path = os.path.join(where, "wait.sock")
waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
waiting.bind(wait_path)
waiting.listen(3)
first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
first.bind(os.path.join(where, "first.sock"))
first.connect(wait_path)
second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
second.connect(wait_path)
sp_name = f"\0snap-unix-states-sp-{os.getpid()}"
sp = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sp.bind(sp_name)
sp.listen(1)
sp_client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sp_client.connect(sp_name)
# An unbound, unconnected socket, bound later.
later = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
# One name, bound and deleted in turn by two datagram sockets, each with a
# peer connected to it; a datagram pair both bound to one name, deleted;
# and a deleted name a FIFO took while a peer was connected to it.
same = os.path.join(where, "same.sock")
owners, talkers = [], []
for _ in range(2):
    owners.append(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    owners[-1].bind(same)
    talkers.append(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    talkers[-1].connect(same)
    os.unlink(same)
pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
pair_name = os.path.join(where, "pair.sock")
for s in pair:
    s.bind(pair_name)
    os.unlink(pair_name)
fifo_path = os.path.join(where, "taken.sock")
under = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
under.bind(fifo_path)
over = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
over.connect(fifo_path)
os.unlink(fifo_path)
os.mkfifo(fifo_path)
# A bound datagram socket with messages from named senders, each closed
# since (an abstract name twice, by two sockets in turn; a path, its file
# removed), from an unnamed one and from one still open, bound to a path:
# recvfrom gives each message's sender.
heard_path = os.path.join(where, "heard.sock")
heard = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
heard.bind(heard_path)
teller_name = f"\0snap-unix-states-teller-{os.getpid()}"
teller_path = os.path.join(where, "teller.sock")
for name, text in ((teller_name, b"a1"), (teller_name, b"a2"), (teller_path, b"p"), (None, b"u")):
    teller = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if name:
        teller.bind(name)
    teller.sendto(text, heard_path)
    teller.close()
os.unlink(teller_path)
keeper = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # a sender still open
keeper_path = os.path.join(where, "keeper.sock")
keeper.bind(keeper_path)
keeper.sendto(b"k", heard_path)

for i in range(1, rounds + 1):
    print(f"round {i}", flush=True)
    time.sleep(interval)

print("dgram:", dg.recv(100).decode(), dg.recv(100).decode(), dg.getsockname() == dg_path,
      oct(os.stat(dg_path).st_mode & 0o7777))
print("closed peer:", left.recv(100).decode(), left.recv(100) == b"", "nonblocking",
      not left.getblocking())
print("shut down:", sb.recv(100) == b"", end=" ")
try:
    sa.send(b"x")
    print("send worked")
except BrokenPipeError:
    print("send EPIPE")
print("deleted name:", hidden.getsockname() == gone_path, not os.path.exists(gone_path),
      hidden.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
gone_peer.send(b"still")
print("gone directory:", gone_listener.getsockname() == os.path.join(gone_dir, "listen.sock"),
      gone_dg.getsockname() == os.path.join(gone_dir, "dg.sock"), gone_dg.recv(10).decode(),
      os.path.exists(gone_dir))
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(abstract)
c.sendall(b"hello")
conn, _ = ab.accept()
print("abstract:", conn.recv(100).decode(), ab.getsockname() == abstract.encode())
print("rcvbuf kept:", dg.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == rcvbuf)
msg, fds, _, _ = socket.recv_fds(pb, 100, 1)
os.write(pipe_w, b"through")
print("passed fd:", msg.decode(), os.read(fds[0], 100).decode())
later_path = os.path.join(where, "later.sock")
later.bind(later_path)
print("bound later:", later.getsockname() == later_path)
a, a_from = waiting.accept()
b, b_from = waiting.accept()
first.sendall(b"one")
second.sendall(b"two")
a.sendall(b"back")
print("pending:", a_from == os.path.join(where, "first.sock"), a.recv(10).decode(),
      b.recv(10).decode(), first.recv(10).decode())
spc, _ = sp.accept()
sp_client.send(b"rec")
print("pending seqpacket:", spc.recv(10).decode())
for i, t in enumerate(talkers):
    t.send(f"to {i}".encode())
print("one name, two sockets:", [o.recv(10).decode() for o in owners],
      [o.getsockname() == same for o in owners], os.path.exists(same))
pair[0].send(b"ping")
print("named pair:", pair[1].recv(10).decode(), [s.getsockname() == pair_name for s in pair],
      os.path.exists(pair_name))
over.send(b"under")
print("name taken by a FIFO:", under.recv(10).decode(), stat.S_ISFIFO(os.stat(fifo_path).st_mode))


def sender(addr):
    if not addr:
        return "unnamed"
    if isinstance(addr, bytes):  # abstract
        return "@" + addr[1:].decode().replace(str(os.getpid()), "PID")
    return os.path.basename(addr)


print("senders:", [(m.decode(), sender(a)) for m, a in (heard.recvfrom(10) for _ in range(5))],
      os.path.exists(teller_path), keeper.getsockname() == keeper_path)
os.unlink(fifo_path)
os.unlink(heard_path)
os.unlink(keeper_path)
os.unlink(wait_path)
os.unlink(os.path.join(where, "first.sock"))
os.unlink(later_path)
os.unlink(dg_path)
