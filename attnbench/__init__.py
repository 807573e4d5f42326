"""attnbench: a benchmark harness for long-context attention."""

__version__ = "0.1.0"
