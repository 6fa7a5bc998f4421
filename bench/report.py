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
from bench import ui as ui_pages


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


TARGET_ENDPOINTS = ("job detail", "job payload (typical video)", "filtered list",
                    "OCR search")


def _judged(entry: dict[str, Any]) -> bool:
    """Targets are judged on SQLite and on the tuned PostgreSQL cluster."""
    return entry.get("profile") in (None, "tuned")


def _query_bound(jobs: int) -> float:
    return 10.0 if jobs <= 100_000 else 20.0


def _targets(results: dict[str, Any]) -> list[str]:
    lines = ["| target | measured in this run | verdict |", "|---|---|---|"]
    goals = {  # (database, workers, payload): (share of the ceiling, times the naive peer)
        ("postgresql", 2, "small"): (0.12, None), ("postgresql", 2, "typical"): (0.10, 20.0),
        ("sqlite", 1, "small"): (0.12, None), ("sqlite", 1, "typical"): (0.08, None),
    }
    for entry in results["throughput"]:
        goal = goals.get((entry["database"], entry["workers"], entry["payload"]))
        if goal is None or not _judged(entry):
            continue
        share, times = goal
        ratios = entry["ratios"]
        where = (f"{entry['payload']}, {entry['database']}"
                 f"{' (tuned)' if entry.get('profile') else ''}, {entry['workers']} "
                 f"worker(s)")
        service = _num(entry["targets"]["service"]["per_second"])
        ceiling = _num(entry["targets"]["ceiling"]["per_second"])
        lines.append(f"| {where}: >= {share:.2f} of the ceiling | "
                     f"{_num(ratios['vs_ceiling'], 3)} ({service}/s vs {ceiling}/s) | "
                     f"{_verdict(_at_least(ratios['vs_ceiling'], share))} |")
        if times is not None:
            lines.append(f"| {where}: >= {times:.0f}x the naive peer | "
                         f"{_num(ratios.get('vs_naive'), 1)}x | "
                         f"{_verdict(_at_least(ratios.get('vs_naive'), times))} |")
    for face in results.get("faces", []):
        bound = 10.0 if face["faces"] <= 100_000 else 50.0
        size = f"{face['faces']:,} faces x {face['dimension']}"
        lines.append(f"| face search, {size}: p99 < {bound:.0f} ms | "
                     f"{_num(face['search_p99_ms'], 2)} ms | "
                     f"{_verdict(_below(face['search_p99_ms'], bound))} |")
        lines.append(f"| face search, {size}: recall@10 >= 0.95 against exact | "
                     f"{_num(face['recall_at_10'], 4)} | "
                     f"{_verdict(_at_least(face['recall_at_10'], 0.95))} |")
    people = results.get("people")
    if people:
        for step in ("incremental", "reclustered"):
            score = people[step]
            lines.append(
                f"| people clustering ({'re-clustered' if step == 'reclustered' else step}), "
                f"{people['identities']:,} identities x {people['observations']}: adjusted Rand "
                f"index >= 0.9 | {_num(score['ari'], 4)} (pair precision "
                f"{_num(score['precision'], 4)}, recall {_num(score['recall'], 4)}) | "
                f"{_verdict(_at_least(score['ari'], 0.9))} |")
    for entry in results["throughput"]:
        kept = entry["ratios"].get("vs_faces_off")
        if entry["payload"] == "typical" and kept is not None:
            profile = f" ({entry['profile']})" if entry.get("profile") else ""
            where = f"{entry['database']}{profile}, {entry['workers']} worker(s)"
            faces_off = _num(entry["targets"]["faces_off"]["per_second"])
            service = _num(entry["targets"]["service"]["per_second"])
            lines.append(f"| typical, {where}: face index on costs <= 10% of throughput "
                         f"(service >= 0.90 of faces_off) | {_num(kept, 3)} ({service}/s vs "
                         f"{faces_off}/s) | {_verdict(_at_least(kept, 0.90))} |")
    for entry in results["cost"]:
        if entry["payload"] == "large":
            seconds = entry["ms_p50"] / 1000
            ratio = entry["vm_hwm"] / entry["bytes"] if entry.get("vm_hwm") else None
            lines.append(f"| large ({entry['database']}): stored in < 1.0 s | "
                         f"{seconds:.2f} s | {_verdict(seconds < 1.0)} |")
            lines.append(f"| large ({entry['database']}): peak RSS of the whole process tree "
                         f"(receiving process + face process) < 8x the payload "
                         f"({_mb(8 * entry['bytes'])}) | {_mb(entry.get('vm_hwm'))}"
                         f" = {_num(ratio, 1)}x | "
                         f"{_verdict(ratio < 8 if ratio is not None else None)} |")
            receiving = entry.get("vm_hwm_receiving")
            if receiving:
                alone = receiving / entry["bytes"]
                lines.append(f"| large ({entry['database']}): peak RSS of the receiving process "
                             f"alone (the face process apart) < 8x | {_mb(receiving)} = "
                             f"{_num(alone, 1)}x | {_verdict(alone < 8)} |")
    for query in results["queries"]:
        if query["endpoint"] in TARGET_ENDPOINTS:
            bound = _query_bound(query["jobs"])
            lines.append(f"| query p99 < {bound:.0f} ms at {query['jobs']:,} jobs, concurrency 1 "
                         f"({query['database']}): {query['endpoint']} | "
                         f"{_num(query['p99_ms'], 1)} ms | "
                         f"{_verdict(_below(query['p99_ms'], bound))} |")
    for entry in results.get("under_load", []):
        worst = max(entry["endpoints"], key=lambda e: _nan_high(e["p99_ms"]))
        lines.append(f"| queries under load p99 < 50 ms ({entry['database']}, "
                     f"{entry['readers']} readers during a typical ingest): every endpoint | "
                     f"worst {_num(worst['p99_ms'], 1)} ms ({worst['endpoint']}) | "
                     f"{_verdict(_below(worst['p99_ms'], 50))} |")
    return lines


def _below(value: float | None, bound: float) -> bool | None:
    if value is None or value != value:
        return None
    return value < bound


def _nan_high(value: float | None) -> float:
    return float("inf") if value is None or value != value else value


def _profiles(results: dict[str, Any]) -> list[str]:
    """Stock against tuned PostgreSQL settings, side by side."""
    entries = [e for e in results["throughput"] if e["database"] == "postgresql"]
    if not entries:
        return []
    lines = ["| payload | workers | settings | service deliveries/s | ceiling deliveries/s | "
             "service / ceiling | service p99 ms | service CPU | PostgreSQL CPU ms/delivery | "
             "WAL bytes/delivery |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(entries, key=lambda e: (e["payload"], e["workers"], e.get("profile") or "")):
        s, c, b = e["targets"]["service"], e["targets"]["ceiling"], e.get("breakdown") or {}
        lines.append(f"| {e['payload']} | {e['workers']} | {e.get('profile') or '-'} | "
                     f"{_num(s['per_second'])} | {_num(c['per_second'])} | "
                     f"{_num(e['ratios']['vs_ceiling'], 3)} | {_num(s['p99_ms'], 1)} | "
                     f"{_pct(s['server_cpu'])} | {_num(b.get('postgres_cpu_ms'), 2)} | "
                     f"{_num(b.get('wal_bytes'))} |")
    return lines


def _breakdown(results: dict[str, Any]) -> list[str]:
    lines = ["| database | settings | workers | payload | deliveries measured | service CPU "
             "ms | PostgreSQL CPU ms | WAL bytes | heap bytes | TOAST bytes | index bytes | "
             "SQLite db+WAL file bytes |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in results["throughput"]:
        b = e.get("breakdown")
        if not b:
            continue
        lines.append(f"| {e['database']} | {e.get('profile') or '-'} | {e['workers']} | "
                     f"{e['payload']} | {b.get('deliveries', 0):,} | "
                     f"{_num(b.get('service_cpu_ms'), 2)} | {_num(b.get('postgres_cpu_ms'), 2)} "
                     f"| {_num(b.get('wal_bytes'))} | {_num(b.get('heap_bytes'))} | "
                     f"{_num(b.get('toast_bytes'))} | {_num(b.get('index_bytes'))} | "
                     f"{_num(b.get('file_bytes'))} |")
    return lines


def _under_load(results: dict[str, Any]) -> list[str]:
    lines = ["| database | workers | stored jobs | endpoint | readers | reads/s | p50 ms | "
             "p99 ms (median) | p99 each round | problems |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for entry in results.get("under_load", []):
        for e in entry["endpoints"]:
            problems = _problems({"statuses": e["statuses"], "errors": e["errors"]}, "200")
            lines.append(f"| {entry['database']} | {entry['workers']} | {entry['jobs']:,} | "
                         f"{e['endpoint']} | {e['readers']} | {_num(e['per_second'])} | "
                         f"{_num(e['p50_ms'], 2)} | {_num(e['p99_ms'], 2)} | "
                         f"{', '.join(_num(v, 1) for v in e['p99_each'])} | {problems} |")
        ingest = entry.get("ingest")
        if ingest:
            notes.append(f"{entry['database']}: {_num(ingest['per_second'])} typical "
                         f"deliveries/s from {entry['writers']} writers meanwhile (p99 "
                         f"{_num(ingest['p99_ms'])} ms; problems: {_problems(ingest, '200')})")
    return [*lines, "", "Ingest during the reads: " + "; ".join(notes) + "."] if notes \
        else lines


def _throughput(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for entry in results["throughput"]:
        lines += [
            f"### {entry['database']}"
            f"{' (' + entry['profile'] + ' settings)' if entry.get('profile') else ''}, "
            f"{entry['workers']} worker(s), {entry['payload']} payload "
            f"({entry['payload_bytes']:,} bytes, {entry['rows_per_delivery']:,} rows per "
            f"stored delivery)",
            "",
            "| target | deliveries/s (median) | each run | p50 ms | p99 ms | rows/s | "
            "peak RSS | server CPU | driver CPU | non-expected responses / errors |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for target in ("ceiling", "service", "naive", "faces_off"):
            if target not in entry["targets"]:
                continue
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
        naive = ("" if ratios.get("vs_naive") is None else
                 f"; service / naive: **{_num(ratios['vs_naive'], 1)}x**")
        if ratios.get("vs_faces_off") is not None:
            naive += (f"; service / faces_off (the face index's cost): "
                      f"**{_pct(ratios['vs_faces_off'])}**")
        lines += ["", f"service / ceiling: **{_pct(ratios['vs_ceiling'])}**{naive} "
                  f"(medians of per-run ratios; driver: "
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
                  "| database | ms per delivery | idle RSS | peak RSS (VmHWM) | peak / payload | "
                  "receiving process | face process |",
                  "|---|---|---|---|---|---|---|"]
        for c in large:
            ratio = c["vm_hwm"] / c["bytes"] if c.get("vm_hwm") else None
            lines.append(f"| {c['database']} | {_num(c['ms_p50'])} | {_mb(c['idle_rss'])} | "
                         f"{_mb(c['vm_hwm'])} | {_num(ratio, 1)}x | "
                         f"{_mb(c.get('vm_hwm_receiving'))} | "
                         f"{_mb(c.get('vm_hwm_face_process'))} |")
    return lines


def _queries(results: dict[str, Any]) -> list[str]:
    lines = ["| database | stored jobs | endpoint | requests | p50 ms | p99 ms (median) | "
             "p99 each round | response | problems |", "|---|---|---|---|---|---|---|---|---|"]
    for q in results["queries"]:
        problems = _problems({"statuses": q["statuses"], "errors": q["errors"]}, "200")
        each = ", ".join(_num(v, 1) for v in q.get("p99_each", []))
        lines.append(f"| {q['database']} | {q['jobs']:,} | {q['endpoint']} | {q['requests']} | "
                     f"{_num(q['p50_ms'], 2)} | {_num(q['p99_ms'], 2)} | {each} | {q['note']} | "
                     f"{problems} |")
    if results["seeding"]:
        lines += ["", "Seeding (fast loader, `bench/seed.py`): "
                  + "; ".join(f"{s['database']} jobs {s['from']:,}-{s['to']:,} in "
                              f"{s['seconds']:.0f} s ({(s['to'] - s['from']) / s['seconds']:,.0f}"
                              f" jobs/s)" for s in results["seeding"])]
    if results.get("settling"):
        lines += ["", "Start-up on the seeded database, before any latency was measured (the "
                  "face index loaded from its snapshot or built from the tables, then the "
                  "people clustering's catch-up and the first snapshot until the service's "
                  "processes used under 0.15 of a core): "
                  + "; ".join(f"{s['database']} {s['jobs']:,} jobs ({s['phase']}): face index "
                              f"after {_seconds(s['face_index_seconds'])}, idle after "
                              f"{_seconds(s['idle_seconds'])}" for s in results["settling"])]
    return lines


def _seconds(value: float | None) -> str:
    return "more than 30 min" if value is None else f"{value:.0f} s"


def _faces(results: dict[str, Any]) -> list[str]:
    lines = ["| faces x dimension | queries | search p50 ms | search p99 ms | recall@10 | exact "
             "p99 ms | fill s | graph build s | RSS before / filled / built | arrays | graph |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in results["faces"]:
        lines.append(
            f"| {f['faces']:,} x {f['dimension']} ({f['data']}) | {f['queries']} | "
            f"{_num(f['search_p50_ms'], 2)} | {_num(f['search_p99_ms'], 2)} | "
            f"{_num(f['recall_at_10'], 4)} | {_num(f['exact_p99_ms'], 1)} | "
            f"{_num(f['fill_seconds'], 1)} | {_num(f['build_seconds'], 1)} | "
            f"{_mb(f['rss_start'])} / {_mb(f['rss_filled'])} / {_mb(f['rss_built'])} | "
            f"{_mb(f['index_arrays_bytes'])} | {_mb(f['graph_bytes'])} |")
    graphs = []
    for f in results["faces"]:
        hnsw = f.get("hnsw") or {}
        if hnsw.get("connectivity") is not None:
            graphs.append(f"{f['faces']:,} x {f['dimension']}: connectivity "
                          f"{hnsw.get('connectivity')}, {hnsw.get('dtype')}, "
                          f"{hnsw.get('shards') or 1} shard(s) searched in parallel, "
                          f"expansion_search {hnsw.get('expansion_search')} per shard")
    if graphs:
        lines += ["", "HNSW (usearch): " + "; ".join(graphs) + "."]
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
    for label, info in results["databases"].items():
        if label.startswith("postgresql"):
            out.append(f"- PostgreSQL {info.get('postgresql_version')}, a throwaway cluster on "
                       f"loopback with the **{info.get('profile')}** settings: "
                       f"{', '.join(info.get('settings', []))}")
    out += ["- service: `results-receiver serve` with RECEIVER_LOG_LEVEL=warning (no line per "
            "delivery), RECEIVER_LOG_FORMAT=json, pool size default (10)",
            "", "## Targets", "",
            "Judged on SQLite and on the **tuned** PostgreSQL cluster (bench/pg.py); ratios "
            "are medians of per-run ratios of windows taken side by side; p99 of queries are "
            "medians over the rounds.", "", *_targets(results), "",
            "Where a target is missed, `bench/PROFILE.md` shows the profile that says why and "
            "what would reach it.", ""]
    if any(e["database"] == "postgresql" for e in results["throughput"]):
        out += ["## PostgreSQL: stock against tuned settings", "",
                "The same service, payloads and windows on a cluster with initdb's defaults "
                "(`stock`: only port, socket folder and loopback are set) and on one with the "
                "tuned settings of `bench/pg.py` (`tuned`: group commit, WAL compression, WAL "
                "buffers, memory and checkpoints; fsync, synchronous_commit and "
                "full_page_writes stay on). Targets are judged on the tuned one.", "",
                *_profiles(results), ""]
    out += ["## Cost per delivery", "",
            "Measured around every timed window of the service (medians over the windows), "
            "divided by the deliveries the database gained meanwhile (10% of them "
            "redeliveries): CPU of the service's process tree and of PostgreSQL's processes "
            "(psutil, user + system), WAL written (`pg_wal_lsn_diff` of "
            "`pg_current_wal_lsn()`), growth of the tables (`pg_relation_size`), of their "
            "TOAST relations and of their indexes (`pg_indexes_size`); on SQLite the growth "
            "of the database file plus its WAL file (SQLite reuses the WAL file after each "
            "checkpoint instead of growing it, so the growth shows mostly in the database "
            "file).",
            "", *_breakdown(results), "",
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
    sizes = cfg.get("query_sizes") or [0]
    how = ("2,000 jobs per transaction, PostgreSQL COPY / SQLite executemany per table, of "
           "the rows the service's own `payloads.parse` + `ingest.prepare` produce, with the "
           "values `ingest.store` writes for a first delivery" if loader == "bulk" else
           "the service's `ingest.prepare` + `ingest.store` per job, 200 jobs per transaction")
    if results.get("faces"):
        out += ["", "## Face search at scale (bench/faces.py)", "",
                "The service's face index (`service/faces/index.py`) filled the tailer's way, "
                "then searched through `FaceIndex.search` (the code of `POST /v1/faces/search`) "
                "with k = 10; recall@10 against `exact=true` on the same queries. Synthetic "
                "faces: identities x 20 noisy observations (same-identity cosine 0.6-0.8); "
                "queries are fresh observations. One process per size; RSS of that process.",
                "", *_faces(results)]
    people = results.get("people")
    if people:
        out += ["", "## People clustering (bench/people.py)", "",
                f"{people['identities']:,} synthetic identities x {people['observations']} noisy "
                f"observations, {people['dimension']}-d (same-identity cosine 0.6-0.8), "
                "assigned one chunk at a time in a random order through the service's "
                "`Clusters.assign` at the threshold "
                f"{people['threshold']}, then re-clustered (`recluster`), against the true "
                "identities.", "",
                "| step | adjusted Rand index | pair precision | pair recall | clusters | "
                "seconds |", "|---|---|---|---|---|---|"]
        for step in ("incremental", "reclustered"):
            score = people[step]
            out.append(f"| {'re-clustered' if step == 'reclustered' else step} | "
                       f"{_num(score['ari'], 4)} | {_num(score['precision'], 4)} | "
                       f"{_num(score['recall'], 4)} | {score['clusters']:,} | "
                       f"{_num(score['seconds'], 2)} |")
    out += ["", "## Query latency", "",
            "Concurrency 1, 1-worker service, requests spread over random stored jobs; "
            f"the database was filled by the fast loader (bench/seed.py, `{loader}` mode: "
            f"{how}; no HTTP), then `VACUUM ANALYZE` on PostgreSQL. Corpus: the first "
            f"{sizes[0]:,} jobs are mostly short videos, 20% image batches, 5% failures, 0.1% "
            "typical videos, the OCR search word in one job in 2,000; every later job is the "
            "small payload (1 KB). Each endpoint is measured in "
            f"{cfg.get('query_rounds', 1)} interleaved rounds of {cfg.get('query_requests')} "
            "requests.", ""]
    out += _queries(results)
    if results.get("under_load"):
        out += ["", "## Queries under load", "",
                "The query database above (after its last seeding), served by the service "
                "with the targets' worker count (SQLite 1, PostgreSQL 2), while the Python "
                "driver posts typical payloads to it; readers (keep-alive connections, closed "
                "loop) share out over job detail, typical `/payload`, the filtered list and "
                "the OCR search. Windows of readers and writers run at the same time; p99 is "
                "the median over the windows.", "", *_under_load(results)]
    out += ["", "## Tuned PostgreSQL settings (bench/pg.py)", "",
            ", ".join(f"{k}={v}" for k, v in pg.TUNED.items())
            + " (wal_compression: the first of " + ", ".join(pg.WAL_COMPRESSION_PREFERENCE)
            + " the server supports)", ""]
    out += ui_pages.report(results.get("ui") or [])
    return "\n".join(out) + "\n"


def _main() -> None:
    path = Path(sys.argv[1])
    sys.stdout.write(render(json.loads(path.read_text()), path))


if __name__ == "__main__":
    _main()
