"""Egress: everything that leaves the process (HTTP/1.1 pool, SSRF rules, destination rules, deadlines)."""
