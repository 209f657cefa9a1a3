"""The operators' commands of ``peach-tasks`` (``cli.py`` adds them to the command line),
and what every command shares."""
