"""``syncwatch report``, the real console script in a subprocess, on SQLite and PostgreSQL: events
loaded with ``syncwatch ingest``, flows made with ``syncwatch probe run``, then the report's files
written into --out and their paths printed."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kpis.reports.week import last_complete_week
from tests.e2e import test_cli
from tests.e2e.test_cli import Cli
from tests.support.builders import make_event

cli = test_cli.cli  # the parametrized fixture (SQLite and PostgreSQL)


def _events(path: Path) -> None:
    signed = make_event(
        "contract.signed",
        time="2026-11-16T09:00:00Z",
        correlationid="Q2C-REPORT-1",
        data={
            "contract_id": "CTR-R1",
            "contract_value": "5000.00",
            "currency": "EUR",
            "legal_entity": "DE01",
            "region": "EMEA",
            "service_line": "implementation",
        },
    )
    path.write_text(json.dumps(signed) + "\n")


def test_report_writes_the_files_and_prints_their_paths(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "events.ndjson"
    _events(source)
    cli.ok("ingest", str(source))
    cli.ok("probe", "run")
    out = tmp_path / "reports"
    result = cli.ok("report", "--week", "2026-W48", "--format", "md,html,pdf", "--out", str(out))
    names = ["syncwatch-report-2026-W48.md", "syncwatch-report-2026-W48.html"]
    names.append("syncwatch-report-2026-W48.pdf")
    assert result.stdout.splitlines() == [str(out / name) for name in names]
    md = (out / names[0]).read_text()
    # signed Nov 16 and never synced: stuck at customer.synced since Nov 16 13:00, owned by
    # finance_ops; at Nov 30 00:00 it is 13 d 15 h old
    assert "| Q2C-REPORT-1 | contract_onboarding | customer.synced | 13 d 15 h |" in md
    assert "5,000.00 EUR" in md
    assert "Mon 23 Nov 2026 00:00 UTC" in md
    assert "<script" not in (out / names[1]).read_text()
    pdf = out / names[2]
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Q2C-REPORT-1" in text and "5,000.00 EUR" in text


def test_report_defaults_and_time_zone(cli: Cli, tmp_path: Path) -> None:
    """No --week: the last complete week, in the --tz zone; only the formats asked for."""
    zone = ZoneInfo("Europe/Berlin")
    before = last_complete_week(datetime.now(UTC), zone)
    result = cli.ok("report", "--tz", "Europe/Berlin", "--format", "md", "--out", str(tmp_path))
    after = last_complete_week(datetime.now(UTC), zone)
    (printed,) = result.stdout.splitlines()
    assert printed in {str(tmp_path / f"syncwatch-report-{week}.md") for week in (before, after)}
    text = Path(printed).read_text()
    assert "(Europe/Berlin, " in text and "No data for this week" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--week", "2026-W54"), "2026 has no week 54"),
        (("--week", "2026-48"), "not an ISO week"),
        (("--week", "2999-W01"), "has not ended yet"),
        (("--format", "docx"), "choose among html, pdf, md"),
        (("--tz", "Mars/Olympus"), "not an IANA time zone"),
    ],
)
def test_report_refuses_bad_options(
    cli: Cli, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = cli("report", *args, "--out", str(tmp_path / "r"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()
