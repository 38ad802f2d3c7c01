"""`python -m hwlat.cli`: the `hwlat` command."""

from hwlat.cli import entry

entry()
