"""The subcommands that are not jobs, one module per group.

`monitor.cli` imports each module only when its command is named (or listed by
`--help`), so a cron run never loads them. A new group: a module here with a click
group, and one line in `cli.COMMANDS`.
"""
