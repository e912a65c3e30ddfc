"""WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi ...``."""
from scheduler_service import create_app_or_exit

app = create_app_or_exit()
