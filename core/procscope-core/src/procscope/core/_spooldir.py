"""The program's spool directory made private: shared by the hand-off spool and cheap
children, whose start-up may import nothing but ``os`` (see ``cheap_child``)."""

import os
import stat


def made_private(path: str) -> bool:
    """Make ``path`` (mode 0700) if missing; True only when it is a directory of ours
    alone: never write spans into a link, another user's folder, or one open to others."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077
