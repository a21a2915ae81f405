"""Verify cache blobs, history archives and the workflow tables (§8.1); --repair fixes what can be fixed."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from memory_app.services.operations import integrity_check


class Command(BaseCommand):
    help = (
        "Check cache entries against their blobs (both ways), history archives against their manifests, leftover "
        "archive files, and snapshots or units without a run. Exit 1 while a problem is left unrepaired."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repair", action="store_true", help="repair what can be repaired")
        parser.add_argument("--json", action="store_true", help="print the report as one JSON document")

    def handle(self, *args: Any, **options: Any) -> None:
        report = integrity_check(repair=options["repair"])
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
        else:
            checked = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in report.checked.items())
            self.stdout.write(f"Checked {checked}.")
            for problem in report.problems:
                state = "REPAIRED" if problem.repaired else "FOUND"
                self.stdout.write(f"{state} {problem.kind} {problem.subject}: {problem.detail}")
            self.stdout.write(
                f"{len(report.problems)} problem(s), {len(report.unrepaired)} unrepaired."
                + (
                    " Run with --repair to fix what can be fixed."
                    if report.unrepaired and not options["repair"]
                    else ""
                )
            )
        if report.unrepaired:
            sys.exit(1)
