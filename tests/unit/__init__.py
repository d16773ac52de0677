"""Tests that need no database: pure functions, the SQL package's rules, the docs' map."""
