"""Alembic migrations of the results database.

Revisions live in ``versions/`` as a single linear chain (``0001_initial``,
``0002_review``, ...). :meth:`lesionq.store.ResultsDB.open` runs them
programmatically from this package folder (no ``alembic.ini``); for other uses
build the configuration with :func:`lesionq.store.db.alembic_config`.
"""
