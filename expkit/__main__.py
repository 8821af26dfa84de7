from expkit.cli import entry

entry()
