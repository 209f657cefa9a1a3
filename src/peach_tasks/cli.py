"""``peach-tasks``: the command line. Every command has ``--help`` and ``--config``.

This module only makes the group and adds the commands: the operators' live in
``commands/`` (``serving.py``, ``listings.py``, ``alerts.py``, ``outputs.py``, ``prune.py``),
the notebook authors' in ``authors/commands.py``. Nothing imports this module.
"""

from __future__ import annotations

import click

from .authors.commands import COMMANDS as AUTHOR_COMMANDS
from .commands.alerts import COMMANDS as ALERT_COMMANDS
from .commands.common import config_option
from .commands.listings import COMMANDS as LISTING_COMMANDS
from .commands.outputs import COMMANDS as OUTPUT_COMMANDS
from .commands.prune import COMMANDS as OPERATOR_COMMANDS
from .commands.serving import COMMANDS as SERVING_COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(package_name="peach-tasks")
def main() -> None:
    """Run notebooks from git repositories as production tasks, one loop per organisation."""


for _command in (*SERVING_COMMANDS, *LISTING_COMMANDS):
    main.add_command(_command)  # each has its own --config
for _command in (*AUTHOR_COMMANDS, *ALERT_COMMANDS, *OPERATOR_COMMANDS, *OUTPUT_COMMANDS):
    main.add_command(config_option(_command))  # click adds the option to a built command too


if __name__ == "__main__":
    main()
