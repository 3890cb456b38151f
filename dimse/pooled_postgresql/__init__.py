"""The listener's PostgreSQL backend when its connections are pooled (see ``base``)."""
