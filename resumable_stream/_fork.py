"""Fork hygiene: objects that own locks, threads or sockets reset themselves in a child process."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any


def reset_after_fork(method: Callable[[], Any]) -> None:
    """Call the bound ``method`` in the child after every ``os.fork()``, while its object lives.

    Only a weak reference is kept, so registering does not keep the object alive.
    """
    ref = weakref.WeakMethod(method)

    def in_child() -> None:
        bound = ref()
        if bound is not None:
            bound()

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=in_child)
