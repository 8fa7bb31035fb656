"""`make demo`: tcache + a throwaway PostgreSQL (seeded) + the app under uvicorn (2 workers).
With ``--cluster``, tcache is a 3-primary cluster.

Prints the dashboard URL, runs until Ctrl-C (or SIGTERM), then stops everything it started
and removes its temporary directories."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import types

from refapp import harness


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--server", default=os.environ.get("TCACHE_SERVER"), help="redis-server or valkey-server binary")
    ap.add_argument("--cluster", action="store_true",
                    help="tcache as a 3-primary Redis Cluster / Valkey Cluster (the app: TCACHE_APP_CLUSTER=1)")
    ap.add_argument("--gen-delay", type=float, default=float(os.environ.get("TCACHE_APP_GEN_DELAY", 3.0)),
                    help="seconds one simulated AI report generation takes (the real one: ~15)")
    args = ap.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    print("demo: starting PostgreSQL (initdb in a temp dir) and tcache ...", flush=True)
    stack = harness.start_stack(args.server, cluster=args.cluster)
    try:
        print(f"demo: PostgreSQL {stack.pg.dsn}  (seeded; in {stack.pg.dir})", flush=True)
        what = os.path.basename(stack.srv.binary)
        if isinstance(stack.srv, harness.TcacheCluster):
            ports = ", ".join(str(n.port) for n in stack.srv.nodes)
            what = f"a cluster of {len(stack.srv.nodes)} primaries on ports {ports}: {what}"
        print(f"demo: tcache     {stack.srv.url}  ({what} + libtcache.so; in {stack.srv.dir})", flush=True)
        env = harness.app_env(stack.pg, stack.srv, TCACHE_APP_GEN_DELAY=str(args.gen_delay))
        app = harness.start_app(env, workers=args.workers, quiet=False)
        stack.apps.append(app)
        print(f"\n  dashboard:  {app.url}/", flush=True)
        print(f"  a report:   {app.url}/reports/1        (first read generates it: {args.gen_delay:g} s)")
        print(f"  the race:   {app.url}/reports/1/race")
        print(f"  reset:      curl -X POST {app.url}/reports/1/reset")
        print(f"  API docs:   {app.url}/docs")
        print("\nCtrl-C stops everything.", flush=True)
        while not stop.wait(0.5):
            if app.proc.poll() is not None:
                print(f"demo: the app exited with code {app.proc.returncode}", file=sys.stderr)
                return 1
    finally:
        print("\ndemo: stopping ...", flush=True)
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
