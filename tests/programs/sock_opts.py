#!/usr/bin/env python3
"""Socket options a job set, a locked filter, and one port two listeners
share (SO_REUSEPORT, cleared on one after bind), checked at the end of the
run (after a restore, if one happened in between).
Usage: sock_opts.py ROUNDS INTERVAL_MS
Prints one line per round, then one line per check: "NAME kept", or what
it reads instead."""
import ctypes
import os
import select
import socket
import struct
import sys
import time

rounds, interval = int(sys.argv[1]), int(sys.argv[2]) / 1000
SO_PEEK_OFF, SO_RXQ_OVFL, SO_LOCK_FILTER, SO_PASSSEC, SO_ATTACH_FILTER = 42, 40, 44, 34, 26
SO_TIMESTAMPNS, IP_RECVTTL, IP_MINTTL, IP_MULTICAST_ALL = 35, 12, 21, 49
TCP_NOTSENT_LOWAT, TCP_THIN_LINEAR_TIMEOUTS = 25, 16

checks = []  # (name, socket, level, option, value set, bytes to read or 0 for an int)


def setopt(name, sock, level, opt, value, size=0):
    sock.setsockopt(level, opt, value)
    checks.append((name, sock, level, opt, value, size))


def read(sock, level, opt, size):
    if not size:
        return sock.getsockopt(level, opt)
    return sock.getsockopt(level, opt, size).rstrip(b"\0")


tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
setopt("TCP_CONGESTION", tcp, socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno", 16)
setopt("TCP_NOTSENT_LOWAT", tcp, socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 12345)
setopt("TCP_SYNCNT", tcp, socket.IPPROTO_TCP, socket.TCP_SYNCNT, 3)
setopt("TCP_LINGER2", tcp, socket.IPPROTO_TCP, socket.TCP_LINGER2, 7)
setopt("TCP_THIN_LINEAR_TIMEOUTS", tcp, socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, 1)
setopt("SO_DONTROUTE", tcp, socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
setopt("IP_RECVTOS", tcp, socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
setopt("IP_MINTTL", tcp, socket.IPPROTO_IP, IP_MINTTL, 2)
if os.geteuid() == 0:  # CAP_NET_ADMIN
    setopt("SO_MARK", tcp, socket.SOL_SOCKET, socket.SO_MARK, 7)
tcp.bind(("127.0.0.1", 0))
tcp.listen(1)

udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
setopt("IP_MULTICAST_TTL", udp, socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 5)
setopt("IP_MULTICAST_LOOP", udp, socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
setopt("IP_MULTICAST_ALL", udp, socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
setopt("IP_RECVTTL", udp, socket.IPPROTO_IP, IP_RECVTTL, 1)
setopt("SO_RXQ_OVFL", udp, socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
setopt("SO_TIMESTAMPNS", udp, socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
setopt("SO_BINDTODEVICE", udp, socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo", 16)
# A filter that drops every datagram, locked: it must still drop them.
prog = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0
fprog = struct.pack("HL", 1, ctypes.addressof(prog))  # struct sock_fprog
udp.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
setopt("SO_LOCK_FILTER", udp, socket.SOL_SOCKET, SO_LOCK_FILTER, 1)
udp.bind(("127.0.0.1", 0))

dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
setopt("SO_PEEK_OFF", dgram, socket.SOL_SOCKET, SO_PEEK_OFF, 0)
setopt("SO_PASSSEC", dgram, socket.SOL_SOCKET, SO_PASSSEC, 1)

# Two listeners on one port; the first clears SO_REUSEPORT once bound.
first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
first.bind(("127.0.0.1", 0))
port = first.getsockname()[1]
second = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
second.bind(("127.0.0.1", port))
first.listen(4)
second.listen(4)
first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)

for i in range(1, rounds + 1):
    print(f"round {i}", flush=True)
    time.sleep(interval)

for name, sock, level, opt, value, size in checks:
    got = read(sock, level, opt, size)
    print(f"{name} kept" if got == value else f"{name} reads {got!r}, not {value!r}")

sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.sendto(b"dropped?", udp.getsockname())
arrived = select.select([udp], [], [], 0.3)[0]
print("filter drops" if not arrived else "filter lost: a datagram arrived")

accepted = 0
for _ in range(4):
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    ready = select.select([first, second], [], [], 5)[0]
    if ready:
        ready[0].accept()[0].close()
        accepted += 1
    c.close()
print(f"shared port: {accepted} accepted, SO_REUSEPORT",
      first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
      second.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), flush=True)
