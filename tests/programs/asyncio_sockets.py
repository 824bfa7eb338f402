#!/usr/bin/env python3
"""An asyncio server and its client in one process, as a Jupyter or Dask
kernel has them: a TCP server on 127.0.0.1 (port chosen by the kernel), a
unix stream server on a path, a UDP echo endpoint. Each round the client
opens a new connection to each server, sends "ping N", reads the answer and
closes; between rounds no connection is open.
Usage: asyncio_sockets.py ROUNDS INTERVAL_MS UNIX_PATH
Prints "N tcp pong N (K) unix pong N (K) udp pong N (K)" per round, where K
is how many requests that server has answered so far."""
import asyncio
import os
import sys

served = {"tcp": 0, "unix": 0, "udp": 0}


def server(kind):
    async def handle(reader, writer):
        line = await reader.readline()
        served[kind] += 1
        writer.write(line.replace(b"ping", b"pong").rstrip() + f" ({served[kind]})\n".encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    return handle


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        served["udp"] += 1
        self.transport.sendto(data.replace(b"ping", b"pong") + f" ({served['udp']})".encode(), addr)


class Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.answers = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.answers.put_nowait(data)


async def ask(reader_writer, text):
    reader, writer = await reader_writer
    writer.write(text.encode() + b"\n")
    await writer.drain()
    answer = (await reader.readline()).decode().strip()
    writer.close()
    await writer.wait_closed()
    return answer


async def main():
    rounds, interval, path = int(sys.argv[1]), int(sys.argv[2]) / 1000, sys.argv[3]
    loop = asyncio.get_running_loop()
    tcp = await asyncio.start_server(server("tcp"), "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    unix = await asyncio.start_unix_server(server("unix"), path)
    udp_server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    udp_port = udp_server.get_extra_info("sockname")[1]
    udp_client, client = await loop.create_datagram_endpoint(
        Client, remote_addr=("127.0.0.1", udp_port))
    for i in range(1, rounds + 1):
        t = await ask(asyncio.open_connection("127.0.0.1", port), f"ping {i}")
        u = await ask(asyncio.open_unix_connection(path), f"ping {i}")
        udp_client.sendto(f"ping {i}".encode())
        d = (await asyncio.wait_for(client.answers.get(), 10)).decode()
        print(f"{i} tcp {t} unix {u} udp {d}", flush=True)
        await asyncio.sleep(interval)
    tcp.close()
    unix.close()
    os.unlink(path)


asyncio.run(main())
