"""The `mmfree` command (main.py) and its subcommands, one module each; demo.py is the main job."""
