"""Connector definitions (one YAML file per connector) and the engines that use them."""
