"""The project service: Golem projects, their ownership and the caller's actions on them."""
