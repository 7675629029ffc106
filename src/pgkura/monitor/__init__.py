"""Monitoring: the facts `pgkura metrics` and `check --max-age` read from a repository (and,
with --dbconn, from the server), and their Prometheus exposition."""
