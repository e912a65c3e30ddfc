"""WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi ...``."""
import gc

from scheduler_service import create_app_or_exit

app = create_app_or_exit()

# What start-up made (modules, the app, SQLAlchemy's mappers) lives as long as the process:
# keep it out of the collector's full passes, which otherwise paused a serving worker for
# 50-140 ms every few hundred list requests (W4 in BENCHMARKS.md).
gc.freeze()
