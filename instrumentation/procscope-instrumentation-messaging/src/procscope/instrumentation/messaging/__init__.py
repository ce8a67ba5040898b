"""procscope's messaging instrumentor: messages through queues and pipes, sender to receiver.

``MessagingInstrumentor().instrument(tracer_provider=...)`` traces ``queue`` queues,
``asyncio`` queues, and ``multiprocessing`` queues, pipes and Manager queues: a producer
span at each sampled put or send, its context carried with the message (beside it within
a process, pickled with it across processes), and a consumer span at the get or receive,
in the producer's trace, whose context stays attached to the consumer until its next get
(or ``task_done``). See docs/messaging.md for the model and its limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._instrumentor import MessagingInstrumentor

__all__ = ["MessagingInstrumentor"]


def __getattr__(name: str) -> Any:
    # Imported at first use: its base class costs tens of milliseconds of imports that
    # procscope.setup(), which switches the plugin through ._switch, does not need.
    if name == "MessagingInstrumentor":
        from ._instrumentor import MessagingInstrumentor

        return MessagingInstrumentor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
