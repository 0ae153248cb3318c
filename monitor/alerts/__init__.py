"""Alerts: what fired and resolved, silences, the messages, the outbox, Telegram."""
