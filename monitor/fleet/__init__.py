"""What other tools read: Prometheus metrics, rules, dashboard, heartbeat pings."""
