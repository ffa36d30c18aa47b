"""The template cache's files, and crypto-erase: the one erase the gate has.

Standard library only: the installer (``gate.tools.install``) runs it with the system
``python3`` before any dependency exists, to erase a gate it uninstalls.

Crypto-erase destroys the wrapped data key first (:mod:`gate.match.datakey`): from that
instant the cache and its journal decrypt with nothing on the device, whatever the flash
keeps of them. Then every other file is overwritten with random bytes and removed.
Overwriting is best effort on flash (wear levelling may keep old blocks); destroying the
data key is what makes the templates unrecoverable.
"""

from __future__ import annotations

import os
from pathlib import Path

from gate.match.atomic import destroy

#: The wrapped data key, the encrypted snapshot, and the journal of changes since it.
KEY_FILE = "templates.dek"
CACHE_FILE = "templates.cache"
JOURNAL_FILE = "templates.journal"
#: The order :func:`erase` destroys them in: the data key first.
ERASE_ORDER = (KEY_FILE, CACHE_FILE, JOURNAL_FILE)
#: Files of an invalid cache set aside when a verified snapshot replaced it
#: (``NAME.invalid-TIME``): protected templates under the same keys, erased with the rest.
ASIDE_GLOB = "templates.*.invalid-*"


def set_aside(directory: Path) -> tuple[list[str], list[str]]:
    """Names of the set-aside files in ``directory``: (wrapped data keys, the others)."""
    names = sorted(p.name for p in Path(directory).glob(ASIDE_GLOB))
    return [n for n in names if n.startswith(KEY_FILE)], \
        [n for n in names if not n.startswith(KEY_FILE)]


def erase(directory: Path) -> list[str]:
    """Crypto-erase the cache files in ``directory`` without a key; returns the names.

    Temporaries of an interrupted write go too (:func:`gate.match.atomic.atomic_write`
    names them ``.NAME.RANDOM.tmp``): one may hold a wrapped data key, so those of the key
    file go right after it. So do the files of an invalid cache set aside for inspection
    (:func:`set_aside`).
    """
    directory = Path(directory)
    keys, others = set_aside(directory)
    order = [KEY_FILE, *sorted(p.name for p in directory.glob(f".{KEY_FILE}.*.tmp")),
             *keys, CACHE_FILE, JOURNAL_FILE, *others,
             *sorted(p.name for p in directory.glob(".templates.*.tmp"))]
    gone = []
    for name in dict.fromkeys(order):  # in order, each once
        path = directory / name
        if path.is_file() and not path.is_symlink():
            destroy(path)
            gone.append(name)
    return gone


def erase_state(directory: Path) -> list[str]:
    """Crypto-erase a whole state directory (uninstall); returns what was erased, in order.

    First the cache (:func:`erase`, data key first), then every other file (the sync
    database: outbox, entry log for anti-passback, sequence numbers), and the directory
    with them. Links are removed, never followed.
    """
    directory = Path(directory)
    if directory.is_symlink():
        directory.unlink()
        return []
    if not directory.is_dir():
        return []
    erased = erase(directory)
    for here, dirs, files in os.walk(directory, topdown=False):
        for name in files:
            path = Path(here) / name
            if path.is_file() and not path.is_symlink():
                destroy(path)
                erased.append(str(path.relative_to(directory)))
            else:
                path.unlink()
        for name in dirs:
            path = Path(here) / name
            if path.is_symlink():
                path.unlink()
            else:
                path.rmdir()
    directory.rmdir()
    return erased
