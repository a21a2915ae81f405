"""The seed's troubleshooting checks (§12.2): exit status 1 when any is a warning, so monitoring can call it."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from memory_app.selectors.operations import diagnose
from memory_app.services.cache import cache_statistics_flush


class Command(BaseCommand):
    help = "Check active contexts, cache memory and hit rates, stuck runs, disk and memory use; exit 1 on a warning."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the findings as one JSON document")

    def handle(self, *args: Any, **options: Any) -> None:
        cache_statistics_flush()  # this process's pending cache counts first, so the figures include them
        findings = diagnose()
        warnings = [finding for finding in findings if finding.warning]
        if options["json"]:
            self.stdout.write(json.dumps({"warnings": len(warnings), "findings": [asdict(f) for f in findings]}))
        else:
            for finding in findings:
                label = "WARN" if finding.warning else "OK  "
                self.stdout.write(f"{label} {finding.check}: {finding.message}")
            self.stdout.write(f"{len(warnings)} warning(s).")
        if warnings:
            sys.exit(1)
