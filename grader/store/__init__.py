"""The gradebook (SQLite by default, PostgreSQL) and its migrations."""
