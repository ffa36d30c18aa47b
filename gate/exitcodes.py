"""gatectl's exit codes, in one place (the commands, the service and the installer).

Standard library only: the installer imports it before any dependency is installed.
"""

from __future__ import annotations

EXIT_OK = 0  #: done
EXIT_FAIL = 1  #: a check failed, or start-up failed for a reason a restart may fix
EXIT_USAGE = 2  #: bad command line
EXIT_CONFIG = 3  #: invalid configuration (for ``run``: also a missing or unsafe key)
EXIT_MODELS = 4  #: model files missing or not the pinned ones
EXIT_DATA = 5  #: bad input data
EXIT_SERVICE = 6  #: the gate service is not running or refused the request
EXIT_CANCELLED = 7  #: declined at a confirmation prompt
