"""The typed memory configuration: ``memory_config.yaml`` (seed §11.1) overridden by the environment (§11.2).

Settings load it once at start-up into ``settings.MEMORY``; every later piece of code reads that object and
nothing else. A bad value stops start-up with a message that names the key and where it came from (the file
or the environment variable).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*$", re.IGNORECASE)


class MemoryConfigError(Exception):
    """The configuration cannot be used; the message names the key and its source."""


def parse_size(value: Any) -> int:
    """``"10GB"`` → 10737418240. Integers are bytes. Units are binary (1 KB = 1024 B), as in the seed."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string such as '10GB'")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE_PATTERN.match(value)
        if match:
            number, unit = match.groups()
            return int(float(number) * _SIZE_UNITS[unit.upper()])
    raise ValueError(f"{value!r} is not a size such as 1048576, '512MB' or '10GB'")


ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


def parse_host_list(value: Any) -> Any:
    """A list of host names, or one string of them separated by commas (as an environment variable gives it)."""
    if isinstance(value, str):
        return [part.strip().lower() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [part.strip().lower() if isinstance(part, str) else part for part in value]
    return value


PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
RATE_PATTERN = r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ConversationConfig(_Section):
    default_max_messages: PositiveInt = 20
    default_max_tokens: PositiveInt = 32768
    max_contexts_per_user: PositiveInt = 10
    # System-wide count of live contexts: diagnose warns above it (§12.2) and the release task releases the least
    # recently updated beyond it (exported to storage, then removed; the owner restores them).
    max_active_contexts: PositiveInt = 1000
    # The seed saved every 10 minutes; here every acknowledged write is durable at once, so only 0 is accepted.
    auto_save_interval: NonNegativeInt = 0
    keep_archived: bool = True
    summarize_evicted: bool = False
    summary_budget_share: Annotated[float, Field(gt=0, lt=1)] = 0.2
    max_message_chars: PositiveInt = 100_000
    tokenizer_file: str | None = None
    # A context not written for this long is released by the release task: exported to storage (verified), then
    # removed; its owner lists and restores it (GET /api/context/released/).
    inactive_after_seconds: PositiveInt = 86400
    # How often beat runs the release task, and the folder of released contexts inside the default storage.
    release_interval_seconds: PositiveInt = 3600
    release_location: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")] = "released_contexts"

    @field_validator("auto_save_interval")
    @classmethod
    def _only_zero(cls, value: int) -> int:
        if value != 0:
            raise ValueError(
                "only 0 is supported: every acknowledged write is durable at once, there is no save window"
            )
        return value


class HistoryConfig(_Section):
    retention_days: PositiveInt = 90
    max_history_per_project: PositiveInt = 1000
    compression_enabled: bool = True
    archive_batch_size: PositiveInt = 1000
    # How often beat starts an archive run, and how many batches one task runs before it re-queues itself.
    archive_interval_seconds: PositiveInt = 3600
    archive_batches_per_task: PositiveInt = 10
    # The folder of the archive files inside the default Django storage.
    archive_location: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")] = "history_archives"
    redact_extra_fields: list[str] = Field(default_factory=list)
    max_detail_value_chars: PositiveInt = 4000


class CacheNamespaceConfig(_Section):
    backend: Literal["memory", "file"] = "memory"
    ttl: NonNegativeInt = 300
    max_size: PositiveInt | None = None
    max_disk_usage: ByteSize | None = None
    directory: str | None = None
    cleanup_interval: PositiveInt = 300
    compress_threshold: ByteSize | None = None

    @model_validator(mode="after")
    def _file_fields_only_on_file_caches(self) -> CacheNamespaceConfig:
        if self.backend == "memory" and self.max_disk_usage is not None:
            raise ValueError("max_disk_usage applies only to a namespace with backend: file")
        if self.backend == "memory" and self.directory is not None:
            raise ValueError("directory applies only to a namespace with backend: file")
        if self.directory is not None:
            # The directory is relative to storage.cache_dir and may never lead out of it.
            parts = self.directory.replace("\\", "/").split("/")
            if (
                not self.directory.strip()
                or self.directory.startswith(("/", "\\"))
                or "\x00" in self.directory
                or ":" in self.directory
                or any(part in {"", ".", ".."} for part in parts)
            ):
                raise ValueError("directory must be a relative path inside storage.cache_dir, without '..'")
        return self


def _default_namespaces() -> dict[str, CacheNamespaceConfig]:
    # The defaults of seed §4.4.
    return {
        "text_analysis": CacheNamespaceConfig(backend="memory", ttl=1800, max_size=100, cleanup_interval=300),
        "api_responses": CacheNamespaceConfig(backend="memory", ttl=300, max_size=500, cleanup_interval=300),
        "images": CacheNamespaceConfig(
            backend="file",
            ttl=86400,
            max_disk_usage=10 * 1024**3,
            directory="ai_images",
            cleanup_interval=3600,
        ),
    }


class CacheOptionsConfig(_Section):
    """Settings of the cache layer as a whole (the namespaces themselves are under ``cache``)."""

    # Embedded mode batches statistics per process and writes them to the database at most this often;
    # reading the statistics flushes the reading process's own batch first.
    stats_flush_interval: Annotated[float, Field(ge=0)] = 5.0
    # Also flush from a timer, so an idle process's counts arrive within the interval too.
    stats_flush_in_background: bool = True
    # How long a second caller of a compute-once key waits for the first before it computes anyway, and how long
    # the first keeps the key at most (a computation that hangs).
    lock_timeout: PositiveInt = 300
    # The compute-once lock's time to live in Redis, renewed by its holder every third of it while it computes:
    # a holder that dies (SIGKILL, OOM) frees its keys within this many seconds.
    lock_ttl: PositiveInt = 10
    # A file entry this process hit within this many seconds is hit again without asking the database: its blob
    # is read and checked against the row's size and checksum as always (a value rewritten, deleted, evicted or
    # cleaned up has lost its blob, so that hit falls back to the database). What changes a row and leaves its blob
    # (staff deleting the row in the admin) is seen this late. 0: every hit asks the database.
    entry_recheck_seconds: Annotated[float, Field(ge=0)] = 5.0
    # Temporary files younger than this may belong to a write in progress: cleanup leaves them alone.
    orphan_grace_seconds: NonNegativeInt = 3600
    cleanup_batch_size: PositiveInt = 500
    # The admin previews image entries up to this size inline.
    admin_preview_max_bytes: ByteSize = 5 * 1024 * 1024


class WorkflowConfig(_Section):
    max_state_history: PositiveInt = 50
    keep_state_history: PositiveInt = 25
    # Scheduled backups of the memory (memory_app.services.backups): every backup_interval seconds a verified,
    # gzip-compressed export of every memory_app table into backup_location (default Django storage); the newest
    # backup_keep are kept. ``manage.py backup_memory`` / ``restore_memory <name>`` by hand.
    auto_backup: bool = True
    backup_interval: PositiveInt = 1800
    backup_keep: PositiveInt = 48
    backup_location: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")] = "backups"
    max_retries: NonNegativeInt = 5
    retry_backoff_base: Annotated[float, Field(gt=0)] = 2.0
    retry_backoff_max: PositiveInt = 300
    stuck_after_seconds: PositiveInt = 1800
    # What stuck-run detection does after flagging a run: hand its units to recovery (True) or only flag it.
    resume_stuck: bool = False
    # How long a claimed unit may go silent before recovery hands it to another worker. A running step renews it
    # every third of it (the lease heartbeat), however long it runs; a killed worker's unit is free this long
    # after its last renewal.
    lease_seconds: PositiveInt = 30
    # How long a queued unit's message may wait unclaimed before recovery presumes it lost (a broker that
    # restarted empty) and sends it again. Long, so a busy queue is not filled with duplicates.
    queue_lease_seconds: PositiveInt = 600
    # The longest recovery waits before it looks again while work is in flight (it re-arms itself, sooner when a
    # lease ends sooner; also run at worker start and on beat).
    recovery_interval: PositiveInt = 10
    # Continuation: the worker that finishes a plain step runs the run's next plain step itself, claimed in the
    # transaction that records the finished one, without a message through the broker; at most this many steps
    # after the delivered one (0: every step goes through the broker) and only while the chain has run for less than
    # max_continued_seconds, after which the next step is sent as a message and queues behind other runs' units.
    max_continued_steps: NonNegativeInt = 20
    max_continued_seconds: Annotated[float, Field(ge=0)] = 10.0
    # Fan-out lanes (PostgreSQL): a worker process running a fan-out's unit runs a second one of the same step
    # beside it, begun once the first has its provider's answer, so the next call is under way while the last unit
    # is recorded.
    # The second lane claims pending units only while the task has run less than max_continued_seconds.
    fan_out_lanes: bool = True
    # Runs one user may have in progress at once. One more is accepted but waits, queued (``pending``), and
    # starts when one of that user's runs ends: one user's backlog never holds every worker, so another user's
    # new run starts at once.
    max_active_runs_per_user: PositiveInt = 3
    # Runs one user may have in progress or queued; one more is a 429 WORKFLOW_LIMIT_REACHED, creating nothing.
    max_unfinished_runs_per_user: PositiveInt = 50

    @model_validator(mode="after")
    def _keep_below_max(self) -> WorkflowConfig:
        if self.keep_state_history > self.max_state_history:
            raise ValueError("keep_state_history must not exceed max_state_history")
        if self.max_active_runs_per_user > self.max_unfinished_runs_per_user:
            raise ValueError("max_active_runs_per_user must not exceed max_unfinished_runs_per_user")
        return self


class ProjectsConfig(_Section):
    # Projects one user may own; one more is a 409 PROJECT_LIMIT_REACHED, and nothing is created.
    max_projects_per_user: PositiveInt = 1000


class StorageConfig(_Section):
    cache_dir: str = "var/cache"
    # How long a signed blob URL (a panel's image_url, a run's output_urls) loads without credentials.
    signed_url_max_age: PositiveInt = 3600
    # Who serves a signed URL with an object store: the store itself (a presigned URL; browsers must reach the
    # store's endpoint) or this web app (/api/files/<token>, read from the store). Local files: always the web app.
    signed_urls: Literal["store", "web"] = "store"


class MaintenanceConfig(_Section):
    auto_cleanup_enabled: bool = True
    # Intervals of beat schedules: brought in line with this file at every beat start and after migrate
    # (memory_app.services.schedules); an interval edited in the admin lasts until then, an admin's "enabled" stays.
    optimize_interval_seconds: PositiveInt = 300
    integrity_interval_seconds: PositiveInt = 86400
    stuck_check_interval_seconds: PositiveInt = 300
    # The scheduled integrity check repairs what it can (as `integrity_check --repair`), or only reports.
    integrity_repair: bool = True
    # File deletions a worker left unfinished (killed while removing a deleted project's files) are handed to a
    # new task by a beat sweep every storage_deletion_sweep_interval_seconds, once older than
    # storage_deletion_grace_seconds (so a deletion still being done is not doubled at once).
    storage_deletion_sweep_interval_seconds: PositiveInt = 300
    storage_deletion_grace_seconds: PositiveInt = 300


class MonitoringConfig(_Section):
    enabled: bool = True
    memory_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8
    snapshot_interval_seconds: PositiveInt = 300
    snapshot_retention_days: PositiveInt = 30
    # The seed's diagnose thresholds (§12.2): cache memory over this, a hit rate under this.
    cache_memory_warning: ByteSize = 1024**3
    low_hit_rate: Annotated[float, Field(ge=0, le=1)] = 0.5
    # Lookups a namespace needs in the analysed window before its hit rate is judged.
    min_lookups_for_advice: PositiveInt = 20
    # Credentials of a Prometheus scraper on /metrics: basic auth prometheus:<password>, or the header
    # "Authorization: Bearer <token>". Without either only staff may scrape (loopback is no credential: behind a
    # reverse proxy on the same host every request comes from loopback).
    metrics_password: str | None = None
    metrics_token: str | None = None


class ThrottleConfig(_Section):
    anon: Annotated[str, Field(pattern=RATE_PATTERN)] = "60/min"
    user: Annotated[str, Field(pattern=RATE_PATTERN)] = "1200/min"
    auth: Annotated[str, Field(pattern=RATE_PATTERN)] = "20/min"
    # Every login attempt per client address, right or wrong: a password check costs a slow hash, so even right
    # ones are bounded; generous, so many people behind one NAT still log in.
    login: Annotated[str, Field(pattern=RATE_PATTERN)] = "300/min"
    # Every rate above lifted out of reach, for a local fuzzing run (schemathesis against `make run`). Honoured by
    # the embedded settings with DEBUG on only; anywhere else it stops start-up (comicmem_site.settings.base).
    disabled: bool = False


class ApiConfig(_Section):
    max_body_bytes: ByteSize = 1024 * 1024
    default_page_size: PositiveInt = 50
    max_page_size: PositiveInt = 1000
    throttle: ThrottleConfig = ThrottleConfig()
    # LLM calls made inside a web request (generate-with-context): how many one user may have in flight across
    # every web process (beyond: 429), and how many one web process may run at once (beyond: 503), by default
    # half its threads, so that health and everyone else's requests always find a free thread.
    llm_calls_per_user: PositiveInt = 2
    llm_calls_per_process: PositiveInt | None = None


class EventsConfig(_Section):
    # Server-Sent Events (/api/workflows/{id}/events, /api/projects/{id}/events).
    heartbeat_seconds: PositiveFloat = 15.0  # a ": ping" comment on an idle stream, so proxies keep it open
    # Without Redis (REDIS_URL unset) a stream looks for new rows this often. With Redis a published wake-up
    # brings them at once, and the table is read again at each heartbeat in case a message was lost.
    poll_interval_seconds: PositiveFloat = 0.5
    retention_days: PositiveInt = 7  # rows older than this are deleted by beat (a client resuming later starts over)
    cleanup_interval_seconds: PositiveInt = 3600


class ProviderConfig(_Section):
    provider: Literal["offline", "openai"] = "offline"
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    # The largest answer body read from the provider (and image downloaded from a URL it answers with); a larger
    # one is refused as soon as the limit is passed, before it is decoded.
    max_answer_bytes: Annotated[int, BeforeValidator(parse_size), Field(ge=1024)] = 32 * 1024 * 1024
    # Image providers only: whether the endpoint takes reference images (sent as ``image``, a list of data URLs,
    # as Seedream and most open servers read it). When it does not, the prompt describes them instead.
    accepts_references: bool = True
    # Chat calls that need JSON send ``response_format: {"type": "json_object"}``; false for a server that refuses it.
    json_mode: bool = True
    # Image providers only: the hosts an image URL of the answer may be on even when they resolve to a private or
    # loopback address (the SSRF guard refuses those otherwise). The base_url's own host is always allowed.
    allowed_hosts: Annotated[list[str], BeforeValidator(parse_host_list)] = Field(default_factory=list)


class PipelinesConfig(_Section):
    """The two pipelines (text_compression, comic_generation) and the creative memory they read."""

    # Longest input text a run accepts (characters); longer is a 400 at POST /api/workflows/.
    max_input_chars: PositiveInt = 50_000
    default_target_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.75
    # Comic segmentation: the target length of one panel's text, and the most panels one run may make.
    segment_target_chars: PositiveInt = 120
    max_segments: PositiveInt = 60
    panel_width: Annotated[int, Field(ge=128, le=2048)] = 512
    panel_height: Annotated[int, Field(ge=128, le=2048)] = 512
    panels_per_page: Annotated[int, Field(ge=1, le=12)] = 4
    default_style: str = "manga_shonen"
    # The lettering font of the panels; unset (default): Noto Sans CJK from the Python package
    # cvttf-notosanscjk-regular. A path set here must be a font file (start-up stops otherwise).
    font_path: str | None = None
    # previous_context downloads (http/https): limits, and the most redirects followed (each re-checked).
    previous_context_max_bytes: ByteSize = 5 * 1024 * 1024
    previous_context_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    previous_context_max_redirects: NonNegativeInt = 3
    # Output files (panels, pages) of finished runs older than this many days are removed by a beat task every
    # output_expiry_interval_seconds; the run and its data stay. 0 or null: kept for ever.
    output_retention_days: NonNegativeInt | None = None
    output_expiry_interval_seconds: PositiveInt = 3600
    # Character reference images (POST /api/characters/{id}/references): the largest upload, the most pixels a
    # picture may have (a small file can decode to gigabytes), and the most references one character keeps.
    reference_max_bytes: Annotated[int, BeforeValidator(parse_size), Field(ge=1024)] = 5 * 1024 * 1024
    reference_max_pixels: Annotated[int, Field(ge=1024)] = 40_000_000
    reference_max_per_character: Annotated[int, Field(ge=1, le=100)] = 8

    @field_validator("font_path")
    @classmethod
    def _font_file_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"{value!r} is not a file (leave it unset for the packaged font)")
        return value


class WebhooksConfig(_Section):
    """Signed webhook deliveries (Standard Webhooks): retries, timeouts, and where they may go."""

    # Attempts per message (the first included); attempt n waits retry_base_delay_seconds * 2**(n-1) after n.
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 6
    retry_base_delay_seconds: Annotated[float, Field(ge=0)] = 5.0
    # One attempt's deadline (connect, send, answer); longer is a failed attempt.
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    # Messages that failed for good in a row before the endpoint is disabled (with a history record).
    disable_after_failures: PositiveInt = 5
    # Loopback URLs (127.0.0.1, ::1, localhost) are accepted: the embedded local settings turn it on so a
    # developer receives webhooks on their own machine. Private, link-local and other addresses stay refused.
    allow_loopback: bool = False
    # How often a beat task sends again the pending messages whose send was lost (a broker outage, a dead worker).
    sweep_interval_seconds: PositiveInt = 60
    # Finished messages (succeeded, or failed for good) are kept this long for the deliveries list, then deleted
    # with their attempts by the same beat task.
    retention_days: PositiveInt = 30


class EmbeddingsConfig(_Section):
    """An OpenAI-compatible embeddings endpoint (``POST {base_url}/embeddings``). Unset base_url: no vectors, recall
    is lexical only (there is no offline embedding model: a made-up one would rank worse than words)."""

    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    # Vector size sent as ``dimensions`` where the model takes it; unset: the model's own size.
    dimensions: Annotated[int, Field(ge=8, le=4096)] | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    batch_size: Annotated[int, Field(ge=1, le=2048)] = 64


class SearchConfig(_Section):
    """Recall (``GET /api/memory/search``, ``recall`` in generate and in the pipelines' preferences)."""

    # Messages are indexed on the append path, in the append's transaction; false leaves them out of the index
    # (history, characters and stories are indexed whatever this says).
    index_messages: bool = True
    max_query_chars: Annotated[int, Field(ge=1, le=4096)] = 200
    default_limit: Annotated[int, Field(ge=1, le=200)] = 10
    max_limit: Annotated[int, Field(ge=1, le=200)] = 50
    # Reciprocal rank fusion of the lexical and the vector rankings: score = sum of 1 / (rrf_k + rank).
    rrf_k: PositiveInt = 60
    # Recalled archived messages added to a generate's window (``recall: true``), and recalled records per
    # pipeline step (``preferences.recall: true``).
    generate_top_k: Annotated[int, Field(ge=1, le=20)] = 3
    pipeline_top_k: Annotated[int, Field(ge=1, le=20)] = 5
    embeddings: EmbeddingsConfig = EmbeddingsConfig()


class ProvidersConfig(_Section):
    llm: ProviderConfig = ProviderConfig()
    image: ProviderConfig = ProviderConfig()


class MemoryConfig(_Section):
    conversation: ConversationConfig = ConversationConfig()
    history: HistoryConfig = HistoryConfig()
    cache: dict[str, CacheNamespaceConfig] = Field(default_factory=_default_namespaces)
    cache_options: CacheOptionsConfig = CacheOptionsConfig()
    workflow: WorkflowConfig = WorkflowConfig()
    projects: ProjectsConfig = ProjectsConfig()
    storage: StorageConfig = StorageConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    api: ApiConfig = ApiConfig()
    events: EventsConfig = EventsConfig()
    providers: ProvidersConfig = ProvidersConfig()
    pipelines: PipelinesConfig = PipelinesConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    search: SearchConfig = SearchConfig()

    @model_validator(mode="after")
    def _namespace_names_are_slugs(self) -> MemoryConfig:
        for name in self.cache:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
                raise ValueError(f"cache namespace {name!r} must be lower-case letters, digits and '_'")
            if name == "stats":
                # /api/memory/cache/stats is the statistics route: a namespace of that name could not be cleared.
                raise ValueError("cache namespace 'stats' is reserved")
        return self


# Environment variable → (dotted key inside `memory:`, kind). Seed §11.2, plus the provider secrets that must
# not live in a file.
ENVIRONMENT_OVERRIDES: dict[str, tuple[str, str]] = {
    "MEMORY_MAX_CONTEXTS": ("conversation.max_active_contexts", "int"),
    "CACHE_DIR": ("storage.cache_dir", "str"),
    "SIGNED_URL_MAX_AGE": ("storage.signed_url_max_age", "int"),
    "SIGNED_URLS": ("storage.signed_urls", "str"),
    "HISTORY_RETENTION_DAYS": ("history.retention_days", "int"),
    "AUTO_CLEANUP_ENABLED": ("maintenance.auto_cleanup_enabled", "bool"),
    "MEMORY_MONITORING_ENABLED": ("monitoring.enabled", "bool"),
    "METRICS_PASSWORD": ("monitoring.metrics_password", "str"),
    "METRICS_TOKEN": ("monitoring.metrics_token", "str"),
    "API_THROTTLE_DISABLED": ("api.throttle.disabled", "bool"),
    "LLM_CALLS_PER_USER": ("api.llm_calls_per_user", "int"),
    "LLM_CALLS_PER_PROCESS": ("api.llm_calls_per_process", "int"),
    "LLM_PROVIDER": ("providers.llm.provider", "str"),
    "LLM_BASE_URL": ("providers.llm.base_url", "str"),
    "LLM_API_KEY": ("providers.llm.api_key", "str"),
    "LLM_MODEL": ("providers.llm.model", "str"),
    "LLM_MAX_ANSWER_BYTES": ("providers.llm.max_answer_bytes", "str"),
    "IMAGE_PROVIDER": ("providers.image.provider", "str"),
    "IMAGE_BASE_URL": ("providers.image.base_url", "str"),
    "IMAGE_API_KEY": ("providers.image.api_key", "str"),
    "IMAGE_MODEL": ("providers.image.model", "str"),
    "IMAGE_MAX_ANSWER_BYTES": ("providers.image.max_answer_bytes", "str"),
    "IMAGE_ALLOWED_HOSTS": ("providers.image.allowed_hosts", "str"),
    "LLM_TIMEOUT_SECONDS": ("providers.llm.timeout_seconds", "float"),
    "IMAGE_TIMEOUT_SECONDS": ("providers.image.timeout_seconds", "float"),
    "WORKFLOW_LEASE_SECONDS": ("workflow.lease_seconds", "int"),
    "WORKFLOW_QUEUE_LEASE_SECONDS": ("workflow.queue_lease_seconds", "int"),
    "WORKFLOW_RECOVERY_INTERVAL": ("workflow.recovery_interval", "int"),
    "WORKFLOW_MAX_CONTINUED_STEPS": ("workflow.max_continued_steps", "int"),
    "WORKFLOW_MAX_CONTINUED_SECONDS": ("workflow.max_continued_seconds", "float"),
    "WORKFLOW_FAN_OUT_LANES": ("workflow.fan_out_lanes", "bool"),
    "WORKFLOW_MAX_RETRIES": ("workflow.max_retries", "int"),
    "WORKFLOW_MAX_ACTIVE_RUNS_PER_USER": ("workflow.max_active_runs_per_user", "int"),
    "WORKFLOW_MAX_UNFINISHED_RUNS_PER_USER": ("workflow.max_unfinished_runs_per_user", "int"),
    "EVENTS_HEARTBEAT_SECONDS": ("events.heartbeat_seconds", "float"),
    "EVENTS_POLL_INTERVAL_SECONDS": ("events.poll_interval_seconds", "float"),
    "EVENTS_RETENTION_DAYS": ("events.retention_days", "int"),
    "MEMORY_MAX_PROJECTS_PER_USER": ("projects.max_projects_per_user", "int"),
    "WEBHOOKS_ALLOW_LOOPBACK": ("webhooks.allow_loopback", "bool"),
    "WEBHOOKS_MAX_ATTEMPTS": ("webhooks.max_attempts", "int"),
    "WEBHOOKS_RETRY_BASE_DELAY_SECONDS": ("webhooks.retry_base_delay_seconds", "float"),
    "WEBHOOKS_TIMEOUT_SECONDS": ("webhooks.timeout_seconds", "float"),
    "WEBHOOKS_DISABLE_AFTER_FAILURES": ("webhooks.disable_after_failures", "int"),
    "EMBEDDINGS_BASE_URL": ("search.embeddings.base_url", "str"),
    "EMBEDDINGS_API_KEY": ("search.embeddings.api_key", "str"),
    "EMBEDDINGS_MODEL": ("search.embeddings.model", "str"),
    "SEARCH_INDEX_MESSAGES": ("search.index_messages", "bool"),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(variable: str, raw: str, kind: str) -> Any:
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise MemoryConfigError(f"environment variable {variable}: {raw!r} is not an integer") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise MemoryConfigError(f"environment variable {variable}: {raw!r} is not a number") from None
    if kind == "bool":
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise MemoryConfigError(f"environment variable {variable}: {raw!r} is not a boolean (true/false)")
    return raw


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MemoryConfigError(f"memory.{dotted}: {part!r} must be a mapping to take an override")
        node = child
    node[leaf] = value


def _describe(error: ErrorDetails, sources: dict[str, str], path: Path) -> str:
    key = ".".join(str(part) for part in ("memory", *error["loc"]))
    dotted = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        problem = "unknown key"
    else:
        problem = error["msg"]
        if "input" in error and not isinstance(error["input"], dict):
            problem += f" (got {error['input']!r})"
    source = f"environment variable {sources[dotted]}" if dotted in sources else str(path)
    return f"{key}: {problem} [{source}]"


def load_memory_config(path: Path, environ: os._Environ[str] | dict[str, str] | None = None) -> MemoryConfig:
    """Read, override and validate. Raises MemoryConfigError with every problem named."""
    environ = os.environ if environ is None else environ
    if path.exists():
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise MemoryConfigError(f"{path}: not valid YAML: {exc}") from None
    else:
        document = {}
    if not isinstance(document, dict) or set(document) - {"memory"}:
        unknown = sorted(set(document) - {"memory"}) if isinstance(document, dict) else ["<top level>"]
        raise MemoryConfigError(f"{path}: the file holds one mapping, 'memory:'; unknown key(s) {unknown}")
    tree = document.get("memory") or {}
    if not isinstance(tree, dict):
        raise MemoryConfigError(f"{path}: 'memory' must be a mapping")

    sources: dict[str, str] = {}
    for variable, (dotted, kind) in ENVIRONMENT_OVERRIDES.items():
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        _set_dotted(tree, dotted, _convert(variable, raw, kind))
        sources[dotted] = variable

    try:
        return MemoryConfig.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, sources, path) for error in exc.errors())
        raise MemoryConfigError(f"invalid memory configuration: {problems}") from None
