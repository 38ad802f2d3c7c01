"""`python -m hwlat.cli`: the `hwlat` command."""

from hwlat.cli import main

main()
