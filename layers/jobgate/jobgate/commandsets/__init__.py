"""Command sets: the CLIs jobgate runs, each described by contracts and run in a forked child."""
