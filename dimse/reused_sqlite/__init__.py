"""The listener's SQLite backend: connections kept for the next association (see ``base``)."""
