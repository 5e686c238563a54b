"""Alembic revision scripts (one linear chain; see :mod:`lesionq.store.migrations`)."""
