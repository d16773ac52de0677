"""In-process tests against a real PostgreSQL (a fresh database per test)."""
