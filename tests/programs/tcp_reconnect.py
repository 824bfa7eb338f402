#!/usr/bin/env python3
"""A client of a line server (snaptest.PingServer) that connects again when
its connection fails, as license clients, Dask workers and database drivers
do: ROUNDS times, every 150 ms, it sends "ping I" and prints "I pong I" from
the answer; a failed write or read, or an end of file, makes it print
"reconnecting" on stderr, connect again and send the same ping. Its stdout
is the same on every run, however often it reconnected.
Usage: tcp_reconnect.py PORT ROUNDS"""
import socket
import sys
import time


def connect(port):
    return socket.create_connection(("127.0.0.1", port)).makefile("rwb", buffering=0)


def main():
    port, rounds = int(sys.argv[1]), int(sys.argv[2])
    f = connect(port)
    for i in range(1, rounds + 1):
        while True:
            try:
                f.write(b"ping %d\n" % i)
                answer = f.readline().decode().strip()
            except OSError:
                answer = ""
            if answer:
                break
            print("reconnecting", file=sys.stderr, flush=True)
            f = connect(port)
        print(i, answer, flush=True)
        time.sleep(0.15)


main()
