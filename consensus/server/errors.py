"""The errors a member's public API raises, with etcd's exact messages.

Clients of etcd match on these texts, and the gRPC layer (next milestone)
maps each class to etcd's status code, so the ``str()`` of every instance is
exactly etcd's message (for example ``"etcdserver: no leader"``).
"""

from __future__ import annotations


class MemberError(Exception):
    """Base class: a request the member could not serve; ``str()`` is etcd's message."""

    message = "etcdserver: unknown error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.message)


class NoLeaderError(MemberError):
    """No leader is known, so a proposal or read cannot be served now."""

    message = "etcdserver: no leader"


class RequestTimeoutError(MemberError):
    """A proposal or read was not served within the request deadline."""

    message = "etcdserver: request timed out"


class TimeoutDueToLeaderFailError(MemberError):
    """A request timed out and the leader changed meanwhile (it may or may not be applied)."""

    message = "etcdserver: request timed out, possibly due to previous leader failure"


class ProposalDroppedError(MemberError):
    """Raft refused the proposal here (for example while leadership is being transferred)."""

    message = "raft proposal dropped"


class LeaderChangedError(MemberError):
    """The leader changed while the request waited (it may or may not have been applied)."""

    message = "etcdserver: leader changed"


class StoppedError(MemberError):
    """The member is stopping or stopped."""

    message = "etcdserver: server stopped"


class RequestTooLargeError(MemberError):
    """The request exceeds ``--max-request-bytes``."""

    message = "etcdserver: request is too large"


class TooManyRequestsError(MemberError):
    """Too many proposals are waiting to be applied."""

    message = "etcdserver: too many requests"


class LeadershipTransferTimeoutError(MemberError):
    """A leadership transfer did not finish in time."""

    message = "etcdserver: request timed out, leader transfer took too long"


class NotLeaderError(MemberError):
    """The operation must run on the leader (for example a leadership transfer)."""

    message = "etcdserver: not leader"


class MemberIdExistsError(MemberError):
    message = "etcdserver: ID exists"


class MemberIdNotFoundError(MemberError):
    message = "etcdserver: ID not found"


class MemberIdRemovedError(MemberError):
    message = "etcdserver: ID removed"


class PeerUrlExistsError(MemberError):
    message = "etcdserver: Peer URLs already exists"


class MemberNotLearnerError(MemberError):
    message = "etcdserver: can only promote a learner member"


class LearnerNotReadyError(MemberError):
    message = "etcdserver: can only promote a learner member which is in sync with leader"


class UnhealthyClusterError(MemberError):
    """A membership change would leave the cluster without a working quorum."""

    message = "etcdserver: unhealthy cluster"
