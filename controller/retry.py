"""Which API errors are worth retrying, and how.

One list, each entry with the reason it is here (the pattern of google-cloud-storage's retry module), so no
call site decides for itself and nothing is retried with a bare ``except Exception``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import requests
import urllib3
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

# Errors after which the same request may succeed.
RETRYABLE: tuple[type[BaseException], ...] = (
    gexc.TooManyRequests,  # 429: quota or rate limit; the request was refused, not acted on
    gexc.InternalServerError,  # 500: transient server fault
    gexc.BadGateway,  # 502: a front end could not reach the service
    gexc.ServiceUnavailable,  # 503: the service is overloaded or restarting
    gexc.GatewayTimeout,  # 504: the front end gave up waiting
    gexc.DeadlineExceeded,  # the call ran out of time; the server may still finish it
    requests.ConnectionError,  # connection refused/reset/dropped (REST transport)
    requests.Timeout,  # no answer within the client's timeout
    auth_exc.TransportError,  # token refresh could not reach the auth server
)

# Of those, the ones that say the server did NOT act: a non-idempotent call (RunJob) can simply be repeated.
# After any other retryable error the server may have acted, so the caller must look before repeating.
REFUSED: tuple[type[BaseException], ...] = (gexc.TooManyRequests,)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE)


def never_sent(exc: BaseException) -> bool:
    """A connection that could not be made (refused, no route, no such host): the request never left, so
    the server cannot have acted on it, as when a server is down."""
    if not isinstance(exc, requests.ConnectionError) or not exc.args:
        return False
    cause = exc.args[0]
    reason = cause.reason if isinstance(cause, urllib3.exceptions.MaxRetryError) else cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def is_ambiguous(exc: BaseException) -> bool:
    """True if the server may have carried out the request although the client saw an error."""
    return is_retryable(exc) and not isinstance(exc, REFUSED) and not never_sent(exc)


def retrying(
    *,
    attempts: int = 8,
    max_seconds: float = 300.0,
    initial: float = 0.5,
    max_wait: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """A tenacity policy: exponential backoff with jitter, only on RETRYABLE errors, bounded in count and time."""
    return Retrying(
        retry=retry_if_exception(is_retryable),
        stop=stop_after_attempt(attempts) | stop_after_delay(max_seconds),
        wait=wait_exponential_jitter(multiplier=initial, max=max_wait),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


_REQUEST_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")


def api_error_message(exc: BaseException) -> str:
    """What the API said, without the REST transport's "POST https://...?$alt=json: " request prefix."""
    message = getattr(exc, "message", None) or str(exc)
    return _REQUEST_PREFIX.sub("", str(message)).strip()
