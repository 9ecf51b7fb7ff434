# SPDX-License-Identifier: Apache-2.0
"""The project's exceptions, one root.

::

    OtelAgentsError
     ├── ConfigError          invalid configuration (names the key path)
     ├── BudgetExceededError  the budget guard refused an LLM call (opt-in policy)
     └── ReceiverError
          ├── InvalidRequestError   malformed / invalid OTLP data  → INVALID_ARGUMENT / 400
          ├── RequestTooLargeError  over the size limit             → RESOURCE_EXHAUSTED / 413
          ├── UnauthenticatedError  missing or wrong credentials    → UNAUTHENTICATED / 401
          └── RetryableError        overload, storage trouble       → UNAVAILABLE / 503 + delay
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "InvalidRequestError",
    "OtelAgentsError",
    "ReceiverError",
    "RequestTooLargeError",
    "RetryableError",
    "UnauthenticatedError",
]


class OtelAgentsError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(OtelAgentsError, ValueError):
    """Invalid configuration; the message starts with the key path."""


class BudgetExceededError(OtelAgentsError):
    """An opted-in budget policy refused the next LLM call."""


class ReceiverError(OtelAgentsError):
    """Raised inside the receiver; the transport maps it to a protocol status."""


class InvalidRequestError(ReceiverError):
    """The request cannot be decoded or is permanently invalid."""


class RequestTooLargeError(ReceiverError):
    """The request exceeds the configured size limit (after decompression)."""


class UnauthenticatedError(ReceiverError):
    """Credentials are missing or wrong."""


class RetryableError(ReceiverError):
    """A transient refusal; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
