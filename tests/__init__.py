"""The test suite. Its helpers (``tests.support``, ``tests.pgserver``, ``tests.replicas``,
``tests.pods``, ``tests.apps``) are imported by these full names from the repository root, in
tests/, chaos/ and bench/ alike."""
