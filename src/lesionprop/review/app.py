"""The review web app (Flask): the page, and the JSON API the page uses.

``GET  /``                              the page (static/index.html, plain HTML + JS)
``GET  /api/items[?source=a,b][&min_score=x]``
                                        ``[{"id", "File_name", "box": [x1, y1, x2, y2], "source", "score",
                                        "decision"}]``
``GET  /api/items/<id>``                one item plus ``edited_box``, ``series``, ``slices`` [K-1, K, K+1]
                                        (null where missing), ``image_size`` [rows, columns], ``human_boxes``
``POST /api/items/<id>``                ``{"decision": "accept" | "reject" | "edit", "box": [...]}`` -> the item
``GET  /api/items/<id>/image?offset=-1|0|1&window=soft|lung|bone``   the slice as PNG
``GET  /api/summary``                   counts and precision per source

Boxes are in the file frame of the label file.  Every error is JSON ``{"error": message}``
with a 4xx status: 400 a bad value, 404 an unknown id or a missing slice file, 415 a body
that is not JSON.  A decision must be sent as ``application/json``: a browser does not send
that type across sites without asking, so another web page cannot post decisions.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from lesionprop.annotations import SOURCES
from lesionprop.data.layout import SliceReadError
from lesionprop.errors import InputError
from lesionprop.review.items import ReviewInputError
from lesionprop.review.store import ReviewStore, UnknownItemError

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _id(text: str) -> int:
    if not text.isdigit():
        raise UnknownItemError(f"no item {text!r}: ids are whole numbers (rows of the label file)")
    return int(text)


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def create_app(store: ReviewStore, host: str = "127.0.0.1") -> Flask:
    """The app over ``store``.  Bound to a loopback ``host``, it answers only requests naming a
    loopback host (a web page cannot reach it by a DNS name that resolves to 127.0.0.1)."""
    app = Flask("lesionprop.review", static_folder=str(STATIC), static_url_path="/static")
    app.json.sort_keys = False
    if host in LOOPBACK:
        app.config["TRUSTED_HOSTS"] = list(LOOPBACK)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(UnknownItemError)
    @app.errorhandler(SliceReadError)
    def not_found(exc: Exception):
        return _error(404, str(exc))

    @app.errorhandler(InputError)
    def bad_value(exc: Exception):
        return _error(400, str(exc))

    @app.get("/")
    def page():
        return app.send_static_file("index.html")

    @app.get("/api/items")
    def items():
        only = request.args.get("source")
        names = only.split(",") if only else None
        unknown = [n for n in names or () if n not in SOURCES]
        if unknown:
            raise ReviewInputError(f"source must be a comma-separated list of {', '.join(SOURCES)}; got {unknown}")
        min_score = request.args.get("min_score")
        try:
            score = float(min_score) if min_score not in (None, "") else None
        except ValueError:
            raise ReviewInputError(f"min_score must be a number, got {min_score!r}") from None
        return jsonify(store.items(only=names, min_score=score))

    @app.get("/api/items/<item_id>")
    def item(item_id: str):
        return jsonify(store.detail(_id(item_id)))

    @app.post("/api/items/<item_id>")
    def decide(item_id: str):
        key = _id(item_id)
        if not request.is_json:
            return _error(415, "send the decision as JSON (Content-Type: application/json), e.g. "
                               '{"decision": "accept"}')
        body = request.get_json(silent=True)
        if body is None:
            return _error(400, "the request body is not valid JSON")
        return jsonify(store.decide(key, body))

    @app.get("/api/items/<item_id>/image")
    def image(item_id: str):
        key = _id(item_id)
        offset = request.args.get("offset", "0")
        if offset not in ("-1", "0", "1"):
            raise ReviewInputError(f"offset must be -1, 0 or 1, got {offset!r}")
        png = store.image(key, int(offset), request.args.get("window", "soft"))
        return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/summary")
    def summary():
        return jsonify(store.summary())

    return app
