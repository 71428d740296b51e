"""legato: a workflow conductor for very large parameter studies, compatible with Maestro specs."""

__version__ = "0.1.0"
