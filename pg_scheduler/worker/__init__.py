"""Claiming and running jobs: nothing else. Imports only ``shared``."""
