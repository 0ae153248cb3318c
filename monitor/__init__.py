"""monitor: cron-driven monitoring and alerting for a scraper and its host."""

__version__ = "0.1.0"
