"""Project history (seed §3): appending records, retention and archives, the seed's file layout.

Where each piece lives, from the bottom to the top (a module imports only modules above it in this list):
``record`` (``history_record``, the one service every layer records through), ``archive_files`` (the archive
files: encoding, writing, reading back and verifying), ``archive`` (retention: batches, runs, sweeping,
verification), ``transfer`` (export to and import from the seed's layout). Callers import from this package.
"""

from memory_app.services.history.archive import (
    ArchiveBatchResult,
    ArchiveRunResult,
    history_archive_batch,
    history_archive_files_forget,
    history_archive_run,
    history_archive_sweep,
    history_archive_verify_all,
)
from memory_app.services.history.archive_files import (
    ArchiveVerificationFailed,
    history_archive_read,
    history_record_to_json,
)
from memory_app.services.history.record import history_record, history_record_build
from memory_app.services.history.transfer import (
    EXPORT_CHECKSUMS,
    HistoryExportResult,
    HistoryImportResult,
    history_export,
    history_import,
)

__all__ = [
    "EXPORT_CHECKSUMS",
    "ArchiveBatchResult",
    "ArchiveRunResult",
    "ArchiveVerificationFailed",
    "HistoryExportResult",
    "HistoryImportResult",
    "history_archive_batch",
    "history_archive_files_forget",
    "history_archive_read",
    "history_archive_run",
    "history_archive_sweep",
    "history_archive_verify_all",
    "history_export",
    "history_import",
    "history_record",
    "history_record_build",
    "history_record_to_json",
]
