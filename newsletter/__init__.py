"""newsletter — a mail-magazine (メルマガ) publishing pipeline."""

__version__ = "0.1.0"
