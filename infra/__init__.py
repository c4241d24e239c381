"""Process plumbing every payhooks process shares: settings, logs, metrics, error reports, dev servers.

Nothing here knows about payments; everything else may import it.
"""
