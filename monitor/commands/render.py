"""`monitor render rules|dashboard`: the Prometheus rules and the Grafana dashboard for a config."""

import click

from monitor.cli import config_options, load_config, parsed_options


@click.group("render")
def render_group():
    """Print the Prometheus rules or the Grafana dashboard for this config's thresholds."""


@render_group.command("rules")
@config_options
def render_rules(**kwargs):
    """Print prometheus_rules.yml for the config's thresholds (the committed file is the defaults')."""
    from monitor.fleet import rules

    click.echo(rules.rules_yaml(load_config(parsed_options(**kwargs))), nl=False)
    return 0


@render_group.command("dashboard")
@config_options
def render_dashboard(**kwargs):
    """Print grafana_dashboard.json with threshold steps from the config."""
    from monitor.fleet import dashboard

    click.echo(dashboard.dashboard_json(load_config(parsed_options(**kwargs))), nl=False)
    return 0

