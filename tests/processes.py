"""What tests about processes ask of /proc."""
from __future__ import annotations


def running(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a parent that is not us (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
