"""Our exceptions and the one list of stable error codes the API returns (seed §10.2).

A service that must fail raises one of these; the API's exception handler turns it into the envelope. The
codes never change once published: clients switch on them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"  # 400: a field or parameter is wrong; details name it
    MALFORMED_REQUEST = "MALFORMED_REQUEST"  # 400: the body is not valid JSON, or the request holds a NUL
    AUTHENTICATION_REQUIRED = "AUTHENTICATION_REQUIRED"  # 401: no credentials were sent
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"  # 401: the credentials are wrong
    PERMISSION_DENIED = "PERMISSION_DENIED"  # 403: authenticated, not allowed
    MEMORY_NOT_FOUND = "MEMORY_NOT_FOUND"  # 404: no such object, or not yours
    NOT_FOUND = "NOT_FOUND"  # 404: no such route
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"  # 405
    NOT_ACCEPTABLE = "NOT_ACCEPTABLE"  # 406
    CONFLICT = "CONFLICT"  # 409: the object exists already, or its state forbids the operation
    CONTEXT_LIMIT_REACHED = "CONTEXT_LIMIT_REACHED"  # 409: max_contexts_per_user
    PROJECT_LIMIT_REACHED = "PROJECT_LIMIT_REACHED"  # 409: projects.max_projects_per_user
    WORKFLOW_LIMIT_REACHED = "WORKFLOW_LIMIT_REACHED"  # 429: workflow.max_unfinished_runs_per_user runs unfinished
    WORKFLOW_RUNNING = "WORKFLOW_RUNNING"  # 409: the run is in progress (or queued); this needs it stopped
    WORKFLOW_NOT_WAITING = "WORKFLOW_NOT_WAITING"  # 409: continue on a run that is not awaiting_input
    PANEL_NOT_FOUND = "PANEL_NOT_FOUND"  # 404: the run has no such panel (none drawn yet, or out of range)
    INVALID_DATA_PATCH = "INVALID_DATA_PATCH"  # 400: a data_patch breaks the shape of the pipeline's data
    CONTEXT_MESSAGE_TOO_LARGE = "CONTEXT_MESSAGE_TOO_LARGE"  # 400: one message does not fit the context's budget
    CONTEXT_BUDGET_EXCEEDED = "CONTEXT_BUDGET_EXCEEDED"  # 400: the system messages alone would overflow the budget
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"  # 413: body over memory.api.max_body_bytes
    INPUT_TOO_LARGE = "INPUT_TOO_LARGE"  # 413: a workflow's text is over memory.pipelines.max_input_chars
    PREVIOUS_CONTEXT_REFUSED = "PREVIOUS_CONTEXT_REFUSED"  # 400: previous_context is unsafe, missing or not an image
    WEBHOOK_URL_REFUSED = "WEBHOOK_URL_REFUSED"  # 400: a webhook URL is not http(s), malformed or not public
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"  # 415
    THROTTLED = "THROTTLED"  # 429
    INTERNAL_ERROR = "INTERNAL_ERROR"  # 500: logged with the traceback and the request id
    PROVIDER_ERROR = "PROVIDER_ERROR"  # 502: an AI provider failed
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"  # 503: the database, broker or cache is down
    LLM_CAPACITY_EXHAUSTED = "LLM_CAPACITY_EXHAUSTED"  # 503: this web process runs as many LLM calls as it may


class ComicmemError(Exception):
    """Base of every error a service raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    status_code: int = 500
    default_message = "Internal error."
    # Seconds a client should wait before trying again: the Retry-After header and details.retry_after_seconds.
    retry_after: int | None = None

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.details = details or {}
        super().__init__(self.message)


class ValidationFailed(ComicmemError):
    code = ErrorCode.VALIDATION_ERROR
    status_code = 400
    default_message = "The request is not valid."


class NotFound(ComicmemError):
    code = ErrorCode.MEMORY_NOT_FOUND
    status_code = 404
    default_message = "The requested record does not exist."


class Conflict(ComicmemError):
    code = ErrorCode.CONFLICT
    status_code = 409
    default_message = "The request conflicts with the current state."


class PermissionDenied(ComicmemError):
    code = ErrorCode.PERMISSION_DENIED
    status_code = 403
    default_message = "You do not have permission to perform this action."


class AuthenticationFailed(ComicmemError):
    code = ErrorCode.AUTHENTICATION_FAILED
    status_code = 401
    default_message = "Incorrect username or password."


class MalformedRequest(ComicmemError):
    code = ErrorCode.MALFORMED_REQUEST
    status_code = 400
    default_message = "The request is malformed."


class PayloadTooLarge(ComicmemError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    status_code = 413
    default_message = "The request body is too large."


class InputTooLarge(ComicmemError):
    code = ErrorCode.INPUT_TOO_LARGE
    status_code = 413
    default_message = "The input text is too long."


class PreviousContextRefused(ComicmemError):
    """A ``previous_context`` we will not use: a private or unresolvable host, a path outside the project, a
    response that is too big, too slow or not an image."""

    code = ErrorCode.PREVIOUS_CONTEXT_REFUSED
    status_code = 400
    default_message = "The previous_context cannot be used."


class WebhookUrlRefused(ComicmemError):
    """A webhook URL we will not send to: not http(s), with credentials, unresolvable, or resolving to an address
    that is not public (loopback only where ``webhooks.allow_loopback`` says so)."""

    code = ErrorCode.WEBHOOK_URL_REFUSED
    status_code = 400
    default_message = "The webhook URL cannot be used."


class ContextLimitReached(ComicmemError):
    code = ErrorCode.CONTEXT_LIMIT_REACHED
    status_code = 409
    default_message = "You have reached the maximum number of conversation contexts."


class ProjectLimitReached(ComicmemError):
    code = ErrorCode.PROJECT_LIMIT_REACHED
    status_code = 409
    default_message = "You have reached the maximum number of projects."


class WorkflowLimitReached(ComicmemError):
    """Too many of the user's runs are in progress or queued; another is accepted once one of them ends."""

    code = ErrorCode.WORKFLOW_LIMIT_REACHED
    status_code = 429
    default_message = "You have reached the maximum number of unfinished workflow runs."


class WorkflowRunning(ComicmemError):
    code = ErrorCode.WORKFLOW_RUNNING
    status_code = 409
    default_message = "The workflow is running; wait for it to end or cancel it."


class WorkflowNotWaiting(ComicmemError):
    code = ErrorCode.WORKFLOW_NOT_WAITING
    status_code = 409
    default_message = "The workflow is not awaiting input."


class PanelNotFound(ComicmemError):
    code = ErrorCode.PANEL_NOT_FOUND
    status_code = 404
    default_message = "The workflow has no such panel."


class InvalidDataPatch(ComicmemError):
    code = ErrorCode.INVALID_DATA_PATCH
    status_code = 400
    default_message = "The data patch breaks the shape of the workflow's data."


class ContextMessageTooLarge(ComicmemError):
    code = ErrorCode.CONTEXT_MESSAGE_TOO_LARGE
    status_code = 400
    default_message = "The message does not fit in the context's token budget."


class ContextBudgetExceeded(ComicmemError):
    code = ErrorCode.CONTEXT_BUDGET_EXCEEDED
    status_code = 400
    default_message = "The system messages alone would exceed the context's budget."


class ProviderError(ComicmemError):
    """An AI provider failed. ``retryable`` tells the workflow engine whether trying again can help."""

    code = ErrorCode.PROVIDER_ERROR
    status_code = 502
    default_message = "The AI provider failed."
    retryable = False


class RetryableProviderError(ProviderError):
    """A transient provider failure: timeout, connection error, HTTP 429 or 5xx."""

    retryable = True


class ServiceUnavailable(ComicmemError):
    code = ErrorCode.SERVICE_UNAVAILABLE
    status_code = 503
    default_message = "A backing service is unavailable."


class LLMCallsPerUserExceeded(ComicmemError):
    """The user already has ``api.llm_calls_per_user`` LLM calls in flight from the web (any process)."""

    code = ErrorCode.THROTTLED
    status_code = 429
    default_message = "You already have as many LLM calls in progress as allowed; retry when one has finished."
    retry_after = 5


class LLMCapacityExhausted(ComicmemError):
    """This web process runs ``api.llm_calls_per_process`` LLM calls already; the rest of its threads are kept
    for other requests."""

    code = ErrorCode.LLM_CAPACITY_EXHAUSTED
    status_code = 503
    default_message = "The server is running as many LLM calls as it can; retry shortly."
    retry_after = 5
