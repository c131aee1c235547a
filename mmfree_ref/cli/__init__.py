"""The `mmfree` command (main.py) and its subcommands, one module each; demo.py is the main job.
Shared by them: options.py (the parser, numeric option types), paths.py (the rule for output
paths), errors.py (what a failure prints), common.py (help layout, reading ids)."""
