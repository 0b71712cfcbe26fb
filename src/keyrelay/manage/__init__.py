"""Admin operations shared by the admin API and the CLI."""
