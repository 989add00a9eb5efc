"""Summarise a locust run and check it against the gateway's service-level objectives.

Reads locust's ``<prefix>_stats.csv`` (and ``<prefix>_failures.csv`` beside it, when
there is one), prints one screen: requests, failures, throughput and latency percentiles
per entry, for the photo predictions together and for the whole run; then checks the
objectives of docs/slo.md on this run:

- latency: P99 of the photo predictions (entries ``/predict [photo ...]``) below
  ``--p99-ms``;
- availability: successful requests / all requests at least ``--availability``. Locust
  counts a request as successful when the locustfile accepted its answer, so an expected
  4xx (a bad input refused with the right status) is a success, as in the SLO.

Exit status: 0 every objective met, 1 an objective missed, 2 the CSV is missing, is not a
locust stats file or holds no request. Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PHOTO_PREFIX = "/predict [photo"
PREDICT_PREFIX = "/predict"
AGGREGATED = "Aggregated"
REQUIRED_COLUMNS = ("Type", "Name", "Request Count", "Failure Count", "Requests/s", "99%")
SHOWN_PERCENTILES = (0.50, 0.95, 0.99)
TOP_FAILURES = 5
WIDTH = 100
#: How locust records a failure the locustfile declared with ``response.failure(text)``.
DECLARED_FAILURE = re.compile(r"""^CatchResponseError\((['"])(.*)\1\)$""")

EXIT_PASS = 0
EXIT_MISSED = 1
EXIT_NO_DATA = 2


class StatsError(Exception):
    """The stats CSV cannot be used."""


@dataclass(frozen=True)
class Entry:
    """One row of the stats CSV: a request name, or the run's aggregate."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    #: Locust's latency percentiles in ms, by fraction (0.5, ..., 1.0); empty without requests.
    percentiles: dict[float, float]

    @property
    def label(self) -> str:
        return f"{self.method} {self.name}".strip()


def _percent_column(column: str) -> float | None:
    """``"99.9%"`` -> 0.999; None for any other column."""
    if not column.endswith("%"):
        return None
    try:
        return float(column[:-1]) / 100
    except ValueError:
        return None


def _number(row: dict[str, str], column: str) -> float:
    try:
        return float(row[column])
    except (TypeError, ValueError):
        raise StatsError(f"column {column!r}: not a number: {row[column]!r}") from None


def read_stats(path: Path) -> list[Entry]:
    """Every row of a locust ``_stats.csv``, the aggregate row last when present."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as error:
        raise StatsError(f"cannot read {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise StatsError(f"{path} is not a CSV file: {error}") from None
    if not columns:
        raise StatsError(f"{path} is empty")
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise StatsError(f"{path} is not a locust stats CSV (no column {', '.join(missing)})")
    percent_columns = {c: q for c in columns if (q := _percent_column(c)) is not None}
    entries = []
    for row in rows:
        percentiles = {
            q: _number(row, c) for c, q in percent_columns.items() if row[c] not in ("", "N/A")
        }
        entries.append(
            Entry(
                method=row["Type"],
                name=row["Name"],
                requests=int(_number(row, "Request Count")),
                failures=int(_number(row, "Failure Count")),
                rps=_number(row, "Requests/s"),
                percentiles=percentiles,
            )
        )
    if not entries:
        raise StatsError(f"{path} holds no statistics")
    return entries


def combined_percentile(entries: Iterable[Entry], fraction: float) -> float | None:
    """The ``fraction`` percentile of several entries together, from their percentiles.

    Locust's CSV has percentiles per entry, not the raw latencies, so the exact
    percentile of a union is unknown. This returns the smallest latency ``t`` at which
    the reported percentiles prove that at least ``fraction`` of all the requests took at
    most ``t``: never below the true value, exact for a single entry, and at most the
    largest of the entries' own percentiles.
    """
    measured = [e for e in entries if e.requests > 0 and e.percentiles]
    if not measured:
        return None
    total = sum(e.requests for e in measured)
    candidates = sorted({t for e in measured for t in e.percentiles.values()})
    for latency in candidates:
        proven = sum(
            e.requests * max((q for q, t in e.percentiles.items() if t <= latency), default=0.0)
            for e in measured
        )
        if proven >= fraction * total - 1e-9:
            return latency
    return candidates[-1]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _row(label: str, requests: int, failures: int, rps: float, p: Sequence[float | None]) -> str:
    if len(label) > 44:
        label = label[:43] + "…"
    cells = "".join(f"{_ms(v):>8}" for v in p)
    return f"{label:<44}{requests:>9,}{failures:>8,}{rps:>9.1f}{cells}"


def _error(text: str) -> str:
    declared = DECLARED_FAILURE.match(text)
    return declared.group(2) if declared else text


def _failures(stats_path: Path) -> list[tuple[int, str]]:
    """(occurrences, "METHOD NAME: error") from the failures CSV beside the stats, if any."""
    if not stats_path.name.endswith("_stats.csv"):
        return []
    path = stats_path.with_name(stats_path.name.removesuffix("_stats.csv") + "_failures.csv")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        found = [
            (int(row["Occurrences"]), f"{row['Method']} {row['Name']}: {_error(row['Error'])}")
            for row in rows
        ]
    except (OSError, KeyError, TypeError, ValueError):
        return []
    return sorted(found, key=lambda item: -item[0])


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _print_table(requests: list[Entry], aggregate: Entry | None, photos: list[Entry]) -> None:
    heading = "".join(f"{f'p{q * 100:g}':>8}" for q in SHOWN_PERCENTILES)
    print(f"{'request':<44}{'requests':>9}{'fails':>8}{'req/s':>9}{heading}  (ms)")
    print("-" * WIDTH)
    for e in requests:
        shown = [e.percentiles.get(q) for q in SHOWN_PERCENTILES]
        print(_row(e.label, e.requests, e.failures, e.rps, shown))
    print("-" * WIDTH)
    if photos:
        print(
            _row(
                "photo predictions, all sizes (upper bound)",
                sum(e.requests for e in photos),
                sum(e.failures for e in photos),
                sum(e.rps for e in photos),
                [combined_percentile(photos, q) for q in SHOWN_PERCENTILES],
            )
        )
    print(
        _row(
            "all requests",
            sum(e.requests for e in requests),
            sum(e.failures for e in requests),
            aggregate.rps if aggregate else sum(e.rps for e in requests),
            [aggregate.percentiles.get(q) if aggregate else None for q in SHOWN_PERCENTILES],
        )
    )


def _print_failures(stats_path: Path) -> None:
    top = _failures(stats_path)
    if not top:
        return
    print()
    print("Most frequent failures:")
    for count, message in top[:TOP_FAILURES]:
        line = f"{count:>9,}  {message}"
        print(line if len(line) <= WIDTH else line[: WIDTH - 1] + "…")


def _objective(name: str, detail: str, ok: bool) -> bool:
    print(f"  {name:<14}{detail:<76}{_verdict(ok)}")
    return ok


def _check_slo(
    requests: list[Entry], photos: list[Entry], p99_ms: float, availability_target: float
) -> list[bool]:
    """Print one PASS/FAIL line per objective; return whether each is met."""
    print("SLO (docs/slo.md), on this run:")
    photo_p99 = combined_percentile(photos, 0.99)
    if photo_p99 is None:
        latency = _objective("latency", "no photo prediction was measured", ok=False)
    else:
        latency = _objective(
            "latency",
            f"P99 of photo predictions {_ms(photo_p99)} ms, objective < {p99_ms:g} ms",
            ok=photo_p99 < p99_ms,
        )
    total = sum(e.requests for e in requests)
    good = total - sum(e.failures for e in requests)
    availability = _objective(
        "availability",
        f"{good:,} of {total:,} requests succeeded: {good / total:.3%}, "
        f"objective >= {availability_target:.3%}",
        ok=good / total >= availability_target,
    )
    predict = [e for e in requests if e.name.startswith(PREDICT_PREFIX)]
    predict_total = sum(e.requests for e in predict)
    if predict_total and predict_total != total:
        predict_good = predict_total - sum(e.failures for e in predict)
        print(f"{'':16}(/predict alone: {predict_good / predict_total:.3%} of {predict_total:,})")
    return [latency, availability]


def summarise(stats_path: Path, p99_ms: float, availability_target: float) -> int:
    """Print the summary and the SLO check; return the exit status."""
    entries = read_stats(stats_path)
    requests = [e for e in entries if e.name != AGGREGATED]
    aggregate = next((e for e in entries if e.name == AGGREGATED), None)
    if sum(e.requests for e in requests) == 0:
        raise StatsError(f"{stats_path} records no request")
    photos = [e for e in requests if e.name.startswith(PHOTO_PREFIX)]

    print(f"Load test: {stats_path}")
    _print_table(requests, aggregate, photos)
    _print_failures(stats_path)
    print()
    met = _check_slo(requests, photos, p99_ms, availability_target)
    print()
    print(f"Result: {_verdict(all(met))} ({sum(met)} of {len(met)} objectives met)")
    return EXIT_PASS if all(met) else EXIT_MISSED


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Summarise a locust run and check it against the gateway's SLO.",
        epilog="Exit status: 0 all objectives met, 1 one missed, 2 no usable statistics.",
    )
    parser.add_argument(
        "--stats", required=True, type=Path, help="locust's <prefix>_stats.csv (from --csv)"
    )
    parser.add_argument(
        "--p99-ms",
        type=_positive,
        default=300.0,
        help="P99 objective of photo predictions, ms (default 300)",
    )
    parser.add_argument(
        "--availability",
        type=_fraction,
        default=0.995,
        help="availability objective, a fraction of requests (default 0.995)",
    )
    args = parser.parse_args(argv)
    try:
        return summarise(args.stats, args.p99_ms, args.availability)
    except StatsError as error:
        print(f"slo_summary: {error}", file=sys.stderr)
        return EXIT_NO_DATA


if __name__ == "__main__":
    sys.exit(main())
