"""Render the reliability results (JSON lines) as Markdown.

    python -m tests.reliability.report docs/reliability-results.jsonl > docs/RELIABILITY.md

Every number comes from the results file: one ``scenario`` line per scenario run (parameters
and measured outcomes, see ``results.py``) and one ``verdict`` line per test (passed or
failed, and why).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    ("jobs_sent", "jobs sent"),
    ("deliveries_attempted", "deliveries attempted"),
    ("acknowledged", "2xx received"),
    ("undelivered", "never acknowledged"),
    ("lost", "lost"),
    ("missing_acks", "2xx missing from log"),
    ("duplicated", "duplicated"),
    ("partial", "partial / mixed"),
    ("errors_500", "500s"),
    ("kills", "kills / stops / faults"),
    ("max_recovery_s", "max recovery (s)"),
    ("runtime_s", "runtime (s)"),
)

SCENARIOS = {
    "crash": (
        "The real `results-receiver serve` process is SIGKILLed at random moments while a "
        "sender that behaves like the upstream delivers the jobs at concurrency 32 (retrying "
        "every non-2xx and connection error, backoff 0.05 s doubling to 2 s), and restarted on "
        "the same port. Checks: every job is stored exactly once (one job row, one `stored` "
        "delivery) and complete (rows per table = the payload's, summary counts, `/payload` "
        "equal to the body sent); every 2xx's `delivery_id` is in `/v1/deliveries` with that "
        "job and outcome; no entity row without its job; SQLite `PRAGMA integrity_check`."),
    "outage": (
        "PostgreSQL (a cluster of the test's own) is stopped with `pg_ctl stop -m fast` while "
        "jobs stream in, kept down, then started again; the service is never restarted. "
        "Checks: only 200 and 503 answers (no 500, no dropped connection), `/readyz` 503 "
        "while down and 200 again after the start, a `webhook.database_unavailable` log "
        "line, and then the same exactly-once and completeness checks as the crash scenario."),
    "conflicts": (
        "Each job receives some of: finished result A, a different finished result B, one "
        "or two different failures, each sent twice, a job's deliveries racing each other at "
        "concurrency 32 through the real server. Checks: one of the finished results wins "
        "whenever any arrived (a failure never replaces a finished result), the rows and "
        "`/payload` match exactly one payload (never a mix), and replaying the delivery log "
        "in id order through the precedence rules gives every logged outcome and the final "
        "result."),
    "disk-full": (
        "SQLite on a small tmpfs (4 MiB fast, 32 MiB long): a filler file takes the free "
        "space but 256 KiB, then "
        "growing results are delivered until one is refused, and more are tried while the "
        "disk is full (reads alongside); then the filler is removed. Checks: 503 "
        "`unavailable` and a `webhook.database_unavailable` log line naming the full disk, "
        "no 500, `PRAGMA integrity_check` ok during and after, the refused deliveries land "
        "when retried, fresh deliveries succeed at their first attempt, every acknowledged "
        "job intact; the service is never restarted. Recovery = from freeing the space to "
        "the next 2xx."),
    "read-only": (
        "SQLite file and WAL made immutable (`chattr +i`, ext4) under the running service, "
        "deliveries tried (reads alongside), then `chattr -i`; once with a service that had "
        "written before the fault, once with one whose first write comes during it (started "
        "on a read-only volume, say). Same checks as disk-full."),
}


def load(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parameters(parameters: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in parameters.items()
                     if not isinstance(v, (list, dict)))


def _verdict(line: dict[str, Any], verdicts: dict[str, dict[str, Any]]) -> str:
    verdict = verdicts.get(line.get("test", ""))
    if verdict is None:
        return "?"
    return "pass" if verdict["outcome"] == "passed" else "**FAIL**"


def _code_digests(scenarios: Sequence[dict[str, Any]]) -> set[str]:
    return {str(r.get("machine", {}).get("service_code", {}).get("sources_sha256", "?"))
            for r in scenarios}


def render(records: Sequence[dict[str, Any]]) -> str:
    order = list(SCENARIOS)
    scenarios = sorted(
        (r for r in records if r.get("kind", "scenario") == "scenario"),
        key=lambda r: (order.index(r["scenario"]) if r["scenario"] in order else len(order),
                       r["scenario"], r["database"] != "sqlite"))
    verdicts: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("kind") == "verdict" and (r["phase"] == "call" or r["outcome"] != "passed"):
            verdicts[r["test"]] = r
    if not scenarios:
        return "# Reliability\n\nNo scenario results in the file.\n"
    scales = sorted({r["scale"] for r in scenarios})
    finished = sorted(r["finished_at"] for r in scenarios)
    machine = scenarios[-1].get("machine", {})
    out = [
        "# Reliability",
        "",
        "Measured with `RECEIVER_RELIABILITY_SCALE=" + ", ".join(scales) + " pytest "
        "tests/reliability` (what `scripts/reliability` runs) from "
        f"{finished[0]} to {finished[-1]} (UTC). Every number below comes from that run's "
        "results file (`docs/reliability-results.jsonl` when made by `scripts/reliability`); "
        "re-run `scripts/reliability` to measure again. The normal test suite runs the same "
        "scenarios at a small scale.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine.get('cpu_model', '?')}, {machine.get('cpus', '?')} cores "
        "(shared with other work while measuring)",
        f"- Memory: {machine.get('memory_gib', '?')} GiB",
        f"- System: {machine.get('platform', '?')}",
        f"- Python {machine.get('python', '?')}, SQLite {machine.get('sqlite', '?')}, "
        f"{machine.get('postgresql') or 'PostgreSQL: not found'}",
        f"- Load average at the end: {machine.get('load_average', '?')}",
        "- Service code measured: `service/` sources sha256 "
        + ", ".join(f"`{digest}`" for digest in sorted(_code_digests(scenarios)))
        + f" (from `{machine.get('service_code', {}).get('path', '?')}`)",
        "",
        "## Results",
        "",
        "| scenario | database | parameters | "
        + " | ".join(title for _, title in COLUMNS) + " | verdict |",
        "|---|---|---|" + "---:|" * len(COLUMNS) + "---|",
    ]
    for r in scenarios:
        cells = [r["scenario"], r["database"], _parameters(r["parameters"])]
        cells += [_cell(r["outcomes"].get(key)) for key, _ in COLUMNS]
        cells.append(_verdict(r, verdicts))
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Columns: *lost* = acknowledged (2xx) jobs absent afterwards; *2xx missing from "
        "log* = 2xx answers whose `delivery_id` is not in `/v1/deliveries` with that job and "
        "outcome; *duplicated* = jobs stored more than once; *partial / mixed* = jobs whose "
        "rows or `/payload` are not exactly one payload sent; *500s* = 5xx answers other than "
        "503; *never acknowledged* = deliveries the sender gave up on at its deadline (in the "
        "disk scenarios: single-attempt deliveries refused during the fault, which are then "
        "retried as new deliveries); *max recovery* = longest time from a kill or stop (disk "
        "scenarios: from the repair) to the first 2xx of a request sent after it (crash: "
        "includes starting the service process again); *kills / "
        "stops / faults* = SIGKILLs (crash), PostgreSQL stops (outage), fault episodes "
        "(disk).",
        "",
        "## Scenarios",
        "",
    ]
    for name in dict.fromkeys(r["scenario"] for r in scenarios):
        tests = sorted({r.get("test", "?").split("[")[0] for r in scenarios
                        if r["scenario"] == name})
        text = SCENARIOS.get(name, "see the docstring of " + ", ".join(f"`{t}`" for t in tests))
        out.append(f"- **{name}**: {text}")
    recorded = {r.get("test") for r in scenarios}
    unrecorded = [v for v in verdicts.values()
                  if v["test"] not in recorded and v["outcome"] != "passed"]
    if unrecorded:
        out += ["", "## Tests that failed before recording numbers", ""]
        for verdict in unrecorded:
            first = (verdict.get("failure") or "").strip().splitlines()[:1]
            out.append(f"- `{verdict['test']}` ({verdict['phase']}): {' '.join(first)}")
    out += ["", "## Details", ""]
    for r in scenarios:
        out.append(f"### {r['scenario']} on {r['database']}")
        out.append("")
        out.append(f"- test: `{r.get('test', '?')}`")
        for key, value in r["parameters"].items():
            if isinstance(value, (list, dict)):
                out.append(f"- {key}: {json.dumps(value, ensure_ascii=False)}")
        for key, value in r.get("notes", {}).items():
            if value in (None, [], {}):
                continue
            out.append(f"- {key}: `{json.dumps(value, ensure_ascii=False)}`")
        verdict = verdicts.get(r.get("test", ""))
        if verdict is not None and verdict["outcome"] != "passed":
            failure = (verdict.get("failure") or "").strip()
            out += ["- **failed**:", "", "  ```", *("  " + line for line in
                                                     failure.splitlines()[:25]), "  ```"]
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m tests.reliability.report RESULTS.jsonl > RELIABILITY.md",
              file=sys.stderr)
        return 2
    sys.stdout.write(render(load(Path(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
