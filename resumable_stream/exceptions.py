"""Every exception the library raises on purpose.

The hierarchy::

    ResumableStreamError
    ├── ConfigurationError (also ValueError)        bad or missing S2 settings
    ├── S2Error                                     the log refused or failed a request
    │   ├── AppendConditionFailed                   HTTP 412
    │   │   ├── FencingTokenMismatch                .current_token
    │   │   └── SeqNumMismatch                      .next_seq_num
    │   ├── RangeNotSatisfiable                     HTTP 416, .tail
    │   ├── NotFound (also LookupError)             HTTP 404
    │   ├── Conflict                                HTTP 409 (other than transaction_conflict)
    │   ├── BadRequest (also ValueError)            HTTP 400 / 422
    │   ├── PermissionDenied                        HTTP 401 / 403
    │   ├── RateLimited                             HTTP 429, .retry_after
    │   └── Unavailable                             timeouts, connection errors, 408 and 5xx
    └── StreamError                                 how a resumable stream ended, seen by a reader
        ├── StreamFailed                            the source raised; .message
        └── StreamAbandoned                         the producer died without finishing

Validation of arguments (stream names, cursors, record sizes) raises plain
:class:`ValueError` before any request is made.

None of these exceptions ever contains the S2 access token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .log import StreamPosition

__all__ = [
    "AppendConditionFailed",
    "BadRequest",
    "ConfigurationError",
    "Conflict",
    "FencingTokenMismatch",
    "NotFound",
    "PermissionDenied",
    "RangeNotSatisfiable",
    "RateLimited",
    "ResumableStreamError",
    "S2Error",
    "SeqNumMismatch",
    "StreamAbandoned",
    "StreamError",
    "StreamFailed",
    "Unavailable",
]


class ResumableStreamError(Exception):
    """Root of every exception this library raises on purpose."""


class ConfigurationError(ResumableStreamError, ValueError):
    """A setting is missing or malformed.

    :attr:`variable` names the environment variable (or constructor argument)
    to fix.
    """

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class S2Error(ResumableStreamError):
    """The log (S2, or the in-process log) refused or failed a request.

    :attr:`status` is the HTTP status when there was one, :attr:`code` the S2
    error code (``"stream_not_found"``, ``"invalid"``...) when the service
    gave one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class AppendConditionFailed(S2Error):
    """An append's ``fencing_token`` or ``match_seq_num`` condition failed (412).

    Nothing of the batch was written.
    """


class FencingTokenMismatch(AppendConditionFailed):
    """The stream's fencing token is not the one the append asserted.

    :attr:`current_token` is the stream's token at the time of the append.
    """

    def __init__(self, current_token: str) -> None:
        super().__init__(f"fencing token mismatch: the stream's token is {current_token!r}", status=412)
        self.current_token = current_token


class SeqNumMismatch(AppendConditionFailed):
    """The stream's next sequence number is not the append's ``match_seq_num``.

    :attr:`next_seq_num` is the sequence number the stream would assign next.
    """

    def __init__(self, next_seq_num: int) -> None:
        super().__init__(f"sequence number mismatch: the stream's next sequence number is {next_seq_num}", status=412)
        self.next_seq_num = next_seq_num


class RangeNotSatisfiable(S2Error):
    """A read started beyond the tail, or at the tail without waiting (416).

    :attr:`tail` is the stream's tail position.
    """

    def __init__(self, tail: StreamPosition) -> None:
        super().__init__(f"read position not satisfiable: the tail is at {tail.seq_num}", status=416)
        self.tail = tail


class NotFound(S2Error, LookupError):
    """The stream or basin does not exist (404)."""


class Conflict(S2Error):
    """The resource already exists or is being deleted (409)."""


class BadRequest(S2Error, ValueError):
    """The service rejected the request as malformed or invalid (400, 422)."""


class PermissionDenied(S2Error):
    """The access token was refused (401, 403)."""


class RateLimited(S2Error):
    """Too many requests (429) and retries did not help.

    :attr:`retry_after` is the server's hint in seconds, if it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None) -> None:
        super().__init__(message, status=429, code=code)
        self.retry_after = retry_after


class Unavailable(S2Error):
    """The log could not be reached or did not answer in time, even after retries.

    Covers connection errors, timeouts, 408 and 5xx responses.
    """


class StreamError(ResumableStreamError):
    """A resumable stream ended other than by completing or being stopped.

    :attr:`stream_id` names the stream.
    """

    def __init__(self, stream_id: str, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class StreamFailed(StreamError):
    """The stream's source raised an exception.

    :attr:`message` is the recorded description of that exception
    (``"ValueError: boom"``). Readers in other threads or processes see this;
    the caller that created the stream sees the original exception instead.
    """

    def __init__(self, stream_id: str, message: str) -> None:
        super().__init__(stream_id, f"stream {stream_id!r} failed: {message}")
        self.message = message


class StreamAbandoned(StreamError):
    """The stream's producer stopped writing without finishing it.

    Its process was most likely killed. Raised to readers once nothing has been
    written for the context's ``abandon_after`` seconds.
    """

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id, f"stream {stream_id!r} was abandoned by its producer")
