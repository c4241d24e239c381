"""The application: applying provider events to payments and credits, and what operators and the host app call.

``unit.UnitOfWork`` is the one way events are applied (a batch per
transaction, application/batch.py); recovery, dead letters and the Python API
(``tracker.PaymentTracker``) are built on it. No Celery, no Flask here.
"""
