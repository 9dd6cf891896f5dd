"""Resumable streams for WSGI apps and scripts, durable on S2.

A source generator (an LLM answer, token by token) runs on a background
thread and is written to a durable log as it is produced. Any number of
readers, in any thread or process, can follow it from the start or from a
cursor, so a reloaded page continues where it was.

The public names are re-exported here. The modules: ``s2`` (the S2
client) and ``memory`` (the in-process log), both behind the ``log``
interface; the engine's parts, ``context`` (the API), ``protocol`` (claims
and status on the log), ``producer``, ``writer``, ``reader``, ``stops``
and ``liveness``; the web helpers ``sse``, ``flask``, ``django`` and
``ai_sdk`` (the Vercel AI SDK's ``useChat``); and ``testing`` (a local
S2-compatible server).
"""

import logging

from .context import ResumableStreamContext as ResumableStreamContext
from .exceptions import AppendConditionFailed as AppendConditionFailed
from .exceptions import BadRequest as BadRequest
from .exceptions import ConfigurationError as ConfigurationError
from .exceptions import Conflict as Conflict
from .exceptions import FencingTokenMismatch as FencingTokenMismatch
from .exceptions import NotFound as NotFound
from .exceptions import PermissionDenied as PermissionDenied
from .exceptions import RangeNotSatisfiable as RangeNotSatisfiable
from .exceptions import RateLimited as RateLimited
from .exceptions import ResumableStreamError as ResumableStreamError
from .exceptions import S2Error as S2Error
from .exceptions import SeqNumMismatch as SeqNumMismatch
from .exceptions import StreamAbandoned as StreamAbandoned
from .exceptions import StreamError as StreamError
from .exceptions import StreamFailed as StreamFailed
from .exceptions import Unavailable as Unavailable
from .log import AppendAck as AppendAck
from .log import Log as Log
from .log import ReadBatch as ReadBatch
from .log import Record as Record
from .log import SequencedRecord as SequencedRecord
from .log import StreamPosition as StreamPosition
from .log import TextBatch as TextBatch
from .memory import MemoryLog as MemoryLog
from .protocol import StreamState as StreamState
from .protocol import StreamStatus as StreamStatus
from .reader import ResumableStream as ResumableStream
from .retries import RetryPolicy as RetryPolicy
from .s2 import S2Client as S2Client

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
