"""The daily report: the day's window, its figures, its text."""
