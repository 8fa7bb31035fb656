#!/usr/bin/env python3
"""How many times is one expensive value computed when many clients ask for
it at once while it is missing? Plain GET/SET (every miss computes) against
TCACHE.FETCH/LEASE (one lease, the others wait server-side).

usage: bench/stampede.py PORT [CLIENTS] [COMPUTE_SECONDS]
Needs redis-py (pip install redis) and a server with the module loaded.
"""
import sys
import threading
import time

import redis

PORT = int(sys.argv[1])
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
COMPUTE_S = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0


def run(worker, key):
    generations = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def compute():
        with lock:
            generations.append(1)
        time.sleep(COMPUTE_S)
        return b"report"

    def body():
        r = redis.Redis(port=PORT, socket_timeout=60)
        start.wait()
        worker(r, key, compute)

    threads = [threading.Thread(target=body) for _ in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(generations), time.monotonic() - t0


def plain(r, key, compute):
    if r.get(key) is None:
        r.set(key, compute(), ex=900)


def fetch(r, key, compute):
    wait_ms = int(COMPUTE_S * 1000) + 5000
    while True:
        reply = r.execute_command("TCACHE.FETCH", key, wait_ms, "WAIT", wait_ms)
        kind = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if kind == "HIT":
            return
        if kind == "LEASE":
            r.execute_command("TCACHE.SET", key, compute(), 900, "LEASE", reply[1])
            return


def main():
    r = redis.Redis(port=PORT)
    r.delete("stampede:plain", "stampede:fetch")
    plain_n, plain_s = run(plain, "stampede:plain")
    fetch_n, fetch_s = run(fetch, "stampede:fetch")
    print(f"{CLIENTS} clients, one missing key, {COMPUTE_S:g} s computation")
    print(f"  GET/SET          : {plain_n} generations, all clients served in {plain_s:.2f} s")
    print(f"  TCACHE.FETCH/SET : {fetch_n} generations, all clients served in {fetch_s:.2f} s")


if __name__ == "__main__":
    main()
