"""The truth: tables, the engine, and the rules that change rows.

Nothing here knows Celery or Flask exists. Functions take a Session that the
caller's transaction owns; they may flush, never commit.
"""
