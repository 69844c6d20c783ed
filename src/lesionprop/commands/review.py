"""``lesionprop review --annotations LABELS --data ROOT --out DIR``: review pseudo-labels in a browser.

Serves the page and the JSON API of :mod:`lesionprop.review.app` until Ctrl-C or SIGTERM,
then prints the summary (per source: accepted, rejected, edited, precision) and writes it to
``DIR/summary.json``.  Decisions are on disk as they are made (``DIR/decisions.csv``,
``DIR/labels_reviewed.csv``); running it again with the same ``--out`` continues the review.
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
from pathlib import Path

from lesionprop.fileio import check_output_folder, exclusive_lock


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", required=True, metavar="LABELS",
                   help="label file (DL_info.csv schema with Source/Score, e.g. from label-sets); only read")
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root holding Images_png/")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="review folder: decisions.csv, labels_reviewed.csv, summary.json (an earlier review "
                        "there is continued)")
    p.add_argument("--sources", default="mined,propagated,distilled",
                   help="which pseudo-labels to review (comma-separated)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 127.0.0.1 is this machine only, 0.0.0.0 every network (no password)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on; 0 picks a free one")


class _Stop(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop serving, write the summary."""


def _stop(signum, frame) -> None:
    raise _Stop()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line error naming --host / --port (werkzeug would exit the process)."""
    from lesionprop.cli import CommandError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise CommandError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(f"--port {port}: another program listens on {host}:{port}; choose another "
                               "--port (0 picks a free one)") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise CommandError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
        raise
    return sock


def _serve(host: str, port: int, app):
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, code="-", size="-") -> None:      # one line per image is noise
            pass

    sock = _listen(host, port)
    with sock:                     # the server works on its own copy of the descriptor
        return make_server(host, port, app, threaded=True, request_handler=Quiet, fd=sock.fileno())


def run(args: argparse.Namespace) -> int:
    from lesionprop.cli import CommandError
    from lesionprop.review import ReviewStore, parse_sources, summary_text
    from lesionprop.review.app import LOOPBACK, create_app

    sources = parse_sources(args.sources)
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be in 0..65535, got {args.port}")
    out = Path(args.out)
    check_output_folder(out)
    # beside DIR, not in it: a review refused for its input leaves no DIR behind
    with exclusive_lock(out.parent / f".{out.name}.review.lock", 0.0, f"another lesionprop review writes into {out}"):
        store = ReviewStore.open(args.annotations, args.data, out, sources)
        server = _serve(args.host, args.port, create_app(store, args.host))
        host = f"[{args.host}]" if ":" in args.host else args.host
        s = store.summary()
        counts = ", ".join(f"{k} {v['items']}" for k, v in s["sources"].items())
        decided = s["all"]["items"] - s["all"]["undecided"]
        print(f"review of {s['all']['items']} pseudo-labels ({counts}) in {args.annotations}; {decided} decided "
              f"earlier\nopen http://{host}:{server.port}/ in a browser; decisions are saved to {out}/decisions.csv "
              f"and {out}/labels_reviewed.csv as they are made; Ctrl-C to stop", flush=True)
        if args.host not in LOOPBACK:
            print(f"note: --host {args.host} lets any machine that reaches this one read the images and change "
                  "the decisions", flush=True)
        previous = signal.signal(signal.SIGTERM, _stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.server_close()
        # waits for a decision still being written (the store's lock)
        summary = store.write_summary()
    print(summary_text(summary))
    print(f"summary -> {out}/summary.json; reviewed labels -> {out}/labels_reviewed.csv", flush=True)
    return 0
