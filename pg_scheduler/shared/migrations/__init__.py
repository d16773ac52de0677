"""Schema migrations: numbered SQL files, applied in order by ``shared.schema``."""
