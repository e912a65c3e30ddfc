"""Benchmarks of the scheduler service against APScheduler 3 (SQLAlchemyJobStore): ``python -m bench.run``."""
