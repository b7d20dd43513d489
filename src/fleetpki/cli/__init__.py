"""The ``fleetpki`` command line: a thin Typer layer over the library, one module per noun."""
