"""keyrelay: a self-hosted gateway that lets AI agents use APIs and files without holding the credentials."""

__version__ = "0.1.0"
