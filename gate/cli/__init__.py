"""``gatectl``: the technician's command line."""
