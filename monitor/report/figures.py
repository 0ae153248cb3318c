"""Daily report figures: the business day from the database, errors and health from logs.

What the report measures, gathered in one place; each measurement lives with its
source: `window.py` (the day, times in the report's zone), `database.py` (the
business figures) and `logs.py` (the error scan and the health runs). Callers name
`figures.business_figures` and the like, so a test replaces one measurement here.
"""

from monitor.report.database import Database, business_figures, change, quote_ident
from monitor.report.logs import count_errors, error_record, health_summary, log_files
from monitor.report.window import ReportError, Window, default_day, parse_time, window_for

__all__ = ["Database", "ReportError", "Window", "business_figures", "change", "count_errors",
           "default_day", "error_record", "health_summary", "log_files", "parse_time",
           "quote_ident", "window_for"]
