"""The Flask app of the SSE reconnect tests, served by gunicorn: ``gunicorn tests.reliability.sse_app:app``.

``POST /streams/<id>?kind=&n=&seed=&delay=`` creates a stream of the suite's deterministic chunks and
streams it; ``GET /streams/<id>`` resumes it after ``Last-Event-ID`` or ``?from=``. Both are the README's
routes, with ``resumable_stream.flask``; the context is on S2 from the ``S2_*`` environment, so any
worker resumes any stream. ``X-Worker`` says which worker answered.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request

from resumable_stream import ResumableStreamContext
from resumable_stream.flask import resume_cursor, sse_response

from .payloads import Paced, chunks

app = Flask(__name__)
ctx = ResumableStreamContext(abandon_after=10)


@app.post("/streams/<path:stream_id>")
def create(stream_id: str) -> Response:
    args = request.args
    source = Paced(chunks(args["kind"], int(args["n"]), int(args["seed"])), float(args["delay"]), int(args["seed"]))
    response = sse_response(ctx.create_new_resumable_stream(stream_id, source), keepalive=1.0)
    response.headers["X-Worker"] = str(os.getpid())
    return response


@app.get("/streams/<path:stream_id>")
def resume(stream_id: str) -> Response:
    response = sse_response(ctx.resume_existing_stream(stream_id, after=resume_cursor()), keepalive=1.0)
    response.headers["X-Worker"] = str(os.getpid())
    return response
