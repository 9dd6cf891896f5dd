"""Start the AI SDK chat on Flask's development server: ``python -m examples.ai_sdk_chat [--host H] [--port P]``.

It uses S2 if ``S2_*`` is set, else this process's memory; and the model of
``examples.flask_chat`` (the built-in fake one, or an OpenAI-compatible
endpoint from ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from examples.flask_chat.__main__ import describe_log, exit_on_signal
from examples.flask_chat.models import model_from_env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.ai_sdk_chat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks one (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, exit_on_signal)  # a clean exit: contexts close, streams are written out
    try:
        model = model_from_env()
        log = describe_log(os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    from .app import create_app

    print(f"ai_sdk_chat: Flask development server; log: {log}; model: {model.description}", flush=True)
    create_app(model=model).run(args.host, args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
