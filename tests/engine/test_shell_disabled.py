import pytest
import sqlalchemy as sa

from scheduler_service.extensions import db
from scheduler_service.models import Run, Task


@pytest.fixture
def app_config():
    return {"SHELL_ACTIONS_ENABLED": False, "SCHEDULER_TICK_SECONDS": 1}


def test_an_existing_shell_task_fails_with_a_clear_message(app, engine, client, wait_until, tmp_path):
    marker = tmp_path / "ran"
    with app.app_context():
        task = Task(name="old-shell", cron_expression="0 0 1 1 *", timezone="UTC", enabled=True, max_retries=0,
                    action={"type": "shell", "command": f"touch {marker}"})
        db.session.add(task)
        db.session.commit()
        task_id = task.id
    assert client.post(f"/api/tasks/{task_id}/run/").status_code == 202

    def finished_run():
        with app.app_context():
            return db.session.scalars(sa.select(Run).where(Run.task_id == task_id, Run.status == "failed")).first()

    run = wait_until(finished_run)
    assert run.message == "shell actions are disabled (SHELL_ACTIONS_ENABLED=false)"
    assert not marker.exists()
