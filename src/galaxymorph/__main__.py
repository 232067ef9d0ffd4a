"""`python -m galaxymorph`: the same as the `galaxymorph` command."""

from galaxymorph.cli import app

app(prog_name="galaxymorph")
