"""The control actor: ops commands of ``/ws/v1/control`` and their audit log."""
