"""Front doors: thin translations from a protocol to the services and pipeline."""
