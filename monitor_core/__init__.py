"""monitor_core: an asyncio scheduler for monitoring Ganga jobs, and its event bus.

No user-interface code lives here; viewers subscribe to the :class:`EventBus`.
"""

from ._bus import BusStatistics, EventBus, Subscription, SubscriptionClosed, SubscriptionStatistics
from ._commands import (
    CollectOutput,
    Command,
    PauseBackend,
    RefreshJob,
    ResumeBackend,
    SelectEvents,
    SetInterval,
    TailOutput,
    execute_command,
)
from ._events import (
    BackendRecord,
    BreakerChanged,
    BreakerState,
    ChangeSource,
    CommandAcked,
    Event,
    Heartbeat,
    JobAdded,
    JobChanged,
    JobRecord,
    LagSampled,
    LocalFault,
    OpFinished,
    OpQueued,
    OpRecord,
    OpStarted,
    RejectionCategory,
    Rescheduled,
    SessionEnded,
    Snapshot,
    UpdateRejected,
)
from ._fold import BackendFigures, StateFold, percentile
from ._gc_pace import CollectionPace
from ._loop_probe import LOOP_LAG_BOUNDS, loop_lag_quantile
from ._memory import release_free_memory, tune_allocator
from ._model import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    TRANSITIONS,
    IllegalTransition,
    Job,
    JobSpec,
    JobStatus,
    Operation,
    OpKind,
    OpState,
    Outcome,
    check_transition,
    is_legal_transition,
)
from ._outputs import OutputSink
from ._policy import AdaptiveInterval
from ._scheduler import Scheduler, UnknownBackend, UnknownJob
from ._session import MonitorSession, SessionConfig, SessionSummary
from ._settings import SchedulerConfig
from ._source import ConnectionChanged, EventSource, InProcessSource, SourceFailed
from ._state_lock import StateDirectoryInUse
from ._store import SessionStore

__version__ = "0.1.0"

__all__ = [
    "InProcessSource",
    "SourceFailed",
    "EventSource",
    "ConnectionChanged",
    "execute_command",
    "TailOutput",
    "SelectEvents",
    "SetInterval",
    "ResumeBackend",
    "RefreshJob",
    "PauseBackend",
    "CollectOutput",
    "Command",
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "TRANSITIONS",
    "AdaptiveInterval",
    "BackendFigures",
    "BackendRecord",
    "BreakerChanged",
    "CollectionPace",
    "BreakerState",
    "BusStatistics",
    "ChangeSource",
    "CommandAcked",
    "Event",
    "EventBus",
    "Heartbeat",
    "IllegalTransition",
    "Job",
    "JobAdded",
    "JobChanged",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "LagSampled",
    "LocalFault",
    "MonitorSession",
    "OpFinished",
    "OpKind",
    "OpQueued",
    "OpRecord",
    "OpStarted",
    "OpState",
    "Operation",
    "Outcome",
    "OutputSink",
    "RejectionCategory",
    "Rescheduled",
    "Scheduler",
    "SchedulerConfig",
    "SessionConfig",
    "SessionEnded",
    "SessionStore",
    "SessionSummary",
    "Snapshot",
    "StateDirectoryInUse",
    "StateFold",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionStatistics",
    "UnknownBackend",
    "UnknownJob",
    "UpdateRejected",
    "__version__",
    "check_transition",
    "percentile",
    "is_legal_transition",
    "tune_allocator",
    "LOOP_LAG_BOUNDS",
    "loop_lag_quantile",
    "release_free_memory",
]
