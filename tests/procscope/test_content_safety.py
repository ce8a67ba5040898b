"""Content safety: secrets never reach the trace DB, and recording content is bounded.

Each test runs a real program (real queues, a child process, a subprocess, a traced
object) that records into a real trace DB, then reads every column of every table back
with sqlite3, as a user who opens the file would.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Each secret is a marker that must not appear anywhere in the DB; beside it, what the
# program puts it in.
LEAKY_PROGRAM = r"""
import collections, dataclasses, multiprocessing, queue, subprocess, sys
import procscope

procscope.setup(db=sys.argv[1])

@dataclasses.dataclass
class Login:
    user: str
    password: str

Creds = collections.namedtuple("Creds", "user token")

class Account:
    def __init__(self):
        self.name = "ann"
        self.api_key = "zqACCOUNTkey"
    def __repr__(self):  # a repr that shows its fields, attrs/pydantic style
        return f"Account(name={self.name!r}, api_key={self.api_key!r})"

class Headers(dict):
    pass

VALUES = [
    collections.OrderedDict(user="ann", password="zqORDERED"),
    collections.defaultdict(list, {"token": "zqDEFAULT"}),
    Headers(secret="zqSUBCLASS"),
    Login("ann", "zqDATACLASS"),
    Creds("ann", "zqNAMEDTUPLE"),
    Account(),
    [("Authorization", "Bearer zqHEADERLIST123")],
    {b"password": b"zqBYTESKEY"},
    "postgres://ann:zqURLPASSWORD@db.example/x",
    {"cvv": "zqCVV", "card_number": "zqCARDKEY"},
    "paid with 4111 1111 1111 1111 today",
    {"number": 4111111111111111},
    "call with Bearer zqBEARERTOKEN9",
    "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYW5uIn0.zqJWTsignature",
    "key AKIAZQAWSKEY12345678 here",
    "key ABIAZQAWSBKEYABCDEFG here",
    "call with BEARER zqUPPERBEARER9",
    "AIzaZQGCP" + "x" * 30,
    "ghp_zqGITHUB" + "a" * 30,
    "xoxb-zqSLACK-1234567890",
    "sk_live_zqSTRIPE1234567890",
    "-----BEGIN RSA PRIVATE KEY-----\nzqPEMBODY\n-----END RSA PRIVATE KEY-----",
    "user=ann&password=zqFORMFIELD&next=1",
]

def consume(q, n):
    for _ in range(n):
        q.get()

@procscope.trace_state(name="vault")
class Vault:
    def __init__(self):
        self.config = {"user": "ann"}
        self.item = None
    def store(self, value):
        self.item = value
    def add_secret(self):
        self.config["password"] = "zqADDEDKEY"
    def drop_secret(self):
        del self.config["password"]
    def set_url(self):
        self.item = "redis://:zqSTATEURL@cache:6379"

if __name__ == "__main__":
    mq = multiprocessing.Queue()
    child = multiprocessing.Process(target=consume, args=(mq, len(VALUES)))
    child.start()
    tq = queue.Queue()
    vault = Vault()
    for value in VALUES:
        mq.put(value)
        tq.put(value)
        tq.get()
        vault.store(value)
    vault.add_secret()
    vault.drop_secret()
    vault.set_url()
    child.join()
    subprocess.run(
        [sys.executable, "-c", "pass", "--password", "zqARGVALUE", "--token=zqARGTOKEN"],
        check=True,
    )
    procscope.shutdown()
    print("done")
"""

MARKERS = [
    "zqORDERED", "zqDEFAULT", "zqSUBCLASS", "zqDATACLASS", "zqNAMEDTUPLE", "zqACCOUNTkey",
    "zqHEADERLIST123", "zqBYTESKEY", "zqURLPASSWORD", "zqCVV", "zqCARDKEY",
    "4111 1111 1111 1111", "4111111111111111", "zqBEARERTOKEN9", "zqJWTsignature",
    "AKIAZQAWSKEY12345678", "ABIAZQAWSBKEYABCDEFG", "zqUPPERBEARER9", "AIzaZQGCP",
    "zqGITHUB", "zqSLACK", "zqSTRIPE", "zqPEMBODY",
    "zqFORMFIELD", "zqADDEDKEY", "zqSTATEURL", "zqARGVALUE", "zqARGTOKEN",
]  # fmt: skip


def db_text(db: Path) -> str:
    """Every value of every column of every table, as text."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        parts = []
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                parts.extend(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
        return "\n".join(parts)
    finally:
        connection.close()


def test_secrets_in_every_shape_never_reach_the_db(
    run_app: Callable[..., Any], tmp_path: Path
) -> None:
    """Secrets in dict subclasses, dataclasses, namedtuples, objects, header lists, bytes
    keys, URLs, tokens, card numbers, state diffs and command lines are masked in the DB,
    while the rest of each value is still recorded."""
    db = tmp_path / "trace.db"
    result = run_app(
        LEAKY_PROGRAM.replace("sys.argv[1]", repr(str(db))),
        env={"PROCSCOPE_EXPORTER": "tracedb"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    text = db_text(db)
    leaked = [marker for marker in MARKERS if marker in text]
    assert leaked == []
    # Recorded all the same, secrets masked: what a user reads in the DB.
    assert "Login(user='ann', password=***)" in text
    assert "OrderedDict({'user': 'ann', 'password': ***})" in text
    assert "Account(name='ann', api_key=***)" in text
    assert "[('Authorization', ***)]" in text
    assert "postgres://ann:***@db.example/x" in text
    assert '"--password","***","--token=***"' in text  # the subprocess's arguments


BIG_MESSAGE_PROGRAM = r"""
import queue, resource, sys
import procscope

procscope.setup(db=sys.argv[1])

@procscope.trace_state(name="holder")
class Holder:
    def __init__(self):
        self.blob = b""
    def keep(self, blob):
        self.blob = blob

size = 100 * 1024 * 1024
blob = b"x" * size
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
q = queue.Queue()
q.put(blob)
q.get()
Holder().keep(blob)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
procscope.shutdown()
print(after - before, size)
"""


def test_a_100mb_message_costs_no_copy_of_it(run_app: Callable[..., Any], tmp_path: Path) -> None:
    """Putting a 100 MB bytes message and holding it in traced state: peak RSS grows by far
    less than the message (its full repr was built before: +400 MB), and what is recorded
    is a short text."""
    db = tmp_path / "trace.db"
    result = run_app(BIG_MESSAGE_PROGRAM.replace("sys.argv[1]", repr(str(db))), timeout=300)
    assert result.returncode == 0, result.stderr
    growth, size = map(int, result.stdout.split())
    assert growth < size // 4, f"peak RSS grew by {growth} bytes for a {size}-byte message"
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        longest = max(
            len(v)
            for table in ("spans", "events")
            for row in connection.execute(f"SELECT * FROM {table}")
            for v in row
            if isinstance(v, (str, bytes))
        )
    finally:
        connection.close()
    assert longest < 100_000


BLOCKING_REPR_PROGRAM = r"""
import faulthandler, multiprocessing, queue, sys, threading
import procscope

procscope.setup(db=sys.argv[1])
# The hang detector: a program still here after 60 s prints where it waits and exits 3.
faulthandler.dump_traceback_later(60, exit=True)

NEVER = threading.Event()

class Stuck:
    def __init__(self):
        self.n = 1
    def __repr__(self):
        NEVER.wait()  # a repr that never returns
        return "Stuck()"

@procscope.trace_state(name="box")
class Box:
    def __init__(self):
        self.item = None
    def keep(self, item):
        self.item = item

q = queue.Queue()
q.put(Stuck())
q.get()
Box().keep(Stuck())
faulthandler.cancel_dump_traceback_later()
procscope.shutdown()
print("done")
"""


def test_a_blocking_repr_does_not_block_put(run_app: Callable[..., Any], tmp_path: Path) -> None:
    """A message or state value whose __repr__ never returns: put and the state change
    return at once (the program's __repr__ is not called); the object is shown by its
    fields."""
    db = tmp_path / "trace.db"
    result = run_app(BLOCKING_REPR_PROGRAM.replace("sys.argv[1]", repr(str(db))), timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert "Stuck(n=1)" in db_text(db)


EXTRA_RULES_PROGRAM = r"""
import multiprocessing, queue, sys
import procscope

procscope.setup(db=sys.argv[1], scrub_keys="employee", scrub_values=r"EMP-[0-9]{6}")

def child(q):
    q.put({"note": "badge EMP-445566 issued"})  # a spawn child: the rules from the settings

if __name__ == "__main__":
    q = queue.Queue()
    q.put({"employee_ref": "zqEMPLOYEE", "note": "badge EMP-123456 issued"})
    q.get()
    mq = multiprocessing.get_context("spawn").Queue()
    p = multiprocessing.get_context("spawn").Process(target=child, args=(mq,))
    p.start()
    mq.get()
    p.join()
    procscope.shutdown()
    print("done")
"""


def test_extra_scrub_rules_from_the_settings(run_app: Callable[..., Any], tmp_path: Path) -> None:
    """scrub_keys and scrub_values add key and value rules, in the program and in a spawn
    child (they travel as PROCSCOPE_SCRUB_KEYS / PROCSCOPE_SCRUB_VALUES)."""
    db = tmp_path / "trace.db"
    result = run_app(EXTRA_RULES_PROGRAM.replace("sys.argv[1]", repr(str(db))), timeout=180)
    assert result.returncode == 0, result.stderr
    text = db_text(db)
    assert "'employee_ref': ***" in text and "zqEMPLOYEE" not in text
    assert "badge *** issued" in text
    assert "EMP-123456" not in text and "EMP-445566" not in text


BYTES_AND_STR_PROGRAM = r"""
import queue, sys
import procscope

procscope.setup(db=sys.argv[1])
q = queue.Queue()
for message in ("password-ish", b"password-ish", {"token": 1}, {b"token": 1}, "token", b"token"):
    q.put(message)
    q.get()
procscope.shutdown()
print("done")
"""


def test_str_and_bytes_alike_raise_no_bytes_warning(
    run_app: Callable[..., Any], tmp_path: Path
) -> None:
    """Under python -b (comparing str with bytes warns on stderr), equal str and bytes
    messages and keys are recorded without any comparison between them: the program runs
    as plainly, nothing on its stderr."""
    db = tmp_path / "trace.db"
    program = BYTES_AND_STR_PROGRAM.replace("sys.argv[1]", repr(str(db)))
    result = run_app(program, prefix=[sys.executable, "-b"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done" and result.stderr == ""
