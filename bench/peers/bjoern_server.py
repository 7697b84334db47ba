"""bjoern serving a WSGI callable, as its README runs it: bjoern.run(app, host, port).

    cd examples/hello && python bjoern_server.py --bind 127.0.0.1:PORT hello:hello_app

bjoern is single-threaded (libev), has no workers, no access log and no
options to tune. SIGTERM ends it (default action).
"""
import argparse
import importlib
import os
import sys

import bjoern


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1:9090")
    parser.add_argument("app", help="module:callable, importable from the current directory")
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")
    sys.path.insert(0, os.getcwd())
    module, _, name = args.app.partition(":")
    app = getattr(importlib.import_module(module), name)
    print(f"Listening on {host}:{port}", flush=True)
    bjoern.run(app, host, int(port))


if __name__ == "__main__":
    main()
