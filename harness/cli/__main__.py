"""`python -m harness.cli`: the `shapeprop-bench` command."""

from harness.cli import main

main()
