"""Silence one known piece of noise of failed S3 reads: aiobotocore's context tokens.

When one request of a batch that Zarr gathers on its event loop fails (no credentials,
an unreachable endpoint), the others are abandoned; when Python later closes those
coroutines, aiobotocore resets a ``contextvars`` token in another context and the
interpreter prints ``Exception ignored in: <coroutine ...>`` with a 30-line traceback,
once per abandoned request (about 100 lines after a single one-line error). The hook
installed here drops exactly that case (a ``ValueError`` "was created in a different
Context" raised from botocore's context module while closing a coroutine) and passes
every other unraisable exception to the previous hook.
"""

from __future__ import annotations

import sys
import types
from typing import Any

_MARK = "was created in a different Context"


def _is_known_noise(unraisable: Any) -> bool:
    err = unraisable.exc_value
    if not isinstance(err, ValueError) or _MARK not in str(err):
        return False
    if not isinstance(unraisable.object, types.CoroutineType | types.AsyncGeneratorType):
        return False
    tb = unraisable.exc_traceback
    while tb is not None:
        if "botocore" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def quiet_s3_shutdown() -> None:
    """Install the filtering hook (once; idempotent)."""
    previous = sys.unraisablehook
    if getattr(previous, "_mia_s3_quiet", False):
        return

    def hook(unraisable: Any) -> None:
        if not _is_known_noise(unraisable):
            previous(unraisable)

    hook._mia_s3_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


__all__ = ["quiet_s3_shutdown"]
