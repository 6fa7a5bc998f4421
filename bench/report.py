"""bench/RESULTS.md from one run's raw results (``bench/out/run-*/results.json``).

    .venv/bin/python -m bench.report bench/out/run-XXXX/results.json > bench/RESULTS.md
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from bench import pg


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _mb(value: float | None) -> str:
    return "-" if not value else f"{value / 1e6:,.0f} MB"


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value * 100:.0f}%"


def _problems(summary: dict[str, Any], expected: str) -> str:
    parts = []
    others = {k: v for k, v in summary.get("statuses", {}).items() if k != expected}
    parts += [f"{v}x HTTP {k}" for k, v in others.items()]
    parts += [f"{v}x {k}" for k, v in summary.get("errors", {}).items()]
    parts += [f"{v}x {k}" for k, v in summary.get("unexpected", {}).items()
              if not k.startswith("status")]
    return "; ".join(parts) or "none"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def _at_least(value: float | None, bound: float) -> bool | None:
    """``value >= bound``, or None when the value could not be measured (NaN)."""
    if value is None or value != value:
        return None
    return value >= bound


def _targets(results: dict[str, Any]) -> list[str]:
    lines = ["| target | measured in this run | verdict |", "|---|---|---|"]
    for entry in results["throughput"]:
        if entry["payload"] == "typical" and entry["database"] == "postgresql" \
                and entry["workers"] == 2:
            ratios = entry["ratios"]
            lines.append(f"| typical, PostgreSQL, 2 workers: >= 25% of the ceiling | "
                         f"{_pct(ratios['vs_ceiling'])} | "
                         f"{_verdict(_at_least(ratios['vs_ceiling'], 0.25))} |")
            lines.append(f"| typical, PostgreSQL, 2 workers: >= 20x the naive peer | "
                         f"{_num(ratios['vs_naive'], 1)}x | "
                         f"{_verdict(_at_least(ratios['vs_naive'], 20))} |")
    for entry in results["throughput"]:
        if entry["payload"] == "small":
            rate = entry["targets"]["service"]["per_second"]
            lines.append(f"| small: >= 3,000 deliveries/s ({entry['database']}, "
                         f"{entry['workers']} worker(s)) | {_num(rate)}/s | "
                         f"{_verdict(rate >= 3000)} |")
    for entry in results["cost"]:
        if entry["payload"] == "large":
            seconds = entry["ms_p50"] / 1000
            ratio = entry["vm_hwm"] / entry["bytes"] if entry.get("vm_hwm") else None
            lines.append(f"| large ({entry['database']}): ingested in < 1.5 s | "
                         f"{seconds:.2f} s | {_verdict(seconds < 1.5)} |")
            lines.append(f"| large ({entry['database']}): peak RSS < 8x payload "
                         f"({_mb(8 * entry['bytes'])}) | {_mb(entry.get('vm_hwm'))} = "
                         f"{_num(ratio, 1)}x | "
                         f"{_verdict(ratio < 8 if ratio is not None else None)} |")
    if results["queries"]:
        for database in sorted({q["database"] for q in results["queries"]}):
            rows = [q for q in results["queries"] if q["database"] == database]
            largest = max(q["jobs"] for q in rows)
            for query in rows:
                if query["jobs"] == largest and query["endpoint"] in (
                        "job detail", "filtered list", "OCR search"):
                    lines.append(f"| query p99 < 20 ms at {largest:,} jobs ({database}): "
                                 f"{query['endpoint']} | {query['p99_ms']:.1f} ms | "
                                 f"{_verdict(query['p99_ms'] < 20)} |")
    for database in sorted({c["database"] for c in results["cost"]}):
        by_name = {c["payload"]: c for c in results["cost"] if c["database"] == database}
        if "typical" in by_name and "large" in by_name:
            growth = by_name["large"]["us_per_row"] / by_name["typical"]["us_per_row"]
            lines.append(f"| cost linear in rows ({database}): us/row of large vs typical "
                         f"<= 1.25 | {growth:.2f} | {_verdict(growth <= 1.25)} |")
            # Rows differ in width (a frame activity row packs 1,800 values in typical and
            # 108,000 in large; embeddings are 128-d vs 512-d), so also per byte received.
            per_mb = by_name["large"]["ms_per_mb"] / by_name["typical"]["ms_per_mb"]
            lines.append(f"| cost linear in size ({database}): ms/MB of large vs typical "
                         f"<= 1.25 | {per_mb:.2f} | {_verdict(per_mb <= 1.25)} |")
    return lines


def _throughput(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for entry in results["throughput"]:
        lines += [
            f"### {entry['database']}, {entry['workers']} worker(s), {entry['payload']} payload "
            f"({entry['payload_bytes']:,} bytes, {entry['rows_per_delivery']:,} rows per "
            f"stored delivery)",
            "",
            "| target | deliveries/s (median) | each run | p50 ms | p99 ms | rows/s | "
            "peak RSS | server CPU | driver CPU | non-expected responses / errors |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for target in ("ceiling", "service", "naive"):
            s = entry["targets"][target]
            expected = "204" if target == "ceiling" else "200"
            rows = "-" if target == "ceiling" else _num(s["rows_per_second"])
            lines.append(
                f"| {target} | {_num(s['per_second'])} | "
                f"{', '.join(_num(v) for v in s['per_second_all'])} | {_num(s['p50_ms'], 2)} | "
                f"{_num(s['p99_ms'], 2)} | {rows} | {_mb(s['rss_peak'])} | "
                f"{_pct(s['server_cpu'])} | {_pct(s['client_cpu'])} | "
                f"{_problems(s, expected)} |")
        ratios = entry["ratios"]
        driver = entry["targets"]["service"]["driver"]
        lines += ["", f"service / ceiling: **{_pct(ratios['vs_ceiling'])}**; service / naive: "
                  f"**{_num(ratios['vs_naive'], 1)}x** (medians of per-run ratios; driver: "
                  f"{driver}; concurrency {results['config']['concurrency']}, "
                  f"{_pct(results['config']['duplicates'])} redeliveries)", ""]
    return lines


def _cost(results: dict[str, Any]) -> list[str]:
    lines = ["| database | payload | bytes | rows | deliveries | ms p50 | ms p99 | us/row | "
             "ms/MB | problems |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["cost"]:
        problems = _problems({"statuses": c["statuses"], "errors": c["errors"],
                              "unexpected": c["unexpected"]}, "200")
        lines.append(f"| {c['database']} | {c['payload']} | {c['bytes']:,} | {c['rows']:,} | "
                     f"{c['requests']} | {_num(c['ms_p50'], 2)} | {_num(c['ms_p99'], 2)} | "
                     f"{_num(c['us_per_row'], 1)} | {_num(c['ms_per_mb'], 1)} | {problems} |")
    large = [c for c in results["cost"] if c["payload"] == "large"]
    if large:
        lines += ["", "Large payload, on a freshly started 1-worker service:", "",
                  "| database | ms per delivery | idle RSS | peak RSS (VmHWM) | peak / payload |",
                  "|---|---|---|---|---|"]
        for c in large:
            ratio = c["vm_hwm"] / c["bytes"] if c.get("vm_hwm") else None
            lines.append(f"| {c['database']} | {_num(c['ms_p50'])} | {_mb(c['idle_rss'])} | "
                         f"{_mb(c['vm_hwm'])} | {_num(ratio, 1)}x |")
    return lines


def _queries(results: dict[str, Any]) -> list[str]:
    lines = ["| database | stored jobs | endpoint | requests | p50 ms | p99 ms | response | "
             "problems |", "|---|---|---|---|---|---|---|---|"]
    for q in results["queries"]:
        problems = _problems({"statuses": q["statuses"], "errors": q["errors"]}, "200")
        lines.append(f"| {q['database']} | {q['jobs']:,} | {q['endpoint']} | {q['requests']} | "
                     f"{_num(q['p50_ms'], 2)} | {_num(q['p99_ms'], 2)} | {q['note']} | "
                     f"{problems} |")
    if results["seeding"]:
        lines += ["", "Seeding (fast loader, `bench/seed.py`): "
                  + "; ".join(f"{s['database']} jobs {s['from']:,}-{s['to']:,} in "
                              f"{s['seconds']:.0f} s" for s in results["seeding"])]
    return lines


def render(results: dict[str, Any], raw_path: Path | str) -> str:
    machine = results["machine"]
    cfg = results["config"]
    quick = cfg["quick"]
    out = [
        "# results-receiver benchmark results",
        "",
        ("**QUICK SMOKE RUN** (`--quick`: windows of about a second, small databases): the "
         "numbers below prove the harness works; they are too short to judge the service by."
         if quick else
         "Every number below comes from the single run described here; absolute numbers mean "
         "little on a shared 2-core machine, ratios measured side by side mean more."),
        "",
        f"- command: `{results['command']}`",
        f"- started {results['started']}, finished {results.get('finished')} "
        f"({results.get('seconds', 0):.0f} s)",
        f"- raw data: `{raw_path}` (git-ignored)",
        f"- windows: {cfg['runs']} timed runs of {cfg['duration']} s per target after "
        f"{cfg['warmup']} s of warm-up; concurrency {cfg['concurrency']}; "
        f"{_pct(cfg['duplicates'])} redeliveries",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}, {machine['nproc']} cores (nproc); memory {machine['memory']}",
        f"- kernel {machine['kernel']}; load average at start "
        f"{' '.join(machine['loadavg_start'])}, at end "
        f"{' '.join(machine.get('loadavg_end') or [])} (other users share this machine)",
        f"- Python {machine['python']}; SQLite {machine['sqlite']}; wrk: {machine['wrk'] or '-'}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
    ]
    for kind, info in results["databases"].items():
        if kind == "postgresql":
            out.append(f"- PostgreSQL {info.get('postgresql_version')}, a throwaway cluster on "
                       f"loopback; settings: {', '.join(info.get('settings', []))}")
    out += ["- service: `results-receiver serve` with RECEIVER_LOG_LEVEL=warning (no line per "
            "delivery), RECEIVER_LOG_FORMAT=json, pool size default (10)",
            "", "## Targets (issue 5)", "", *_targets(results), "",
            "Where a target is missed, `bench/PROFILE.md` shows the profile that says why and "
            "what would reach it.", "",
            "## Throughput, side by side", "",
            "ceiling = bare Starlette + HMAC check, 204 (bench/ceiling.py); naive = one SQLModel "
            "object per row and a commit per request (bench/naive.py); both under the same "
            "uvicorn settings as `results-receiver serve`. Rows/s counts the rows written for "
            "fresh deliveries (entity rows + job + delivery + body). Peak RSS is the sum over "
            "the server's process tree, sampled every 50 ms. CPU is in cores (100% = one).", ""]
    out += _throughput(results)
    check = results.get("client_check")
    if check:
        out += ["## Load driver check", "",
                f"The ceiling ({check['workers']} workers, small payload) measured alternately by "
                f"the Python driver and by wrk: python {_num(check['python']['per_second'])}/s, "
                f"wrk {_num(check['wrk']['per_second'])}/s; python / wrk = "
                f"{_pct(check['python_over_wrk'])}. wrk drives the small payload's throughput "
                f"windows when installed (a Python client costs the shared 2 cores more); "
                f"the larger payloads are driven by the Python driver (their signing cannot be "
                f"done inside wrk and their request rate is low).", ""]
    out += ["## Ingest cost per payload size", "",
            "One delivery at a time (concurrency 1) to a 1-worker service: latency of the "
            "whole request (HTTP, verify, parse, validate, rows, commit).", ""]
    out += _cost(results)
    loader = cfg.get("loader", "bulk")
    how = ("bulk inserts, 200 jobs at a time, of the rows the service's own "
           "`payloads.parse` + `ingest.prepare` produce, with the values `ingest.store` writes "
           "for a first delivery" if loader == "bulk" else
           "the service's `ingest.prepare` + `ingest.store` per job, 200 jobs per transaction")
    out += ["", "## Query latency", "",
            "Concurrency 1, 1-worker service, requests spread over random stored jobs; "
            f"the database was filled by the fast loader (bench/seed.py, `{loader}` mode: "
            f"{how}; no HTTP), then `VACUUM ANALYZE` on PostgreSQL. Corpus: mostly short "
            "videos, 20% image batches, 5% failures, 0.1% typical videos; the OCR search "
            "word occurs in one job in 2,000.", ""]
    out += _queries(results)
    out += ["", "## PostgreSQL settings of the benchmark cluster", "",
            ", ".join(f"{k}={v}" for k, v in pg.SETTINGS.items()), ""]
    return "\n".join(out) + "\n"


def _main() -> None:
    path = Path(sys.argv[1])
    sys.stdout.write(render(json.loads(path.read_text()), path))


if __name__ == "__main__":
    _main()
