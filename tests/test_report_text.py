"""The built-in report text: plain Python (`text._builtin`) that must say what the shipped
template `templates/daily_report.html.j2` says when Jinja2 renders it, on every branch."""

import itertools

import pytest

from monitor.report import text

HOSTILE = "<b>&'\"evil" + "x" * 80  # every character autoescape changes, and longer than a name is shown


def report(variant: dict) -> dict:
    """A report object as `ReportProbe.report` builds it, with the parts `variant` names."""
    out = {"date": "2026-03-29", "timezone": "Europe/Paris",
           "window": {"start": "2026-03-29T00:00:00+01:00", "end": "2026-03-30T00:00:00+02:00",
                      "hours": variant.get("hours", 24.0)},
           "opportunities_found": None, "avg_roi": None, "top_opportunities": [], "sources_active": None,
           "inactive_sources": [], "errors": None, "health": None, "change": None}
    if variant.get("business"):
        out.update(opportunities_found=variant.get("found", 146), avg_roi=variant.get("roi", 2.345),
                   sources_active=3, inactive_sources=variant.get("inactive", []),
                   top_opportunities=variant.get("top", []), dropped_sources=variant.get("dropped", []),
                   learned_silent=variant.get("learned", []),
                   change={"opportunities": {"previous": 150, "delta": -4, "percent": -2.7},
                           "avg_roi": {"previous": None, "delta": None, "percent": None}})
        if "baseline" in variant:
            out["baseline"] = variant["baseline"]
        if "damaged" in variant:
            out["damaged_values"] = variant["damaged"]
    if "errors" in variant:
        out["errors"] = variant["errors"]
    if "health" in variant:
        out["health"] = variant["health"]
    return out


TOP = [{"time": "2026-03-29T10:15:00+02:00", "source": HOSTILE, "roi": 12.3456},
       {"time": "not a time <i>", "source": "uniswap", "roi": -1.0}]
BASELINES = [
    {"enough": True, "days_with_data": 7,
     "opportunities": {"median_7d": 286, "percent": -49.0}, "avg_roi": {"median_7d": 2.5, "percent": 3.2}},
    {"enough": False, "days_with_data": 2, "opportunities": {"median_7d": None}, "avg_roi": {"median_7d": None}},
    # A Saturday: far below the week, as usual for Saturdays, so normal; the text says by which median.
    {"enough": True, "days_with_data": 7,
     "opportunities": {"median_7d": 282, "same_weekday": 163, "percent": -48.2, "weekday_normal": True},
     "avg_roi": {"median_7d": 2.5, "same_weekday": 2.4, "percent": -1.0}},
]
DROPPED = [{"source": f"{HOSTILE}{i}", "count": 2, "median_7d": 40.5} for i in range(300)]
ERRORS = [{"count": 0, "error": 0, "critical": 0, "unreadable": []},
          {"count": 12, "error": 9, "critical": 3, "unreadable": [f"/var/log/{HOSTILE}{i}.log: denied" for i in range(7)]}]
HEALTH = [{"runs_seen": 278, "runs_expected": 288, "percent_ok": None, "incidents": {}},
          {"runs_seen": 278, "runs_expected": 288, "percent_ok": 98.2,
           "incidents": {"disk:/": {"incidents": 1, "downtime_seconds": 300},
                         HOSTILE: {"incidents": 2, "downtime_seconds": 90061}}}]

# Each part alone through its branches, then the parts together.
PARTS = {
    "business": [{}, {"business": True}, {"business": True, "found": 3, "roi": None},
                 {"business": True, "found": 0, "top": TOP, "inactive": [HOSTILE, "curve"],
                  "learned": ["curve", "sushi"], "damaged": 4,
                  "dropped": [{"source": HOSTILE, "count": 2, "median_7d": 40.5}]},
                 {"business": True, "top": TOP[:1], "inactive": [f"s{i}" for i in range(14)], "damaged": 0,
                  "dropped": DROPPED},
                 *({"business": True, "baseline": b} for b in BASELINES)],
    "errors": [{}, *({"errors": e} for e in ERRORS)],
    "health": [{}, *({"health": h} for h in HEALTH)],
    "hours": [{}, {"hours": 23.0}, {"hours": 25.0}],
}
CASES = [({**b, **e, **h, **d}, missing, minimum, warning)
         for (b, e, h, d), missing, minimum, warning in itertools.product(
             itertools.product(*PARTS.values()), ([], ["report.database: <gone>", HOSTILE * 5]), (None, 0, 50),
             (False, True))]


@pytest.fixture(scope="module")
def template():
    return text.load_template(text.BUILTIN)


# What each branch writes: the matrix must reach all of them.
MARKERS = ["⚠️ WARNING", "ℹ️ INFO", "h day)", "<i>Not available: report.database: &lt;gone&gt;",
           "<b>Opportunities:</b> 3 (below 50)", "7-day median 286, −49 %", "(−4 vs the day before, −2.7 %)",
           "(7-day median 282, −48.2 %; same weekday 163, −10.4 %)", "(7-day median 40.5) and 290 more",
           "<b>Average ROI:</b> –", "No baseline yet: 2 of the 7 days", "<b>Best 2:</b>", "<b>Best 1:</b>",
           "2. uniswap · ROI -1.00 · not a time &lt;i&gt;", "silent: ", " and 4 more", "<b>Far below usual:</b>",
           "4 database value(s) were not UTF-8", "<b>Errors logged:</b> 0", "(3 critical)", "Unreadable, the count",
           "<b>Health runs:</b> 278/288\n", "98.2% ok", "1 incident(s), down 5m"]


@pytest.mark.parametrize("case", range(0, len(CASES), len(CASES) // 24))
def test_the_built_in_report_says_what_its_template_says_with_hostile_names(template, case):
    variant, missing, minimum, warning = CASES[case]
    given = text.values(report(variant), missing, host=HOSTILE, environment="prod & <test>", warning=warning,
                        min_opportunities=minimum)
    assert text._builtin(**given) == template.render(**given)


def test_the_whole_matrix_agrees_and_takes_every_branch(template):
    written = []
    for variant, missing, minimum, warning in CASES:
        given = text.values(report(variant), missing, host="vps-1", environment="prod", warning=warning,
                            min_opportunities=minimum)
        built = text._builtin(**given)
        assert built == template.render(**given), variant
        written.append(built)
    every = "\n\n".join(written)
    assert [marker for marker in MARKERS if marker not in every] == []


def test_the_report_a_user_gets_needs_no_jinja2():
    import subprocess
    import sys

    code = ("import sys; from monitor.report import text; from tests.test_report_text import CASES, report; "
            "v, m, n, w = CASES[-1]; "
            "t = text.render(report(v), m, host='h', environment='e', warning=w, min_opportunities=n); "
            "assert 'Health runs' in t; print('jinja2' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_300_sources_far_below_usual_are_one_line_and_the_errors_and_health_lines_still_fit():
    variant = {"business": True, "dropped": DROPPED, "errors": ERRORS[1], "health": HEALTH[1]}
    built = text.render(report(variant), [], host="vps-1", environment="prod", warning=True, min_opportunities=50)
    from monitor.alerts.telegram import html_to_plain, split_message

    assert len(split_message(built)) == 1 and "left out" not in built
    [line] = [line for line in html_to_plain(built).splitlines() if line.startswith("Far below usual:")]
    assert line.endswith(" and 290 more") and line.count("(7-day median 40.5)") == 10
    assert "Errors logged: 12 (3 critical)" in html_to_plain(built)
    assert "Health runs: 278/288 · 98.2% ok" in html_to_plain(built)
