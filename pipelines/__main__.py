"""`python -m pipelines` runs the `caravan` command line."""

from pipelines.cli import main

main()
