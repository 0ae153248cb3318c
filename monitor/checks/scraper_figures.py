"""The scraper's own figures: thresholds on numbers in its health JSON, and its success rate over runs.

Judging only, for `scrapers.py`: `judge_metrics` turns the body the HTTP probe already
read into one verdict over the configured `json_metrics` fields; `Outcomes` keeps each
scraper's last probe outcomes in the carried state (`state.Carried`) and
`judge_success_rate` turns them into a verdict. Each verdict is (status, message, details).
"""

import threading

from monitor.results import CRITICAL, OK, SEVERITY, UNKNOWN, Threshold, is_number

# The carried entry: {"times": [unix time of each kept run], "runs": {scraper: "0110..."}}.
OUTCOMES_KEY = "scraper_outcomes"
KEEP = 12                 # one hour of runs at cron's one per 5 minutes
WINDOW_SECONDS = 3600     # older outcomes (monitor stopped for a while) no longer count
FUTURE_SLACK_SECONDS = 60  # an outcome "from the future": the clock was set back, dropped
MIN_JUDGED = 4            # fewer outcomes than this are shown, not judged
DEFAULT_SUCCESS_RATE = Threshold(0.9, 0.5, True)
MAX_SHOWN_FIELDS = 3      # fields named in a message; details hold them all


# --- json_metrics ---------------------------------------------------------------------------

def parse_body(resp) -> tuple[object, str | None]:
    """The answer's JSON document, or (None, why not): cut at the size cap, not JSON, too deep."""
    if resp.truncated:
        return None, f"body is over {len(resp.body):,} bytes, not parsed"
    try:
        return resp.json(), None
    except ValueError as exc:  # includes UnicodeDecodeError and "nested too deeply"
        return None, "body is not JSON" + (": nested too deeply" if "deeply" in str(exc) else "")


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, dict)):
        return "an array" if isinstance(value, list) else "an object"
    return "not a finite number"  # NaN, Infinity, 1e400


def show(value) -> str:
    """A measured number or a level, short: 0.07, 1200, 1.5e+09."""
    if isinstance(value, int) and abs(value) < 10 ** 15:
        return str(value)
    return f"{value:.6g}"


def judge_metrics(document, why_not: str | None, metrics: dict) -> tuple[str, str, dict]:
    """Judge each `json_metrics` field (dotted path -> Threshold) of the parsed answer.

    A field that cannot be read (no JSON, missing, not a finite number) is unknown,
    with why. Details: `metrics` {path: value or None} and `metric_problems` {path:
    line} for the fields not ok.
    """
    from monitor.http import json_field

    values, judged = {}, []  # judged: (status, path, line)
    for path, threshold in metrics.items():
        value, why = None, why_not
        if why is None:
            try:
                found = json_field(document, path)
            except KeyError:
                why = "missing"
            else:
                if is_number(found) and (isinstance(found, float) or abs(found) < 1e308):
                    value = found  # (an integer past a float's range would not export)
                else:
                    why = f"is {_kind(found)}"
        values[path] = value
        if value is None:
            judged.append((UNKNOWN, path, f"{path} unknown: {why}"))
            continue
        status = threshold.judge(value)
        line = f"{path} {show(value)}"
        if status != OK:
            level = threshold.critical if status == CRITICAL else threshold.warning
            if threshold.lower_is_worse:
                sign = "<" if value < level else "≤"
            else:
                sign = ">" if value > level else "≥"
            line += f" {sign} {show(level)}"
        judged.append((status, path, line))

    bad = sorted((j for j in judged if j[0] != OK), key=lambda j: -SEVERITY[j[0]])
    details = {"metrics": values}
    if bad:
        details["metric_problems"] = {path: line for _, path, line in bad}
        lines = [line for _, _, line in bad[:MAX_SHOWN_FIELDS]]
        more = len(bad) - len(lines)
        return bad[0][0], "; ".join(lines) + (f" (and {more} more)" if more else ""), details
    shown = ", ".join(line for _, _, line in judged[:MAX_SHOWN_FIELDS])
    more = len(judged) - MAX_SHOWN_FIELDS
    return OK, shown + (f" (and {more} more)" if more > 0 else ""), details


# --- success rate ---------------------------------------------------------------------------

def _usable(previous, now: float) -> tuple[list, dict]:
    """The saved run times still in the window (the newest KEEP - 1) and how many of them that is.

    Anything hand-edited or odd (not ascending numbers, a time in the future: the clock
    was set back) starts the history afresh rather than failing every run.
    """
    times = previous.get("times") if isinstance(previous, dict) else None
    if not isinstance(times, list) or not all(is_number(t) for t in times) or times != sorted(times) \
            or (times and times[-1] > now + FUTURE_SLACK_SECONDS):
        return [], {}
    keep = min(KEEP - 1, sum(1 for t in times if t > now - WINDOW_SECONDS))
    runs = previous.get("runs") if isinstance(previous.get("runs"), dict) else {}
    return times[len(times) - keep:], {"count": len(times), "keep": keep, "runs": runs}


class Outcomes:
    """Each configured scraper's last probe outcomes, read from and saved to the carried state.

    Saved as the times of the last runs (one list: every scraper runs in each health
    run) and, per scraper, a string of "1" (passed) and "0", its last character this
    run: 500 scrapers cost 500 short strings, not 6 000 small lists to parse and write.
    The entry is saved at once with this run counted as failed, so a probe that never
    ends (its check timed out, the run went on without it) counts as what it was;
    `record` puts the real outcome in its place. Scrapers no longer configured are not
    saved again: their history goes.
    """

    def __init__(self, carried, names, now: float):
        previous = carried.previous.get(OUTCOMES_KEY) if carried is not None else None
        times, old = _usable(previous, now)
        self._kept = {}
        for name in names:
            flags = old["runs"].get(name) if old else None
            usable = isinstance(flags, str) and len(flags) <= old["count"] and not flags.strip("01")
            self._kept[name] = flags[len(flags) - old["keep"]:] if usable and old["keep"] else ""
        self._saved = {name: kept + "0" for name, kept in self._kept.items()}
        self._lock = threading.Lock()
        if carried is not None:
            carried.save(OUTCOMES_KEY, {"times": times + [round(now, 1)], "runs": self._saved})

    def record(self, name: str, ok: bool) -> str:
        """Count this run's outcome for `name`; return its outcomes now kept, oldest first ("0110")."""
        outcomes = self._kept.get(name, "") + ("1" if ok else "0")
        with self._lock:
            if name in self._saved:  # replaced, never added: the dict may be being written
                self._saved[name] = outcomes
        return outcomes


def judge_success_rate(outcomes: str, threshold: Threshold) -> tuple[str, str, dict]:
    """The share of passed runs ("1" in `outcomes`), judged once there are MIN_JUDGED runs."""
    runs, ok = len(outcomes), outcomes.count("1")
    rate = ok / runs
    details = {"success_rate_1h": round(rate, 4),
               "success_rate": {"ok": ok, "runs": runs, "judged": runs >= MIN_JUDGED}}
    line = f"success rate {rate:.0%} ({ok} of the last {runs} runs)"
    if runs < MIN_JUDGED:
        return OK, f"{line}, judged from {MIN_JUDGED} runs", details
    status = threshold.judge(rate)
    if status != OK:
        line += f" ≤ {threshold.critical if status == CRITICAL else threshold.warning:.0%}"
    return status, line, details


# --- what Prometheus alerts on (for `scrapers.rules`) ----------------------------------------

def figure_rules(fields: list, runbook: str) -> list[dict]:
    """ScraperMetricOutOfRange, warning and critical: one clause per configured field.

    `fields`: (scraper, dotted path, Threshold). Names and paths are letters, digits,
    "_", "-" and "." (the config says so): nothing to escape in a PromQL string.
    """
    from monitor.fleet.kit import rule
    from monitor.fleet.yaml import num

    if not fields:
        return []
    out = []
    for severity, for_ in (("warning", "10m"), ("critical", "5m")):
        clauses = [f'monitor_scraper_metric{{scraper="{name}",field="{path}"}} '
                   f'{"<=" if level.lower_is_worse else ">="} {num(getattr(level, severity))}'
                   for name, path, level in fields]
        out.append(rule(
            "ScraperMetricOutOfRange", " or ".join(clauses), for_, severity,
            f"Scraper {{{{ $labels.scraper }}}} reports {{{{ $labels.field }}}} out of range ({severity})",
            "Scraper {{ $labels.scraper }} on {{ $labels.instance }} reports {{ $labels.field }} = "
            f"{{{{ $value }}}} in its health JSON, past its {severity} level (scrapers json_metrics).", runbook))
    return out
